"""Operability: Kafka commands refuse a missing broker at once, ports are checked before
anything starts, broker outages log one line each way, the dashboard runs on gunicorn."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dataflows.cli import main

ROOT = Path(__file__).resolve().parents[2]
RDKAFKA_FAIL = (
    "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused "
    "(after {ms}ms in state CONNECT)"
)


@pytest.fixture(autouse=True)
def _no_broker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUD_BROKERS", raising=False)
    monkeypatch.delenv("FRAUD_DASH_PORT", raising=False)
    monkeypatch.delenv("FRAUD_DASH_HOST", raising=False)


def _boom(*_a: Any, **_k: Any) -> Any:
    raise AssertionError("work started before the settings were checked")


# --- 1. a Kafka command without FRAUD_BROKERS -------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "create", "--set", "brokers="],
        ["topics", "create", "--set", "brokers= , "],
        ["generate", "--to", "kafka", "--count", "3", "--set", "brokers="],
        ["run", "--set", "brokers="],
    ],
    ids=["topics", "topics-blank", "generate", "run"],
)
def test_kafka_commands_without_brokers_fail_fast_naming_the_setting(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataflows.cli import scoring

    monkeypatch.setattr(scoring, "_store_sink", _boom)  # `run` migrated ClickHouse first
    monkeypatch.setattr("generators.stream.make_population", _boom)
    t = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - t < 5
    err = capsys.readouterr().err.strip()
    assert "brokers (FRAUD_BROKERS)" in err
    assert len(err.splitlines()) == 1, err


def test_topics_create_on_an_unreachable_broker_is_one_clear_line() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = f"127.0.0.1:{port}"
    t = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "dataflows.cli", "topics", "create", "--set", f"brokers={where}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - t < 14  # create_topics' own timeout is 15 s
    assert r.returncode in (1, 2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert where in lines[0] and "unreachable" in lines[0]


# --- 3. dashboard and demo ports ----------------------------------------------------------


@pytest.fixture
def listening() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records whether the demo or the dashboard server was started (nothing starts)."""
    calls: list[str] = []

    class App:
        def run(self, **_k: Any) -> None:
            calls.append("dashboard")

    monkeypatch.setattr(
        "dataflows.services.demo.run_demo", lambda *a, **k: calls.append("demo") or 0
    )
    monkeypatch.setattr("dash_app.app.create_app", lambda *a, **k: App())
    return calls


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_demo_port_out_of_range_is_refused(
    port: str, started: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["demo", "--port", port])
    assert e.value.code == 2
    assert "--port" in capsys.readouterr().err
    assert started == []


def test_dashboard_port_out_of_range_is_refused(
    started: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", "--set", "dash_port=99999"]) == 2
    assert "dash_port (FRAUD_DASH_PORT)" in capsys.readouterr().err
    assert started == []


@pytest.mark.parametrize(
    ("argv", "field"),
    [(["demo", "--port", "{port}"], "--port"), (["dashboard"], "dash_port (FRAUD_DASH_PORT)")],
    ids=["demo", "dashboard"],
)
def test_port_in_use_is_refused_before_anything_starts(
    argv: list[str],
    field: str,
    listening: int,
    started: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.format(port=listening) for a in argv]
    argv += ["--set", f"dash_port={listening}", "--set", "dash_host=127.0.0.1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"127.0.0.1:{listening}" in err and "in use" in err and field in err, err
    assert started == []


def test_a_free_port_starts(started: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["demo", "--port", str(port)]) == 0
    assert main(["dashboard", "--set", f"dash_port={port}", "--set", "brokers="]) == 0
    assert started == ["demo", "dashboard"]


# --- 2. broker connection: rate limiter, state tracker, client hooks ----------------------


def test_rate_limiter_passes_the_first_then_one_per_interval_with_the_count() -> None:
    from dataflows.connectors.kafka import RateLimiter

    lim = RateLimiter(interval_s=60)
    assert lim.allow("a", 0.0) == 0
    assert [lim.allow("a", t) for t in (1.0, 30.0, 59.9)] == [None, None, None]
    assert lim.allow("b", 1.0) == 0  # keys are independent
    assert lim.allow("a", 60.0) == 3
    assert lim.allow("a", 61.0) is None
    assert lim.allow("a", 200.0) == 1
    assert lim.suppressed == 4


def test_connection_state_reports_transitions_only() -> None:
    from dataflows.connectors.kafka import ConnectionState

    st = ConnectionState()
    assert st.recover(1.0) is None  # never lost: nothing to say
    assert st.lose(2.0) is True
    assert st.lose(3.0) is False  # the same outage reported again
    assert st.recover(12.5) == pytest.approx(10.5)
    assert st.recover(13.0) is None
    assert st.lose(20.0) is True


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _watch(answers: list[str | None], clock: _Clock) -> Any:
    from dataflows.connectors.kafka import BrokerWatch

    return BrokerWatch(
        ["127.0.0.1:9"], reachable=lambda _s, _t: answers.pop(0), clock=clock, interval_s=60
    )


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "dataflows.connectors.kafka"]


def test_broker_watch_logs_one_line_when_lost_and_one_when_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = _Clock()
    # a stale report (the broker answers), lost, still lost, back, a stale report again
    w = _watch([None, "Connection refused", "Connection refused", None, None], clock)
    for t in (1.0, 2.0, 3.0, 14.0, 15.0):
        clock.t = t
        w.check()
    ours = _ours(caplog)
    assert [r.levelno for r in ours] == [logging.WARNING, logging.INFO]
    assert "lost" in ours[0].getMessage() and "127.0.0.1:9" in ours[0].getMessage()
    assert "Connection refused" in ours[0].getMessage()
    assert "back" in ours[1].getMessage() and "12 s" in ours[1].getMessage()


def test_broker_watch_rate_limits_librdkafka_lines_across_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = _Clock()
    w = _watch([], clock)
    for i in range(300):  # 4 clients, a failed connect every ~50 ms each, for 15 s
        clock.t = i * 0.05
        w.log(
            logging.ERROR,
            "%s [%s] %s",
            "FAIL",
            f"rdkafka#consumer-{i % 4}",
            RDKAFKA_FAIL.format(ms=i % 3),
        )
    clock.t = 61.0
    w.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-9", RDKAFKA_FAIL.format(ms=0))
    lines = [r for r in caplog.records if r.name == "librdkafka"]
    assert len(lines) == 2
    assert "Connection refused" in lines[0].getMessage()
    assert "299 similar" in lines[1].getMessage()
    assert _ours(caplog) == []  # log lines are not what decides "lost"


def test_broker_watch_error_callback(caplog: pytest.LogCaptureFixture) -> None:
    from confluent_kafka import KafkaError

    caplog.set_level(logging.INFO)
    w = _watch([], _Clock())
    w._start = lambda: None  # no probing thread in a unit test
    w.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert w._wake.is_set()  # a connection error wakes the watcher, logs nothing itself
    assert caplog.records == []
    for _ in range(5):
        w.error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed"))
    lines = [r for r in caplog.records if r.name == "librdkafka"]
    assert len(lines) == 1 and "not allowed" in lines[0].getMessage()


def test_every_kafka_client_gets_the_logging_hooks() -> None:
    from dataflows.connectors.kafka import (
        BrokerWatch,
        consumer_config,
        kafka_sink,
        kafka_source,
        producer_config,
    )
    from schemas.settings import load_settings

    s = load_settings(brokers="127.0.0.1:9")
    configs = [
        producer_config(s),
        consumer_config(s),
        consumer_config(s, "g"),
        kafka_source(s, "t", True)._add_config,  # what bytewax passes on to its clients
        kafka_sink(s, "t")._add_config,
    ]
    for cfg in configs:
        assert isinstance(cfg["logger"], BrokerWatch)
        assert callable(cfg["error_cb"])
    assert configs[3]["fetch.wait.max.ms"] == str(s.kafka_fetch_wait_ms)  # still strings


# --- 4. the dashboard on gunicorn ---------------------------------------------------------


def test_compose_serves_the_dashboard_with_gunicorn_and_keeps_the_health_check() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dash = compose["services"]["dashboard"]
    cmd = dash["command"]
    assert cmd[0] == "gunicorn", cmd
    assert cmd[-1] == "dataflows.services.wsgi:server"
    assert "0.0.0.0:8050" in cmd and "8050:8050" in dash["ports"]
    assert "/healthz" in " ".join(dash["healthcheck"]["test"])


def test_gunicorn_is_a_locked_project_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("gunicorn") for d in project["dependencies"])
    assert 'name = "gunicorn"' in (ROOT / "uv.lock").read_text()
