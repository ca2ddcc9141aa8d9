"""Produce→alert latency through a real broker: ``fraud latency --rate 200 --seconds 30``.

Starts the embedded broker unless ``FRAUD_BROKERS`` is set, runs the flow as a separate
``python -m bytewax.run`` process, produces generated events at a fixed rate and times,
with a separate consumer, each alert against the wall time its transaction was produced.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from dataflows.connectors.embedded import EmbeddedBroker
from dataflows.connectors.kafka import consumer_config, create_topics, make_producer, produce_all
from generators.stream import Pacer, event_stream
from generators.synth import GeneratorConfig
from schemas.settings import Settings, settings_env

__all__ = ["measure_latency"]

ROOT = Path(__file__).resolve().parents[2]


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _on_broker(base: Settings, update: dict[str, Any]) -> tuple[EmbeddedBroker | None, Settings]:
    """``base`` with ``update``, on its brokers or on an embedded one started now."""
    broker = None if base.brokers else EmbeddedBroker().start()
    brokers = base.brokers or broker.bootstrap  # type: ignore[union-attr]
    return broker, base.model_copy(update={"brokers": brokers, **update})


def _figures(lat_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": _percentile(lat_ms, 0.5),
        "p95_ms": _percentile(lat_ms, 0.95),
        "p99_ms": _percentile(lat_ms, 0.99),
        "max_ms": max(lat_ms) if lat_ms else float("nan"),
    }


STAGES = ("to_scored", "to_produced", "to_consumed")
"""Where an alert's time went: produced → scored by the flow (the broker, the flow's
consumer, its queue and the scoring; the alert's ``created_at``), → produced on the
alerts topic (the flow's sinks; the message's Kafka timestamp), → read by the timing
consumer (the flow producer's linger and the broker)."""


def _tail_stages(marks: list[tuple[float, float, float, float]]) -> dict[str, float]:
    """Mean ms of each of :data:`STAGES` over the slowest 1 % of alerts (by total), so
    a p99 can be read as a sum of parts.  ``marks`` are (sent, scored, produced,
    consumed) wall times in seconds."""
    if not marks:
        return {}
    tail = sorted(marks, key=lambda m: m[3] - m[0])[-max(1, len(marks) // 100) :]
    return {
        f"tail_{name}_ms": 1000.0 * sum(m[i + 1] - m[i] for m in tail) / len(tail)
        for i, name in enumerate(STAGES)
    }


WARMUP_S = 3.0
"""Untimed traffic at the same rate before the clock starts: the flow process opens its
chDB session and builds its models on it, so the figures are steady-state ones.  It
goes on (up to :data:`WARMUP_CAP_S`) until the flow has caught up with it: a cluster's
processes join each other first, and the backlog of its start is not its latency."""
WARMUP_CAP_S = 60.0


def _caught_up(warm_ms: list[float], elapsed_s: float) -> bool:
    """At least WARMUP_S of traffic, and the last warm-up alerts came within a second."""
    recent = warm_ms[-20:]
    return elapsed_s >= WARMUP_S and len(recent) >= 5 and max(recent) < 1000.0


def _flow_processes(s: Settings, processes: int) -> list[subprocess.Popen[bytes]]:
    """The production entry point as ``processes`` bytewax processes of one worker
    (one process: no cluster flags).  With several, each gets its own scratch chDB
    directory (chDB allows one process per directory)."""
    from dataflows.connectors.embedded import free_port

    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.main:get_flow()"]
    addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    out = []
    for i in range(processes):
        env = {**os.environ, **settings_env(s.model_dump())}
        extra: list[str] = []
        if processes > 1:
            extra = ["-w", "1", "-i", str(i), "-a", addrs]
            if s.clickhouse_url.startswith("chdb:"):
                env["FRAUD_CLICKHOUSE_URL"] = f"chdb://{tempfile.mkdtemp(prefix='lat-')}"
        out.append(
            subprocess.Popen(
                cmd + extra,
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return out


def measure_latency(
    base: Settings,
    rate: float,
    seconds: float,
    processes: int = 1,
    partitions: int | None = None,
) -> dict[str, float]:
    """Latency figures in ms after :data:`WARMUP_S` of untimed traffic: p50, p95, p99,
    max, and the alert count.  With ``processes`` > 1 the flow runs as a cluster of that
    many processes, partition-aligned over ``partitions`` (default 12, the production
    topology; 1 for a single process)."""
    if partitions is None:
        partitions = 1 if processes == 1 else 12
    tag = uuid.uuid4().hex[:6]
    broker, s = _on_broker(
        base,
        {
            "topic_transactions": f"lat-tx-{tag}",
            "topic_alerts": f"lat-alerts-{tag}",
            "topic_dlq": f"lat-dlq-{tag}",
            "topic_feedback": f"lat-fb-{tag}",
            "topic_decisions": f"lat-dec-{tag}",
            "partitions": partitions,
            **({"align_partitions": True} if processes > 1 else {}),
        },
    )
    if s.clickhouse_url.startswith("chdb:"):
        # The flow process stores rows too (the production path); give it its own
        # scratch chDB directory so a running demo's directory is never touched.
        s = s.model_copy(update={"clickhouse_url": f"chdb://{tempfile.mkdtemp(prefix='lat-')}"})
    create_topics(s)
    flows = _flow_processes(s, processes)
    sent: dict[str, float] = {}
    lat: list[float] = []
    marks: list[tuple[float, float, float, float]] = []
    warm_sent: dict[str, float] = {}
    warm_lat: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        c = Consumer({**consumer_config(s, f"lat-{tag}"), "fetch.wait.max.ms": 10})
        c.assign([TopicPartition(s.topic_alerts, p, 0) for p in range(s.partitions)])
        while not stop.is_set():
            m = c.poll(0.05)
            if m is None or m.error():
                continue
            now = time.time()
            alert = orjson.loads(m.value())
            t = sent.get(alert["txn_id"])
            if t is not None:
                lat.append((now - t) * 1000.0)
                scored = datetime.fromisoformat(alert["created_at"]).timestamp()
                marks.append((t, scored, m.timestamp()[1] / 1000.0, now))
            elif (w := warm_sent.get(alert["txn_id"])) is not None:
                warm_lat.append((now - w) * 1000.0)
        c.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        time.sleep(6.0 + 2.0 * (processes - 1))  # the flow imports and connects first
        warm = GeneratorConfig(seed=4, users=2000, fraud_rate=0.05, chunk_events=2000)
        cfg = GeneratorConfig(seed=3, users=2000, fraud_rate=0.05, chunk_events=2000)
        pacer = Pacer(rate)

        def timed() -> Iterator[tuple[bytes, bytes]]:
            began = time.time()
            for key, value in event_stream(warm, int(rate * WARMUP_CAP_S)):
                pacer.tick()
                warm_sent[orjson.loads(value)["txn_id"]] = time.time()
                yield key, value
                if _caught_up(warm_lat, time.time() - began):
                    break
            for key, value in event_stream(cfg, int(rate * seconds)):
                pacer.tick()
                sent[orjson.loads(value)["txn_id"]] = time.time()
                yield key, value

        produce_all(make_producer(s), s.topic_transactions, timed(), flush_s=10.0)
        time.sleep(3.0)
    finally:
        stop.set()
        reader.join(5)
        for flow in flows:
            flow.terminate()
        for flow in flows:
            with contextlib.suppress(subprocess.TimeoutExpired):
                flow.wait(10)
            if flow.poll() is None:
                flow.kill()
        if broker is not None:
            broker.stop()
    return {"alerts": float(len(lat)), **_figures(lat), **_tail_stages(marks)}


def measure_broker(
    base: Settings, rate: float, seconds: float, partitions: int = 12, producers: int = 3
) -> dict[str, float]:
    """The broker's own produce→consume latency under the flow's traffic, no flow.

    The flow's path has a producer of events, then its own producers of decisions
    (one per event) and alerts: ``producers`` clients, each writing ``rate`` generated
    events/s to its own topic of ``partitions`` partitions.  One consumer reads the
    first topic, as the flow does, and each message is timed against its send.  What
    this gives is the floor under produce→alert latency at that shape; on the embedded
    broker it grows with the partitions (every partition batch is a separate write).
    """
    tag = uuid.uuid4().hex[:6]
    broker, s = _on_broker(base, {"partitions": partitions})
    topics = [f"lat-broker{i}-{tag}" for i in range(producers)]
    try:
        for t in topics:
            create_topics(s.model_copy(update={"topic_transactions": t}), only=[t])
        sent: dict[bytes, float] = {}
        lat: list[float] = []
        began = time.time()
        stop = threading.Event()

        def consume() -> None:
            c = Consumer(consumer_config(s, f"lat-{tag}"))
            c.assign([TopicPartition(topics[0], p, 0) for p in range(partitions)])
            while not stop.is_set():
                for m in c.consume(1000, 0.01):
                    t = None if m.error() else sent.get(m.key() + m.value()[:64])
                    if t is not None and t - began >= WARMUP_S:
                        lat.append((time.time() - t) * 1000.0)
            c.close()

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        time.sleep(1.0)
        clients = [make_producer(s) for _ in topics]
        pacer = Pacer(rate)
        cfg = GeneratorConfig(seed=3, users=2000, fraud_rate=0.05, chunk_events=2000)
        for key, value in event_stream(cfg, int(rate * (seconds + WARMUP_S))):
            pacer.tick()
            sent[key + value[:64]] = time.time()
            for topic, p in zip(topics, clients, strict=True):
                p.produce(topic, value=value, key=key)
                p.poll(0)
        for p in clients:
            p.flush(10.0)
        time.sleep(1.0)
        stop.set()
        reader.join(5)
    finally:
        if broker is not None:
            broker.stop()
    return {"messages": float(len(lat)), **_figures(lat)}
