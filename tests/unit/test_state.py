"""Per-user state: exact event-time windows, out-of-order inserts, late events, bounds."""

from __future__ import annotations

import math
import pickle
from datetime import timedelta

import pytest

from dataflows.detection.state import (
    MAX_COMPROMISED,
    MAX_EVENTS,
    MAX_PLACES,
    UserState,
    haversine_km,
    local_hour,
    observe,
)
from schemas.transaction import Transaction, decode_event
from tests.conftest import T0, txn_bytes


def txn(minutes: float, **over) -> Transaction:
    ts = (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    res = decode_event(txn_bytes(int(minutes * 1000), ts=ts, **over))
    assert isinstance(res, tuple), res
    return res[0]


def feed(state: UserState, *txns: Transaction, lateness_s: float = 300):
    return [observe(state, t, lateness_ms=lateness_s * 1000, small_usd=5.0) for t in txns]


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((40.7128, -74.006), (51.5074, -0.1278), 5570.0),  # New York - London
        ((48.8566, 2.3522), (48.8566, 2.3522), 0.0),
        ((0.0, 179.9), (0.0, -179.9), 22.2),
    ],  # across the antimeridian
)
def test_haversine(a, b, km) -> None:
    assert haversine_km(*a, *b) == pytest.approx(km, rel=0.01, abs=0.5)


def test_local_hour_follows_longitude() -> None:
    noon_utc = int(T0.timestamp() * 1000)
    assert local_hour(noon_utc, 0.0) == 12
    assert local_hour(noon_utc, -74.0) == 7  # New York solar time
    assert local_hour(noon_utc, 150.0) == 22


def test_windows_count_exactly() -> None:
    st = UserState()
    fs = feed(st, txn(0), txn(0.5), txn(0.9), txn(5), txn(61))
    assert [f.cnt_1m for f in fs] == [1, 2, 3, 1, 1]
    assert [f.cnt_10m for f in fs] == [1, 2, 3, 4, 1]
    assert [f.cnt_1h for f in fs] == [1, 2, 3, 4, 2]  # t=61 sees t=5 (56 min ago) and itself
    assert [f.cnt_24h for f in fs] == [1, 2, 3, 4, 5]
    assert fs[-1].sum_24h_usd == pytest.approx(5 * 42.5)


def test_out_of_order_event_within_lateness_updates_windows() -> None:
    st = UserState()
    feed(st, txn(0), txn(10))
    (late_ok,) = feed(st, txn(9.5))  # 30 s behind the newest: within lateness
    assert not late_ok.late
    # Windows span (t - span, newest seen]: t=10, already seen, counts although later
    # (two events within a span meet in the window of whichever arrives second, as in
    # time order t=10 would count t=9.5); t=0 is 9.5 min before.
    assert (late_ok.cnt_1m, late_ok.cnt_10m) == (2, 3)
    (f,) = feed(st, txn(10.2))
    assert f.cnt_1m == 3  # 9.5, 10, 10.2
    assert [st.events[i * 4] for i in range(len(st.events) // 4)] == sorted(
        st.events[i * 4] for i in range(len(st.events) // 4)
    )


def test_late_event_is_scored_but_does_not_change_state() -> None:
    st = UserState()
    feed(st, txn(0), txn(60))
    before = pickle.dumps(st)
    (f,) = feed(st, txn(30), lateness_s=60)  # 30 min behind, lateness 1 min
    assert f.late and f.cnt_1h == 2  # counted virtually: t=0, itself
    assert pickle.dumps(st) == before


def test_horizon_and_cap_bound_memory() -> None:
    st = UserState()
    feed(st, *[txn(m) for m in range(0, 3 * 24 * 60, 30)])  # 3 days, every 30 min
    n = len(st.events) // 4
    assert n <= 24 * 2 + 11  # 24 h + 5 min lateness at 2/h
    st2 = UserState()
    feed(st2, *[txn(m / 100) for m in range(MAX_EVENTS + 100)])
    assert len(st2.events) // 4 == MAX_EVENTS


def test_impossible_travel_features_use_previous_card_present_location() -> None:
    st = UserState()
    f1, f2, f3 = feed(
        st,
        txn(0),  # New York POS
        txn(5, channel="ecom", lat=10.0, lon=10.0),  # ecom: location not used
        txn(30, lat=51.5074, lon=-0.1278, country="GB"),  # London POS 30 min later
    )
    assert f1.km_prev == 0.0 and f2.km_prev == 0.0
    assert f3.km_prev == pytest.approx(5570, rel=0.01)
    assert f3.speed_kmh == pytest.approx(5570 * 2, rel=0.01)


def test_profile_novelty_features() -> None:
    st = UserState()
    fs = feed(st, *[txn(i * 60, device_id="d1") for i in range(6)])
    assert not any(f.new_country or f.new_device for f in fs)
    (f,) = feed(st, txn(400, country="FR", device_id="d2", amount=4000.0))
    assert f.new_country and f.new_device and f.history == 6
    assert f.amount_z > 10


def test_state_pickles_small() -> None:
    st = UserState()
    feed(st, *[txn(i * 180, device_id="d1") for i in range(5)])
    assert st == pickle.loads(pickle.dumps(st))
    assert len(pickle.dumps(st)) < 600


def test_one_scan_windows_equal_the_reference_windows() -> None:
    import random
    from array import array

    from dataflows.detection.state import DAY_MS, UserState

    rng = random.Random(4)
    for _ in range(200):
        st = UserState()
        ts = sorted(rng.uniform(0, 2 * DAY_MS) for _ in range(rng.randint(0, 80)))
        st.events = array(
            "d", [v for t in ts for v in (t, rng.choice([1.0, 3.5, 20.0, 999.9]), 0.0, 0.0)]
        )
        end = rng.choice([*ts, rng.uniform(0, 2 * DAY_MS)]) if ts else 0.0
        ref = [st.window(end, span, 5.0) for span in (60_000, 600_000, 3_600_000, DAY_MS)]
        assert st.windows(end, 5.0) == (
            ref[0][0],
            ref[1][0],
            ref[1][2],
            ref[2][0],
            ref[2][1],
            ref[3][0],
            ref[3][1],
        )


def test_older_snapshots_still_load() -> None:
    st = UserState()
    feed(st, txn(0), txn(5))
    for n in (8, 9):  # before ``seen``; before ``places`` and ``compromised``
        old = UserState()
        old.__setstate__(st.__getstate__()[:n])
        assert (old.places, old.compromised) == ([], ())
        assert old.events == st.events and old.seen == ({} if n == 8 else st.seen)


def test_places_are_bounded_and_merge_nearby_points() -> None:
    st = UserState()
    for i in range(10):  # ten purchases within a few km of each other, then ten towns
        st.learn_place(st.place_near(40.7 + i * 0.01, -74.0), 40.7 + i * 0.01, -74.0)
    assert len(st.places) == 3 and st.places[2] == 10.0
    for i in range(10):
        st.learn_place(st.place_near(10.0 + 5 * i, 0.0), 10.0 + 5 * i, 0.0)
    assert len(st.places) == 3 * MAX_PLACES
    assert st.place_near(40.75, -74.0) == 0 and st.places[2] == 10.0  # home survives
    assert st.place_near(-40.0, 0.0) == -1


def test_compromised_cards_are_bounded_and_expire() -> None:
    st = UserState()
    hold = 72 * 3_600_000.0
    st.compromise("c1", 1_000.0, hold)
    assert not st.is_compromised("c1", 1_000.0, hold)  # the blocking event itself
    assert st.is_compromised("c1", 2_000.0, hold) and not st.is_compromised("c2", 2_000.0, hold)
    assert not st.is_compromised("c1", 1_000.0 + hold + 1, hold)
    for i in range(2, 10):
        st.compromise(f"c{i}", 1_000.0 + i, hold)
    assert len(st.compromised) == MAX_COMPROMISED
    st.compromise("c9", 1_000.0 + 2 * hold, hold)  # the others' risk ended: forgotten
    assert [c[0] for c in st.compromised] == ["c9"] and st.compromised[0][1] == 1_009.0
    assert len(pickle.dumps(st)) - len(pickle.dumps(UserState())) < 50  # one card: ~30 B


def test_spend_windows_decay_with_their_time_constants() -> None:
    """A charge a day for 60 days: the 7-day count tends to 1 / (1 - e^(-1/7)) ≈ 7.5 and
    the 30-day one to ≈ 30.5; the means are the amount; values are read before the event
    (the first charge sees none)."""
    st = UserState()
    fs = feed(st, *[txn(d * 1440.0, amount=50.0) for d in range(60)])
    assert fs[0].cnt_7d == 0 and fs[0].avg_usd_7d == 0
    assert fs[1].cnt_7d == pytest.approx(math.exp(-1 / 7))
    assert fs[-1].cnt_7d == pytest.approx(7.0, abs=0.6)
    assert fs[-1].cnt_30d == pytest.approx(26.0, abs=2.0)
    assert fs[-1].avg_usd_7d == pytest.approx(50.0) and fs[-1].avg_usd_30d == pytest.approx(50.0)
    # a week of silence: the 7-day count falls by e, the 30-day one by e^(7/30)
    later = feed(st, txn(66 * 1440.0, amount=50.0))[0]
    assert later.cnt_7d == pytest.approx((fs[-1].cnt_7d + 1) * math.exp(-1))


def test_spend_windows_count_a_late_charge_as_of_its_time() -> None:
    """Two charges in either arrival order leave the same windows (within rounding)."""
    a, b = UserState(), UserState()
    feed(a, txn(0, amount=10.0), txn(3, amount=30.0))
    feed(b, txn(3, amount=30.0), txn(0, amount=10.0))
    assert a.spend[1:] == pytest.approx(b.spend[1:]) and a.spend[0] == b.spend[0]


def test_snapshots_from_before_the_spend_windows_load() -> None:
    st = UserState()
    feed(st, txn(0), txn(5))
    old = UserState()
    old.__setstate__(st.__getstate__()[:12])
    assert old.spend[1:] == (0.0, 0.0, 0.0, 0.0) and old.seen == st.seen
    assert old.spend_windows(1e15) == (0.0, 0.0, 0.0, 0.0)
