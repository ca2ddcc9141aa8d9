"""Argument types and helpers shared by every ``fraud`` subcommand.

Every subcommand takes ``--set FIELD=VALUE`` (repeatable) to override any setting on top
of the ``FRAUD_*`` environment; a bad value is refused naming the field and what is
allowed, with exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
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
    "kafka_settings",
    "log_to_stderr",
    "nonneg_float",
    "port_number",
    "positive_int",
    "require_free_port",
    "settings_of",
    "timestamp",
]


def positive_int(name: str, minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, refused naming ``name``."""

    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{_flag(name)} must be an integer, got {v!r}"
            ) from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{_flag(name)} must be >= {minimum}, got {n}")
        return n

    return parse


def _flag(name: str) -> str:
    return name if name.isupper() else f"--{name}"


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


def port_number(v: str) -> int:
    """A TCP port, 1..65535 (refused by the parser, before anything starts)."""
    n = positive_int("port")(v)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"--port must be in 1..65535, got {n}")
    return n


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


def kafka_settings(args: argparse.Namespace) -> Settings:
    """Settings of a command that needs a broker, refused naming ``brokers
    (FRAUD_BROKERS)`` before any other work when it is empty."""
    from dataflows.connectors.kafka import broker_list

    s = settings_of(args)
    broker_list(s)
    return s


def require_free_port(host: str, port: int, field: str) -> None:
    """Refuse a port something else listens on before starting anything: a server thread
    that cannot bind only logs it, and the URL printed would serve another program."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # as werkzeug and gunicorn do, so a port in TIME_WAIT is not "in use"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as e:
        what = (
            "is already in use"
            if e.errno == errno.EADDRINUSE
            else f"cannot be served ({e.strerror or e})"
        )
        raise ConfigError(
            f"{field}: {host}:{port} {what}; stop what listens there or choose another port"
        ) from None


def log_to_stderr() -> None:
    """INFO and up on stderr, so a command's own operational lines (broker lost/back)
    are seen; librdkafka's lines arrive through it too, rate-limited."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def gen_config(args: argparse.Namespace) -> Any:
    from generators.synth import GeneratorConfig

    return GeneratorConfig(
        seed=args.seed,
        users=args.users,
        fraud_rate=args.fraud_rate,
        start=args.start or datetime(2026, 1, 5, tzinfo=UTC),
        patterns=pattern_set(getattr(args, "patterns", "classic")),
    )


def pattern_set(name: str) -> tuple[str, ...]:
    """``classic`` (the default mix), ``all`` (plus the scenario patterns: cash-out after
    card testing, holder back home, card-not-present without location) or a comma list."""
    from generators.synth import CLASSIC_PATTERNS, PATTERNS

    if name == "classic":
        return CLASSIC_PATTERNS
    if name == "all":
        return PATTERNS
    chosen = tuple(p.strip() for p in name.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(PATTERNS))
    if unknown or not chosen:
        raise ConfigError(
            f"--patterns: unknown {unknown}; known: classic, all, {', '.join(PATTERNS)}"
        )
    return chosen


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a setting (see `fraud settings`); repeatable",
    )


def add_generator(
    p: argparse.ArgumentParser,
    count: int,
    *,
    users_help: str = "card holders (default 5000)",
    rate_help: str = "events per second (default 0 = as fast as possible)",
    fraud_default: float = 0.01,
    start_help: str = "event time of the first event (ISO-8601)",
) -> None:
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    p.add_argument("--users", type=positive_int("users"), default=5000, help=users_help)
    p.add_argument(
        "--fraud-rate",
        type=fraction,
        default=fraud_default,
        help=f"expected share of fraudulent events (default {fraud_default:g})",
    )
    p.add_argument("--count", type=positive_int("count"), default=count, help="events")
    p.add_argument(
        "--rate",
        type=nonneg_float("rate"),
        default=0.0,
        help=rate_help,
    )
    p.add_argument("--start", type=timestamp, help=start_help)
    p.add_argument(
        "--patterns",
        default="classic",
        help="fraud patterns: classic (default), all (adds cash-out, holder back home, "
        "card-not-present without location) or a comma list",
    )
