"""Entry point for ``python -m bytewax.run dataflows.main:get_flow()`` (production).

Settings come from ``FRAUD_*``; run it as a cluster with bytewax's own flags, e.g.
``python -m bytewax.run dataflows.main:get_flow() -w 2 -r /data/recovery -s 10 -b 0``.
Scored transactions and alerts go to ClickHouse (``FRAUD_CLICKHOUSE_URL``), whose
pending migrations are applied first (idempotent, safe from every process).
"""

from __future__ import annotations

import logging

from bytewax.dataflow import Dataflow

from clickhouse.store import Store, migrate
from dataflows.connectors.chsink import clickhouse_sink
from dataflows.flow import kafka_flow
from schemas.settings import load_settings

__all__ = ["get_flow"]


def get_flow() -> Dataflow:
    """The Kafka flow writing to ClickHouse."""
    from dataflows.flow import tune_gc

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tune_gc()
    s = load_settings()
    migrate(Store.from_settings(s), s.clickhouse_ttl_days)
    return kafka_flow(s, clickhouse_sink(s))
