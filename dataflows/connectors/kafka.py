"""Kafka I/O: topics, the flow on Kafka, alert and dead-letter encodings, a producer.

Nothing here is broker-specific: the same code runs on Redpanda in production and on the
embedded broker in tests and the demo.

Delivery: at-least-once.  With recovery on, a restart resumes input from the last
snapshot, so alerts raised after it are produced again; ``alert_id`` is uuid5(txn_id),
identical on every replay, so consumers de-duplicate on it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from confluent_kafka import OFFSET_BEGINNING, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.errors import FraudError
from schemas.scored import (
    ALERT_VERSION,
    Alert,
    DeadLetter,
    Review,
    encode_alert,
    encode_review,
    payload_sha256,
)
from schemas.settings import Settings
from schemas.units import format_ts
from schemas.vocab import ALERT_HEADERS

__all__ = [
    "alert_message",
    "broker_list",
    "consumer_config",
    "create_topics",
    "dlq_encoder",
    "dlq_message",
    "feedback_publisher",
    "kafka_sink",
    "kafka_source",
    "make_producer",
    "producer_config",
]

log = logging.getLogger(__name__)


def broker_list(s: Settings) -> list[str]:
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
        "message.max.bytes": s.kafka_max_message_bytes,
    }


def consumer_config(s: Settings, group: str | None = None) -> dict[str, Any]:
    """Short empty-fetch wait (latency) and a session timeout that joins groups fast.

    Without ``group`` it is the part bytewax's KafkaSource adds to its own settings (it
    assigns partitions itself); with one, a complete config for a plain Consumer.
    """
    cfg: dict[str, Any] = {
        "fetch.wait.max.ms": s.kafka_fetch_wait_ms,
        "session.timeout.ms": 6000,
    }
    if group is not None:
        cfg |= {"bootstrap.servers": s.brokers, "group.id": group}
    return cfg


def kafka_source(s: Settings, topic: str, tail: bool) -> KafkaSource:
    """Every partition of ``topic`` from the recovered position (or the beginning); a
    consumer error on one message is handed to the flow (a dead letter), never raised."""
    return KafkaSource(
        broker_list(s),
        [topic],
        tail=tail,
        starting_offset=OFFSET_BEGINNING,
        add_config={k: str(v) for k, v in consumer_config(s).items()},
        batch_size=1000,
        raise_on_errors=False,
    )


def kafka_sink(s: Settings, topic: str) -> KafkaSink:
    """A sink producing to ``topic`` with the idempotent producer settings."""
    prod = {k: str(v) for k, v in producer_config(s).items() if k != "bootstrap.servers"}
    return KafkaSink(broker_list(s), topic, add_config=prod)


def make_producer(s: Settings) -> Producer:
    return Producer(producer_config(s))


def create_topics(s: Settings, timeout_s: float = 15.0) -> dict[str, str]:
    """Create the four topics with the configured partitions; existing ones are kept.

    Returns topic → "created" | "exists".
    """
    admin = AdminClient({"bootstrap.servers": s.brokers})
    names = [s.topic_transactions, s.topic_alerts, s.topic_dlq, s.topic_feedback]
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    todo = [
        NewTopic(
            t,
            num_partitions=s.partitions,
            replication_factor=-1,
            config={"max.message.bytes": str(s.kafka_max_message_bytes)},
        )
        for t in names
        if t not in existing
    ]
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
        headers=[*ALERT_HEADERS, ("schema-version", str(ALERT_VERSION).encode())],
    )


HEADER_ALLOWANCE = 4096
"""Bytes kept free in a DLQ record for headers and framing."""


def dlq_message(
    d: DeadLetter, max_bytes: int = 1_000_000, copy_bytes: int = 65_536
) -> KafkaSinkMessage[bytes | None, bytes | None]:
    """The original key and value untouched; the reason and origin in headers.

    A message too large for a record of ``max_bytes`` (the producer and topic limit)
    would make the producer refuse it and stop the flow; it carries the first
    ``copy_bytes`` of its value (and key) instead, with ``truncated: true``, its
    ``original-size`` and ``payload-sha256``, the key of its whole copy in the ClickHouse
    ``dead_letters`` table.
    """
    key, value = d.key, d.value
    headers = [
        ("error-code", d.error_code.encode()),
        ("error-message", d.error_message.encode("utf-8", "backslashreplace")[:2048]),
        ("source-topic", d.source_topic.encode("utf-8", "backslashreplace")),
        ("source-partition", str(d.source_partition).encode()),
        ("source-offset", str(d.source_offset).encode()),
        ("failed-at", format_ts(d.failed_at).encode()),
    ]
    if len(key or b"") + len(value or b"") + HEADER_ALLOWANCE > max_bytes:
        headers += [
            ("truncated", b"true"),
            ("original-size", str(len(value or b"")).encode()),
            ("payload-sha256", payload_sha256(value).encode()),
        ]
        key = None if key is None else key[:copy_bytes]
        value = None if value is None else value[:copy_bytes]
    return KafkaSinkMessage(key=key, value=value, headers=headers)


def dlq_encoder(s: Settings) -> Callable[[DeadLetter], KafkaSinkMessage[Any, Any]]:
    """:func:`dlq_message` bound to the configured record limit."""
    return functools.partial(
        dlq_message, max_bytes=s.kafka_max_message_bytes, copy_bytes=s.dlq_copy_bytes
    )


def produce_all(
    producer: Producer,
    topic: str,
    events: Iterable[tuple[bytes | None, bytes | None]],
    on_sent: Callable[[int], None] | None = None,
    *,
    stop: Any = None,
    flush_s: float = 30.0,
) -> int:
    """Produce (key, value) pairs; the one produce loop of the generator, demo and tools.

    A full local queue waits for deliveries instead of failing; delivery reports are
    served as it goes, and any failed delivery (or one still pending after ``flush_s``)
    raises :class:`FraudError` naming the count, so nothing is lost silently.  ``on_sent``
    gets counts as they are queued; ``stop`` (a ``threading.Event``) ends an endless
    ``events`` early.  Returns the number queued.
    """
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    n = 0
    for key, value in events:
        if stop is not None and stop.is_set():
            break
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: wait for deliveries
        n += 1
        producer.poll(0)
        if on_sent and n % 1000 == 0:
            on_sent(1000)
    left = producer.flush(flush_s)
    if on_sent:
        on_sent(n % 1000)
    if left:
        raise FraudError(f"{left} messages to {topic!r} were not delivered within {flush_s:g} s")
    if failed:
        raise FraudError(f"{len(failed)} messages to {topic!r} failed: {failed[0]}")
    return n


def feedback_publisher(s: Settings) -> Callable[[list[Review]], None] | None:
    """Publishes verdicts to the feedback topic (key user_id), or None without a broker."""
    if not s.brokers or not s.dash_publish_feedback:
        return None
    producer = make_producer(s)

    def publish(reviews: list[Review]) -> None:
        for r in reviews:
            producer.produce(
                s.topic_feedback,
                key=r.user_id.encode(),
                value=encode_review(r),
                headers={"schema-version": b"1", "content-type": b"application/json"},
            )
        left = producer.flush(5.0)
        if left:
            raise RuntimeError(f"{left} verdict(s) not acknowledged by {s.brokers} within 5 s")

    return publish
