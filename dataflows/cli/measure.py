"""``fraud eval | bench | bench-store | latency``: detection quality and performance."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from dataflows.cli.common import (
    add_common,
    iso_date,
    nonneg_float,
    positive_int,
    settings_of,
)
from dataflows.cli.scoring import run_local
from schemas.errors import ConfigError
from schemas.settings import Settings

BROKER_PRODUCERS = 3
"""The flow's producers per event: the input, its decisions, its alerts."""


def cmd_latency(args: argparse.Namespace) -> int:
    from dataflows.bench.latency import measure_broker, measure_latency

    s = settings_of(args)
    where = s.brokers or "embedded tansu"
    if args.broker_only:
        parts = args.partitions or 12
        print(
            f"broker alone: {BROKER_PRODUCERS} producers x {args.rate:g} msg/s over "
            f"{parts} partitions for {args.seconds:g}s via {where} ..."
        )
        r = measure_broker(s, args.rate, args.seconds, parts, BROKER_PRODUCERS)
        print(
            f"messages {r['messages']:.0f}: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms,"
            f" p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
        )
        return 0
    procs = f" on {args.processes} processes" if args.processes > 1 else ""
    print(
        f"produce->alert latency at {args.rate:g} tx/s for {args.seconds:g}s via {where}{procs} ..."
    )
    r = measure_latency(s, args.rate, args.seconds, args.processes, args.partitions)
    print(
        f"alerts {r['alerts']:.0f}: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
    )
    if "tail_to_scored_ms" in r:
        print(
            f"slowest 1 %, mean ms: produced->scored {r['tail_to_scored_ms']:.1f}, "
            f"->alert produced {r['tail_to_produced_ms']:.1f}, "
            f"->read {r['tail_to_consumed_ms']:.1f}"
        )
    return 0


def cmd_bench_store(args: argparse.Namespace) -> int:
    from dataflows.bench.store import run, run_stored

    s = settings_of(args)
    if args.stored:
        run_stored(args.url or s.clickhouse_url, s.clickhouse_database)
        return 0
    run(
        args.url or s.clickhouse_url,
        args.rows,
        args.sink_rows,
        s.clickhouse_batch_rows,
        span_days=args.span_days,
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dataflows.evaluation.handbook import html_report, markdown_report, run_handbook, ulb_report

    # An evaluation must be reproducible: the booster is fitted in the step, never in a
    # background thread whose timing would decide which events it scores.
    # With the local feedback loop, rows wait for their day's totals and models, so the
    # scores depend on event time only (not on batches or workers).
    s = settings_of(args).model_copy(
        update={"learner_fit_background": False, "feedback_wait_s": 3600.0}
    )
    root = Path(args.data) if args.data else s.data_dir
    if not (root / "fraud_handbook_simulated" / "transactions.parquet").exists():
        raise ConfigError(f"--data {root}: no fraud_handbook_simulated/transactions.parquet there")
    if args.to <= getattr(args, "from"):
        raise ConfigError(f"--to {args.to} must be after --from {getattr(args, 'from')}")
    print(
        f"fraud eval: handbook data {root}, streaming {getattr(args, 'from')} … {args.to}",
        file=sys.stderr,
    )
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
    from dataflows.evaluation.patterns import format_report, pattern_report
    from generators.stream import event_stream
    from generators.synth import GeneratorConfig

    cfg = GeneratorConfig(seed=7, users=5000, fraud_rate=0.01)
    rows, _, _, _ = run_local(s, lambda: (v for _, v in event_stream(cfg, count)), 0)
    return (
        f"{count:,} events, seed {cfg.seed}, {cfg.users:,} users, fraud rate "
        f"{cfg.fraud_rate:.0%} (`fraud simulate --count {count}`):\n\n```\n"
        + format_report(pattern_report(rows))
        + "\n```"
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from dataflows.bench.flow import BenchConfig, run_bench

    s = settings_of(args)
    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    command = "fraud bench" + (" --quick" if args.quick else "")

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.only == "scale-out":
        from dataflows.bench.flow import scale_out_rows

        say(f"scale-out end to end, both feedback topologies ({cfg.scale_events:,} events)")
        rows = scale_out_rows(s, cfg)
        print("| leg | figure | notes |\n|---|---:|---|")
        print("\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows))
        return 0
    md = run_bench(s, cfg, command, say)
    print(md)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(keep_separate_sections(out.read_text() if out.exists() else "", md))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def keep_separate_sections(old: str, new: str) -> str:
    r"""``new`` followed by the sections of ``old`` that other commands write (a ``## ``
    heading saying ``(separate command)``, to the end): rerunning the bench must not
    wipe the API benchmark's figures.

    >>> keep_separate_sections("# B\nold\n## API (separate command)\nfig\n", "# B\nnew\n")
    '# B\nnew\n\n## API (separate command)\nfig\n'
    """
    lines = old.splitlines(keepends=True)
    at = next(
        (i for i, ln in enumerate(lines) if ln.startswith("## ") and "(separate command)" in ln),
        None,
    )
    if at is None:
        return new
    return new.rstrip("\n") + "\n\n" + "".join(lines[at:])


def register_latency(sub: Any) -> None:
    p = sub.add_parser("latency", help="measure produce->alert latency through the broker")
    p.add_argument("--rate", type=nonneg_float("rate"), default=200.0, help="tx/s (200)")
    p.add_argument("--seconds", type=nonneg_float("seconds"), default=30.0, help="duration")
    p.add_argument(
        "--processes",
        type=positive_int("processes"),
        default=1,
        help="flow processes (1); more run as a cluster on 12 aligned partitions",
    )
    p.add_argument(
        "--partitions",
        type=positive_int("partitions"),
        default=None,
        help="partitions of the topics (1 for one process, 12 for a cluster)",
    )
    p.add_argument(
        "--broker-only",
        action="store_true",
        help=f"no flow: the broker's own produce->consume latency with {BROKER_PRODUCERS} "
        "producers (events, decisions, alerts) at --rate each, over --partitions (12)",
    )
    add_common(p)
    p.set_defaults(fn=cmd_latency)


def register_bench_store(sub: Any) -> None:
    p = sub.add_parser("bench-store", help="ClickHouse sink rate and dashboard query latency")
    p.add_argument("--url", help="ClickHouse URL (default: FRAUD_CLICKHOUSE_URL)")
    p.add_argument(
        "--rows",
        type=positive_int("rows"),
        nargs="+",
        default=[1_000_000, 5_000_000],
        help="table sizes to time the queries at (default 1000000 5000000)",
    )
    p.add_argument(
        "--sink-rows",
        type=positive_int("sink-rows"),
        default=100_000,
        help="rows pushed through the sink (default 100000)",
    )
    p.add_argument(
        "--span-days",
        type=positive_int("span-days"),
        default=7,
        help="days of event time the rows spread over (default 7: dense; 9490 is "
        "2000-2025, the shape of a generated history)",
    )
    p.add_argument(
        "--stored",
        action="store_true",
        help="no fill: time the dashboard queries on what the configured database "
        "(clickhouse_database) holds, e.g. after fraud backfill; ranges end at its "
        "latest event",
    )
    add_common(p)
    p.set_defaults(fn=cmd_bench_store)


def register_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="detection quality on the Fraud Detection Handbook data against its published results",
    )
    p.add_argument(
        "--data",
        help="datasets folder (default: setting data_dir, FRAUD_DATA_DIR, else ../shared/data)",
    )
    p.add_argument(
        "--from",
        type=iso_date,
        default=date(2018, 6, 20),
        help="first day streamed (default 2018-06-20: history before the tests)",
    )
    p.add_argument(
        "--to",
        type=iso_date,
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
    add_common(p)
    p.set_defaults(fn=cmd_eval)


def register_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="throughput, latency, memory and per-stage cost figures")
    p.add_argument("--quick", action="store_true", help="small legs, under a minute (CI smoke)")
    p.add_argument("--out", help="also write the Markdown table here (docs/benchmarks.md)")
    p.add_argument(
        "--only",
        choices=["scale-out"],
        help="run one leg and print its rows (scale-out: end to end on 1 and 2 processes, "
        "both feedback topologies, and the plain Kafka loop)",
    )
    add_common(p)
    p.set_defaults(fn=cmd_bench)


def cmd_bench_api(args: argparse.Namespace) -> int:
    from dataflows.bench.api import format_legs, measure_api

    s = settings_of(args)

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    legs, held = measure_api(s, tuple(args.rates), args.seconds, say=say)
    print(format_legs(legs, held))
    return 0


def register_bench_api(sub: Any) -> None:
    p = sub.add_parser(
        "bench-api",
        help="decision API latency under open-loop load (broker, flow, API on this machine)",
    )
    p.add_argument(
        "--rates",
        type=nonneg_float("rates"),
        nargs="+",
        default=[200.0, 500.0],
        help="requests/s of the reported legs (200 500)",
    )
    p.add_argument("--seconds", type=nonneg_float("seconds"), default=10.0, help="per leg (10)")
    add_common(p)
    p.set_defaults(fn=cmd_bench_api)
