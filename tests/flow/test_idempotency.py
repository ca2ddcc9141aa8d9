"""Duplicate input (same txn_id) returns its first decision and touches no state."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from dataflows.detection.idempotency import FinalDecisions, compact, on_final
from dataflows.detection.state import MAX_SEEN, UserState
from dataflows.flow import build_flow
from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.scored import Decision, Reason, Replayed, ScoredTransaction
from schemas.settings import Settings
from tests.conftest import fixed_clock, txn_bytes

Runner = Callable[[Any], None]


def _two_workers(flow: Any) -> None:
    cluster_main(flow, [], 0, worker_count_per_proc=2)


def run(
    s: Settings, events: list[bytes], runner: Runner, batch: int, labels: list[bytes] | None = None
) -> tuple[list[ScoredTransaction], list[Decision], list[Any]]:
    rows: list[ScoredTransaction] = []
    decisions: list[Decision] = []
    alerts: list[Any] = []
    flow = build_flow(
        s,
        TestingSource(events, batch_size=batch),
        TestingSink(alerts),
        TestingSink(rows),
        TestingSink([]),
        clock=fixed_clock,
        labels=None if labels is None else TestingSource(labels),
        decision_sink=TestingSink(decisions),
    )
    runner(flow)
    return rows, decisions, alerts


@pytest.fixture(scope="module")
def stream() -> list[bytes]:
    cfg = GeneratorConfig(seed=11, users=60, fraud_rate=0.2)
    return [v for _, v in event_stream(cfg, 1500)]


def with_duplicates(events: list[bytes]) -> list[bytes]:
    """Every 5th event sent again right after the next one (a client retry), and every
    7th again at once (a producer retry, same batch)."""
    out: list[bytes] = []
    for i, e in enumerate(events):
        out.append(e)
        if i % 7 == 0:
            out.append(e)
        if i % 5 == 1:
            out.append(events[i - 1])
    return out


@pytest.mark.parametrize("batch", [1, 50, 1000])
@pytest.mark.parametrize("runner", [run_main, _two_workers], ids=["run_main", "cluster_2"])
@pytest.mark.parametrize("feedback", [False, True], ids=["plain", "feedback"])
def test_duplicates_get_their_first_decision_and_change_no_state(
    settings: Settings, stream: list[bytes], batch: int, runner: Runner, feedback: bool
) -> None:
    labels = [] if feedback else None
    rows, decisions, alerts = run(settings, stream, runner, batch, labels)
    dup_rows, dup_decisions, dup_alerts = run(
        settings, with_duplicates(stream), runner, batch, labels
    )
    key = lambda r: r.txn.txn_id  # noqa: E731
    # Rows and alerts are exactly those of the stream without duplicates: no window,
    # profile or model saw a duplicate, and nothing is stored or alerted twice.
    assert sorted(dup_rows, key=key) == sorted(rows, key=key)
    assert sorted(dup_alerts, key=lambda a: a.txn_id) == sorted(alerts, key=lambda a: a.txn_id)
    assert sum(r.flagged for r in rows) > 5
    # One decision per input; every duplicate's equals its first's, field for field.
    assert len(decisions) == len(stream)
    assert len(dup_decisions) == len(with_duplicates(stream))
    first = {d.txn_id: d for d in decisions}
    assert len(first) == len(stream)
    assert all(d == first[d.txn_id] for d in dup_decisions)


def test_a_retry_is_not_counted_in_velocity(settings: Settings) -> None:
    """Six retries of one purchase within a minute would be a velocity hit if counted."""
    events = [txn_bytes(0, txn_id="pay-1")] * 7 + [txn_bytes(1, txn_id="pay-2")]
    rows, decisions, _ = run(settings, events, run_main, 1)
    assert [r.txn.txn_id for r in rows] == ["pay-1", "pay-2"]
    assert rows[1].features["cnt_1m"] == 1 and rows[1].features["cnt_10m"] == 2
    assert len(decisions) == 8 and len({d for d in decisions[:7]}) == 1


def test_a_changed_retry_still_gets_the_first_decision(settings: Settings) -> None:
    """Same txn_id, different amount: the first answer stands, the change is not scored."""
    events = [txn_bytes(0, txn_id="pay-1"), txn_bytes(0, txn_id="pay-1", amount=9000)]
    rows, decisions, _ = run(settings, events, run_main, 1)
    assert len(rows) == 1 and rows[0].txn.amount == 42.5
    assert decisions[0] == decisions[1] and decisions[0].decision == "approve"


def test_user_state_remembers_a_bounded_window_and_old_pickles_load() -> None:
    st = UserState()
    st.last_ts = 10_000_000.0
    for i in range(MAX_SEEN + 10):
        st.remember(f"t{i}", (10_000_000.0, "approve", 0.0, (), "v", fixed_clock()), 3600_000)
    assert len(st.seen) == MAX_SEEN and "t9" not in st.seen and f"t{MAX_SEEN + 9}" in st.seen
    st.last_ts = 20_000_000.0  # the newest event moved on: older ids fall out
    st.remember("new", (20_000_000.0, "review", 0.5, (), "v", fixed_clock()), 3600_000)
    assert list(st.seen) == ["new"]
    assert pickle.loads(pickle.dumps(st)) == st
    old = UserState.__new__(UserState)
    old.__setstate__(st.__getstate__()[:8])  # a snapshot taken before ``seen`` existed
    assert old.seen == {} and old.last_ts == st.last_ts
    cp = st.checkpoint()
    st.seen["x"] = st.seen["new"]
    st.restore(cp)
    assert list(st.seen) == ["new"]


def test_final_step_answers_replays_with_the_final_decision(settings: Settings) -> None:
    """With the feedback loop the decision can change after the score step: the replay
    takes the final one when its first went before it, else keeps its own."""
    rows, _, _ = run(settings, [txn_bytes(0, txn_id="a"), txn_bytes(1, txn_id="b")], run_main, 1)
    a, b = rows
    final_a = replace(a, decision="block", risk_score=0.9, reasons=(Reason("x", "y", 0.9),))
    replay = Replayed(**{f: getattr(a, f) for f in a.__dataclass_fields__})
    replay_b = Replayed(**{f: getattr(b, f) for f in b.__dataclass_fields__})
    out = on_final(FinalDecisions(), [final_a, replay, replay_b])
    assert Decision.from_scored(out[1]) == Decision.from_scored(final_a)
    assert type(out[1]) is Replayed and out[2] is replay_b
    mem = FinalDecisions(capacity=2)
    on_final(mem, [a, b, final_a, replace(b, txn=replace(b.txn, txn_id="c"))])
    assert list(mem.decisions) == ["b", "c"] and mem.decisions["b"] == compact(0.0, b)
