"""Reply routing: every replica reads every decision and resolves only its own waiters.

A request produces its transaction to ``transactions`` and waits for the decision with
its txn_id on ``fraud-decisions``.  Each replica assigns itself *all* partitions of that
topic, from their end, under a consumer group of its own (no group rebalancing, no
committed offsets), and keeps an in-memory ``txn_id -> futures`` dict of the requests it
is waiting for; a decision for any other txn_id is dropped after one dict lookup.

Why: it is simple and correct with any number of replicas and flow processes: no
replica can take another's answer (a shared consumer group would hand each replica
some partitions, and answers for its requests would land at the others), and nothing in
the flow needs to know about replicas.  The cost is that every replica reads every
decision (N replicas read the topic N times; a decision is ~300 bytes, so 10k tx/s is
~3 MB/s per replica).  The alternative when that matters: a ``reply-to`` header naming
a per-replica reply topic (or partition), which the flow copies onto the decision and
routes on, so each replica reads only its own answers - at the price of topic
management per replica and a flow that knows about its callers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from dataflows.connectors.kafka import consumer_config
from schemas.scored import Decision, decode_decision
from schemas.settings import Settings

__all__ = ["Replies"]

log = logging.getLogger(__name__)


class Replies:
    """A consumer thread over every partition of the decisions topic plus the waiters.

    ``wait(txn_id)`` (on the event loop) returns a future and whether it is the first
    waiter for that id in this replica (only the first produces the transaction: two
    concurrent requests for one payment share one answer)."""

    def __init__(self, s: Settings, group: str | None = None) -> None:
        self.s = s
        self.group = group or f"fraud-api-{uuid.uuid4().hex[:12]}"
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned = threading.Event()
        self.last_decision_at: float | None = None
        """Monotonic time of the last decision read (any txn_id): the flow is alive."""
        self.decisions_read = 0
        self.error: str | None = None

    # -- waiters (event loop) --------------------------------------------------------
    def wait(self, txn_id: str) -> tuple[asyncio.Future[Any], bool]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            waiters = self._waiting.setdefault(txn_id, [])
            waiters.append((loop, fut))
            return fut, len(waiters) == 1

    def forget(self, txn_id: str, fut: asyncio.Future[Any]) -> None:
        with self._lock:
            waiters = self._waiting.get(txn_id)
            if waiters is None:
                return
            waiters[:] = [w for w in waiters if w[1] is not fut]
            if not waiters:
                del self._waiting[txn_id]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- consumer thread -------------------------------------------------------------
    def start(self, timeout_s: float = 15.0) -> Replies:
        self._thread = threading.Thread(target=self._run, daemon=True, name="decision-replies")
        self._thread.start()
        if not self.assigned.wait(timeout_s):
            log.warning("decisions topic not assigned within %g s: %s", timeout_s, self.error)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        topic = self.s.topic_decisions
        c = Consumer(
            {
                **consumer_config(self.s, self.group),
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            }
        )
        try:
            while not self._stop.is_set() and not self.assigned.is_set():
                try:
                    parts = c.list_topics(topic, timeout=5).topics[topic].partitions
                    if not parts:
                        raise RuntimeError(f"topic {topic!r} has no partitions")
                    c.assign([self._end_of(c, topic, p) for p in sorted(parts)])
                    self.assigned.set()
                except Exception as e:  # broker not there yet: retry, readyz says why
                    self.error = f"{type(e).__name__}: {e}"
                    time.sleep(0.5)
            while not self._stop.is_set():
                for m in c.consume(500, 0.05):
                    if m.error() is None and m.value() is not None:
                        self.on_message(m.value())
        finally:
            c.close()

    @staticmethod
    def _end_of(c: Consumer, topic: str, partition: int) -> TopicPartition:
        """The partition at its current end, resolved *now*: with ``OFFSET_END`` the end is
        looked up at the first fetch, after which a decision produced in between would be
        missed.  (A broker under-reporting its end only makes us read a few old ones.)"""
        _, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5.0)
        return TopicPartition(topic, partition, high if high >= 0 else OFFSET_END)

    def on_message(self, value: bytes) -> None:
        """Resolve the waiters of this decision's txn_id, if any (one dict lookup)."""
        self.last_decision_at = time.monotonic()
        self.decisions_read += 1
        try:
            txn_id = orjson.loads(value)["txn_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        with self._lock:
            waiters = self._waiting.pop(txn_id, None)
        if not waiters:
            return
        try:
            decision: Decision | Exception = decode_decision(value)
        except Exception as e:  # an answer we cannot read: the request falls back
            decision = e
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut, decision)


def _resolve(fut: asyncio.Future[Any], decision: Decision | Exception) -> None:
    if not fut.done():
        if isinstance(decision, Exception):
            fut.set_exception(decision)
        else:
            fut.set_result(decision)
