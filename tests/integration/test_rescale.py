"""Changing the number of workers on the same recovery directory, partition-aligned, on
the real broker: every partition's state follows its events (the aligned keys do not
depend on the worker count when it divides the partition count), so a run resumed on
3 workers, then on 1, scores exactly like one uninterrupted run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main

from dataflows.connectors.kafka import make_producer, produce_all
from dataflows.connectors.local import CallbackSink
from dataflows.flow import kafka_flow
from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.settings import Settings


def _rows(s: Settings, workers: int, rec: Path | None) -> dict[str, tuple[Any, ...]]:
    rows: list[Any] = []
    cluster_main(
        kafka_flow(s, CallbackSink(rows.extend), workers=workers),
        [],
        0,
        worker_count_per_proc=workers,
        epoch_interval=timedelta(seconds=0.2),
        recovery_config=None if rec is None else RecoveryConfig(str(rec)),
    )
    return {r.txn.txn_id: (r.risk_score, r.decision, r.reasons, r.features) for r in rows}


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [6], indirect=True)
def test_state_follows_its_partition_across_worker_counts(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    rec = tmp_path / "recovery"
    rec.mkdir()
    init_db_dir(rec, 1)
    s = kafka_settings.model_copy(update={"align_partitions": True, "recovery_dir": rec})
    events = list(event_stream(GeneratorConfig(seed=11, users=120, chunk_events=300), 2400))
    thirds = [events[:800], events[800:1600], events[1600:]]
    got: dict[str, tuple[Any, ...]] = {}
    for chunk, workers in zip(thirds, (2, 3, 1), strict=True):
        produce_all(make_producer(s), s.topic_transactions, chunk)
        rows = _rows(s, workers, rec)
        assert not set(rows) & set(got), "a resumed run starts where the last stopped"
        got |= rows
    plain = kafka_settings.model_copy(update={"align_partitions": True})
    whole = _rows(plain, 1, None)
    assert len(whole) >= 2300
    assert got == whole
