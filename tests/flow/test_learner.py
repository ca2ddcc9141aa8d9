"""The feedback loop's second leg: an online supervised model from delayed labels."""

from __future__ import annotations

import pickle
import random
from datetime import timedelta

from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.detection.learner import LEARNER_FEATURES, MIN_EXAMPLES, DelayedLearner
from dataflows.detection.merchants import label_json
from dataflows.flow import build_flow
from schemas.settings import Settings
from tests.conftest import T0, fixed_clock, txn_bytes

DAY_MS = 86_400_000.0
WIDTH = len(LEARNER_FEATURES)


def _x(amount: float) -> tuple[float, ...]:
    return (amount, *([0.0] * (WIDTH - 1)))


def _stream(n: int, seed: int = 1) -> list[tuple[float, str, tuple[float, ...], bool]]:
    """n events over 30 days; frauds (5 %) have large amounts."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fraud = rng.random() < 0.05
        amount = rng.uniform(500, 900) if fraud else rng.uniform(5, 200)
        out.append((i * 30 * DAY_MS / n, f"t{i}", _x(amount), fraud))
    return out


def test_never_learns_an_example_before_its_delay() -> None:
    """Every label is known from the start; still, when a transaction at t is scored,
    the model has learned exactly the examples with event time <= t - delay."""
    events = _stream(6000)
    delay = 7 * DAY_MS
    lr = DelayedLearner(delay)
    for ts, tid, _, fraud in events:
        if fraud:
            lr.label(tid, ts)  # labels arrive immediately, before their transactions
    for ts, tid, x, _ in events:
        lr.score(ts, tid, x)
        expected = sum(1 for t, *_ in events if t <= ts - delay)
        assert lr.learned == expected
        assert all(p[0] > ts - delay for p in lr.pending)


def test_scores_zero_until_enough_examples_then_ranks_frauds_higher() -> None:
    events = _stream(20_000)
    lr = DelayedLearner(7 * DAY_MS)
    for ts, tid, _, fraud in events:
        if fraud:
            lr.label(tid, ts)
    fraud_p, legit_p = [], []
    for ts, tid, x, fraud in events:
        p = lr.score(ts, tid, x)
        if lr.learned < MIN_EXAMPLES:
            assert p == 0.0
        elif ts > 20 * DAY_MS:
            (fraud_p if fraud else legit_p).append(p)
    assert min(fraud_p) > max(legit_p), "large amounts were all fraud: perfectly separable"
    # the state is the recovery snapshot: a restored learner scores the same
    clone = pickle.loads(pickle.dumps(lr))
    assert clone.score(31 * DAY_MS, "n1", _x(700.0)) == lr.score(31 * DAY_MS, "n1", _x(700.0))


def test_flow_uses_labels_only_after_the_delay(settings: Settings) -> None:
    """Through build_flow: all labels are sent up front, yet learned_p stays 0 until
    MIN_EXAMPLES transactions are older than the delay, and it is on every row."""
    s = settings.model_copy(update={"label_delay_days": 1.0})
    rng = random.Random(3)
    events, labels = [], []
    per_day = 1500
    for i in range(5 * per_day):
        minute = i * 24 * 60 // per_day
        fraud = rng.random() < 0.05
        amount = 700.0 if fraud else round(rng.uniform(5, 80), 2)
        user = f"u{i % 300}"
        events.append(
            txn_bytes(
                minute,
                txn_id=f"t{i}",
                user_id=user,
                card_id=f"c{user}",
                merchant_id=f"m{i % 50}",
                amount=amount,
            )
        )
        if fraud:
            labels.append(label_json(f"m{i % 50}", T0 + timedelta(minutes=minute), f"t{i}"))
    rows: list = []
    flow = build_flow(
        s,
        TestingSource(events, batch_size=100),
        TestingSink([]),
        TestingSink(rows),
        TestingSink([]),
        clock=fixed_clock,
        labels=TestingSource(labels, batch_size=1000),
    )
    run_main(flow)
    assert len(rows) == len(events)
    by_id = {r.txn.txn_id: r for r in rows}
    day1 = [by_id[f"t{i}"] for i in range(per_day)]
    assert all(r.features["learned_p"] == 0.0 for r in day1), "nothing is older than 1 day"
    late = [by_id[f"t{i}"] for i in range(4 * per_day, 5 * per_day)]
    frauds = [r.features["learned_p"] for r in late if r.txn.amount == 700.0]
    legit = [r.features["learned_p"] for r in late if r.txn.amount != 700.0]
    pairs = sum(f > g for f in frauds for g in legit) / (len(frauds) * len(legit))
    assert pairs > 0.8, f"AUC of learned_p on the last day {pairs:.2f}"
    assert all(r.model_version.endswith("+lr-v2") for r in rows)
    assert any(x.code == "learned_pattern" for r in late for x in r.reasons)


def test_analyst_verdicts_are_labels_for_the_model_only() -> None:
    from datetime import UTC, datetime

    from dataflows.detection.merchants import MerchantLabel, parse_label
    from schemas.scored import DeadLetter, Review, encode_review

    at = datetime(2026, 3, 3, tzinfo=UTC)

    def review(verdict: str) -> bytes:
        return encode_review(Review("a1", "t9", "u1", verdict, "ana", None, at))

    label = parse_label(review("confirmed_fraud"), fixed_clock)
    assert label == MerchantLabel("", at.timestamp() * 1000.0, "t9")
    assert parse_label(review("false_positive"), fixed_clock) is None
    bad = parse_label(b'{"verdict": "confirmed_fraud", "schema_version": 9}', fixed_clock)
    assert isinstance(bad, DeadLetter) and "schema_version" in bad.error_message


def test_each_rule_contribution_is_an_input_of_its_own() -> None:
    from dataflows.detection.learner import learner_input
    from schemas.scored import Reason

    reasons = (Reason("velocity", "6 in 1 min", 0.6), Reason("compromised_merchant", "m", 0.3))
    x = dict(zip(LEARNER_FEATURES, learner_input({"amount_usd": 10.0}, 0.72, reasons), strict=True))
    assert (x["rule_velocity"], x["rule_compromised_merchant"], x["risk"]) == (0.6, 0.3, 0.72)
    assert x["rule_card_testing"] == 0.0 and x["amount_usd"] == 10.0
    none = learner_input({}, 0.0)
    assert len(none) == len(LEARNER_FEATURES) and not any(none)
