"""The reference leg of ``fraud bench``: the flow's detection in a plain loop, no framework.

The same functions as :func:`dataflows.flow.build_flow` on its detection path
(:func:`~dataflows.flow.parse_message`, :func:`~dataflows.flow.shard_of`,
:func:`~dataflows.detection.scoring.score_batch` on per-shard state), called from a
``for`` loop over batches: from memory, or from a plain confluent-kafka consumer with
alerts produced to the alerts topic.  What the flow costs beyond this loop is the price
of the stream framework (operators, keyed exchange, epochs), which is what the bench's
ratio reports; the loop is the single-process ceiling in Python for the same detection.

Batches are grouped by shard in arrival order, as the flow's keyed ``stateful_batch``
sees them, so the loop produces the same scores and alerts as the flow (pinned by
``tests/flow/test_plain.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dataflows.detection.policy import ActivePolicy, default_active
from dataflows.detection.scoring import Shard, new_shard, score_batch
from dataflows.flow import Parsed, parse_message, shard_of
from schemas.scored import Alert, DeadLetter, Replayed, ScoredTransaction
from schemas.settings import Settings
from schemas.units import utc_now

__all__ = [
    "BATCH",
    "Outcome",
    "PlainLoop",
    "as_item",
    "group_by_shard",
    "run_kafka",
    "run_memory",
]

BATCH = 1000
"""Events per loop iteration: the flow's source batch size (``connectors.local.BATCH``
and the Kafka source's ``batch_size``), so both see the same per-shard batches."""


@dataclass(slots=True)
class Outcome:
    """What one batch gave: first-seen scored rows, their alerts, and dead letters."""

    rows: list[ScoredTransaction] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def group_by_shard(parsed: Iterable[Parsed], shards: int) -> dict[str, list[Parsed]]:
    """Parsed events by shard key, each group in arrival order (a user's order kept).

    >>> from types import SimpleNamespace as NS
    >>> evs = [(NS(user_id=u), None, None) for u in ("a", "b", "a")]
    >>> {k: [e[0].user_id for e in v] for k, v in group_by_shard(evs, 1).items()}
    {'0': ['a', 'b', 'a']}
    """
    groups: dict[str, list[Parsed]] = {}
    for p in parsed:
        key = shard_of(p[0].user_id, shards)
        group = groups.get(key)
        if group is None:
            groups[key] = [p]
        else:
            group.append(p)
    return groups


def split_outcome(scored: Sequence[ScoredTransaction | DeadLetter], out: Outcome) -> None:
    """Sort ``score_batch``'s results into ``out`` as the flow's branches do: dead
    letters apart, a replayed duplicate neither stored nor alerted, alerts of flagged."""
    for x in scored:
        if not isinstance(x, ScoredTransaction):
            out.dead.append(x)
        elif type(x) is not Replayed:
            out.rows.append(x)
            if x.flagged:
                out.alerts.append(Alert.from_scored(x))


@dataclass
class PlainLoop:
    """Per-shard state (users and models, created on first use, like the flow's) and
    the batch step that parses, groups and scores."""

    s: Settings
    clock: Callable[[], datetime] = utc_now
    policy: Callable[[], ActivePolicy] | None = None
    shards: dict[str, Shard] = field(default_factory=dict)

    def step(self, items: Sequence[Any]) -> Outcome:
        """One batch of input items (bytes, or messages with key/value/offset)."""
        s, out = self.s, Outcome()
        parsed: list[Parsed] = []
        for item in items:
            p = parse_message(item, s.max_message_bytes, self.clock, s.max_event_lead_s)
            if isinstance(p, DeadLetter):
                out.dead.append(p)
            else:
                parsed.append(p)
        policy = self.policy() if self.policy is not None else default_active(s)
        for key, batch in group_by_shard(parsed, s.shards).items():
            shard = self.shards.get(key)
            if shard is None:
                shard = self.shards[key] = new_shard(s)
            split_outcome(score_batch(shard, batch, s, self.clock(), policy), out)
        return out


def run_memory(
    s: Settings, events: Sequence[bytes], on_batch: Callable[[Outcome], None] | None = None
) -> float:
    """Run the loop over in-memory ``events`` (rows and alerts to ``on_batch``, else
    dropped: a null sink); returns the seconds it took."""
    loop = PlainLoop(s)
    t0 = time.perf_counter()
    for i in range(0, len(events), BATCH):
        out = loop.step(events[i : i + BATCH])
        if on_batch is not None:
            on_batch(out)
    return time.perf_counter() - t0


@dataclass(frozen=True, slots=True)
class _Message:
    """A consumed record with attributes, the shape :func:`parse_message` reads (a
    confluent-kafka ``Message`` has methods instead)."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class _Error:
    """A consumer error on one record, shaped like bytewax's (``err`` and ``msg``)."""

    err: Any
    msg: _Message


def as_item(m: Any) -> _Message | _Error:
    """A confluent-kafka ``Message`` as the flow's parser takes it."""
    msg = _Message(m.key(), m.value(), m.topic(), m.partition(), m.offset(), m.timestamp())
    err = m.error()
    return msg if err is None else _Error(err, msg)


def run_kafka(s: Settings, n: int, group: str, timeout_s: float = 600.0) -> tuple[int, float]:
    """Consume ``n`` records of ``s.topic_transactions`` from the beginning of every
    partition, score them in the loop and produce the alerts to ``s.topic_alerts`` (rows
    to a null sink); returns (records consumed, seconds until the alerts were flushed).

    Stops after ``timeout_s`` whatever it read: the caller checks the count."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from dataflows.connectors.kafka import alert_message, consumer_config, make_producer

    cfg = consumer_config(s, group) | {"enable.auto.commit": False}
    consumer, producer = Consumer(cfg), make_producer(s)
    loop = PlainLoop(s)
    t0 = time.perf_counter()
    meta = consumer.list_topics(s.topic_transactions, timeout=10).topics[s.topic_transactions]
    parts = sorted(meta.partitions)
    consumer.assign([TopicPartition(s.topic_transactions, p, OFFSET_BEGINNING) for p in parts])
    seen, deadline = 0, time.monotonic() + timeout_s
    try:
        while seen < n and time.monotonic() < deadline:
            msgs = consumer.consume(BATCH, timeout=0.1)
            if not msgs:
                continue
            seen += len(msgs)
            for a in loop.step([as_item(m) for m in msgs]).alerts:
                km = alert_message(a)
                _produce(producer, s.topic_alerts, km.key, km.value, km.headers)
            producer.poll(0)
        producer.flush(30)
        return seen, time.perf_counter() - t0
    finally:
        consumer.close()


def _produce(producer: Any, topic: str, key: Any, value: Any, headers: Any) -> None:
    """Produce one record, waiting for deliveries while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)
