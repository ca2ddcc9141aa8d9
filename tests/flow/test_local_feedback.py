"""The ``local`` feedback topology: merchant risk and the learner finished on every worker.

What it must keep from the funnel: merchant risk exactly, labels never used before their
delay, and a booster per UTC day.  What it adds: which model scores a row depends on
event time only (with ``feedback_wait_s``), so 1 and 2 workers and any batch size give the
same scores, and no scored transaction is re-keyed.
"""

from __future__ import annotations

import math
import pickle
import random
from datetime import timedelta
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from dataflows.detection import feedback
from dataflows.detection.feedback import (
    QUIET_GRACE_S,
    WALK_DAYS,
    DayExamples,
    FeedbackView,
    MerchantDay,
    MerchantTotal,
    MerchantTotals,
    ModelUpdate,
    ShardFeedback,
    TotalsThrough,
    Trainer,
    _count,
    _DaySample,
    _examples_due,
    _merchant_days_due,
    _predict,
    fitting,
    on_merchant_days,
    on_trainer,
    quiet_grace,
    totals_waiting,
    trainer_waiting,
)
from dataflows.detection.learner import LEARNER_FEATURES
from dataflows.detection.merchants import MerchantLabel, label_json
from dataflows.flow import StepLogic, build_flow
from schemas.settings import Settings
from schemas.units import DAY_MS
from tests.conftest import T0, fixed_clock, txn_bytes

PER_DAY = 1500


def _stream(days: int = 5, seed: int = 3) -> tuple[list[bytes], list[bytes]]:
    """Users buying from 50 merchants; 5 % frauds of 700 USD, labelled up front; merchant
    m7 goes bad on day 2 (every purchase there a fraud)."""
    rng = random.Random(seed)
    events, labels = [], []
    for i in range(days * PER_DAY):
        minute = i * 24 * 60 // PER_DAY
        m = i % 50
        fraud = rng.random() < 0.05 or (m == 7 and i >= 2 * PER_DAY)
        amount = 700.0 if fraud else round(rng.uniform(5, 80), 2)
        user = f"u{i % 300}"
        events.append(
            txn_bytes(
                minute,
                txn_id=f"t{i}",
                user_id=user,
                card_id=f"c{user}",
                merchant_id=f"m{m}",
                amount=amount,
            )
        )
        if fraud:
            labels.append(label_json(f"m{m}", T0 + timedelta(minutes=minute), f"t{i}"))
    return events, labels


def _run(
    s: Settings, events: list[bytes], labels: list[bytes], batch: int = 100, workers: int = 1
) -> dict[str, Any]:
    rows: list[Any] = []
    flow = build_flow(
        s,
        TestingSource(events, batch_size=batch),
        TestingSink([]),
        TestingSink(rows),
        TestingSink([]),
        clock=fixed_clock,
        labels=TestingSource(labels, batch_size=1000),
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert len(rows) == len(events)
    return {r.txn.txn_id: r for r in rows}


@pytest.fixture
def local(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"label_delay_days": 1.0, "feedback_topology": "local", "feedback_wait_s": 3600}
    )


LAST_DAY = 5 * PER_DAY - PER_DAY // 2
"""The first event of the stream's last UTC day (it starts at noon)."""


def _digest(rows: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Scores of every row before the last day.  Rows still waiting when a finite input
    ends take the newest model published by then, which depends on scheduling: only
    the last day's rows wait that long here (the next day's models come with the next
    day's events)."""
    return {
        k: (r.risk_score, r.decision, r.model_version, r.features["learned_p"])
        for k, r in rows.items()
        if int(k[1:]) < LAST_DAY
    }


def test_scores_depend_on_event_time_only_not_on_workers_or_batches(local: Settings) -> None:
    """1 worker in batches of 100, 2 workers, and batches of 7: the same scores, and every
    row of a UTC day scored by that day's booster (fitted at midnight on the days whose
    labels the delay has released), none by a later one."""
    events, labels = _stream()
    one = _run(local, events, labels)
    assert _digest(_run(local, events, labels, workers=2)) == _digest(one)
    assert _digest(_run(local, events, labels, batch=7)) == _digest(one)
    by_day: dict[int, set[str]] = {}
    for r in one.values():
        tag = r.model_version.split("+lr-v3")[1]
        by_day.setdefault(int(r.txn.ts.timestamp() // 86_400), set()).add(tag)
    # Six UTC days (the stream starts at noon); the first booster needs 50 frauds.
    assert [by_day[d] for d in sorted(by_day)][:-1] == [
        {""},
        {""},
        {""},
        {"+gbm-g1"},
        {"+gbm-g2"},
    ] and by_day[max(by_day)] <= {"+gbm-g2", "+gbm-g3"}
    late = [r for k, r in one.items() if int(k[1:]) >= 4 * PER_DAY]
    frauds = [r.features["learned_p"] for r in late if r.txn.amount == 700.0]
    legit = [r.features["learned_p"] for r in late if r.txn.amount != 700.0]
    pairs = sum(f > g for f in frauds for g in legit) / (len(frauds) * len(legit))
    assert pairs > 0.8, f"AUC of learned_p on the last day {pairs:.2f}"


def test_merchant_risk_is_the_funnels_exactly(settings: Settings) -> None:
    """Without the learner, both topologies give every row the same merchant features,
    risk and decision: the totals a row reads closed a delay before it."""
    s = settings.model_copy(update={"label_delay_days": 1.0, "learner_weight": 0.0})
    events, labels = _stream(days=4)
    funnel = _run(s, events, labels)
    loc = s.model_copy(update={"feedback_topology": "local", "feedback_wait_s": 3600})
    local = _run(loc, events, labels, workers=2)
    keys = [f"merchant_{k}_{n}d" for k in ("frauds", "risk") for n in (1, 7, 30)]
    for k, r in funnel.items():
        o = local[k]
        assert [o.features[f] for f in keys] == [r.features[f] for f in keys], k
        assert (o.risk_score, o.decision) == (r.risk_score, r.decision), k
    bad = [r for k, r in funnel.items() if r.txn.merchant_id == "m7" and int(k[1:]) > 3.5 * PER_DAY]
    assert bad and all(any(x.code == "compromised_merchant" for x in r.reasons) for r in bad), (
        "the bad merchant is caught once its labels are a delay old"
    )


def test_no_row_is_scored_by_a_model_that_saw_a_label_before_its_delay(local: Settings) -> None:
    """Every booster generation is fitted on days that ended a delay before the first row
    it scores (the fit's last day is in the log of ModelUpdate.through)."""
    events, labels = _stream()
    rows = _run(local, events, labels)
    first: dict[str, float] = {}
    for r in rows.values():
        tag = r.model_version.split("+lr-v3")[1]
        ts = r.txn.ts.timestamp() * 1000.0
        first[tag] = min(first.get(tag, ts), ts)
    # g1 is fitted on days 0..1 (day 2's labels are not all a day old until day 3 ends):
    # its first row is at or after the start of day 3.
    day0 = T0.timestamp() * 1000.0 // DAY_MS * DAY_MS
    assert first["+gbm-g1"] >= day0 + 3 * DAY_MS
    assert first["+gbm-g2"] >= day0 + 4 * DAY_MS


def test_a_shard_sample_keeps_the_same_genuine_examples_in_any_order() -> None:
    items = [(random.Random(i).getrandbits(32), f"t{i}", (float(i),)) for i in range(500)]
    a, b = _DaySample(), _DaySample()
    for p, t, x in items:
        a.offer(p, t, x, 50)
    for p, t, x in reversed(items):
        b.offer(p, t, x, 50)
    assert sorted(a.heap) == sorted(b.heap) and a.seen == b.seen == 500
    assert sorted(-p for p, _, _ in a.heap) == sorted(p for p, _, _ in items)[:50]


def _day(shard: str, day: int, frauds: int, genuine: int, seed: int = 0) -> DayExamples:
    rng = random.Random(seed)
    w = len(LEARNER_FEATURES)

    def x(v: float) -> tuple[float, ...]:
        return tuple([v] + [rng.random() for _ in range(w - 1)])

    return DayExamples(
        shard,
        day,
        tuple(x(5.0 + rng.random()) for _ in range(frauds)),
        tuple((rng.getrandbits(32), x(rng.random())) for _ in range(genuine)),
        genuine,
    )


def test_the_trainer_waits_for_every_shard_then_refits_and_publishes() -> None:
    t = Trainer(shards=2, delay_ms=DAY_MS)
    days = [
        _day(shard, day, 30, 1500, seed)
        for seed, (shard, day) in enumerate([("a", 9), ("b", 9), ("a", 10), ("b", 10)])
    ]
    out = on_trainer(t, days)
    assert t.complete == 10 and t.generation == 1  # both shards sent day 10: a fit
    # One model per day learned (day 9 alone is below MIN_EXAMPLES: no booster yet).
    assert [(u.generation, u.through) for u in out] == [(0, 9.0), (1, 10.0)]
    assert on_trainer(t, [_day("a", 11, 5, 100, 3)]) == []  # b has not sent day 11
    assert t.complete == 10
    assert on_trainer(t, [_day("a", 12, 5, 100, 4)]) == []  # b may just be a little behind
    out = on_trainer(t, [_day("a", 13, 5, 100, 5)])  # QUIET_DAYS later: b is quiet
    assert t.complete == 11 and out[0].through == 11.0 and out[0].generation == 2
    # Restored from a snapshot (a new object), it publishes what it holds once.
    back = pickle.loads(pickle.dumps(t))
    again = on_trainer(back, [])
    assert [(u.generation, u.through) for u in again] == [(2, 11.0)]
    assert on_trainer(back, []) == []


def test_a_shard_days_behind_is_waited_for_before_it_counts_as_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Partitions read unevenly put a shard days behind for a moment: its day is
    published whole once it catches up (not without its counts, at too high a fraud
    rate), and only a shard still silent after the grace is skipped."""
    now = [0.0]
    monkeypatch.setattr(feedback, "_clock", lambda: now[0])
    s = Settings(feedback_wait_s=60.0)
    grace = quiet_grace(s)
    assert grace == QUIET_GRACE_S == quiet_grace(Settings())
    assert quiet_grace(Settings(feedback_wait_s=2.0)) == 2.0, "never longer than rows wait"

    def days(shard: str, *ds: int) -> list[MerchantDay]:
        return [MerchantDay(shard, "0", d, (("m1", 1),)) for d in ds]

    agg = MerchantTotals(shards=2)
    on_merchant_days(agg, days("a", 100) + days("b", 100), s)
    assert agg.complete == 100
    assert on_merchant_days(agg, days("a", 101, 102, 103), s) == [], "b may be behind"
    step = StepLogic(agg, lambda a, b: on_merchant_days(a, b, s), False, wake=totals_waiting)
    assert step.notify_at() is not None, "the grace runs out with no item coming"
    now[0] = grace / 2
    out = on_merchant_days(agg, days("b", 101), s)
    assert out == [MerchantTotal("m1", 101, 2, 0), TotalsThrough("0", 101)], "whole"
    assert on_merchant_days(agg, days("a", 104), s) == []
    now[0] = grace + 1  # a sent day 103 a grace ago: only day 101 may skip b (it is whole)
    assert on_merchant_days(agg, [], s) == []
    now[0] = 1.5 * grace + 1  # and day 104 a grace ago, b still silent: b is quiet
    out, _ = step.on_notify()
    assert out == [MerchantTotal("m1", 102, 1, 0), TotalsThrough("0", 102)]

    t = Trainer(shards=2, delay_ms=DAY_MS)
    now[0] = 0.0
    on_trainer(
        t, [_day("a", 9, 5, 100, 1), _day("a", 10, 5, 100, 2), _day("a", 11, 5, 100, 3)], grace
    )
    assert t.complete is None, "b may be behind"
    now[0] = grace
    assert [u.through for u in on_trainer(t, [], grace)] == [9.0]


def test_a_background_fit_leaves_the_trainer_free_and_is_published_when_done() -> None:
    """With learner_fit_background the trainer's worker (which also scores) does not
    pause for a fit: the day's update comes at once with the models in force, the step
    wakes while the fit runs, and the booster, the same as one fitted in the step, is
    published as a new generation once it ends."""
    days = [_day("a", d, 30, 1500, d) for d in (9, 10)]
    t = Trainer(shards=1, delay_ms=DAY_MS)
    out = on_trainer(t, days, background=True)
    assert [(u.generation, u.through) for u in out] == [(0, 9.0), (0, 10.0)]
    step = StepLogic(t, on_trainer, False, wake=trainer_waiting)
    assert fitting(t) and step.notify_at() is not None, "woken to adopt the fit"
    feedback._TRAINER_FITS[id(t)][1].result(timeout=120)
    done, _ = step.on_notify()
    assert [(u.generation, u.through) for u in done] == [(1, 10.0)]
    assert not fitting(t) and step.notify_at() is None
    inline = Trainer(shards=1, delay_ms=DAY_MS)
    same = on_trainer(inline, days)[-1]
    xs = [x for d in days for x in d.frauds[:5]]
    assert _predict(done[0], xs) == _predict(same, xs)


def test_merchant_totals_publish_a_day_once_every_shard_has_sent_it() -> None:
    """Counts of two shards and a label: no totals until both shards sent the day, then
    its totals and how far the complete days reach; a restored aggregator republishes."""
    s = Settings()
    agg = MerchantTotals(shards=2)
    label = MerchantLabel("m1", 100 * DAY_MS + 5, "t1")
    verdict = MerchantLabel("", 100 * DAY_MS, "t2")  # an analyst verdict: no merchant
    first = on_merchant_days(agg, [MerchantDay("a", "3", 100, (("m1", 3),)), label, verdict], s)
    assert first == [], "b may be a little behind (see the test above for a quiet shard)"
    out = on_merchant_days(agg, [MerchantDay("b", "3", 100, (("m1", 4), ("m2", 1)))], s)
    assert out == [
        MerchantTotal("m1", 100, 7, 1),
        MerchantTotal("m2", 100, 1, 0),
        TotalsThrough("3", 100),
    ]
    # A late count on a complete day is published at once, alone.
    late = on_merchant_days(agg, [MerchantDay("a", "3", 100, (("m2", 1),))], s)
    assert late == [MerchantTotal("m2", 100, 2, 0)]
    back = pickle.loads(pickle.dumps(agg))
    assert set(on_merchant_days(back, [], s)) == {
        MerchantTotal("m1", 100, 7, 1),
        MerchantTotal("m2", 100, 2, 0),
        TotalsThrough("3", 100),
    }
    view = FeedbackView()
    view.aggregators = 2
    view.apply([*out, ModelUpdate(None, None, 0, 99.0), ModelUpdate(None, None, 0, 98.0)])
    assert view.merchants["m1"].txns == {100: 7} and view.model.through == 99.0
    assert view.merchants_through == -math.inf, "one of two aggregator keys reported"
    view.apply([TotalsThrough("5", 101)])
    assert view.merchants_through == 100


def test_a_jump_in_stream_time_costs_at_most_the_walked_days() -> None:
    """Days far ahead of the data (a gap, or an event stamped centuries ahead) are not
    learned and published one by one: only days with data and the last WALK_DAYS."""
    t = Trainer(shards=1, delay_ms=DAY_MS)
    on_trainer(t, [_day("a", 9, 30, 1500, 1), _day("a", 10, 30, 1500, 2)])
    assert (t.complete, t.generation) == (10, 1)
    out = on_trainer(t, [_day("a", 500, 60, 1500, 3)])  # a gap of 489 days
    assert [u.through for u in out] == [float(d) for d in range(500 - WALK_DAYS + 1, 501)]
    assert t.generation == 2, "one refit for day 500's examples, none per empty day"
    far = 500 + 100_000
    out = on_trainer(t, [_day("a", far, 60, 1500, 4)])
    assert t.complete == far and len(out) == WALK_DAYS
    assert t.generation == 3


def test_a_shard_sends_at_most_the_walked_days_of_a_jump(settings: Settings) -> None:
    """A shard whose stream time jumps 100,000 days sends the days holding data and
    the last WALK_DAYS (every aggregator key), not a bundle per day of the gap."""
    fb = ShardFeedback()
    for day in (100, 101):
        _count(fb, "m1", day * DAY_MS + 5.0)
    fb.now_ms = 100 * DAY_MS + 1.0
    assert _merchant_days_due(fb, settings) == []  # day 100 is not closed yet
    fb.pending = [(100 * DAY_MS + 5.0, "t1", (1.0,))]
    fb.now_ms = 100_101 * DAY_MS
    sent = _merchant_days_due(fb, settings)
    days = sorted({m.day for m in sent})
    assert days[:2] == [100, 101] and len(days) == 2 + WALK_DAYS
    assert len(sent) == len(days) * settings.shards
    examples = _examples_due(fb, settings, math.inf)
    assert examples[0].day == 100 and len(examples) == 1 + WALK_DAYS


def test_an_event_stamped_centuries_ahead_is_scored_and_stops_nothing(local: Settings) -> None:
    """The last event time allowed (2299-12-31) on one user, on 2 workers: the flow
    scores every event in about the time of the stream alone."""
    import time

    events, labels = _stream(days=3)
    far = txn_bytes(0, txn_id="far", user_id="u1", merchant_id="m1", ts="2299-12-31T23:59:59Z")
    t0 = time.perf_counter()
    plain = _run(local, events, labels)
    took = time.perf_counter() - t0
    t0 = time.perf_counter()
    mixed = _run(local, [*events[:1000], far, *events[1000:]], labels, workers=2)
    assert time.perf_counter() - t0 < 3 * took + 10
    assert mixed["far"].txn.ts.year == 2299
    assert len(mixed) == len(plain) + 1
