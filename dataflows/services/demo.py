"""The one-command embedded demo: broker -> topics -> generator -> dataflow -> chDB -> Dash,
and the decision API (``fraud serve``) beside them.

Everything runs from this one process except the broker (tansu, a child process in its
own session, killed on exit).  chDB locks its data directory to one process, so the
process that owns it - this one, writing through the dataflow's ClickHouse sink - also
serves the dashboard (Dash in a thread, queries through per-thread clients).  A status
line shows events produced, scored, flagged, the rates and how long a new alert takes
from being produced to being queryable (the dashboard adds up to one refresh interval).

Ctrl-C (or ``--seconds``) stops everything; running again continues on the stored data
(the generator resumes after the latest stored event time, with fresh ids); ``--fresh``
deletes the chDB directory first.
"""

from __future__ import annotations

import _thread
import logging
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clickhouse import queries as q
from clickhouse.store import Store, chdb_path, describe_url, migrate
from generators.stream import EventClock, event_stream, natural_rate, prefetched
from generators.synth import GeneratorConfig
from schemas.settings import Settings

__all__ = ["run_demo"]

log = logging.getLogger(__name__)


class _Counters:
    def __init__(self) -> None:
        self.produced = 0
        self.scored = 0
        self.flagged = 0
        self.lags: list[float] = []
        self.stop = threading.Event()
        self.failed: str | None = None


def _generate(s: Settings, cfg: GeneratorConfig, speed: float, c: _Counters) -> None:
    """Produce events to the transactions topic as their event time comes (``speed`` ×
    the wall clock) until told to stop."""
    import orjson

    from dataflows.connectors.kafka import make_producer, produce_all

    clock = EventClock(cfg.start.timestamp() * 1000.0, speed)

    def paced() -> Iterator[tuple[bytes, bytes]]:
        for kv in prefetched(event_stream(cfg)):
            ts = datetime.fromisoformat(orjson.loads(kv[1])["ts"])
            clock.wait(ts.timestamp() * 1000.0)
            c.produced += 1
            yield kv

    try:
        produce_all(make_producer(s), s.topic_transactions, paced(), stop=c.stop, flush_s=5.0)
    except Exception:
        log.exception("generator stopped")
        _thread.interrupt_main()


def _watch(store: Store, c: _Counters, every_s: float, url: str, since: datetime) -> None:
    """Status line plus produce->queryable lag of each new alert (polled every 0.25 s);
    only alerts raised since this run started (a quick restart must not count the last
    run's)."""
    seen: set[str] = set()
    last_print = t0 = time.monotonic()
    last_scored = 0
    while not c.stop.wait(0.25):
        try:
            rows = store.client.query(
                f"SELECT a.alert_id, t.ingested_at FROM {store.database}.alerts AS a"
                f" INNER JOIN {store.database}.transactions AS t ON t.txn_id = a.txn_id"
                " WHERE a.created_at > now64(3) - INTERVAL 30 SECOND"
                " AND a.created_at >= {since:DateTime64(3, 'UTC')}",
                parameters={"since": since},
            ).result_rows
        except Exception as e:  # the status line must never take the demo down
            log.debug("watch query failed: %s", e)
            rows = []
        now = datetime.now(UTC)
        for alert_id, ingested in rows:
            if alert_id not in seen and ingested is not None:
                seen.add(alert_id)
                c.lags.append((now - ingested.replace(tzinfo=UTC)).total_seconds())
        t = time.monotonic()
        if t - last_print >= every_s:
            rate = (c.scored - last_scored) / (t - last_print)
            last_scored, last_print = c.scored, t
            lag = f"{statistics.median(c.lags[-200:]):.2f}s" if c.lags else "–"
            print(
                f"\r{t - t0:6.0f}s produced {c.produced:,} · scored {c.scored:,} ({rate:,.0f}/s)"
                f" · flagged {c.flagged:,} · alert visible after {lag} · {url}  ",
                end="",
                file=sys.stderr,
                flush=True,
            )


def _interrupted(e: BaseException | None) -> bool:
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


def _serve(app: Any, host: str, port: int, c: _Counters) -> None:
    """Serve the dashboard; if it cannot (werkzeug exits its thread when the port was
    taken after the CLI's check), stop the demo rather than keep printing a dead URL."""
    import flask.cli

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("dash.dash").setLevel(logging.WARNING)  # "Dash is running on ..."
    flask.cli.show_server_banner = lambda *_a, **_k: None  # the demo prints the URL itself
    try:
        app.run(host=host, port=port, debug=False, use_reloader=False)
    except BaseException as e:
        c.failed = f"the dashboard could not serve {host}:{port} ({e!r})"
        log.error("%s: stopping the demo", c.failed)
        _thread.interrupt_main()


def _start_api(s: Settings) -> Any:
    """The decision API in this process (it reads stored decisions from the chDB this
    process owns), answered by the demo's flow."""
    from dataflows.api.app import create_app, start_server

    app = create_app(s, store=lambda: Store.from_settings(s))
    return start_server(app, s.api_host, s.api_port)


def run_demo(
    s: Settings,
    cfg: GeneratorConfig,
    rate: float,
    *,
    fresh: bool = False,
    seconds: float | None = None,
    start: datetime | None = None,
) -> int:
    """Run the whole system until Ctrl-C (or ``seconds``); returns the exit code.

    Event time starts at ``start`` (default: now), and always after the stored data."""
    from bytewax.run import cli_main

    from dash_app.app import create_app
    from dataflows.connectors.alert_listener import alert_listener
    from dataflows.connectors.chsink import clickhouse_sink, dead_letter_sink
    from dataflows.connectors.embedded import EmbeddedBroker
    from dataflows.connectors.kafka import create_topics, feedback_publisher
    from dataflows.connectors.local import CallbackSink, stop_on_signals
    from dataflows.connectors.rules_feed import policy_announcer, policy_feed
    from dataflows.flow import kafka_flow

    if s.clickhouse_url.startswith("chdb:") and fresh:
        raw = chdb_path(s.clickhouse_url)
        if raw is not None and Path(raw).exists():
            shutil.rmtree(raw)
            print(f"--fresh: deleted {Path(raw).resolve()}", file=sys.stderr)
    # Ctrl-C, SIGTERM (docker stop, kill) and --seconds end the inputs: the flow closes
    # its epoch, flushes ClickHouse and returns (no orphan broker, no lost rows).
    stop = stop_on_signals()
    broker = None if s.brokers else EmbeddedBroker().start()
    c = _Counters()
    try:
        if broker is not None:
            s = s.model_copy(update={"brokers": broker.bootstrap})
            print(f"embedded broker (tansu) on {broker.bootstrap}", file=sys.stderr)
        s = s.model_copy(update={"kafka_tail": True})
        create_topics(s)
        store = Store.from_settings(s)
        applied = migrate(store, s.clickhouse_ttl_days)
        bounds = q.data_bounds(store)
        start = (start or datetime.now(UTC)).replace(microsecond=0)
        if bounds is not None:
            start = max(start, bounds[1] + timedelta(minutes=1))
        tag = f"r{int(time.time()) % 10**8}-"
        cfg = replace(cfg, start=start, id_prefix=tag)
        url = f"http://{s.dash_host}:{s.dash_port}"
        print(
            f"ClickHouse {describe_url(s.clickhouse_url)} database {s.clickhouse_database}"
            + (f" (applied {len(applied)} migrations)" if applied else "")
            + (f", continuing after {bounds[1]:%Y-%m-%d %H:%M}" if bounds else ""),
            file=sys.stderr,
        )
        speed = max(1.0, rate / natural_rate(cfg.users)) if rate > 0 else 1.0
        basis = (
            "event time = wall clock"
            if speed < 1.05
            else f"event time runs {speed:.1f}x the wall clock ({cfg.users:,} holders make "
            f"{natural_rate(cfg.users):.1f} tx/s in real time)"
        )
        print(
            f"generator: {cfg.users:,} card holders, fraud rate {cfg.fraud_rate:.1%}, "
            f"~{natural_rate(cfg.users) * speed:,.1f} tx/s on average over a day (by hour of "
            f"day), from {start:%Y-%m-%d %H:%M} UTC; {basis}",
            file=sys.stderr,
        )
        feed = policy_feed(s, store)  # the policy in force, hot-reloaded from the topic
        app = create_app(
            s,
            Store.from_settings(s),
            feedback_publisher(s),
            announce_policy=policy_announcer(s),
            live_alerts=alert_listener(s),
        )
        threading.Thread(
            target=_serve, args=(app, s.dash_host, s.dash_port, c), daemon=True, name="dash"
        ).start()
        api = _start_api(s)
        print(
            f"\nDashboard: {url}  (Ctrl-C stops everything)"
            f"\nDecision API: http://{s.api_host}:{s.api_port}/docs\n",
            flush=True,
        )
        threading.Thread(
            target=_generate, args=(s, cfg, speed, c), daemon=True, name="generator"
        ).start()
        threading.Thread(
            target=_watch,
            args=(Store.from_settings(s), c, 2.0, url, datetime.now(UTC)),
            daemon=True,
            name="status",
        ).start()
        if seconds is not None:
            timer = threading.Timer(seconds, stop.set)
            timer.daemon = True  # must not keep the process alive after Ctrl-C
            timer.start()

        def count(batch: list[Any]) -> None:
            c.scored += len(batch)
            c.flagged += sum(r.flagged for r in batch)

        try:
            cli_main(
                kafka_flow(
                    s,
                    [clickhouse_sink(s), CallbackSink(count)],
                    stop=stop,
                    dlq_store=dead_letter_sink(s),
                    policy=feed.current,
                ),
                epoch_interval=timedelta(seconds=2),
            )
        except BaseException as e:  # Ctrl-C arrives wrapped in bytewax's runtime error
            if not _interrupted(e):
                raise
    finally:
        c.stop.set()
        if "api" in locals():
            from dataflows.api.app import stop_server

            stop_server(api)
        # The app's alert listener and the rules feed follow the broker: stop them first,
        # or librdkafka prints a "connection refused" line per retry after it is gone.
        if "app" in locals():
            app.server.extensions.get("fraud_live_stop", lambda: None)()
        if "feed" in locals():
            feed.stop()
        if broker is not None:
            broker.stop()
    lags = sorted(c.lags)
    lag = (
        (
            f"; produce->queryable alert p50 {lags[len(lags) // 2]:.2f}s, "
            f"p95 {lags[int(len(lags) * 0.95)]:.2f}s over {len(lags)} alerts"
        )
        if lags
        else ""
    )
    print(
        f"\nstopped: produced {c.produced:,}, scored {c.scored:,}, flagged {c.flagged:,}{lag}",
        flush=True,
    )
    if c.failed:
        print(f"fraud demo: {c.failed}", file=sys.stderr)
        return 1
    return 0
