"""The feedback loop's second leg: an online supervised model from delayed labels."""

from __future__ import annotations

import pickle
import random
from datetime import timedelta
from typing import Any

import numpy as np
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.detection.learner import LEARNER_FEATURES, MIN_EXAMPLES, DelayedLearner, finish
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
    # The online model alone: the booster bins each input into at most 255 quantile bins,
    # one of which may straddle the gap between the classes (its ranking is checked in
    # test_booster_generation_changes_on_retrain_boundaries).
    lr = DelayedLearner(7 * DAY_MS, retrain_ms=0)
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
    # The booster (refitted at each UTC midnight once 50 labelled frauds are older than
    # the delay) names its generation on the rows it scored; before it, the online model.
    tags = {r.txn.txn_id: r.model_version.split("+lr-v3")[1] for r in rows}
    assert all("+lr-v3" in r.model_version for r in rows)
    by_period: dict[int, list[str]] = {}
    for r in rows:
        by_period.setdefault(int(r.txn.ts.timestamp() // 86_400), []).append(tags[r.txn.txn_id])
    expected = ["", "", "", "+gbm-g1", "+gbm-g2", "+gbm-g3"]
    seq = [by_period[d] for d in sorted(by_period)]
    assert [max(set(g), key=g.count) for g in seq] == expected
    for k, g in enumerate(seq):
        # The learner's stream time is the newest event time it has seen: a row that
        # arrives after a later-stamped one past the boundary gets the newer booster.
        assert set(g) <= set(expected[k : k + 2]), f"period {k}: {sorted(set(g))}"
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


def _gbm_stream(n: int, days: float, seed: int = 5) -> list[tuple[float, str, tuple, bool]]:
    """n events over ``days``; frauds (5 %) have large amounts; input 1 is the event
    time in days, so a fit's training rows tell when their transactions happened."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = i * days * DAY_MS / n
        fraud = rng.random() < 0.05
        amount = rng.uniform(500, 900) if fraud else rng.uniform(5, 200)
        out.append((ts, f"t{i}", (amount, ts / DAY_MS, *([0.0] * (WIDTH - 2))), fraud))
    return out


def test_booster_fits_never_see_a_label_before_its_delay(monkeypatch: Any) -> None:
    """Labels arrive with their transactions, yet every fit (at a day boundary) trains on
    exactly the transactions with event time <= stream time - delay, labelled as the
    online model learned them; a label that arrives after its delay is never used."""
    from dataflows.detection import gbm, learner

    fits: list[tuple[float, np.ndarray, np.ndarray]] = []
    real = gbm.fit_gbm

    def spy(history: gbm.LabelledHistory, width: int) -> gbm.Booster:
        x, y, _ = history.dataset(width)
        fits.append((lr.now_ms, x[:, 1].astype(float), y))
        return real(history, width)

    monkeypatch.setattr(learner, "fit_gbm", spy)
    events = _gbm_stream(8000, 16)
    delay = 3 * DAY_MS
    lr = DelayedLearner(delay, retrain_ms=DAY_MS)
    late = {tid for ts, tid, _, fraud in events if fraud and 8 * DAY_MS < ts <= 10 * DAY_MS}
    for ts, tid, x, fraud in events:
        if fraud and tid not in late:
            lr.label(tid, ts)
        lr.score(ts, tid, x)
        if tid == "t7000":  # labels of the last days come after their delay
            for t2, tid2, _, _ in events:
                if tid2 in late and t2 <= ts - delay:
                    lr.label(tid2, t2)
    assert len(fits) >= 8, "one fit per day once enough frauds are known"
    for now, when, y in fits:
        assert now % DAY_MS < 16 * DAY_MS / 8000, "fits at the first event of a day"
        assert when.max() * DAY_MS <= now - delay + 1e-3 * DAY_MS, "no example before its delay"
        seen = [t for t, _, _, _ in events if t <= now - delay]
        assert len(when) == len(seen), "every example whose delay has passed (none sampled out)"
        frauds = {round(float(d), 4) for d, f in zip(when, y, strict=True) if f}
        expected = {
            round(t / DAY_MS, 4)
            for t, tid, _, f in events
            if f and t <= now - delay and tid not in late
        }
        assert frauds == expected, "a fraud is learned as such only if labelled within its delay"


def test_booster_generation_changes_on_retrain_boundaries() -> None:
    events = _gbm_stream(6000, 12)
    lr = DelayedLearner(2 * DAY_MS, retrain_ms=DAY_MS)
    for ts, tid, _, fraud in events:
        if fraud:
            lr.label(tid, ts)
    gens, probs = [], []
    for ts, tid, x, fraud in events:
        step = lr.step(ts, tid, x)
        gens.append((int(ts // DAY_MS), step[2], step[1]))
        if step[2]:
            probs.append((finish([step])[0][0], fraud))
    f = [p for p, y in probs if y]
    g = [p for p, y in probs if not y]
    auc = sum((a > b) + 0.5 * (a == b) for a in f for b in g) / (len(f) * len(g))
    assert auc > 0.99, f"the booster ranks the large amounts first: AUC {auc:.3f}"
    per_day = {}
    for day, gen, model in gens:
        per_day.setdefault(day, set()).add((gen, id(model)))
    assert all(len(v) == 1 for v in per_day.values()), "one booster per retrain period"
    seq = [next(iter(per_day[d]))[0] for d in sorted(per_day)]
    first = next(i for i, g in enumerate(seq) if g)
    assert seq[:first] == [0] * first and seq[first:] == list(range(1, len(seq) - first + 1))
    from dataflows.detection.gbm import MIN_FRAUDS

    def ready(day: int) -> bool:
        old = [f for t, _, _, f in events if t <= day * DAY_MS - 2 * DAY_MS]
        return len(old) >= MIN_EXAMPLES and sum(old) >= MIN_FRAUDS

    assert first == next(d for d in range(12) if ready(d)), "waits for examples and frauds"
    # off: no booster ever
    off = DelayedLearner(2 * DAY_MS, retrain_ms=0)
    for ts, tid, x, _ in events:
        assert off.step(ts, tid, x)[2] == 0


def test_restored_learner_scores_and_refits_identically() -> None:
    """The snapshot (pickle) of a learner holding a fitted booster and its history gives
    the same scores afterwards, across later refits."""
    events = _gbm_stream(9000, 12)
    lr = DelayedLearner(2 * DAY_MS, retrain_ms=DAY_MS)
    for ts, tid, _, fraud in events:
        if fraud:
            lr.label(tid, ts)
    half = len(events) // 2
    for ts, tid, x, _ in events[:half]:
        lr.score(ts, tid, x)
    assert lr.generation >= 1
    blob = pickle.dumps(lr, protocol=pickle.HIGHEST_PROTOCOL)
    clone = pickle.loads(blob)
    gen = lr.generation
    a = [lr.score(ts, tid, x) for ts, tid, x, _ in events[half:]]
    b = [clone.score(ts, tid, x) for ts, tid, x, _ in events[half:]]
    assert a == b
    assert lr.generation == clone.generation > gen, "refits after the restore, same models"


def test_a_learner_kept_with_other_inputs_starts_its_booster_over() -> None:
    """A snapshot from before lr-v3 holds examples of the old width: its booster history
    is dropped (a fit on mixed widths would fail), the online model starts afresh."""
    from dataflows.detection import gbm
    from dataflows.detection.learner import upgrade
    from schemas.settings import load_settings

    old = DelayedLearner(7 * 86_400_000.0, retrain_ms=86_400_000.0)
    old.history = gbm.LabelledHistory()
    for i in range(5):
        old.history.add(i * 1000.0, (1.0, 2.0, 3.0), i % 2 == 0)
    old.gbm = object()
    new = upgrade(old, load_settings())
    assert new.gbm is None and new.history is not None and new.history.width() is None
    assert len(new.model.weights) == len(LEARNER_FEATURES)
    kept = DelayedLearner(7 * 86_400_000.0, retrain_ms=86_400_000.0)
    kept.history = gbm.LabelledHistory()
    kept.history.add(0.0, tuple([0.5] * len(LEARNER_FEATURES)), True)
    assert upgrade(kept, load_settings()).history.width() == len(LEARNER_FEATURES)


def test_a_background_fit_never_pauses_the_step_and_is_swapped_in_when_done(
    monkeypatch: Any,
) -> None:
    """With ``background``, the boundary only starts the fit: the step returns at once
    with the booster in force, the new generation arrives at the first batch after the
    fit ends, and a learner pickled mid-fit refits after its restore."""
    import threading
    import time

    from dataflows.detection import gbm, learner

    release = threading.Event()
    real = gbm.fit_arrays

    def slow(*data: Any) -> gbm.Booster:
        release.wait(10)
        return real(*data)

    monkeypatch.setattr(learner, "fit_arrays", slow)
    lr = DelayedLearner(0.0, retrain_ms=86_400_000.0, background=True)
    rng = random.Random(4)
    width = len(LEARNER_FEATURES)
    for i in range(3000):  # enough examples and frauds for a fit, all before day 1
        x = tuple(rng.random() for _ in range(width))
        if i % 20 == 0:
            lr.label(f"t{i}", i * 10.0)
        lr.step(i * 10.0, f"t{i}", x)
    t0 = time.perf_counter()
    lr.step(86_400_001.0, "late", tuple([0.5] * width))  # past the boundary: fit starts
    assert time.perf_counter() - t0 < 1.0 and lr.fit_due and lr.gbm is None
    frozen = pickle.loads(pickle.dumps(lr))  # a snapshot mid-fit
    release.set()
    deadline = time.monotonic() + 60
    while lr.gbm is None and time.monotonic() < deadline:
        time.sleep(0.05)
        lr.step(86_400_002.0, "next", tuple([0.5] * width))
    assert lr.gbm is not None and lr.generation == 1 and not lr.fit_due
    assert frozen.fit_due and frozen.gbm is None
    while frozen.gbm is None and time.monotonic() < deadline:
        frozen.step(86_400_003.0, "after-restore", tuple([0.5] * width))
        time.sleep(0.05)
    assert frozen.gbm is not None and frozen.generation == 1
