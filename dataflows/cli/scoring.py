"""``fraud run`` and ``fraud simulate``: the flow in this process over Kafka, a file or
generated events, with alerts printed and a summary against the generator's labels."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dataflows.cli.common import (
    add_common,
    add_generator,
    gen_config,
    kafka_settings,
    log_to_stderr,
    positive_int,
    settings_of,
)
from schemas.errors import ConfigError
from schemas.settings import Settings


def cmd_run(args: argparse.Namespace) -> int:
    from dataflows.connectors.local import jsonl_lines

    if args.input is None:  # refused without brokers before ClickHouse is migrated
        return _run_kafka(kafka_settings(args), args.store)
    s = settings_of(args)
    path = Path(args.input)
    if not path.exists():
        raise ConfigError(f"--input {path}: no such file")
    rows, decisions, rate, dead = run_local(
        s, lambda: jsonl_lines(path), args.show, store=args.store
    )
    _summary(rows, decisions, rate, dead)
    return 0


def _run_kafka(s: Settings, store: bool) -> int:
    """Score the Kafka topic in-process (for a cluster use python -m bytewax.run)."""
    from bytewax.run import cli_main

    from dataflows.connectors.local import CallbackSink, stop_on_signals
    from dataflows.flow import kafka_flow
    from generators.stream import Progress

    log_to_stderr()
    stop = stop_on_signals()  # Ctrl-C / SIGTERM: end the input, flush, return
    if s.metrics_port:
        from dataflows.connectors import metrics
        from dataflows.connectors.kafka import consumer_config

        metrics.serve_metrics(s.metrics_port)
        metrics.LagWatcher(consumer_config(s, f"{s.consumer_group}-lag")).start()
    prog = Progress(f"scored from {s.topic_transactions}")
    flagged = [0]

    def on_rows(batch: list[Any]) -> None:
        flagged[0] += sum(r.flagged for r in batch)
        prog.update(len(batch), f"flagged {flagged[0]:,}")

    sinks: list[Any] = [CallbackSink(on_rows)]
    if store:
        sinks.append(_store_sink(s))
    dlq_store = None
    policy = None  # without a store: the rules topic's policy (or the built-in)
    if store:
        from clickhouse.store import Store
        from dataflows.connectors.chsink import dead_letter_sink
        from dataflows.connectors.rules_feed import policy_feed

        dlq_store = dead_letter_sink(s)
        policy = policy_feed(s, Store.from_settings(s)).current
    flow = kafka_flow(s, sinks, stop=stop, dlq_store=dlq_store, policy=policy)
    cli_main(flow, epoch_interval=None)
    prog.done(f"flagged {flagged[0]:,}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from generators.stream import Pacer, event_stream

    s = settings_of(args)
    cfg = gen_config(args)
    print(
        f"fraud simulate: {args.count:,} generated events (seed {cfg.seed}, {cfg.users:,} users, "
        f"fraud rate {cfg.fraud_rate:.1%}) -> dataflow ({s.model_version}); alerts:"
    )
    pacer = Pacer(args.rate)
    rows, decisions, rate, dead = run_local(
        s,
        lambda: (v for _, v in event_stream(cfg, args.count)),
        args.show,
        pacer.tick,
        store=args.store,
    )
    _summary(rows, decisions, rate, dead)
    return 0


def _format_alert(a: Any) -> str:
    reasons = "; ".join(f"{r.code} ({r.contribution:.2f}): {r.detail}" for r in a.reasons)
    return (
        f"{a.decision.upper():6s} risk={a.risk_score:.2f} {a.ts:%Y-%m-%d %H:%M:%S} "
        f"user={a.user_id} {a.amount:,.2f} {a.currency} {a.country} {a.channel} | {reasons}"
    )


def run_local(
    s: Settings,
    make_events: Callable[[], Iterable[Any]],
    show: int,
    pace: Callable[[int], None] | None = None,
    store: bool = False,
) -> tuple[list[Any], Counter, int, int]:
    """Run the flow in-process over ``make_events``; print alerts; collect rows; with
    ``store`` also write rows and alerts to ClickHouse."""
    from bytewax.run import cli_main

    from dataflows.connectors.local import CallbackSink, IterSource
    from dataflows.flow import build_flow
    from generators.stream import Progress

    rows: list[Any] = []
    decisions: Counter = Counter()
    dlq: list[Any] = []
    shown = [0]
    prog = Progress("scored")

    def on_alerts(batch: list[Any]) -> None:
        for a in batch:
            if shown[0] < show:
                print(_format_alert(a), flush=True)
            shown[0] += 1

    def on_rows(batch: list[Any]) -> None:
        rows.extend(batch)
        decisions.update(r.decision for r in batch)
        prog.update(len(batch), f"flagged {decisions['review'] + decisions['block']:,}")

    def on_dlq(batch: list[Any]) -> None:
        for d in batch:
            print(f"DEAD-LETTER {d.error_code}: {d.error_message}", file=sys.stderr)
        dlq.extend(batch)

    row_sinks: list[Any] = [CallbackSink(on_rows)]
    if store:
        row_sinks.append(_store_sink(s))
    flow = build_flow(
        s,
        IterSource(make_events, pace=pace),
        CallbackSink(on_alerts),
        row_sinks,
        CallbackSink(on_dlq),
    )
    cli_main(flow, epoch_interval=None)
    rate = prog.done()
    if 0 < show < shown[0]:
        print(f"... and {shown[0] - show:,} more alerts")
    return rows, decisions, int(rate), len(dlq)


def _store_sink(s: Settings) -> Any:
    """Migrate the configured ClickHouse and return the sink writing to it."""
    from clickhouse.store import Store, describe_url, migrate
    from dataflows.connectors.chsink import clickhouse_sink

    applied = migrate(Store.from_settings(s), s.clickhouse_ttl_days)
    print(
        f"ClickHouse {describe_url(s.clickhouse_url)} database {s.clickhouse_database}"
        + (f": applied {', '.join(applied)}" if applied else ""),
        file=sys.stderr,
    )
    return clickhouse_sink(s)


def _summary(rows: list[Any], decisions: Counter, rate: int, dead: int) -> None:
    from dataflows.evaluation.patterns import format_report, pattern_report

    n = len(rows)
    print(
        f"\nSummary: {n:,} transactions scored at {rate:,}/s; "
        + ", ".join(f"{d} {decisions[d]:,}" for d in ("approve", "review", "block"))
        + f"; dead letters {dead:,}"
    )
    codes = Counter(r.code for row in rows if row.flagged for r in row.reasons)
    if codes:
        print(
            "Reasons on flagged transactions: "
            + ", ".join(f"{c} {k:,}" for c, k in codes.most_common())
        )
    if any(r.label is not None for r in rows):
        print("\nAgainst the generator's labels:\n" + format_report(pattern_report(rows)))


def register_simulate(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="score N generated events in-process; print alerts "
        "and recall per fraud pattern (no servers)",
    )
    add_generator(p, 30_000)
    p.add_argument("--show", type=int, default=25, help="alerts to print (default 25)")
    p.add_argument("--store", action="store_true", help="also write to FRAUD_CLICKHOUSE_URL")
    add_common(p)
    p.set_defaults(fn=cmd_simulate)


def register_run(sub: Any) -> None:
    p = sub.add_parser("run", help="score the Kafka topic (FRAUD_BROKERS) or a JSONL file")
    p.add_argument("--input", help="JSONL file, one event per line (default: Kafka)")
    p.add_argument("--show", type=int, default=25, help="alerts to print (default 25)")
    p.add_argument(
        "--no-store",
        dest="store",
        action="store_false",
        help="do not write rows and alerts to ClickHouse (FRAUD_CLICKHOUSE_URL)",
    )
    add_common(p)
    p.set_defaults(fn=cmd_run)


def cmd_backfill(args: argparse.Namespace) -> int:
    """Score a stored history through the production flow into ClickHouse, on
    ``--processes`` supervised processes (a bytewax cluster, as ``fraud cluster`` runs)."""
    import signal
    import tempfile
    import threading
    import time

    from dataflows.connectors.local import history_files, read_progress
    from dataflows.services.cluster import (
        ClusterPlan,
        Supervisor,
        free_ports,
        init_recovery,
        process_env,
    )
    from generators.stream import Progress

    s = settings_of(args)
    root = Path(args.input)
    files = history_files(root) if root.exists() else []
    if not files:
        raise ConfigError(f"--input {root}: no Parquet files there")
    total = _parquet_rows(files)
    if args.processes > 1 and s.clickhouse_url.startswith("chdb:"):
        raise ConfigError(
            "clickhouse_url (FRAUD_CLICKHOUSE_URL): chDB allows one process per directory; "
            f"--processes {args.processes} needs a ClickHouse server (http://...)"
        )
    if s.recovery_dir is not None:
        init_recovery(s.recovery_dir, args.processes)
    print(
        f"fraud backfill: {total:,} events in {len(files)} file(s) from {root}, "
        f"{s.partitions} partitions on {args.processes} process(es)"
        + (f", resumable from {s.recovery_dir}" if s.recovery_dir else ""),
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="fraud-backfill-") as counts:
        flow = f"dataflows.main:get_backfill_flow({str(root.resolve())!r}, {counts!r})"
        plan = ClusterPlan(
            args.processes, free_ports(args.processes), s.recovery_dir, args.snapshot_s, flow=flow
        )
        # Without recovery a restart would score everything again: fail instead.
        sup = Supervisor(plan, process_env(s), max_restarts=3 if s.recovery_dir else 0)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sup.stop.set())
        rc: list[int] = []
        runner = threading.Thread(target=lambda: rc.append(sup.run()), daemon=True)
        prog = Progress("backfill", total)
        t0 = time.monotonic()
        runner.start()
        while runner.is_alive():
            runner.join(0.5)
            rows, flagged = read_progress(Path(counts))
            prog.update(rows - prog.n, f"flagged {flagged:,}")
        rows, flagged = read_progress(Path(counts))
        prog.update(rows - prog.n)
        prog.done(f"flagged {flagged:,}")
    dt = time.monotonic() - t0
    again = (
        f"; {sup.restarts} restart(s): rows after the last snapshot were scored again (stored once)"
        if sup.restarts
        else ""
    )
    code = 130 if sup.stop.is_set() else (rc[0] if rc else 1)
    if code == 0:
        rate = rows / max(dt, 1e-9)
        print(f"backfilled {rows:,} events in {dt:.1f}s ({rate:,.0f} rows/s){again}")
    else:
        resume = " Run the same command again to resume." if s.recovery_dir else ""
        print(
            f"fraud backfill: stopped (exit {code}) after {rows:,} events.{resume}",
            file=sys.stderr,
        )
    return code


def _parquet_rows(files: list[Path]) -> int:
    """Rows of the history, from the files' footers; a file that is not Parquet is
    refused naming it before anything runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 0
    for f in files:
        try:
            n += pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            raise ConfigError(f"--input {f}: not a readable Parquet file ({e})") from None
    return n


def register_backfill(sub: Any) -> None:
    p = sub.add_parser(
        "backfill",
        help="score a stored history (Parquet, Hive-partitioned) through the flow into "
        "ClickHouse; resumable with FRAUD_RECOVERY_DIR",
    )
    p.add_argument("--input", required=True, help="Parquet file or Hive-partitioned folder")
    p.add_argument(
        "--processes",
        type=positive_int("processes"),
        default=1,
        help="bytewax processes, one worker each (1); several need a ClickHouse server",
    )
    p.add_argument(
        "--snapshot-s",
        type=positive_int("snapshot-s"),
        default=10,
        help="epoch / snapshot interval, whole seconds (10)",
    )
    add_common(p)
    p.set_defaults(fn=cmd_backfill)
