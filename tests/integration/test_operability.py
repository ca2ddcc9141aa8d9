"""Operability against real services: a tansu broker stopped and restarted under a
producer and a consumer, and the dashboard served by gunicorn exactly as compose runs it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from dataflows.connectors.embedded import EmbeddedBroker, free_port
from dataflows.connectors.kafka import (
    broker_list,
    broker_watch,
    consumer_config,
    create_topics,
    make_producer,
)
from schemas.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A tansu broker of this test alone (the session one must not be stopped)."""
    b = EmbeddedBroker().start()
    yield b
    b.stop()


def _lines(caplog: pytest.LogCaptureFixture, word: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "dataflows.connectors.kafka" and word in r.getMessage()
    ]


def test_broker_outage_logs_one_lost_line_and_one_back_line(
    own_broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tag = uuid.uuid4().hex[:8]
    s = load_settings(brokers=own_broker.bootstrap, topic_transactions=f"tx-{tag}")
    create_topics(s)
    producer = make_producer(s)
    consumer = Consumer(consumer_config(s, f"op-{tag}"))
    consumer.assign([TopicPartition(s.topic_transactions, 0, 0)])

    def serve(seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            producer.poll(0.05)
            consumer.consume(100, 0.05)

    try:
        producer.produce(s.topic_transactions, b"v", key=b"k")
        producer.flush(10)
        serve(1.0)
        own_broker.stop()
        serve(20.0, lambda: bool(_lines(caplog, "lost")))
        serve(5.0)  # hundreds of failed connects from both clients
        lost = _lines(caplog, "lost")
        assert len(lost) == 1 and lost[0].levelno == logging.WARNING
        assert own_broker.bootstrap in lost[0].getMessage()
        rdkafka = [r for r in caplog.records if r.name == "librdkafka"]
        watch = broker_watch(broker_list(s))
        # librdkafka repeats itself (its reconnect backoff makes the count load-dependent):
        # some lines were held back, and only a handful reached the log
        assert watch.limiter.suppressed >= 1
        assert len(rdkafka) <= 12, [r.getMessage() for r in rdkafka]

        again = EmbeddedBroker(port=own_broker.port).start()
        try:
            serve(20.0, lambda: bool(_lines(caplog, "back")))
            serve(5.0)  # reconnects, stale queued errors: no second line either way
            back = _lines(caplog, "back")
            assert len(back) == 1 and back[0].levelno == logging.INFO
            assert len(_lines(caplog, "lost")) == 1
        finally:
            again.stop()  # (a real outage again: the watch says "lost" once more)
    finally:
        consumer.close()


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def test_the_compose_dashboard_command_serves_healthz_with_gunicorn(tmp_path: Path) -> None:
    """The dashboard service's own command, only bound to a free local port."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    port = free_port()
    cmd = [
        f"127.0.0.1:{port}" if a == "0.0.0.0:8050" else a
        for a in compose["services"]["dashboard"]["command"]
    ]
    cmd[0] = str(Path(sys.executable).with_name("gunicorn"))
    env = {
        **os.environ,
        "FRAUD_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
        "FRAUD_BROKERS": "",
        "FRAUD_DASH_AUTH": "analyst:secret",
    }
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        status, body = 0, b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
        assert (status, body) == (200, b"ok")
        # the login still guards the app: "/" sends a signed-out browser to the login page
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert "/login" in r.geturl()
            assert b'id="login-password"' in r.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            out = proc.communicate(timeout=20)[0].decode()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0].decode()
    assert "Booting worker" in out or "Listening at" in out, out[-2000:]
