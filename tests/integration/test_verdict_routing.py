"""Analysts' verdicts meet their user's state on the real broker, partition-aligned.

Aligned scoring keys state by the partition a transaction was read from, so a verdict
(read from the feedback topic) must be keyed by the partition the producer put the
user's transactions in.  Pinned here: this project's producer (librdkafka's default
partitioner) puts a message keyed ``k`` in partition ``crc32(k) % partitions``, and a
confirmed-fraud verdict published by the case page's publisher marks the card in the
state of a 2-worker aligned flow across a restart.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main

from dataflows.connectors.kafka import feedback_publisher, make_producer, produce_all
from dataflows.connectors.local import CallbackSink
from dataflows.connectors.routing import Alignment, keyed_partition
from dataflows.flow import kafka_flow
from schemas.scored import Review, ScoredTransaction
from schemas.settings import Settings, load_settings
from tests.conftest import T0, txn_bytes
from tests.integration.conftest import consume_all

HOUR = 60
T = 4 * 24 * HOUR
CNP = {"amount": 30.0, "channel": "ecom", "device_id": "dx", "lat": None, "lon": None}
CNP |= {"schema_version": 2}


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [6], indirect=True)
def test_producer_partitions_by_crc32_of_the_key(kafka_settings: Settings) -> None:
    s = kafka_settings
    users = [f"user-{i}" for i in range(200)]
    produce_all(make_producer(s), s.topic_transactions, [(u.encode(), b"{}") for u in users])
    got = consume_all(s.brokers, s.topic_transactions, 6)
    assert len(got) == len(users)
    assert len({m.partition() for m in got}) == 6
    for m in got:
        assert m.partition() == keyed_partition(m.key(), 6), m.key()
    align = Alignment([f"{p}-{s.topic_transactions}" for p in range(6)], 2)
    for m in got:
        key = align.key_of_user(m.key().decode())
        assert key == align.key_of(s.topic_transactions, m.partition())


def _run(s: Settings, rec: Path) -> dict[str, ScoredTransaction]:
    rows: list[Any] = []
    flow = kafka_flow(s, CallbackSink(rows.extend), workers=2)
    cluster_main(
        flow,
        [],
        0,
        worker_count_per_proc=2,
        epoch_interval=timedelta(seconds=0),
        recovery_config=RecoveryConfig(str(rec)),
    )
    return {r.txn.txn_id: r for r in rows}


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [6], indirect=True)
def test_a_verdict_marks_the_card_in_an_aligned_flow(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    rec = tmp_path / "recovery"
    rec.mkdir()
    init_db_dir(rec, 1)
    # The model warmed up as by default: rules alone decide these few events.
    warmup = load_settings().hst_warmup
    update = {"align_partitions": True, "recovery_dir": rec, "hst_warmup": warmup}
    s = kafka_settings.model_copy(update=update)
    users = [f"u{i}" for i in range(6)]
    first: list[tuple[bytes, bytes]] = []
    for u in users:
        for i in range(8):
            first.append((u.encode(), txn_bytes(i * 12 * HOUR, txn_id=f"{u}-h{i}", user_id=u)))
        first.append((u.encode(), txn_bytes(T, txn_id=f"{u}-stolen", user_id=u, **CNP)))
    produce_all(make_producer(s), s.topic_transactions, first)
    publish = feedback_publisher(s)
    assert publish is not None
    at = T0 + timedelta(minutes=T + 60)
    judged = users[::2]
    publish(
        [
            Review(f"a-{u}", f"{u}-stolen", u, "confirmed_fraud", "ana", None, at, card_id="c1")
            for u in judged
        ]
    )
    rows = _run(s, rec)
    assert all(rows[f"{u}-stolen"].decision == "approve" for u in users)
    later = [
        (u.encode(), txn_bytes(T + 2 * HOUR, txn_id=f"{u}-next", user_id=u, **CNP)) for u in users
    ]
    produce_all(make_producer(s), s.topic_transactions, later)
    rows = _run(s, rec)
    assert set(rows) == {f"{u}-next" for u in users}  # resumed after the first run
    for u in users:
        r = rows[f"{u}-next"]
        hit = any(x.code == "compromised_card" for x in r.reasons)
        assert hit == (u in judged), (u, r.reasons)
        assert r.decision == ("block" if u in judged else "approve"), (u, r.reasons)
