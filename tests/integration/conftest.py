"""Real services for integration tests: a tansu broker process started per session.

Never skipped: if the broker cannot start, the fixture fails loudly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from dataflows.connectors.embedded import EmbeddedBroker
from dataflows.connectors.kafka import create_topics
from schemas.settings import Settings, load_settings


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings with this test's own topics (uuid), created now and deleted after."""
    tag = uuid.uuid4().hex[:8]
    partitions = getattr(request, "param", 1)
    s = load_settings(
        brokers=broker.bootstrap,
        partitions=partitions,
        hst_warmup=0,
        shards=4,
        topic_transactions=f"tx-{tag}",
        topic_alerts=f"alerts-{tag}",
        topic_dlq=f"dlq-{tag}",
        topic_feedback=f"fb-{tag}",
        topic_decisions=f"dec-{tag}",
        kafka_tail=False,
    )
    create_topics(s)
    yield s
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = [
        s.topic_transactions,
        s.topic_alerts,
        s.topic_dlq,
        s.topic_feedback,
        s.topic_decisions,
    ]
    for fut in admin.delete_topics(topics, operation_timeout=10).values():
        try:
            fut.result()
        except Exception as e:  # cleanup must not hide the test's own result
            print(f"topic cleanup: {e}")


def consume_all(bootstrap: str, topic: str, partitions: int, timeout_s: float = 30.0) -> list:
    """Every message of ``topic``, reading each partition from 0 to its end.

    The embedded broker's "latest" offsets are unreliable, so the end is detected with
    partition-EOF events rather than watermarks.
    """
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:6]}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
            "session.timeout.ms": 6000,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, done = [], set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(done) < partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: no end of partitions {set(range(partitions)) - done}")
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    done.add(m.partition())
                    continue
                raise RuntimeError(f"consuming {topic}: {m.error()}")
            out.append(m)
    finally:
        c.close()
    return out
