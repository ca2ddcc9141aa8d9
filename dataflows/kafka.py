"""Kafka I/O: topics, the flow on Kafka, alert and dead-letter encodings, a producer.

Nothing here is broker-specific: the same code runs on Redpanda in production and on the
embedded broker in tests and the demo.

Delivery: at-least-once.  With recovery on, a restart resumes input from the last
snapshot, so alerts raised after it are produced again; ``alert_id`` is uuid5(txn_id),
identical on every replay, so consumers de-duplicate on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dataflows.flow import Encoded, build_flow, utc_now
from schemas.errors import FraudError
from schemas.scored import ALERT_VERSION, Alert, DeadLetter, ScoredTransaction, encode_alert
from schemas.settings import Settings
from schemas.transaction import format_ts

__all__ = [
    "alert_message",
    "consumer_config",
    "create_topics",
    "dlq_message",
    "kafka_flow",
    "make_producer",
    "producer_config",
]

log = logging.getLogger(__name__)
JSON = b"application/json"


def _brokers(s: Settings) -> list[str]:
    if not s.brokers:
        raise FraudError("no Kafka brokers configured: set FRAUD_BROKERS or --set brokers=...")
    return [b.strip() for b in s.brokers.split(",") if b.strip()]


def producer_config(s: Settings) -> dict[str, Any]:
    """Idempotent, acks=all, batched: no duplicates from retries, no loss on leader change."""
    return {
        "bootstrap.servers": s.brokers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": s.kafka_linger_ms,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
    }


def consumer_config(s: Settings) -> dict[str, Any]:
    """Short empty-fetch wait (latency) and a session timeout that joins groups fast."""
    return {
        "fetch.wait.max.ms": s.kafka_fetch_wait_ms,
        "session.timeout.ms": 6000,
    }


def make_producer(s: Settings) -> Producer:
    return Producer(producer_config(s))


def create_topics(s: Settings, timeout_s: float = 15.0) -> dict[str, str]:
    """Create the four topics with the configured partitions; existing ones are kept.

    Returns topic → "created" | "exists".
    """
    admin = AdminClient({"bootstrap.servers": s.brokers})
    names = [s.topic_transactions, s.topic_alerts, s.topic_dlq, s.topic_feedback]
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    todo = [NewTopic(t, num_partitions=s.partitions, replication_factor=-1)
            for t in names if t not in existing]  # fmt: skip
    out = {t: "exists" for t in names if t in existing}
    if todo:
        for topic, fut in admin.create_topics(todo, operation_timeout=timeout_s).items():
            try:
                fut.result()
                out[topic] = "created"
            except Exception as e:  # confluent raises KafkaException
                if "TOPIC_ALREADY_EXISTS" in str(e):
                    out[topic] = "exists"
                else:
                    raise FraudError(f"creating topic {topic!r} failed: {e}") from e
    return out


def alert_message(a: Alert) -> KafkaSinkMessage[bytes, bytes]:
    """Alert v1 keyed by user_id (per-user ordering), with contract headers."""
    return KafkaSinkMessage(
        key=a.user_id.encode(),
        value=encode_alert(a),
        headers=[
            ("content-type", JSON),
            ("schema", b"alert"),
            ("schema-version", str(ALERT_VERSION).encode()),
        ],
    )


def dlq_message(d: DeadLetter) -> KafkaSinkMessage[bytes | None, bytes | None]:
    """The original key and value untouched; the reason and origin in headers."""
    return KafkaSinkMessage(
        key=d.key,
        value=d.value,
        headers=[
            ("error-code", d.error_code.encode()),
            ("error-message", d.error_message.encode()),
            ("source-topic", d.source_topic.encode()),
            ("source-partition", str(d.source_partition).encode()),
            ("source-offset", str(d.source_offset).encode()),
            ("failed-at", format_ts(d.failed_at).encode()),
        ],
    )


def kafka_flow(
    s: Settings,
    row_sink: Sink[Any] | Encoded[ScoredTransaction] | Sequence[Sink[Any] | Encoded[Any]],
    *,
    tail: bool | None = None,
    clock: Callable[[], datetime] = utc_now,
    stop: Any = None,
) -> Dataflow:
    """The production flow: ``transactions`` → score → ``fraud-alerts`` / DLQ / rows.

    Reads every partition from the recovered position (or the beginning); a consumer
    error on a message becomes a dead letter, not a crash.  With ``stop`` (a
    ``threading.Event``) the inputs end once it is set: the flow flushes and returns.
    """
    brokers = _brokers(s)
    cons = consumer_config(s)
    prod = {k: str(v) for k, v in producer_config(s).items() if k != "bootstrap.servers"}
    source = KafkaSource(
        brokers,
        [s.topic_transactions],
        tail=s.kafka_tail if tail is None else tail,
        starting_offset=OFFSET_BEGINNING,
        add_config={k: str(v) for k, v in cons.items()},
        batch_size=1000,
        raise_on_errors=False,
    )
    labels = None
    if s.feedback_input:
        labels = KafkaSource(brokers, [s.topic_feedback],
                             tail=s.kafka_tail if tail is None else tail,
                             starting_offset=OFFSET_BEGINNING,
                             add_config={k: str(v) for k, v in cons.items()},
                             batch_size=1000, raise_on_errors=False)  # fmt: skip
    if stop is not None:
        from dataflows.io import StoppableSource

        source = StoppableSource(source, stop)
        labels = None if labels is None else StoppableSource(labels, stop)
    return build_flow(
        s,
        source,
        Encoded(KafkaSink(brokers, s.topic_alerts, add_config=prod), alert_message),
        row_sink,
        Encoded(KafkaSink(brokers, s.topic_dlq, add_config=prod), dlq_message),
        clock=clock,
        flow_id="fraud_kafka",
        labels=labels,
    )


def produce_all(
    producer: Producer, topic: str, events: Iterable[tuple[bytes | None, bytes | None]],
    on_sent: Callable[[int], None] | None = None,
) -> int:  # fmt: skip
    """Produce (key, value) pairs, polling for delivery; returns the count."""
    n = 0
    for key, value in events:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: wait for deliveries
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
            if on_sent:
                on_sent(1000)
    left = producer.flush(30)
    if left:
        raise FraudError(f"{left} messages to {topic!r} were not delivered within 30 s")
    if on_sent:
        on_sent(n % 1000)
    return n
