"""Poison messages on the real broker, through the production entry point with recovery.

Bad messages sit in the middle of the partition, before and after a restart: the flow
keeps scoring what follows them, a restart resumes from its snapshot without crashing
on them again, and every message read ends in exactly one place (stored or DLQ).  A
message too large for a DLQ record goes there truncated, with its size and SHA-256,
and whole into ClickHouse ``dead_letters``.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from clickhouse.store import Store
from dataflows.connectors.kafka import produce_all, producer_config
from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.settings import Settings
from tests.chserver import ChServer
from tests.conftest import txn_bytes
from tests.integration.conftest import consume_all
from tests.integration.test_restart import _env, _flow, init_recovery

HUGE = b'{"txn_id":"huge","pad":"' + b"x" * 2_000_000 + b'"}'
POISON = [
    txn_bytes(900, txn_id="bad-utf8").replace(b'"alice"', b'"al\xffice"'),
    txn_bytes(901, txn_id="bad-utf8-2").replace(b'"grocery"', b'"gro\xed\xa0\x80"'),
    txn_bytes(902, txn_id="surrogate").replace(b'"alice"', b'"\\ud800"'),
    HUGE,
    b"[" * 50_000,
    b"\xff\xfe\x00",
]


def _good(n: int, seed: int) -> list[bytes]:
    cfg = GeneratorConfig(seed=seed, users=200, fraud_rate=0.05, chunk_events=500)
    return [v for _, v in event_stream(cfg, n)]


def _with_poison(good: list[bytes]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    step = len(good) // (len(POISON) + 1)
    for i, v in enumerate(good):
        out.append((b"k", v))
        if i % step == step - 1 and i // step < len(POISON):
            out.append((b"k", POISON[i // step]))
    return out


@pytest.mark.integration
def test_poison_in_the_partition_stops_nothing_and_survives_a_restart(
    kafka_settings: Settings, ch_http: ChServer, tmp_path: Path
) -> None:
    s = kafka_settings
    # The test producer may write what the flow's own producers never would (2 MB).
    producer = Producer({**producer_config(s), "message.max.bytes": 5_000_000})
    first = _with_poison(_good(1200, seed=11))
    second = _with_poison(_good(800, seed=12))
    recovery = init_recovery(tmp_path)
    db = f"poison_{uuid.uuid4().hex[:8]}"
    env = _env(s, ch_http, db, recovery, True)

    produce_all(producer, s.topic_transactions, first)
    run1 = _flow(env, recovery, tail=False)
    _, err = run1.communicate(timeout=180)
    assert run1.returncode == 0, err[-3000:]

    produce_all(producer, s.topic_transactions, second)
    run2 = _flow(env, recovery, tail=False)  # resumes after the poison, not before it
    _, err = run2.communicate(timeout=180)
    assert run2.returncode == 0, err[-3000:]

    store = Store(ch_http.url, db)
    ((stored,),) = store.client.query(
        f"SELECT uniqExact(txn_id) FROM {db}.transactions"
    ).result_rows
    dlq = consume_all(s.brokers, s.topic_dlq, 1)
    offsets = {dict(m.headers())["source-offset"] for m in dlq}
    total = len(first) + len(second)
    assert stored + len(offsets) == total, "in = stored + dead letters"
    assert len(offsets) == 2 * len(POISON)

    huge = [m for m in dlq if dict(m.headers()).get("truncated") == b"true"]
    assert len(huge) == 2
    h = dict(huge[0].headers())
    assert h["error-code"] == b"too_large"
    assert int(h["original-size"]) == len(HUGE)
    assert len(huge[0].value()) == s.dlq_copy_bytes
    sha = hashlib.sha256(HUGE).hexdigest()
    assert h["payload-sha256"] == sha.encode()
    ((value,),) = store.client.query(
        f"SELECT value FROM {db}.dead_letters FINAL WHERE payload_sha256 = %(sha)s LIMIT 1",
        parameters={"sha": sha},
    ).result_rows
    assert (value.encode() if isinstance(value, str) else value) == HUGE
    ((n_dead,),) = store.client.query(f"SELECT count() FROM {db}.dead_letters FINAL").result_rows
    assert n_dead == 2 * len(POISON)
    codes = {dict(m.headers())["error-code"] for m in dlq}
    assert codes <= {b"invalid_json", b"too_large", b"internal_error"}
    store.client.command(f"DROP DATABASE {db}")
