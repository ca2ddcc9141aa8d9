"""The bench's plain loop runs the flow's detection: on a generated stream it gives the
same scored rows and alerts as ``build_flow`` (so the framework's cost is measured
against the same work, not a cheaper one)."""

from __future__ import annotations

from typing import Any

from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.bench.plain import BATCH, Outcome, PlainLoop, group_by_shard, run_memory
from dataflows.flow import build_flow, parse_message, shard_of
from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.scored import Alert, DeadLetter, ScoredTransaction
from schemas.settings import Settings
from tests.conftest import fixed_clock, txn_bytes


def _stream(n: int) -> list[bytes]:
    cfg = GeneratorConfig(seed=5, users=300, fraud_rate=0.05)
    return [v for _, v in event_stream(cfg, n)]


def _flow(
    s: Settings, events: list[Any]
) -> tuple[list[Alert], list[ScoredTransaction], list[DeadLetter]]:
    alerts: list[Alert] = []
    rows: list[ScoredTransaction] = []
    dlq: list[DeadLetter] = []
    flow = build_flow(
        s,
        TestingSource(events, batch_size=BATCH),
        TestingSink(alerts),
        TestingSink(rows),
        TestingSink(dlq),
        clock=fixed_clock,
    )
    run_main(flow)
    return alerts, rows, dlq


def _plain(s: Settings, events: list[Any]) -> Outcome:
    loop, total = PlainLoop(s, clock=fixed_clock), Outcome()
    for i in range(0, len(events), BATCH):
        out = loop.step(events[i : i + BATCH])
        total.rows += out.rows
        total.alerts += out.alerts
        total.dead += out.dead
    return total


def test_plain_loop_gives_the_flows_alerts_and_scores(settings: Settings) -> None:
    events = _stream(4000)
    # a duplicate and a malformed message: replayed and dead-lettered alike
    events = [*events[:1500], events[10], b"{not json", *events[1500:]]
    flow_alerts, flow_rows, flow_dead = _flow(settings, events)
    plain = _plain(settings, events)
    assert len(flow_alerts) > 20  # a stream that flags something, or nothing is compared
    assert sorted(plain.alerts, key=lambda a: a.txn_id) == sorted(
        flow_alerts, key=lambda a: a.txn_id
    )

    def scores(rows: list[ScoredTransaction]) -> dict[str, tuple[Any, ...]]:
        return {r.txn.txn_id: (r.risk_score, r.decision, r.reasons) for r in rows}

    assert len(plain.rows) == len(events) - 2
    assert scores(plain.rows) == scores(flow_rows)
    assert len(plain.dead) == 1
    assert [d.error_code for d in plain.dead] == [d.error_code for d in flow_dead]


def test_plain_loop_keeps_state_per_shard_across_batches(settings: Settings) -> None:
    """The same user's events in two batches reach one shard's state (the second sees
    the first: its velocity feature counts it)."""
    loop = PlainLoop(settings, clock=fixed_clock)
    first = loop.step([txn_bytes(0, txn_id="a", user_id="u1")])
    second = loop.step([txn_bytes(5, txn_id="b", user_id="u1")])
    assert list(loop.shards) == [shard_of("u1", settings.shards)]
    assert first.rows[0].features != second.rows[0].features
    assert len(loop.shards[shard_of("u1", settings.shards)].users) == 1


def test_group_by_shard_keeps_arrival_order(settings: Settings) -> None:
    raw = [txn_bytes(i, txn_id=f"t{i}", user_id=u) for i, u in enumerate("12131")]
    parsed = [
        p for r in raw if not isinstance(p := parse_message(r, 16_384, fixed_clock), DeadLetter)
    ]
    groups = group_by_shard(parsed, settings.shards)  # type: ignore[arg-type]
    assert sum(len(g) for g in groups.values()) == 5
    u1 = groups[shard_of("1", settings.shards)]
    assert [p[0].txn_id for p in u1 if p[0].user_id == "1"] == ["t0", "t2", "t4"]


def test_run_memory_hands_every_batch_to_the_sink(settings: Settings) -> None:
    events = _stream(2500)
    got: list[Outcome] = []
    seconds = run_memory(settings, events, got.append)
    assert seconds > 0
    assert [len(o.rows) + len(o.dead) for o in got] == [1000, 1000, 500]
