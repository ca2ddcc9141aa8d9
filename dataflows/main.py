"""Entry point for ``python -m bytewax.run dataflows.main:get_flow()`` (production).

Settings come from ``FRAUD_*``; run it as a cluster with bytewax's own flags, e.g.
``python -m bytewax.run dataflows.main:get_flow() -w 2 -r /data/recovery -s 10``.
"""

from __future__ import annotations

import logging

from bytewax.dataflow import Dataflow

from dataflows.io import CallbackSink
from dataflows.kafka import kafka_flow
from schemas.settings import load_settings

__all__ = ["get_flow"]

log = logging.getLogger("dataflows.rows")


def _log_batch(rows: list) -> None:
    flagged = sum(r.flagged for r in rows)
    log.info("scored %d transactions, %d flagged", len(rows), flagged)


def get_flow() -> Dataflow:
    """The Kafka flow; scored rows are logged until a row store is configured."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = load_settings()
    return kafka_flow(s, CallbackSink(_log_batch))
