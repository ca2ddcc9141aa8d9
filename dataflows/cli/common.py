"""Argument types and helpers shared by every ``fraud`` subcommand.

Every subcommand takes ``--set FIELD=VALUE`` (repeatable) to override any setting on top
of the ``FRAUD_*`` environment; a bad value is refused naming the field and what is
allowed, with exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings

__all__ = [
    "add_common",
    "add_generator",
    "fraction",
    "gen_config",
    "iso_date",
    "nonneg_float",
    "positive_int",
    "settings_of",
    "timestamp",
]


def positive_int(name: str) -> Callable[[str], int]:
    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be an integer, got {v!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"--{name} must be >= 1, got {n}")
        return n

    return parse


def nonneg_float(name: str) -> Callable[[str], float]:
    def parse(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be a number, got {v!r}") from None
        if not x >= 0:
            raise argparse.ArgumentTypeError(f"--{name} must be >= 0, got {v}")
        return x

    return parse


def fraction(v: str) -> float:
    x = nonneg_float("fraud-rate")(v)
    if x > 0.5:
        raise argparse.ArgumentTypeError(f"--fraud-rate must be in [0, 0.5], got {v}")
    return x


def timestamp(v: str) -> datetime:
    try:
        ts = datetime.fromisoformat(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--start must be ISO-8601, got {v!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def iso_date(v: str) -> date:
    try:
        return date.fromisoformat(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a date (YYYY-MM-DD)") from None


def settings_of(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        if "=" not in item:
            # the token may be a secret typed without its field name: never echo it
            raise ConfigError(f"--set expects FIELD=VALUE, got {len(item)} characters without '='")
        k, v = item.split("=", 1)
        if k not in Settings.model_fields:
            raise ConfigError(f"--set {k}: unknown setting; see `fraud settings`")
        overrides[k] = v
    return load_settings(**overrides)


def gen_config(args: argparse.Namespace) -> Any:
    from generators.synth import GeneratorConfig

    return GeneratorConfig(
        seed=args.seed,
        users=args.users,
        fraud_rate=args.fraud_rate,
        start=args.start or datetime(2026, 1, 5, tzinfo=UTC),
    )


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a setting (see `fraud settings`); repeatable",
    )


def add_generator(p: argparse.ArgumentParser, count: int) -> None:
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    p.add_argument("--users", type=positive_int("users"), default=5000, help="card holders")
    p.add_argument(
        "--fraud-rate",
        type=fraction,
        default=0.01,
        help="expected share of fraudulent events (default 0.01)",
    )
    p.add_argument("--count", type=positive_int("count"), default=count, help="events")
    p.add_argument(
        "--rate",
        type=nonneg_float("rate"),
        default=0.0,
        help="events per second (0 = as fast as possible)",
    )
    p.add_argument("--start", type=timestamp, help="event time of the first event (ISO-8601)")
