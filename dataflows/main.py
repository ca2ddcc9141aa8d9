"""Entry point for ``python -m bytewax.run dataflows.main:get_flow()`` (production).

Settings come from ``FRAUD_*``; run it as a cluster with bytewax's own flags, e.g.
``python -m bytewax.run dataflows.main:get_flow() -w 2 -r /data/recovery -s 10 -b 0``.
Scored transactions and alerts go to ClickHouse (``FRAUD_CLICKHOUSE_URL``), whose
pending migrations are applied first (idempotent, safe from every process).

Recovery is what bytewax runs with: ``-r DIR`` (or ``BYTEWAX_RECOVERY_DIRECTORY``) turns
on the state snapshots too, so a restart resumes per-user state and models with its
offsets.  ``FRAUD_RECOVERY_DIR`` may repeat the same directory; a different one, or one
without ``-r``, is refused at start rather than resuming offsets with empty state.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from bytewax.dataflow import Dataflow

from clickhouse.store import Store, migrate
from dataflows.connectors import metrics
from dataflows.connectors.chsink import clickhouse_sink, dead_letter_sink
from dataflows.connectors.kafka import consumer_config
from dataflows.connectors.rules_feed import policy_feed
from dataflows.flow import kafka_flow
from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings

__all__ = [
    "bytewax_recovery_dir",
    "bytewax_workers",
    "get_backfill_flow",
    "get_flow",
    "with_running_recovery",
]

log = logging.getLogger(__name__)


def _bytewax_args(argv: list[str]) -> Any:
    """``python -m bytewax.run``'s arguments, read by bytewax's own parser (flags and its
    environment variables alike); None if ``argv`` is not such a command line."""
    from bytewax.run import _create_arg_parser

    try:
        args, _ = _create_arg_parser().parse_known_args(argv)
    except SystemExit:
        return None
    return args


def bytewax_recovery_dir(argv: list[str]) -> Path | None:
    """The recovery directory ``python -m bytewax.run`` was started with."""
    args = _bytewax_args(argv)
    return None if args is None else args.recovery_directory


def bytewax_workers(argv: list[str]) -> int:
    """Workers of the whole cluster: ``-w`` per process times the processes in ``-a``
    (flags only: bytewax's scaling flags are parsed outside its reusable parser).

    >>> bytewax_workers(["m:f()", "-w", "1", "-i", "0", "-a", "h:1;h:2;h:3"])
    3
    >>> bytewax_workers(["m:f()"])
    1
    """
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-w", "--workers-per-process", type=int, default=1)
    p.add_argument("-a", "--addresses", default="")
    args, _ = p.parse_known_args(argv)
    procs = len([a for a in (args.addresses or "").split(";") if a]) or 1
    return max(1, args.workers_per_process) * procs


def with_running_recovery(s: Settings, running: Path | None) -> Settings:
    """Settings whose ``recovery_dir`` is the recovery bytewax actually runs with.

    Without it the flow would skip its state snapshots while bytewax stores offsets, and
    a restart would resume reading with empty per-user state and models, silently.
    """
    if running is None:
        if s.recovery_dir is not None:
            raise ConfigError(
                f"recovery_dir (FRAUD_RECOVERY_DIR) = {s.recovery_dir} but bytewax runs "
                "without recovery: start it with -r the same directory"
            )
        return s
    if s.recovery_dir is not None and s.recovery_dir.resolve() != running.resolve():
        raise ConfigError(
            f"recovery_dir (FRAUD_RECOVERY_DIR) = {s.recovery_dir} but bytewax runs with "
            f"-r {running}: use one directory"
        )
    return s.model_copy(update={"recovery_dir": running})


def _under_bytewax_run() -> bool:
    return getattr(sys.modules["__main__"].__spec__, "name", None) == "bytewax.run"


def _process_settings() -> Settings:
    """``FRAUD_*`` settings for a flow process, with the recovery bytewax runs with;
    refused (exit 2) when they disagree."""
    from dataflows.flow import tune_gc

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tune_gc()
    s = load_settings()
    if _under_bytewax_run():
        try:
            s = with_running_recovery(s, bytewax_recovery_dir(sys.argv[1:]))
        except ConfigError as e:
            log.error("%s", e)
            raise SystemExit(2) from None
    if s.recovery_dir is not None:
        log.info("recovery on: %s (state snapshots included)", s.recovery_dir)
    return s


def get_backfill_flow(history: str, progress: str | None = None) -> Dataflow:
    """``fraud backfill``'s flow in one process of its cluster: the Parquet history at
    ``history`` scored into ClickHouse, each partition's count kept under ``progress``
    for the parent."""
    from dataflows.flow import history_flow

    s = _process_settings()
    migrate(Store.from_settings(s), s.clickhouse_ttl_days)
    workers = bytewax_workers(sys.argv[1:]) if _under_bytewax_run() else 1
    return history_flow(
        s,
        Path(history),
        workers,
        clickhouse_sink(s),
        dead_letter_sink(s),
        progress=Path(progress) if progress else None,
    )


def get_flow() -> Dataflow:
    """The Kafka flow writing to ClickHouse."""
    s = _process_settings()
    if s.metrics_port:
        metrics.serve_metrics(s.metrics_port)
        metrics.LagWatcher(consumer_config(s, f"{s.consumer_group}-lag")).start()
    store = Store.from_settings(s)
    migrate(store, s.clickhouse_ttl_days)
    workers = bytewax_workers(sys.argv[1:]) if _under_bytewax_run() else 1
    # the version in force (topic, or ClickHouse when the topic is behind) before the
    # first event: a restart from recovery never scores with a stale policy
    feed = policy_feed(s, store)
    return kafka_flow(
        s,
        clickhouse_sink(s),
        dlq_store=dead_letter_sink(s),
        workers=workers,
        policy=feed.current,
    )
