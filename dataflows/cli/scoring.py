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

    from dataflows.services.cluster import ClusterPlan, Supervisor, free_ports, process_env

    s = settings_of(args)
    root = Path(args.input)
    plan = _history_plan(s, root)
    total = sum(rows for _, rows in plan["files"])
    if args.processes > 1 and s.clickhouse_url.startswith("chdb:"):
        raise ConfigError(
            "clickhouse_url (FRAUD_CLICKHOUSE_URL): chDB allows one process per directory; "
            f"--processes {args.processes} needs a ClickHouse server (http://...)"
        )
    if args.processes > 1 and not s.align_partitions:
        raise ConfigError(
            "align_partitions (FRAUD_ALIGN_PARTITIONS) must be true for --processes > 1: "
            "a shard shared by partitions read on different processes would see their "
            "event times interleaved in whatever order the processes run"
        )
    if s.recovery_dir is not None:
        _check_resume(s.recovery_dir, plan, args.processes)
    print(
        f"fraud backfill: {total:,} events in {len(plan['files'])} file(s) from {root}, "
        f"{s.partitions} partitions on {args.processes} process(es)"
        + (f", resumable from {s.recovery_dir}" if s.recovery_dir else ""),
        file=sys.stderr,
    )
    stopped_by: list[int] = []
    with tempfile.TemporaryDirectory(prefix="fraud-backfill-") as counts:
        flow = f"dataflows.main:get_backfill_flow({str(root.resolve())!r}, {counts!r})"
        cluster = ClusterPlan(
            args.processes, free_ports(args.processes), s.recovery_dir, args.snapshot_s, flow=flow
        )
        # Without recovery a restart would score everything again: fail instead.
        sup = Supervisor(cluster, process_env(s), max_restarts=3 if s.recovery_dir else 0)

        def stop(signum: int, _: Any) -> None:
            stopped_by.append(128 + signum)
            sup.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        code, done, rate = _supervise(sup, Path(counts), total)
    code = stopped_by[0] if stopped_by else code
    again = f"; {sup.restarts} restart(s) from snapshots" if sup.restarts else ""
    if code == 0:
        print(f"backfilled {done:,} events ({rate:,.0f} rows/s){again}")
    elif code == 2:
        print("fraud backfill: a process refused its configuration (above)", file=sys.stderr)
    else:
        resume = " Run the same command again to resume." if s.recovery_dir else ""
        print(
            f"fraud backfill: stopped (exit {code}) after {done:,} events.{resume}", file=sys.stderr
        )
    return code


def _supervise(sup: Any, counts: Path, total: int) -> tuple[int, int, float]:
    """Run the cluster with a progress line from the partitions' counts: (exit status,
    events this run, their rate).  The cluster is stopped if this loop fails."""
    import threading

    from dataflows.connectors.local import read_progress
    from generators.stream import Progress

    rc: list[int] = []
    runner = threading.Thread(target=lambda: rc.append(sup.run()), daemon=True)
    prog = Progress("backfill", total)
    first: dict[str, int] = {}
    runner.start()
    try:
        while runner.is_alive():
            runner.join(0.5)
            done, before = this_run(first, read_progress(counts))
            prog.total = total - before
            prog.update(done - prog.n)
        done, before = this_run(first, read_progress(counts))
        prog.update(done - prog.n)
        rate = prog.done(f"({before:,} before this run)" if before else "")
    finally:
        sup.stop.set()
        runner.join()
    return (rc[0] if rc else 1), done, rate


def this_run(first: dict[str, int], now: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(events read this run, events read by earlier runs) from each partition's
    ``(started, emitted)``.  ``first`` keeps the count each partition first started from
    in this run: a restart from a snapshot starts it lower, and what it reads again is
    not counted twice.

    >>> first = {}
    >>> this_run(first, {"p0": (100, 150), "p1": (0, 20)})
    (70, 100)
    >>> this_run(first, {"p0": (120, 130), "p1": (0, 25)})  # p0 restarted from 120
    (55, 100)
    """
    for part, (started, _) in now.items():
        first.setdefault(part, started)
    done = sum(emitted - first[part] for part, (_, emitted) in now.items())
    return done, sum(first.values())


def _history_plan(s: Settings, root: Path) -> dict[str, Any]:
    """What a backfill reads and how it splits it (its resume needs the same): every
    file with its rows (a file that is not Parquet is refused naming it), partitions,
    alignment, shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataflows.connectors.local import history_files

    files = history_files(root) if root.exists() else []
    if not files:
        raise ConfigError(f"--input {root}: no Parquet files there")
    rows = []
    for f in files:
        try:
            n = pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            raise ConfigError(f"--input {f}: not a readable Parquet file ({e})") from None
        rows.append([f.relative_to(root).as_posix() if f != root else f.name, n])
    return {
        "files": rows,
        "partitions": s.partitions,
        "align_partitions": s.align_partitions,
        "shards": s.shards,
    }


RESUME_PLAN = "backfill-plan.json"


def _check_resume(recovery: Path, plan: dict[str, Any], processes: int) -> None:
    """Create the recovery partitions and note the plan on a first run; refuse a rerun
    whose history or split differs (its snapshots would skip or repeat rows)."""
    import orjson

    from dataflows.services.cluster import init_recovery

    noted = recovery / RESUME_PLAN
    if noted.exists():
        old = orjson.loads(noted.read_bytes())
        for key in ("partitions", "align_partitions", "shards", "files"):
            if old.get(key) != plan[key]:
                what = "the history's files" if key == "files" else f"{key} = {old.get(key)}"
                raise ConfigError(
                    f"recovery_dir (FRAUD_RECOVERY_DIR) {recovery} holds a backfill of "
                    f"another plan ({what}): resume with the same, or use an empty directory"
                )
        return
    if any(recovery.glob("*.sqlite3")):
        raise ConfigError(
            f"recovery_dir (FRAUD_RECOVERY_DIR) {recovery} holds another flow's snapshots: "
            "a backfill needs a directory of its own"
        )
    recovery.mkdir(parents=True, exist_ok=True)
    noted.write_bytes(orjson.dumps(plan))
    init_recovery(recovery, processes)


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
