"""The ``fraud`` command: generate traffic, run the dataflow, demo it, measure it.

One module per command group (``traffic``, ``services``, ``scoring``, ``admin``,
``measure``, ``users``, ``rules``); each registers its subcommands.  Every subcommand
takes ``--set FIELD=VALUE`` (repeatable) to override any setting on top of the ``FRAUD_*``
environment; a bad value is refused naming the field and what is allowed, with exit
status 2.
"""

from __future__ import annotations

import argparse
import sys

from dataflows.cli import admin, measure, rules, scoring, services, traffic, users
from schemas.errors import ConfigError, FraudError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fraud", description="The fraud command: generate traffic, run the dataflow, demo it."
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for register in (
        traffic.register_generate,
        services.register_demo,
        scoring.register_simulate,
        services.register_dashboard,
        services.register_serve,
        services.register_cluster,
        scoring.register_run,
        scoring.register_backfill,
        admin.register_migrate,
        admin.register_topics,
        measure.register_latency,
        measure.register_bench_store,
        measure.register_eval,
        measure.register_bench,
        measure.register_bench_api,
        admin.register_settings,
        admin.register_schemas,
        users.register_users,
        rules.register_rules,
    ):
        register(sub)
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
