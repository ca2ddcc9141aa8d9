"""The ``fraud`` command: generate traffic, run the dataflow, demo it, export schemas.

Every subcommand takes ``--set FIELD=VALUE`` (repeatable) to override any setting on top
of the ``FRAUD_*`` environment; a bad value is refused naming the field and what is
allowed, with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError, FraudError
from schemas.settings import Settings, load_settings

__all__ = ["main"]


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be an integer, got {v!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"--{name} must be >= 1, got {n}")
        return n

    return parse


def _nonneg_float(name: str) -> Callable[[str], float]:
    def parse(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be a number, got {v!r}") from None
        if not x >= 0:
            raise argparse.ArgumentTypeError(f"--{name} must be >= 0, got {v}")
        return x

    return parse


def _fraction(v: str) -> float:
    x = _nonneg_float("fraud-rate")(v)
    if x > 0.5:
        raise argparse.ArgumentTypeError(f"--fraud-rate must be in [0, 0.5], got {v}")
    return x


def _timestamp(v: str) -> datetime:
    try:
        ts = datetime.fromisoformat(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--start must be ISO-8601, got {v!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        if "=" not in item:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if k not in Settings.model_fields:
            raise ConfigError(f"--set {k}: unknown setting; see `fraud settings`")
        overrides[k] = v
    return load_settings(**overrides)


def _gen_config(args: argparse.Namespace):
    from generators.synth import GeneratorConfig

    return GeneratorConfig(
        seed=args.seed, users=args.users, fraud_rate=args.fraud_rate,
        start=args.start or datetime(2026, 1, 5, tzinfo=UTC),
    )  # fmt: skip


# -- subcommands ------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from generators.stream import Progress, event_stream, write_jsonl, write_parquet

    cfg = _gen_config(args)
    if args.to == "parquet":
        if not args.out:
            raise ConfigError("--to parquet needs --out PATH")
        prog = Progress("generate", args.count)
        t = time.monotonic()
        n = write_parquet(cfg, args.count, Path(args.out), prog)
        prog.done()
        dt = time.monotonic() - t
        print(f"wrote {n:,} rows to {args.out} in {dt:.1f}s ({n / dt * 60:,.0f} rows/min)")
        return 0
    events = event_stream(cfg, args.count)
    if args.to == "kafka":
        return _generate_kafka(args, events)
    if args.to == "stdout":
        write_jsonl(events, sys.stdout.buffer, args.rate)
        return 0
    if args.to == "file":
        if not args.out:
            raise ConfigError("--to file needs --out PATH")
        prog = Progress("generate", args.count)
        with open(args.out, "wb") as f:
            n = write_jsonl(events, f, args.rate, prog)
        prog.done()
        print(f"wrote {n:,} events to {args.out}")
        return 0
    raise ConfigError(f"--to {args.to!r}: not available yet")  # pragma: no cover


def _generate_kafka(args: argparse.Namespace, events: Iterable[tuple[bytes, bytes]]) -> int:
    from dataflows.kafka import make_producer, produce_all
    from generators.stream import Pacer, Progress

    s = _settings(args)
    producer = make_producer(s)
    prog = Progress(f"produce -> {s.topic_transactions}", args.count)
    pacer = Pacer(args.rate)

    def paced() -> Iterable[tuple[bytes, bytes]]:
        for kv in events:
            pacer.tick()
            yield kv

    n = produce_all(producer, s.topic_transactions, paced(),
                    lambda k: prog.update(k, f"queued {len(producer):,}"))  # fmt: skip
    prog.done()
    print(f"produced {n:,} events to {s.topic_transactions!r} on {s.brokers}")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from dataflows.latency import measure_latency

    s = _settings(args)
    where = s.brokers or "embedded tansu"
    print(f"produce->alert latency at {args.rate:g} tx/s for {args.seconds:g}s via {where} ...")
    r = measure_latency(s, args.rate, args.seconds)
    print(f"alerts {r['alerts']:.0f}: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
          f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms")  # fmt: skip
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from dataflows.kafka import create_topics

    s = _settings(args)
    for topic, state in create_topics(s).items():
        print(f"{topic}: {state} ({s.partitions} partitions)" if state == "created"
              else f"{topic}: {state}")  # fmt: skip
    return 0


def _format_alert(a: Any) -> str:
    reasons = "; ".join(f"{r.code} ({r.contribution:.2f}): {r.detail}" for r in a.reasons)
    return (
        f"{a.decision.upper():6s} risk={a.risk_score:.2f} {a.ts:%Y-%m-%d %H:%M:%S} "
        f"user={a.user_id} {a.amount:,.2f} {a.currency} {a.country} {a.channel} | {reasons}"
    )


def _run_local(
    s: Settings,
    make_events: Callable[[], Iterable[Any]],
    show: int,
    pace: Callable[[int], None] | None = None,
    store: bool = False,
) -> tuple[list[Any], Counter, int, int]:
    """Run the flow in-process over ``make_events``; print alerts; collect rows; with
    ``store`` also write rows and alerts to ClickHouse."""
    from bytewax.run import cli_main

    from dataflows.flow import build_flow
    from dataflows.io import CallbackSink, IterSource
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
    flow = build_flow(s, IterSource(make_events, pace=pace), CallbackSink(on_alerts),
                      row_sinks, CallbackSink(on_dlq))  # fmt: skip
    cli_main(flow, epoch_interval=None)
    rate = prog.done()
    if 0 < show < shown[0]:
        print(f"... and {shown[0] - show:,} more alerts")
    return rows, decisions, int(rate), len(dlq)


def _store_sink(s: Settings) -> Any:
    """Migrate the configured ClickHouse and return the sink writing to it."""
    from clickhouse.store import Store, describe_url, migrate
    from dataflows.chsink import clickhouse_sink

    applied = migrate(Store.from_settings(s), s.clickhouse_ttl_days)
    print(f"ClickHouse {describe_url(s.clickhouse_url)} database {s.clickhouse_database}"
          + (f": applied {', '.join(applied)}" if applied else ""), file=sys.stderr)  # fmt: skip
    return clickhouse_sink(s)


def cmd_migrate(args: argparse.Namespace) -> int:
    from clickhouse.store import Store, describe_url, migrate

    s = _settings(args)
    applied = migrate(Store.from_settings(s), s.clickhouse_ttl_days)
    where = f"{describe_url(s.clickhouse_url)} database {s.clickhouse_database}"
    if applied:
        print(f"{where}: applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print(f"{where}: up to date")
    return 0


def _summary(rows: list[Any], decisions: Counter, rate: int, dead: int) -> None:
    from dataflows.metrics import format_report, pattern_report

    n = len(rows)
    print(f"\nSummary: {n:,} transactions scored at {rate:,}/s; "
          + ", ".join(f"{d} {decisions[d]:,}" for d in ("approve", "review", "block"))
          + f"; dead letters {dead:,}")  # fmt: skip
    codes = Counter(r.code for row in rows if row.flagged for r in row.reasons)
    if codes:
        print("Reasons on flagged transactions: "
              + ", ".join(f"{c} {k:,}" for c, k in codes.most_common()))  # fmt: skip
    if any(r.label is not None for r in rows):
        print("\nAgainst the generator's labels:\n" + format_report(pattern_report(rows)))


def cmd_demo(args: argparse.Namespace) -> int:
    from dataflows.demo import run_demo

    s = _settings(args)
    if args.port is not None:
        s = s.model_copy(update={"dash_port": args.port})
    # The demo shows alerts within 2 s of production: refresh every second and flush the
    # sink every 0.2 s unless the user chose otherwise (production defaults: 2 s, 0.5 s).
    chosen = {kv.split("=", 1)[0] for kv in args.set or []}
    demo = {"dash_refresh_s": 1.0, "clickhouse_batch_seconds": 0.2}
    s = s.model_copy(
        update={
            k: v
            for k, v in demo.items()
            if k not in chosen and f"FRAUD_{k.upper()}" not in os.environ
        }
    )
    return run_demo(s, _gen_config(args), args.rate, fresh=args.fresh, seconds=args.seconds)


def cmd_dashboard(args: argparse.Namespace) -> int:
    import logging

    from dash_app.app import create_app, feedback_publisher

    s = _settings(args)
    if s.clickhouse_url.startswith("chdb:"):
        print("note: chDB allows one process per directory; while a dataflow writes to it, "
              "use `fraud demo` (which serves the dashboard itself)", file=sys.stderr)  # fmt: skip
    logging.basicConfig(level=logging.INFO)
    app = create_app(s, publish=feedback_publisher(s))
    print(f"Dashboard: http://{s.dash_host}:{s.dash_port}", flush=True)
    app.run(host=s.dash_host, port=s.dash_port, debug=False)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from generators.stream import Pacer, event_stream

    s = _settings(args)
    cfg = _gen_config(args)
    print(f"fraud simulate: {args.count:,} generated events (seed {cfg.seed}, {cfg.users:,} users, "
          f"fraud rate {cfg.fraud_rate:.1%}) -> dataflow ({s.model_version}); alerts:")  # fmt: skip
    pacer = Pacer(args.rate)
    rows, decisions, rate, dead = _run_local(
        s,
        lambda: (v for _, v in event_stream(cfg, args.count)),
        args.show,
        pacer.tick,
        store=args.store,
    )
    _summary(rows, decisions, rate, dead)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dataflows.io import jsonl_lines

    s = _settings(args)
    if args.input is None:
        return _run_kafka(s, args.store)
    path = Path(args.input)
    if not path.exists():
        raise ConfigError(f"--input {path}: no such file")
    rows, decisions, rate, dead = _run_local(s, lambda: jsonl_lines(path), args.show,
                                             store=args.store)  # fmt: skip
    _summary(rows, decisions, rate, dead)
    return 0


def _run_kafka(s: Settings, store: bool) -> int:
    """Score the Kafka topic in-process (for a cluster use python -m bytewax.run)."""
    from bytewax.run import cli_main

    from dataflows.io import CallbackSink, stop_on_signals
    from dataflows.kafka import kafka_flow
    from generators.stream import Progress

    stop = stop_on_signals()  # Ctrl-C / SIGTERM: end the input, flush, return
    prog = Progress(f"scored from {s.topic_transactions}")
    flagged = [0]

    def on_rows(batch: list[Any]) -> None:
        flagged[0] += sum(r.flagged for r in batch)
        prog.update(len(batch), f"flagged {flagged[0]:,}")

    sinks: list[Any] = [CallbackSink(on_rows)]
    if store:
        sinks.append(_store_sink(s))
    cli_main(kafka_flow(s, sinks, stop=stop), epoch_interval=None)
    prog.done(f"flagged {flagged[0]:,}")
    return 0


def cmd_bench_store(args: argparse.Namespace) -> int:
    from clickhouse.bench import run

    s = _settings(args)
    run(args.url or s.clickhouse_url, args.rows, args.sink_rows, s.clickhouse_batch_rows)
    return 0


def _date(v: str) -> date:
    try:
        return date.fromisoformat(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a date (YYYY-MM-DD)") from None


def cmd_eval(args: argparse.Namespace) -> int:
    from dataflows.evaluate import html_report, markdown_report, run_handbook, ulb_report

    s = _settings(args)
    root = Path(args.data)
    if not (root / "fraud_handbook_simulated" / "transactions.parquet").exists():
        raise ConfigError(f"--data {root}: no fraud_handbook_simulated/transactions.parquet there")
    if args.to <= getattr(args, "from"):
        raise ConfigError(f"--to {args.to} must be after --from {getattr(args, 'from')}")
    print(f"fraud eval: handbook data {root}, streaming {getattr(args, 'from')} … {args.to}",
          file=sys.stderr)  # fmt: skip
    r = run_handbook(s, root, getattr(args, "from"), args.to)
    if not r.rows:
        raise ConfigError("the streamed range covers no published test week: widen --from/--to")
    generator = None
    if args.generator_count:
        generator = _generator_report(s, args.generator_count)
    command = "fraud eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else "fraud eval"
    ulb = None
    ulb_path = root / "ulb_creditcard" / "creditcard_day1.parquet"
    if ulb_path.exists():
        print("fraud eval: ULB day 1 (River's HST figure)", file=sys.stderr)
        ulb = ulb_report(ulb_path)
    md = markdown_report(r, s, command.strip(), generator, ulb)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "README.md").write_text(md)
        (out / "report.html").write_text(html_report(r, md))
        print(f"wrote {out / 'README.md'} and {out / 'report.html'}", file=sys.stderr)
    return 0


def _generator_report(s: Settings, count: int) -> str:
    from dataflows.metrics import format_report, pattern_report
    from generators.stream import event_stream
    from generators.synth import GeneratorConfig

    cfg = GeneratorConfig(seed=7, users=5000, fraud_rate=0.01)
    rows, _, _, _ = _run_local(s, lambda: (v for _, v in event_stream(cfg, count)), 0)
    return (f"{count:,} events, seed {cfg.seed}, {cfg.users:,} users, fraud rate "
            f"{cfg.fraud_rate:.0%} (`fraud simulate --count {count}`):\n\n```\n"
            + format_report(pattern_report(rows)) + "\n```")  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> int:
    from dataflows.bench import BenchConfig, run_bench

    s = _settings(args)
    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    command = "fraud bench" + (" --quick" if args.quick else "")

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    md = run_bench(s, cfg, command, say)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    s = _settings(args)
    for k, v in s.safe_dict().items():
        field = Settings.model_fields[k]
        print(f"FRAUD_{k.upper():28s} = {v!s:24s} {field.description or ''}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.jsonschema import SCHEMA_DIR, write_schemas

    stale = write_schemas(check=args.check)
    if args.check and stale:
        print(f"out of date: {stale}; run `fraud schemas`", file=sys.stderr)
        return 1
    print(f"{SCHEMA_DIR}: " + ("up to date" if not stale else f"wrote {stale}"))
    return 0


# -- parser -----------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a setting (see `fraud settings`); repeatable")  # fmt: skip


def _add_generator(p: argparse.ArgumentParser, count: int) -> None:
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    p.add_argument("--users", type=_positive_int("users"), default=5000, help="card holders")
    p.add_argument("--fraud-rate", type=_fraction, default=0.01,
                   help="expected share of fraudulent events (default 0.01)")  # fmt: skip
    p.add_argument("--count", type=_positive_int("count"), default=count, help="events")
    p.add_argument("--rate", type=_nonneg_float("rate"), default=0.0,
                   help="events per second (0 = as fast as possible)")  # fmt: skip
    p.add_argument("--start", type=_timestamp, help="event time of the first event (ISO-8601)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fraud", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="synthetic transactions with labelled fraud")
    _add_generator(p, 10_000)
    p.add_argument("--to", choices=("stdout", "file", "parquet", "kafka"), default="stdout")
    p.add_argument("--out", help="output path for --to file/parquet")
    _add_common(p)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("demo", help="the whole system live, embedded: broker, generator, "
                       "dataflow, chDB and the dashboard on http://127.0.0.1:8050")  # fmt: skip
    _add_generator(p, 1)
    p.set_defaults(rate=100.0, users=20_000, fraud_rate=0.02)
    p.add_argument("--fresh", action="store_true", help="delete the stored data first")
    p.add_argument("--seconds", type=_nonneg_float("seconds"),
                   help="stop after this many seconds (default: run until Ctrl-C)")  # fmt: skip
    p.add_argument("--port", type=_positive_int("port"), help="dashboard port (default 8050)")
    _add_common(p)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("simulate", help="score N generated events in-process; print alerts "
                       "and recall per fraud pattern (no servers)")  # fmt: skip
    _add_generator(p, 30_000)
    p.add_argument("--show", type=int, default=25, help="alerts to print (default 25)")
    p.add_argument("--store", action="store_true", help="also write to FRAUD_CLICKHOUSE_URL")
    _add_common(p)
    p.set_defaults(fn=cmd_simulate)

    p = sub.add_parser("dashboard", help="serve the analyst app on the configured ClickHouse")
    _add_common(p)
    p.set_defaults(fn=cmd_dashboard)

    p = sub.add_parser("run", help="score the Kafka topic (FRAUD_BROKERS) or a JSONL file")
    p.add_argument("--input", help="JSONL file, one event per line (default: Kafka)")
    p.add_argument("--show", type=int, default=25, help="alerts to print (default 25)")
    p.add_argument(
        "--no-store",
        dest="store",
        action="store_false",
        help="do not write rows and alerts to ClickHouse (FRAUD_CLICKHOUSE_URL)",
    )
    _add_common(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("migrate", help="apply pending ClickHouse migrations (idempotent)")
    _add_common(p)
    p.set_defaults(fn=cmd_migrate)

    p = sub.add_parser("topics", help="create the Kafka topics (idempotent)")
    p.add_argument("action", choices=("create",))
    _add_common(p)
    p.set_defaults(fn=cmd_topics)

    p = sub.add_parser("latency", help="measure produce->alert latency through the broker")
    p.add_argument("--rate", type=_nonneg_float("rate"), default=200.0, help="tx/s (200)")
    p.add_argument("--seconds", type=_nonneg_float("seconds"), default=30.0, help="duration")
    _add_common(p)
    p.set_defaults(fn=cmd_latency)

    p = sub.add_parser("bench-store", help="ClickHouse sink rate and dashboard query latency")
    p.add_argument("--url", help="ClickHouse URL (default: FRAUD_CLICKHOUSE_URL)")
    p.add_argument(
        "--rows",
        type=_positive_int("rows"),
        nargs="+",
        default=[1_000_000, 5_000_000],
        help="table sizes to time the queries at (default 1000000 5000000)",
    )
    p.add_argument(
        "--sink-rows",
        type=_positive_int("sink-rows"),
        default=100_000,
        help="rows pushed through the sink (default 100000)",
    )
    _add_common(p)
    p.set_defaults(fn=cmd_bench_store)

    p = sub.add_parser("eval", help="detection quality on the Fraud Detection Handbook data "
                       "against its published results")  # fmt: skip
    from generators.datasets import DATA_DIR

    p.add_argument("--data", default=str(DATA_DIR), help=f"datasets folder (default {DATA_DIR})")
    p.add_argument(
        "--from",
        type=_date,
        default=date(2018, 6, 20),
        help="first day streamed (default 2018-06-20: history before the tests)",
    )
    p.add_argument(
        "--to",
        type=_date,
        default=date(2018, 9, 5),
        help="day after the last one streamed (default 2018-09-05)",
    )
    p.add_argument("--out", help="write README.md and report.html here (e.g. docs/eval)")
    p.add_argument(
        "--generator-count",
        type=int,
        default=50_000,
        help="events of the project's generator for per-pattern recall (0 = skip)",
    )
    _add_common(p)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("bench", help="throughput, latency, memory and per-stage cost figures")
    p.add_argument("--quick", action="store_true", help="small legs, under a minute (CI smoke)")
    p.add_argument("--out", help="also write the Markdown table here (docs/benchmarks.md)")
    _add_common(p)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("settings", help="print the effective settings")
    _add_common(p)
    p.set_defaults(fn=cmd_settings)

    p = sub.add_parser("schemas", help="write the JSON Schema files of the public contracts")
    p.add_argument("--check", action="store_true", help="fail if the files are out of date")
    p.set_defaults(fn=cmd_schemas)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dataflows.flow import tune_gc

    tune_gc()
    try:
        return args.fn(args)
    except (ConfigError, ValueError) as e:
        print(f"fraud {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except FraudError as e:
        print(f"fraud {args.cmd}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
