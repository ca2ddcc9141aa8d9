"""``fraud generate``: synthetic traffic to stdout, a file, Parquet or Kafka."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dataflows.cli.common import (
    add_common,
    add_generator,
    gen_config,
    kafka_settings,
    log_to_stderr,
)
from schemas.errors import ConfigError
from schemas.settings import Settings


def cmd_generate(args: argparse.Namespace) -> int:
    from generators.stream import Progress, event_stream, write_jsonl, write_parquet

    s = kafka_settings(args) if args.to == "kafka" else None  # refused before generating
    cfg = gen_config(args)
    if args.to == "parquet":
        if not args.out:
            raise ConfigError("--to parquet needs --out PATH")
        prog = Progress("generate", args.count)
        t = time.monotonic()
        n = write_parquet(cfg, args.count, Path(args.out), prog, partitioned=args.partitioned)
        prog.done()
        dt = time.monotonic() - t
        print(f"wrote {n:,} rows to {args.out} in {dt:.1f}s ({n / dt * 60:,.0f} rows/min)")
        return 0
    events = event_stream(cfg, args.count)
    if s is not None:
        return _generate_kafka(s, args, events)
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


def _generate_kafka(
    s: Settings, args: argparse.Namespace, events: Iterable[tuple[bytes, bytes]]
) -> int:
    from dataflows.connectors.kafka import make_producer, produce_all
    from generators.stream import Pacer, Progress

    log_to_stderr()
    producer = make_producer(s)
    prog = Progress(f"produce -> {s.topic_transactions}", args.count)
    pacer = Pacer(args.rate)

    def paced() -> Iterable[tuple[bytes, bytes]]:
        for kv in events:
            pacer.tick()
            yield kv

    n = produce_all(
        producer,
        s.topic_transactions,
        paced(),
        lambda k: prog.update(k, f"queued {len(producer):,}"),
    )
    prog.done()
    print(f"produced {n:,} events to {s.topic_transactions!r} on {s.brokers}")
    return 0


def register_generate(sub: Any) -> None:
    p = sub.add_parser("generate", help="synthetic transactions with labelled fraud")
    add_generator(p, 10_000)
    p.add_argument("--to", choices=("stdout", "file", "parquet", "kafka"), default="stdout")
    p.add_argument("--out", help="output path for --to file/parquet")
    p.add_argument(
        "--partitioned",
        action="store_true",
        help="with --to parquet: a Hive-partitioned dataset (OUT/year=YYYY/month=MM/)",
    )
    add_common(p)
    p.set_defaults(fn=cmd_generate)
