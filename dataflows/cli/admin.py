"""``fraud migrate | topics | settings | schemas``: set-up and inspection."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dataflows.cli.common import (
    add_common,
    kafka_settings,
    settings_of,
)
from schemas.settings import Settings


def cmd_migrate(args: argparse.Namespace) -> int:
    from clickhouse.store import Store, describe_url, migrate

    s = settings_of(args)
    applied = migrate(Store.from_settings(s), s.clickhouse_ttl_days)
    where = f"{describe_url(s.clickhouse_url)} database {s.clickhouse_database}"
    if applied:
        print(f"{where}: applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print(f"{where}: up to date")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from dataflows.connectors.kafka import create_topics, topic_config

    s = kafka_settings(args)
    for topic, state in create_topics(s).items():
        parts, config = topic_config(s, topic)
        compact = ", compacted" if config.get("cleanup.policy") == "compact" else ""
        print(
            f"{topic}: {state} ({parts} partitions{compact})"
            if state == "created"
            else f"{topic}: {state}"
        )
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    s = settings_of(args)
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


def register_migrate(sub: Any) -> None:
    p = sub.add_parser("migrate", help="apply pending ClickHouse migrations (idempotent)")
    add_common(p)
    p.set_defaults(fn=cmd_migrate)


def register_topics(sub: Any) -> None:
    p = sub.add_parser("topics", help="create the Kafka topics (idempotent)")
    p.add_argument("action", choices=("create",))
    add_common(p)
    p.set_defaults(fn=cmd_topics)


def register_settings(sub: Any) -> None:
    p = sub.add_parser("settings", help="print the effective settings")
    add_common(p)
    p.set_defaults(fn=cmd_settings)


def register_schemas(sub: Any) -> None:
    p = sub.add_parser("schemas", help="write the JSON Schema files of the public contracts")
    p.add_argument("--check", action="store_true", help="fail if the files are out of date")
    p.set_defaults(fn=cmd_schemas)
