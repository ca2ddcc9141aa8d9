"""The bytewax ClickHouse sink: flow -> store equality, replays, batching, backpressure."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from bytewax.testing import TestingSink, run_main

from clickhouse import queries as q
from clickhouse.store import Store, migrate
from dataflows.connectors.chsink import ClickHouseSink, RetryPolicy, clickhouse_sink
from dataflows.connectors.local import IterSource
from dataflows.flow import build_flow
from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.errors import StoreError
from schemas.scored import ScoredTransaction
from schemas.settings import Settings
from tests.chserver import ChServer
from tests.conftest import fixed_clock
from tests.store import known

N_EVENTS = 4000


def _events() -> list[bytes]:
    cfg = GeneratorConfig(seed=5, users=150, fraud_rate=0.05)
    return [v for _, v in event_stream(cfg, N_EVENTS)] + [b"{not json", b"null"]


def _run(s: Settings, events: list[bytes], rows_sink: Any) -> list[Any]:
    alerts: list[Any] = []
    dlq: list[Any] = []
    flow = build_flow(
        s,
        IterSource(lambda: events, batch=300),
        TestingSink(alerts),
        rows_sink,
        TestingSink(dlq),
        clock=fixed_clock,
    )
    run_main(flow)
    assert len(dlq) == 2
    return alerts


def _figures(store: Store, lo: Any, hi: Any) -> dict[str, Any]:
    f = q.AlertFilter(lo, hi)
    return {
        "kpis": q.kpis(store, lo, hi),
        "series": q.volume_series(store, lo, hi, q.bucket_seconds(lo, hi)),
        "risk": q.risk_distribution(store, lo, hi),
        "rules": q.rule_hits(store, lo, hi),
        "top": q.top_flagged_users(store, lo, hi),
        "alerts": q.latest_alerts(store, f, 10_000).drop(columns=["created_at"]),
        "backlog": q.review_backlog(store, lo, hi),
    }


def test_flow_to_clickhouse_then_replay_changes_no_figure(store: Store, settings: Settings) -> None:
    s = settings.model_copy(
        update={
            "clickhouse_url": store.url,
            "clickhouse_database": store.database,
            "clickhouse_batch_rows": 500,
        }
    )
    events = _events()
    expected: list[ScoredTransaction] = []
    _run(s, events, TestingSink(expected))
    alerts = _run(s, events, clickhouse_sink(s))

    db = store.database
    ((n, uniq, usd, flagged, blocked),) = store.client.query(
        f"SELECT count(), uniqExact(txn_id), sum(amount_usd), countIf(decision != 'approve'),"
        f" countIf(decision = 'block') FROM {db}.transactions"
    ).result_rows
    assert n == uniq == len(expected) == N_EVENTS
    assert usd == pytest.approx(sum(r.features["amount_usd"] for r in expected))
    assert flagged == sum(r.flagged for r in expected) == len(alerts) > 20
    assert blocked == sum(r.decision == "block" for r in expected)
    stored_alerts = {
        a for (a,) in store.client.query(f"SELECT alert_id FROM {db}.alerts").result_rows
    }
    assert stored_alerts == {a.alert_id for a in alerts}

    lo, hi = q.data_bounds(store) or (None, None)
    assert lo is not None and hi is not None
    hi += timedelta(seconds=1)
    before = _figures(store, lo, hi)
    assert before["kpis"].txns == N_EVENTS

    store.client.command(f"OPTIMIZE TABLE {db}.transactions FINAL")
    store.client.command(f"SYSTEM STOP MERGES {db}.transactions")  # keep the duplicates
    _run(s, events, clickhouse_sink(s))  # a restart that replays everything
    ((raw,),) = store.client.query(f"SELECT count() FROM {db}.transactions").result_rows
    assert raw == 2 * N_EVENTS, "duplicates present and unmerged"
    after = _figures(store, lo, hi)
    # Sums may differ in the last bit: summation order depends on the parts read.
    assert asdict(after["kpis"]) == pytest.approx(asdict(before["kpis"]), rel=1e-12)
    for k in ("series", "risk", "rules", "top", "alerts", "backlog"):
        pd.testing.assert_frame_equal(after[k], before[k], obj=k)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _count(store: Store, table: str = "transactions") -> int:
    return store.client.query(f"SELECT count() FROM {store.database}.{table}").result_rows[0][0]


BACKGROUND = pytest.mark.parametrize("background", [True, False], ids=["thread", "inline"])


@BACKGROUND
def test_batches_by_size_time_and_epoch(store: Store, background: bool) -> None:
    clock = _Clock()
    sink = ClickHouseSink(
        store.url, store.database, rows=5, seconds=1.0, clock=clock, background=background
    )
    part = sink.build_part("rows", "clickhouse-0", None)
    rows = known.scored()

    def write(values: list) -> None:
        part.write_batch(values)
        part.wait()  # the background writer has inserted whatever was handed over

    write(rows[:3])
    assert _count(store) == 0, "3 rows < batch size, 0 s old: wait"
    write(rows[3:5])
    assert _count(store) == 5, "batch size reached"
    write(rows[5:6])
    clock.t = 0.5
    write([])
    assert _count(store) == 5
    clock.t = 1.2
    write([])
    assert _count(store) == 6, "oldest row older than batch_seconds"
    part.write_batch(rows[6:])
    part.snapshot()  # no wait(): snapshot alone guarantees the rows are in
    assert _count(store) == 7, "every epoch's rows are written before its snapshot"
    assert _count(store, "alerts") == 3
    part.close()


@BACKGROUND
def test_schema_error_is_raised_naming_the_table(store: Store, background: bool) -> None:
    sink = ClickHouseSink(
        store.url, f"missing_{uuid.uuid4().hex[:6]}", rows=1, seconds=1.0, background=background
    )
    part = sink.build_part("rows", "clickhouse-0", None)
    with pytest.raises(
        StoreError, match=r"insert of 1 rows into .*missing_\w+\.transactions failed"
    ):
        part.write_batch(known.scored()[:1])
        part.snapshot()  # the epoch cannot complete: the worker sees the failure


@BACKGROUND
def test_clickhouse_down_applies_backpressure_and_loses_nothing(
    tmp_path: Path, background: bool
) -> None:
    """While the server is away the worker blocks (in write_batch, or at the latest in
    the epoch's snapshot) and retries; once it is back every row is there, none twice."""
    with ChServer(tmp_path / "ch") as srv:
        store = Store(srv.url, "fraud")
        migrate(store, 3650)
        part = ClickHouseSink(
            srv.url,
            "fraud",
            rows=3,
            seconds=60.0,
            policy=RetryPolicy(initial_s=0.05, max_s=0.2),
            background=background,
        ).build_part("rows", "clickhouse-0", None)
        rows = known.scored()
        part.write_batch(rows[:3])
        part.wait()
        assert _count(store) == 3
        srv.stop()
        done = threading.Event()

        def epoch() -> None:
            part.write_batch(rows[3:])
            part.snapshot()
            done.set()

        t = threading.Thread(target=epoch, daemon=True)
        t.start()
        time.sleep(1.5)
        assert not done.is_set(), "the write must block while ClickHouse is down"
        srv.start()
        assert done.wait(30), "the write must finish once ClickHouse is back"
        part.close()
        store.reset()
        assert _count(store) == len(rows)
        assert _count(store, "alerts") == 3
        assert srv.stats().get("request_lz4", 0) > 0, "inserts went lz4-compressed"
        assert srv.stats().get("response_lz4", 0) > 0, "results came back lz4-compressed"
