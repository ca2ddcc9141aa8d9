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
import re
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from dataflows.connectors.kafka_source import SharedKafkaSource
from schemas.errors import ConfigError, FraudError
from schemas.scored import (
    ALERT_VERSION,
    DECISION_VERSION,
    Alert,
    DeadLetter,
    Decision,
    Review,
    encode_alert,
    encode_decision,
    encode_review,
    payload_sha256,
)
from schemas.settings import Settings
from schemas.units import format_ts
from schemas.vocab import ALERT_HEADERS, DECISION_HEADERS

__all__ = [
    "BrokerWatch",
    "ConnectionState",
    "RateLimiter",
    "alert_message",
    "broker_list",
    "broker_watch",
    "client_hooks",
    "consumer_config",
    "create_topics",
    "decision_message",
    "dlq_encoder",
    "dlq_message",
    "feedback_publisher",
    "kafka_sink",
    "kafka_source",
    "make_producer",
    "producer_config",
    "tcp_reachable",
    "topic_config",
]

log = logging.getLogger(__name__)


def _split(brokers: str) -> list[str]:
    return [b.strip() for b in brokers.split(",") if b.strip()]


def broker_list(s: Settings) -> list[str]:
    """The bootstrap servers, refused at once when empty: a client without any waits out
    its timeout and fails with an error that does not name the setting."""
    servers = _split(s.brokers)
    if not servers:
        raise ConfigError(
            f"brokers (FRAUD_BROKERS) = {s.brokers!r}: no Kafka broker configured; "
            "set FRAUD_BROKERS=host:port or --set brokers=host:port"
        )
    return servers


def producer_config(s: Settings) -> dict[str, Any]:
    """Idempotent, acks=all, batched: no duplicates from retries, no loss on leader change."""
    return {
        **client_hooks(s),
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
        **client_hooks(s),
        "fetch.wait.max.ms": s.kafka_fetch_wait_ms,
        "session.timeout.ms": 6000,
    }
    if group is not None:
        cfg |= {"bootstrap.servers": s.brokers, "group.id": group}
    return cfg


def follower(s: Settings, topic: str, group: str, poll_s: float) -> Consumer:
    """A consumer of ``topic``'s one partition from its beginning, for a process that
    follows a small compacted topic (rules, feedback state): partition-EOF events mark
    its end, nothing is committed, and a long-poll fetch of ``poll_s`` bounds how long a
    new message waits on the broker (tansu holds a fetch this long)."""
    cfg = consumer_config(s, f"{s.consumer_group}-{group}")
    cfg |= {
        "enable.partition.eof": True,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": int(poll_s * 1000),
    }
    c = Consumer(cfg)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return c


def read_to_end(
    c: Consumer,
    deadline: float,
    poll_s: float,
    take: Callable[[Any], None],
    on_error: Callable[[KafkaError], None],
) -> bool:
    """Hand every message of a :func:`follower`'s partition to ``take`` up to its end;
    False if the end was not reached by ``deadline`` (the partition's EOF event marks it:
    high watermarks are not reliable on every broker)."""
    while time.monotonic() < deadline:
        m = c.poll(poll_s)
        if m is None:
            continue
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return True
            on_error(err)
            continue
        take(m)
    return False


def kafka_source(s: Settings, topic: str, tail: bool) -> KafkaSource:
    """Every partition of ``topic`` from the recovered position (or the beginning); a
    consumer error on one message is handed to the flow (a dead letter), never raised.
    A worker's partitions share one consumer (:mod:`.kafka_source`)."""
    return SharedKafkaSource(
        broker_list(s),
        [topic],
        tail=tail,
        starting_offset=OFFSET_BEGINNING,
        add_config={k: _config_value(v) for k, v in consumer_config(s).items()},
        batch_size=1000,
        raise_on_errors=False,
    )


def kafka_sink(s: Settings, topic: str) -> KafkaSink:
    """A sink producing to ``topic`` with the idempotent producer settings."""
    prod = {k: _config_value(v) for k, v in producer_config(s).items() if k != "bootstrap.servers"}
    return KafkaSink(broker_list(s), topic, add_config=prod)


def make_producer(s: Settings) -> Producer:
    broker_list(s)  # without brokers every message would wait out its delivery timeout
    return Producer(producer_config(s))


# --- Broker connection: one line of our own when lost and when back -------------------
# librdkafka retries a lost broker every ~50-100 ms per connection and logs every failed
# attempt: the flow (a client per partition and sink) printed thousands of identical
# lines and not one of its own.  Every client we build gets ``client_hooks``: its log
# lines are rate-limited here, and its connection errors wake a watcher that logs one
# WARNING when no bootstrap server answers and one INFO when one does again.

CONNECTION_ERRORS = frozenset(
    {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}
)
_VARYING = re.compile(r"rdkafka#\w+-\d+|\d+ms|\d+ identical error\(s\) suppressed")
rdkafka_log = logging.getLogger("librdkafka")


class RateLimiter:
    """The first line of a kind passes, then at most one per ``interval_s`` carrying how
    many it stood for: a repeated line says nothing new, its count does."""

    def __init__(self, interval_s: float = 60.0, max_keys: int = 1024) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.suppressed = 0
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable, now: float) -> int | None:
        """None: drop this one; else let it pass, with the number dropped since the last."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            self.suppressed += 1
            return None
        if len(self._last) >= self.max_keys:  # varied messages must not grow it forever
            self._last.clear()
        self._last[key] = now
        return self._held.pop(key, 0)


class ConnectionState:
    """Lost or not, changed by transitions only: many clients report one outage hundreds
    of times, and the log wants one line when it starts and one when it ends."""

    def __init__(self) -> None:
        self.lost_since: float | None = None

    def lose(self, now: float) -> bool:
        """True if this report starts an outage."""
        if self.lost_since is not None:
            return False
        self.lost_since = now
        return True

    def recover(self, now: float) -> float | None:
        """The outage's length in seconds if this ends one, else None."""
        if self.lost_since is None:
            return None
        took, self.lost_since = now - self.lost_since, None
        return took


def tcp_reachable(servers: list[str], timeout_s: float) -> str | None:
    """None if any of ``servers`` (host:port) accepts a TCP connection, else why not.

    The deciding test for "lost" and "back": librdkafka's reports arrive late (queued
    until a client polls) and per connection, so they only prompt this check."""
    why = []
    for server in servers:
        host, _, port = server.split("://")[-1].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout_s):
                return None
        except (OSError, ValueError) as e:
            why.append(f"{server}: {getattr(e, 'strerror', None) or e}")
    return "; ".join(why) or "no servers configured"


class BrokerWatch:
    """Logging hooks shared by every client of one bootstrap list in this process.

    ``log`` is confluent-kafka's ``logger`` (it calls ``log(level, fmt, *args)`` when the
    client polls): librdkafka's lines go on to the ``librdkafka`` logger, rate-limited by
    their text without the client name and timings.  ``error`` is the ``error_cb``: a
    connection error wakes a thread that checks the servers and logs the transitions on
    ``dataflows.connectors.kafka``; other errors are logged like the lines.
    """

    def __init__(
        self,
        servers: list[str],
        *,
        interval_s: float = 60.0,
        probe_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        reachable: Callable[[list[str], float], str | None] = tcp_reachable,
    ) -> None:
        self.servers = servers
        self.limiter = RateLimiter(interval_s)
        self.state = ConnectionState()
        self._probe_s = probe_s
        self._clock = clock
        self._reachable = reachable
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def log(self, level: int, fmt: str, *args: Any) -> None:
        msg = fmt % args if args else fmt
        self._emit(level, (level, _VARYING.sub("", msg)), msg)

    def error(self, err: KafkaError) -> None:
        if err.code() in CONNECTION_ERRORS and not err.fatal():
            self._wake.set()  # the FAIL log line already says what happened
            self._start()
            return
        self._emit(logging.ERROR, ("error", err.code()), f"{err.name()}: {err.str()}")

    def check(self) -> None:
        """One look at the servers: log "lost" if none answers, "back" once one does."""
        why = self._reachable(self.servers, self._probe_s)
        now = self._clock()
        where = ",".join(self.servers)
        if why is not None:
            if self.state.lose(now):
                log.warning(
                    "Kafka broker connection lost: %s unreachable (%s); the clients keep "
                    "retrying, librdkafka's repeated lines limited to one per %g s",
                    where,
                    why,
                    self.limiter.interval_s,
                )
        elif (took := self.state.recover(now)) is not None:
            log.info("Kafka broker connection back: %s reachable after %.0f s", where, took)

    def _emit(self, level: int, key: Hashable, msg: str) -> None:
        with self._lock:
            held = self.limiter.allow(key, self._clock())
        if held is not None:
            more = f" ({held} similar suppressed in {self.limiter.interval_s:g} s)" if held else ""
            rdkafka_log.log(level, "%s%s", msg, more)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="kafka-watch")
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.check()
            time.sleep(self._probe_s)  # at most one check a second
            if self.state.lost_since is not None:
                self._wake.set()  # keep looking until it is back


_watches: dict[tuple[str, ...], BrokerWatch] = {}
_watches_lock = threading.Lock()


def broker_watch(servers: list[str]) -> BrokerWatch:
    """The one watch of this bootstrap list in the process (one line per outage, not one
    per client)."""
    with _watches_lock:
        watch = _watches.get(tuple(servers))
        if watch is None:
            watch = _watches[tuple(servers)] = BrokerWatch(servers)
        return watch


def client_hooks(s: Settings) -> dict[str, Any]:
    """``logger`` and ``error_cb`` for a confluent-kafka client config."""
    watch = broker_watch(_split(s.brokers))
    return {"logger": watch, "error_cb": watch.error}


def _config_value(v: Any) -> Any:
    """bytewax's ``add_config`` is typed str -> str but handed to confluent-kafka as is:
    plain values as strings, the logging hooks as the objects they are."""
    return str(v) if isinstance(v, str | int | float) else v


def topic_config(s: Settings, topic: str) -> tuple[int, dict[str, str]]:
    """Partitions and config ``topic`` is created with: the configured partitions, and
    for the rules and feedback-state topics one compacted partition (the latest value of
    each key; one partition gives every reader one order of versions)."""
    config = {"max.message.bytes": str(s.kafka_max_message_bytes)}
    if topic in (s.topic_rules, s.topic_feedback_state):
        return 1, {**config, "cleanup.policy": "compact"}
    return s.partitions, config


def create_topics(
    s: Settings, timeout_s: float = 15.0, only: Sequence[str] | None = None
) -> dict[str, str]:
    """Create the seven topics (see :func:`topic_config`), or ``only`` those; existing
    ones are kept.

    Returns topic → "created" | "exists".  No brokers configured is a ConfigError; none
    reachable a one-line FraudError (at once when nothing listens, else after
    ``timeout_s``), not a librdkafka traceback.
    """
    servers = broker_list(s)
    why = tcp_reachable(servers, min(timeout_s, 5.0))
    if why is not None:
        raise FraudError(f"Kafka broker unreachable: {why}")
    admin = AdminClient({"bootstrap.servers": ",".join(servers), **client_hooks(s)})
    names = [
        s.topic_transactions,
        s.topic_alerts,
        s.topic_dlq,
        s.topic_feedback,
        s.topic_decisions,
        s.topic_rules,
        s.topic_feedback_state,
    ]
    names = [t for t in names if only is None or t in only]
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as e:
        raise FraudError(
            f"Kafka broker unreachable at {','.join(servers)}: no metadata within "
            f"{timeout_s:g} s ({e.args[0].str() if e.args else e})"
        ) from None
    todo = []
    for t in names:
        if t not in existing:
            parts, config = topic_config(s, t)
            todo.append(NewTopic(t, num_partitions=parts, replication_factor=-1, config=config))
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


def decision_message(d: Decision) -> KafkaSinkMessage[bytes, bytes]:
    """Decision v1 keyed by user_id, with contract headers: every scored transaction's
    answer, read by the decision API replicas and any in-line consumer."""
    return KafkaSinkMessage(
        key=d.user_id.encode(),
        value=encode_decision(d),
        headers=[*DECISION_HEADERS, ("schema-version", str(DECISION_VERSION).encode())],
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
                headers={
                    "schema-version": str(r.schema_version).encode(),
                    "content-type": b"application/json",
                },
            )
        left = producer.flush(5.0)
        if left:
            raise RuntimeError(f"{left} verdict(s) not acknowledged by {s.brokers} within 5 s")

    return publish
