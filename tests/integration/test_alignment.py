"""Partition-aligned scoring on the real broker: state keyed by the partition it was read
from gives the same rows on one worker and on a 2-worker cluster (alignment changes where
work runs, never the result), and every partition's key lands on its reading worker."""

from __future__ import annotations

from typing import Any

import pytest
from bytewax.testing import cluster_main, run_main

from dataflows.connectors.kafka import kafka_source, make_producer, produce_all
from dataflows.connectors.local import CallbackSink
from dataflows.connectors.routing import Alignment, partition_owner, route
from dataflows.flow import kafka_flow
from schemas.settings import Settings
from tests.integration.test_kafka import _events


def _rows(s: Settings, workers: int) -> dict[str, tuple[Any, ...]]:
    rows: list[Any] = []
    flow = kafka_flow(s, CallbackSink(rows.extend), workers=workers)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return {r.txn.txn_id: (r.risk_score, r.decision, r.reasons, r.features) for r in rows}


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [6], indirect=True)
def test_aligned_flow_is_exact_on_any_worker_count(kafka_settings: Settings) -> None:
    s = kafka_settings.model_copy(update={"align_partitions": True})
    produce_all(make_producer(s), s.topic_transactions, _events(2400))
    one, two = _rows(s, 1), _rows(s, 2)
    assert len(one) >= 2000
    assert one == two
    parts = kafka_source(s, s.topic_transactions, False).list_parts()
    align = Alignment(parts, 2)
    for p in range(6):
        key = align.key_of(s.topic_transactions, p)
        assert key is not None
        assert route(key, 2) == partition_owner(p, s.topic_transactions, 6, 2)
