"""``fraud demo`` and ``fraud dashboard``: the system live on the embedded default, and the
analyst app on a configured ClickHouse."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dataflows.cli.common import (
    add_common,
    add_generator,
    gen_config,
    nonneg_float,
    port_number,
    positive_int,
    require_free_port,
    settings_of,
)
from generators.stream import users_for_rate
from schemas.errors import ConfigError


def cmd_demo(args: argparse.Namespace) -> int:
    from dataflows.services.demo import run_demo

    s = settings_of(args)
    field = "dash_port (FRAUD_DASH_PORT)"
    if args.port is not None:
        s = s.model_copy(update={"dash_port": args.port})
        field = "--port"
    require_free_port(s.dash_host, s.dash_port, field)  # before the broker and the flow
    require_free_port(s.api_host, s.api_port, "api_port (FRAUD_API_PORT)")
    # The demo shows alerts within 2 s of production: refresh every second and flush the
    # sink every 0.2 s unless the user chose otherwise (production defaults: 2 s, 0.5 s).
    # (a value from --set or the environment is in model_fields_set).
    demo = {"dash_refresh_s": 1.0, "clickhouse_batch_seconds": 0.2}
    s = s.model_copy(update={k: v for k, v in demo.items() if k not in s.model_fields_set})
    if args.rate <= 0:
        raise ConfigError("--rate must be positive for the demo (it paces by event time)")
    if args.users is None:
        args.users = users_for_rate(args.rate)
    return run_demo(
        s, gen_config(args), args.rate, fresh=args.fresh, seconds=args.seconds, start=args.start
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    import logging

    from dash_app.app import create_app
    from dataflows.connectors.alert_listener import alert_listener
    from dataflows.connectors.kafka import feedback_publisher
    from dataflows.connectors.rules_feed import policy_announcer

    s = settings_of(args)
    require_free_port(s.dash_host, s.dash_port, "dash_port (FRAUD_DASH_PORT)")
    if s.clickhouse_url.startswith("chdb:"):
        print(
            "note: chDB allows one process per directory; while a dataflow writes to it, "
            "use `fraud demo` (which serves the dashboard itself)",
            file=sys.stderr,
        )
    logging.basicConfig(level=logging.INFO)
    app = create_app(
        s,
        publish=feedback_publisher(s),
        announce_policy=policy_announcer(s),
        live_alerts=alert_listener(s),
    )
    print(f"Dashboard: http://{s.dash_host}:{s.dash_port}", flush=True)
    app.run(host=s.dash_host, port=s.dash_port, debug=False)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from dataflows.api.app import create_app
    from dataflows.cli.common import kafka_settings, log_to_stderr

    s = kafka_settings(args)
    require_free_port(s.api_host, s.api_port, "api_port (FRAUD_API_PORT)")
    log_to_stderr()
    if not s.api_keys:
        logging.getLogger("dataflows.api").warning(
            "api_keys (FRAUD_API_KEYS) is empty: the decision API accepts every request"
        )
    print(f"Decision API: http://{s.api_host}:{s.api_port}/docs", flush=True)
    uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_level="info")
    return 0


def register_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="the decision API: POST /v1/decisions answered by the flow within "
        "FRAUD_DECISION_DEADLINE_MS (docs on /docs)",
    )
    add_common(p)
    p.set_defaults(fn=cmd_serve)


def register_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole system live, embedded: broker, generator, "
        "dataflow, chDB and the dashboard on http://127.0.0.1:8050",
    )
    add_generator(
        p,
        1,
        users_help="card holders (default: as many as make --rate with their own daily "
        "habits, at most 1,000,000; fewer make event time run faster than the clock)",
        rate_help="average events per second over a day; traffic follows the hour of day "
        "(default 20: event time = wall clock)",
        fraud_default=0.02,
        start_help="event time of the first event (ISO-8601; default now, or after the "
        "stored data): a daytime start shows daytime traffic at any hour",
    )
    p.set_defaults(rate=20.0, users=None)
    p.add_argument("--fresh", action="store_true", help="delete the stored data first")
    p.add_argument(
        "--seconds",
        type=nonneg_float("seconds"),
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.add_argument("--port", type=port_number, help="dashboard port (default 8050)")
    add_common(p)
    p.set_defaults(fn=cmd_demo)


def register_dashboard(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="serve the analyst app on the configured ClickHouse")
    add_common(p)
    p.set_defaults(fn=cmd_dashboard)


def cmd_cluster(args: argparse.Namespace) -> int:
    import logging

    from dataflows.services.cluster import run_cluster

    s = settings_of(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_cluster(s, args.processes, args.snapshot_s, args.base_port)


def register_cluster(sub: Any) -> None:
    p = sub.add_parser(
        "cluster",
        help="the production flow as N supervised processes on this machine; "
        "when one dies all restart from the last snapshot",
    )
    p.add_argument("--processes", type=positive_int("processes"), default=2, help="(2)")
    p.add_argument(
        "--snapshot-s",
        type=positive_int("snapshot-s"),
        default=10,
        help="snapshot interval, whole seconds as bytewax takes it (10)",
    )
    p.add_argument(
        "--base-port",
        type=port_number,
        help="first of N consecutive ports for the processes (default: free ports)",
    )
    add_common(p)
    p.set_defaults(fn=cmd_cluster)
