"""Hot reload: the rule policy in force, read by every flow process from a Kafka topic.

ClickHouse ``rule_policies`` is the source of truth (see :mod:`clickhouse.rules`); a
publish there is then *announced* on the compacted, one-partition ``fraud-rules`` topic
(key ``policy``, value the policy's JSON).  Each flow process keeps one
:class:`PolicyFeed`: before the flow starts it reads the topic to its end (and, with a
store, compares with the version in force in ClickHouse, republishing it when the topic
is behind), so a start or a restart from recovery scores with the version in force, never
a stale or the built-in one.  Then a daemon thread follows the topic and swaps the
compiled policy in; the scoring steps read it once per batch (:meth:`PolicyFeed.current`,
an attribute read), so every worker of the process switches within about a second.

Versions only grow (a rollback publishes a new, higher version), so a message carrying a
version not above the one in force is stale and ignored.  A message that is not a policy
or does not compile is logged with its offset, counted in ``fraud_policy_rejected_total``
and ignored: the policy in force stays, the flow never stops for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError

from dataflows.connectors import metrics
from dataflows.connectors.kafka import create_topics, follower, make_producer, read_to_end
from dataflows.detection.policy import ActivePolicy, activate, default_active
from schemas.errors import FraudError
from schemas.rules import Policy, decode_policy, encode_policy
from schemas.settings import Settings

if TYPE_CHECKING:  # ClickHouse is read once at start: the flow module does not load it
    from clickhouse.store import Store

__all__ = ["KEY", "PolicyFeed", "announce_policy", "policy_announcer", "policy_feed"]

log = logging.getLogger(__name__)

KEY = b"policy"
"""The one key of the rules topic: compaction keeps the latest announcement only."""


def announce_policy(s: Settings, policy: Policy, timeout_s: float = 10.0) -> None:
    """Produce ``policy`` to the rules topic (created compacted if missing) and wait for
    the broker's acknowledgement; raises :class:`FraudError` naming the topic if not."""
    create_topics(s, timeout_s, only=[s.topic_rules])
    producer = make_producer(s)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    producer.produce(s.topic_rules, key=KEY, value=encode_policy(policy), on_delivery=delivered)
    left = producer.flush(timeout_s)
    if left or failed:
        why = failed[0] if failed else f"not acknowledged within {timeout_s:g} s"
        raise FraudError(
            f"announcing rule policy v{policy.version} on topic {s.topic_rules!r} "
            f"({s.brokers}) failed: {why}"
        )


def policy_announcer(s: Settings) -> Callable[[Policy], None] | None:
    """:func:`announce_policy` bound to ``s`` for the dashboard, or None without brokers
    (flows then pick a published policy up from ClickHouse when they start)."""
    if not s.brokers:
        return None
    return lambda p: announce_policy(s, p)


class PolicyFeed:
    """The policy in force in this process, kept current from the rules topic.

    ``store`` (optional) is the ClickHouse of record, consulted once at :meth:`start`.
    """

    def __init__(
        self,
        s: Settings,
        store: Store | None = None,
        *,
        poll_s: float = 0.5,
        start_timeout_s: float = 20.0,
    ) -> None:
        self.s = s
        self.store = store
        self.poll_s = min(poll_s, 0.5)
        self.start_timeout_s = start_timeout_s
        self.fallback = default_active(s)
        self._active: ActivePolicy = self.fallback
        self.rejected = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error = ""
        metrics.POLICY_VERSION.set(self._active.version)

    def current(self) -> ActivePolicy:
        """The compiled policy in force (called once per batch by every scoring step)."""
        return self._active

    def current_for(self, s: Settings) -> Callable[[], ActivePolicy]:
        """``current`` for a flow built with settings ``s``: the published policy, or
        until one is, ``s``'s built-in (its params and thresholds come from settings)."""
        fallback = default_active(s)
        if fallback.policy == self.fallback.policy:
            return self.current

        def current() -> ActivePolicy:
            p = self._active
            return p if p.version else fallback

        return current

    # --- applying announcements ---------------------------------------------------

    def offer(self, value: bytes | None, where: str) -> bool:
        """Apply one announcement if it is a valid policy above the version in force;
        otherwise log why (``where`` says which message) and keep the one in force."""
        try:
            if value is None:
                raise ValueError("empty value (a tombstone)")
            policy = decode_policy(value)
            active = activate(policy)
        except Exception as e:  # any bytes: never stop the flow for one message
            self._reject("invalid", f"{where}: not a usable policy, ignored: {e}")
            return False
        return self._apply(active, where)

    def _apply(self, active: ActivePolicy, where: str) -> bool:
        with self._lock:  # the feed thread and a reconcile may race: versions only grow
            now = self._active.version
            if active.version > now:
                self._active = active
        if active.version <= now:
            if active.version < now:
                self._reject(
                    "stale",
                    f"{where}: policy v{active.version} is older than v{now} in force, ignored",
                )
            return False
        metrics.POLICY_VERSION.set(active.version)
        log.info(
            "rule policy v%d in force (%s; %d live, %d shadow rules)",
            active.version,
            where,
            len(active.early) + len(active.late),
            len(active.shadow_early) + len(active.shadow_late),
        )
        return True

    def _reject(self, reason: str, message: str) -> None:
        self.rejected += 1
        metrics.POLICY_REJECTED.labels(reason).inc()
        log.warning("%s", message)

    # --- start: catch up before the flow runs ---------------------------------------

    def _consumer(self) -> Consumer:
        return follower(self.s, self.s.topic_rules, "rules", self.poll_s)

    def _catch_up(self, c: Consumer, deadline: float) -> bool:
        """Apply every message up to the end of the topic; False if the end was not
        reached by ``deadline``."""

        def take(m: Any) -> None:
            self.offer(m.value(), f"{self.s.topic_rules} offset {m.offset()}")

        return read_to_end(c, deadline, self.poll_s, take, self._log_error)

    def reconcile(self, store: Store) -> None:
        """Adopt the version in force in ClickHouse when the topic is behind it, and
        announce it so every other process gets it too (ClickHouse is the truth)."""
        from clickhouse.rules import policy_in_force

        try:
            stored = policy_in_force(store)
        except Exception as e:
            log.warning("rule policy: ClickHouse not read (%s); using the topic's", e)
            return
        if stored is None or stored.version <= self._active.version:
            return
        self._apply(activate(stored), f"ClickHouse {store.database}.rule_policies")
        try:
            announce_policy(self.s, stored)
        except FraudError as e:
            log.warning("rule policy v%d not republished: %s", stored.version, e)

    def start(self) -> PolicyFeed:
        """Catch up with the topic (and ClickHouse), then follow it in a daemon thread.

        Refuses to start (:class:`FraudError`) when neither the topic's end nor a stored
        policy could be read: scoring then could use a stale policy."""
        if self._thread is not None:
            return self
        create_topics(self.s, only=[self.s.topic_rules])
        c = self._consumer()
        caught_up = self._catch_up(c, time.monotonic() + self.start_timeout_s)
        if self.store is not None:
            self.reconcile(self.store)
        if not caught_up and self._active.version == 0:
            c.close()
            raise FraudError(
                f"rules topic {self.s.topic_rules!r} on {self.s.brokers}: its end was not "
                f"reached within {self.start_timeout_s:g} s; not scoring with a possibly "
                "stale policy"
            )
        where = "built-in" if self._active.version == 0 else "published"
        log.info("rule policy v%d (%s) at start", self._active.version, where)
        self._thread = threading.Thread(target=self._run, args=(c,), daemon=True, name="rules")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self, c: Consumer) -> None:
        where = self.s.topic_rules
        try:
            while not self._stop.is_set():
                try:
                    m = c.poll(self.poll_s)
                    if m is None:
                        continue
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            self._log_error(err)
                        continue
                    self.offer(m.value(), f"{where} offset {m.offset()}")
                except Exception:  # the thread must outlive anything one poll does
                    log.exception("rule policy feed: poll failed; retrying")
                    self._stop.wait(1.0)
        finally:
            c.close()

    def _log_error(self, err: KafkaError) -> None:
        """A consumer error once per kind (the broker watch logs connection loss)."""
        text = f"{err.name()}: {err.str()}"
        if text != self._last_error:
            self._last_error = text
            log.warning("rules topic %s: %s", self.s.topic_rules, text)


_feeds: dict[tuple[str, str], PolicyFeed] = {}
_feeds_lock = threading.Lock()


def policy_feed(s: Settings, store: Store | None = None) -> PolicyFeed:
    """The one started feed of ``s``'s brokers and rules topic in this process, shared by
    its workers (created and caught up on first use; a later ``store`` is reconciled)."""
    key = (s.brokers, s.topic_rules)
    with _feeds_lock:
        feed = _feeds.get(key)
        if feed is None:
            feed = _feeds[key] = PolicyFeed(s, store).start()
        elif store is not None:
            feed.reconcile(store)
        return feed
