"""The dataflow on a real Kafka-protocol broker (tansu), in-process and as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from clickhouse.store import Store
from dataflows.connectors.kafka import create_topics, make_producer, produce_all
from dataflows.connectors.local import CallbackSink
from dataflows.flow import build_flow, kafka_flow
from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.scored import alert_id_for, decode_alert
from schemas.settings import Settings, settings_env
from tests.chserver import ChServer
from tests.conftest import txn_bytes
from tests.integration.conftest import consume_all

ROOT = Path(__file__).resolve().parents[2]
MALFORMED = [
    (b"u1", b"{not json"),
    (b"u2", txn_bytes(900, txn_id="bad-amount", amount=-3)),
    (b"u3", txn_bytes(901, txn_id="bad-version", schema_version=7)),
    (b"u4", None),
    (b"u5", b"x" * 20_000),
    (b"u6", txn_bytes(902, txn_id="bad-type", lat="north")),
]


def _events(n: int) -> list[tuple[bytes | None, bytes | None]]:
    cfg = GeneratorConfig(seed=5, users=300, fraud_rate=0.05, chunk_events=500)
    good = list(event_stream(cfg, n))
    out: list[tuple[bytes | None, bytes | None]] = []
    step = n // len(MALFORMED)
    for i, bad in enumerate(MALFORMED):
        out += [*good[i * step : (i + 1) * step], bad]
    return out + good[len(MALFORMED) * step :]


def _expected_alert_ids(s: Settings, events: list) -> set[str]:
    """The same bytes through the same flow with in-memory source and sinks."""
    alerts: list = []
    run_main(
        build_flow(
            s,
            TestingSource([v for _, v in events], batch_size=500),
            TestingSink(alerts),
            TestingSink([]),
            TestingSink([]),
        )
    )
    return {a.alert_id for a in alerts}


def _two_workers(flow) -> None:
    cluster_main(flow, [], 0, worker_count_per_proc=2)


@pytest.mark.integration
@pytest.mark.parametrize("runner", [run_main, _two_workers], ids=["run_main", "cluster_2w"])
def test_flow_on_broker_alerts_and_dead_letters(kafka_settings: Settings, runner) -> None:
    s = kafka_settings
    events = _events(3000)
    assert produce_all(make_producer(s), s.topic_transactions, events) == len(events)
    rows: list = []
    runner(kafka_flow(s, CallbackSink(rows.extend)))

    alerts = consume_all(s.brokers, s.topic_alerts, s.partitions)
    dlq = consume_all(s.brokers, s.topic_dlq, s.partitions)
    # Every message read ends in exactly one place.
    assert len(rows) + len(dlq) == len(events)
    # Alerts: exactly the flagged set the in-memory run computes, each once.
    ids = [decode_alert(m.value()).alert_id for m in alerts]
    assert len(ids) >= 10, "a stream with 5 % fraud should raise alerts"
    assert len(ids) == len(set(ids))
    flagged = {alert_id_for(r.txn.txn_id) for r in rows if r.flagged}
    assert set(ids) == _expected_alert_ids(s, events) == flagged
    for m in alerts:
        headers = dict(m.headers())
        assert headers["content-type"] == b"application/json"
        assert headers["schema-version"] == b"3"  # Alert v3
        assert m.key() == orjson.loads(m.value())["user_id"].encode()
    # Dead letters: original bytes untouched, precise reasons, origin recorded.
    codes = sorted(dict(m.headers())["error-code"].decode() for m in dlq)
    assert codes == sorted(
        [
            "invalid_json",
            "out_of_range",
            "unknown_schema_version",
            "null_value",
            "too_large",
            "wrong_type",
        ]
    )
    originals = {k: v for k, v in MALFORMED}
    for m in dlq:
        assert m.value() == originals[m.key()]
        h = dict(m.headers())
        assert h["source-topic"] == s.topic_transactions.encode()
        assert int(h["source-offset"]) >= 0


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [3], indirect=True)
def test_flow_as_bytewax_run_subprocess(kafka_settings: Settings, ch_http: ChServer) -> None:
    """The production entry point: Kafka in, alerts/DLQ to Kafka, rows to ClickHouse over
    HTTP (migrated by the entry point itself)."""
    s = kafka_settings
    db = f"it_{uuid.uuid4().hex[:10]}"
    events = _events(1200)
    produce_all(make_producer(s), s.topic_transactions, events)
    env = {
        **os.environ,
        **settings_env(
            {
                "brokers": s.brokers,
                "topic_transactions": s.topic_transactions,
                "topic_alerts": s.topic_alerts,
                "topic_dlq": s.topic_dlq,
                "kafka_tail": "false",
                "partitions": 3,
                "hst_warmup": 0,
                "shards": 4,
                "clickhouse_url": ch_http.url,
                "clickhouse_database": db,
            }
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.main:get_flow()", "-w", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dlq = consume_all(s.brokers, s.topic_dlq, 3)
    alerts = consume_all(s.brokers, s.topic_alerts, 3)
    assert len(dlq) == len(MALFORMED)
    assert alerts, "a stream with 5 % fraud raised no alert"
    # Per-user ordering: an alert is keyed by its user, so one user's alerts share a partition.
    parts: dict[bytes, set[int]] = {}
    for m in alerts:
        parts.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in parts.values())
    store = Store(ch_http.url, db)
    ((n, flagged),) = store.client.query(
        f"SELECT uniqExact(txn_id), uniqExactIf(txn_id, decision != 'approve') "
        f"FROM {db}.transactions"
    ).result_rows
    stored = {a for (a,) in store.client.query(f"SELECT alert_id FROM {db}.alerts").result_rows}
    assert n == len(events) - len(MALFORMED)
    assert flagged == len(stored) == len({decode_alert(m.value()).alert_id for m in alerts})
    store.client.command(f"DROP DATABASE {db}")


@pytest.mark.integration
def test_topics_create_is_idempotent(kafka_settings: Settings) -> None:
    again = create_topics(kafka_settings)
    assert set(again.values()) == {"exists"}


@pytest.mark.integration
def test_dashboard_verdicts_are_published_to_the_feedback_topic(kafka_settings: Settings) -> None:
    from dataflows.connectors.kafka import feedback_publisher
    from schemas.scored import decode_review
    from tests.store import known

    publish = feedback_publisher(kafka_settings)
    assert publish is not None
    reviews = known.reviews()
    publish(reviews)
    got = consume_all(kafka_settings.brokers, kafka_settings.topic_feedback, 1)
    assert [decode_review(m.value()) for m in got] == reviews
    assert [m.key() for m in got] == [r.user_id.encode() for r in reviews]
    assert dict(got[0].headers())["schema-version"] == b"2"  # Review v2
    assert feedback_publisher(kafka_settings.model_copy(update={"brokers": ""})) is None
