"""Label-free calibration: tail shares of recent traffic and the weighing of signal patterns."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.detection.policy import calibrate, default_active
from dataflows.detection.rarity import Calibrator, PatternRates, TailRate, rate_weight
from schemas.scored import Reason
from schemas.settings import Settings

NO_DECAY = 1e15


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1.0, 11.0, allow_nan=False), min_size=1, max_size=300),
    st.floats(-1.0, 11.0, allow_nan=False),
)
def test_tail_share_brackets_the_exact_share(values: list[float], x: float) -> None:
    """Without decay, the tail share of ``x`` lies between the exact shares counted from
    the two edges of ``x``'s bin (values inside its bin count by position)."""
    t = TailRate(0.0, 10.0, 40, NO_DECAY)
    for v in values:
        t.add(v)
    lo_edge = math.floor(min(max(x, 0.0), 10.0 - 1e-9) / 0.25) * 0.25
    hi_edge = lo_edge + 0.25

    def share(edge: float) -> float:
        clamp = [min(max(v, 0.0), 10.0 - 1e-9) for v in values]
        return (sum(1 for v in clamp if v >= edge) + 1) / (len(values) + 1)

    got = t.tail(x)
    assert share(hi_edge) - 1e-9 <= got <= share(lo_edge) + 1e-9


def test_an_unseen_high_value_is_rare_and_a_common_one_is_not() -> None:
    t = TailRate(0.0, 10.0, 100, NO_DECAY)
    for i in range(999):
        t.add(1.0 + (i % 10) / 10)
    assert t.tail(9.0) == pytest.approx(1 / 1000)  # above everything: the conformal +1
    assert t.tail(0.5) == 1.0
    assert 0.45 < t.tail(1.5) < 0.6


def test_old_values_fade_with_the_half_life() -> None:
    """1,000 high values, then 1,000 low ones with a half-life of 1,000 events: the high
    ones weigh half as much as the low ones (a third of the total, not a half)."""
    t = TailRate(0.0, 10.0, 100, 1000)
    for _ in range(1000):
        t.add(8.0)
    for _ in range(1000):
        t.add(2.0)
    assert abs(t.tail(5.0) - 1 / 3) < 0.01


def test_rescaling_keeps_the_shares() -> None:
    """A short half-life makes the growing increment pass its rescale point many times;
    the shares stay those of the recent values."""
    t = TailRate(0.0, 10.0, 100, 10)
    for i in range(20_000):
        t.add(9.0 if i % 4 == 0 else 1.0)
    assert 0.2 < t.tail(5.0) < 0.3
    assert math.isfinite(t.total) and t.inc < 1e150


def test_rate_weight_is_one_when_rare_and_falls_with_the_log_rate() -> None:
    assert rate_weight(0.0001, 0.001) == 1.0
    assert rate_weight(0.01, 0.001) > rate_weight(0.1, 0.001) > rate_weight(0.5, 0.001) > 0
    assert rate_weight(1.0, 0.001) == 0.0


def weigh(rates: PatternRates, pattern: tuple[str, ...], share: float) -> tuple[float, float]:
    """The flow's order for one event: read the pattern's weight, then count it."""
    got = rates.weight(pattern, share)
    rates.count(pattern)
    return got


def test_a_common_signal_keeps_little_weight_and_a_rare_one_keeps_all() -> None:
    cal = Calibrator(10_000)
    rng = random.Random(3)
    for _ in range(20_000):
        common = rng.random() < 0.1
        weigh(cal.full, ("unusual_hour",) if common else (), 0.001)
    assert weigh(cal.full, ("unusual_hour",), 0.001)[0] < 0.05
    assert weigh(cal.full, ("new_country",), 0.001)[0] > 0.9  # never seen: the prior's share


def test_two_common_signals_together_stay_weak_but_a_rare_one_lifts_the_pair() -> None:
    """An odd hour (10 %) with the anomaly model's top 5 % is still every day; a new
    country (0.05 %) with the anomaly model is evidence."""
    cal = Calibrator(10_000)
    rng = random.Random(5)
    for _ in range(30_000):
        got = []
        if rng.random() < 0.1:
            got.append("unusual_hour")
        if rng.random() < 0.05:
            got.append("anomaly")
        if rng.random() < 0.0005:
            got.append("new_country")
        weigh(cal.full, tuple(sorted(got)), 0.001)
    everyday, _ = weigh(cal.full, ("anomaly", "unusual_hour"), 0.001)
    rare, _ = weigh(cal.full, ("anomaly", "new_country"), 0.001)
    assert everyday < 0.3 < 0.6 < rare


def test_calibrate_scales_only_calibrated_hits_and_says_why() -> None:
    p = default_active(Settings())
    assert {"unusual_hour", "anomaly", "new_device", "new_country"} <= p.calibrated
    cal = Calibrator(1000)
    for _ in range(3000):
        weigh(cal.full, ("unusual_hour",), 0.001)
    reasons = [Reason("unusual_hour", "local hour 03h", 0.25), Reason("velocity", "x", 0.6)]
    out, pattern, w = calibrate(reasons, p, cal.full, 0.001)
    assert pattern == ("unusual_hour",) and w < 0.05
    assert out[1] == reasons[1]
    assert out[0].contribution < 0.01 and "weight" in out[0].detail
    assert "unusual_hour on" in out[0].detail


def test_the_calibrator_pickles_mid_stream_and_continues_identically() -> None:
    a = Calibrator(500)
    rng = random.Random(9)
    stream = [
        (rng.lognormvariate(3, 1), rng.gauss(0, 1.5), rng.random() < 0.2) for _ in range(3000)
    ]
    for usd, z, hit in stream[:1500]:
        a.rarity(usd, z, True)
        a.learn(usd, z, True)
        weigh(a.full, ("new_device",) if hit else (), 0.001)
    b = pickle.loads(pickle.dumps(a))
    for usd, z, hit in stream[1500:]:
        pat = ("new_device",) if hit else ()
        assert a.rarity(usd, z, True) == b.rarity(usd, z, True)
        a.learn(usd, z, True)
        b.learn(usd, z, True)
        assert weigh(a.full, pat, 0.001) == weigh(b.full, pat, 0.001)


def test_rarity_is_the_rarer_of_amount_and_profile() -> None:
    cal = Calibrator(10_000)
    rng = random.Random(1)
    for _ in range(5000):
        cal.learn(rng.uniform(10, 100), rng.gauss(0, 1), True)
    assert cal.rarity(5000.0, 0.0, True) < 0.001  # an amount nobody spends here
    assert cal.rarity(50.0, 6.0, True) < 0.001  # ordinary here, but not for this user
    assert cal.rarity(50.0, 6.0, False) > 0.1  # no profile yet: the z-score says nothing
    assert cal.rarity(50.0, 0.0, True) > 0.3
