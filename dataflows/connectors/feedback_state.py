"""The ``local`` feedback loop between processes: the feedback-state topic.

In the ``local`` topology (:mod:`dataflows.detection.feedback`) every process scores from
its own :class:`~dataflows.detection.feedback.FeedbackView`.  The merchant aggregators and
the trainer run on some worker of some process; what they publish must reach every
process.  Within a process the publication sink writes the view directly; it also
produces each update to the ``fraud-feedback-state`` topic (one partition, compacted: key
``m:<merchant>:<day>``, ``t:<aggregator key>`` or ``model:<day mod 32>``, so the topic
holds the latest of each: the models of the last 32 days), and every
process follows that topic in a daemon thread, applying the updates other processes made.

Before a flow starts, its process reads the topic to its end: a restarted process (or a
new one joining the cluster) scores with the merchant totals and the models the cluster
had, not from nothing.  Values are pickles (a booster is a scikit-learn object),
compressed: the topic is internal, written only by the flow's own processes, and must
not be writable by anyone else.
"""

from __future__ import annotations

import atexit
import logging
import math
import pickle
import threading
import time
import uuid
import zlib
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Consumer, KafkaError, Producer

from dataflows.connectors.kafka import create_topics, follower, make_producer, read_to_end
from dataflows.detection.feedback import (
    MODELS_KEPT,
    FeedbackView,
    MerchantTotal,
    ModelUpdate,
    TotalsThrough,
    Update,
)
from schemas.settings import Settings

__all__ = ["ORIGIN", "FeedbackFollower", "StatePublisher", "decode_update", "encode_update"]

log = logging.getLogger(__name__)

ORIGIN = "origin"
"""Header naming the process run that produced an update (its own are applied locally)."""


def key_of(u: Update) -> bytes:
    """The compaction key: one merchant's day, how far an aggregator key's days reach,
    or the models by the last day they know (a row takes the newest it may use)."""
    if type(u) is MerchantTotal:
        return f"m:{u.merchant_id}:{u.day}".encode()
    if type(u) is TotalsThrough:
        return f"t:{u.agg}".encode()
    slot = int(u.through) % MODELS_KEPT if math.isfinite(u.through) else -1
    return f"model:{slot}".encode()


def encode_update(u: Update) -> bytes:
    return zlib.compress(pickle.dumps(u, protocol=pickle.HIGHEST_PROTOCOL), 1)


def decode_update(value: bytes) -> Update:
    u = pickle.loads(zlib.decompress(value))
    if type(u) not in (MerchantTotal, ModelUpdate, TotalsThrough):
        raise TypeError(f"not a feedback update: {type(u).__name__}")
    return u


class _Partition(StatelessSinkPartition[Update]):
    def __init__(self, view: FeedbackView, producer: Producer | None, topic: str, token: bytes):
        self.view, self.producer, self.topic, self.token = view, producer, topic, token

    def write_batch(self, items: list[Update]) -> None:
        self.view.apply(items)
        p = self.producer
        if p is None:
            return
        for u in items:
            while True:
                try:
                    p.produce(
                        self.topic, encode_update(u), key_of(u), headers=[(ORIGIN, self.token)]
                    )
                    break
                except BufferError:  # the local queue is full: let it drain
                    p.poll(0.1)
        p.poll(0)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(10.0)


class StatePublisher(DynamicSink[Update]):
    """Writes updates into ``view`` and, with settings, to the feedback-state topic."""

    def __init__(self, view: FeedbackView, s: Settings | None = None, token: bytes = b"") -> None:
        self.view, self.s, self.token = view, s, token

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        s = self.s
        producer = make_producer(s) if s is not None else None
        topic = s.topic_feedback_state if s is not None else ""
        return _Partition(self.view, producer, topic, self.token)


class FeedbackFollower:
    """Keeps a process's view current with the updates every other process publishes."""

    def __init__(self, s: Settings, view: FeedbackView, *, poll_s: float = 0.5) -> None:
        self.s, self.view, self.poll_s = s, view, poll_s
        self.token = uuid.uuid4().hex.encode()
        self.applied = 0
        self.rejected = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publisher(self) -> StatePublisher:
        return StatePublisher(self.view, self.s, self.token)

    def _consumer(self) -> Consumer:
        return follower(self.s, self.s.topic_feedback_state, "feedback-state", self.poll_s)

    def _take(self, m: Any, own_too: bool) -> None:
        if not own_too and (ORIGIN, self.token) in (m.headers() or []):
            return
        try:
            u = decode_update(m.value())
        except Exception as e:  # never stop the flow for one message
            self.rejected += 1
            log.warning("feedback-state offset %d ignored: %s", m.offset(), e)
            return
        self.view.apply([u])
        self.applied += 1

    def start(self, timeout_s: float = 30.0) -> FeedbackFollower:
        """Read the topic to its end (the cluster's totals and models), then follow it."""
        create_topics(self.s, only=[self.s.topic_feedback_state])
        c = self._consumer()
        deadline = time.monotonic() + timeout_s

        def take(m: Any) -> None:
            self._take(m, own_too=True)

        def warn(err: KafkaError) -> None:
            log.warning("feedback-state: %s", err)

        if not read_to_end(c, deadline, self.poll_s, take, warn):
            log.warning("feedback-state: end not reached in %.0f s; following on", timeout_s)
        log.info("feedback state caught up: %d updates", self.applied)
        self._thread = threading.Thread(
            target=self._run, args=(c,), daemon=True, name="feedback-state"
        )
        self._thread.start()
        # A daemon thread still in librdkafka's poll at interpreter exit can crash it:
        # stop and close first (the flow's process ends with its flow).
        atexit.register(self.stop)
        return self

    def _run(self, c: Consumer) -> None:
        try:
            while not self._stop.is_set():
                m = c.poll(self.poll_s)
                if m is None:
                    continue
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("feedback-state: %s", m.error())
                    continue
                self._take(m, own_too=False)
        finally:
            c.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
