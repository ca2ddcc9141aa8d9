"""Prometheus metrics of a dataflow process (prometheus-client, one registry per process).

Every figure an operator needs to tell whether the flow keeps up and loses nothing:
what it reads (per topic and partition) and how far behind the log it is, where every
message ends (decisions by type, dead letters by reason), how long scoring takes, how the
ClickHouse sink is doing (queue depth, insert time, retries) and when state was last
snapshotted for recovery.  Counting is per batch where it can be (one label lookup per
batch, not per event); the scoring-latency histogram observes every event (~0.7 µs).

``serve_metrics(port)`` exposes them on ``http://host:port/metrics`` (setting
``metrics_port``; 0 = off).  README lists each metric.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "CARD_VERDICTS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DECISIONS",
    "EVENTS_READ",
    "POLICY_REJECTED",
    "POLICY_VERSION",
    "RULE_ERRORS",
    "SCORING_LATENCY",
    "SHADOW_HITS",
    "SINK_INSERT_SECONDS",
    "SINK_QUEUE",
    "SINK_RETRIES",
    "SNAPSHOT_TIME",
    "LagWatcher",
    "count_dead_letter",
    "count_read",
    "count_scored",
    "serve_metrics",
]

log = logging.getLogger(__name__)

EVENTS_READ = Counter(
    "fraud_events_read",
    "Messages read by the flow, per source topic and partition.",
    ["topic", "partition"],
)
DEAD_LETTERS = Counter("fraud_dead_letters", "Messages dead-lettered, by reason code.", ["code"])
DECISIONS = Counter("fraud_decisions", "Transactions scored, by decision.", ["decision"])
SCORING_LATENCY = Histogram(
    "fraud_scoring_latency_seconds",
    "From entering the system (Kafka timestamp) to scored (processed_at).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CONSUMER_LAG = Gauge(
    "fraud_consumer_lag_messages",
    "Messages in the partition not yet read by this process.",
    ["topic", "partition"],
)
SINK_QUEUE = Gauge("fraud_clickhouse_queue_batches", "Batches waiting for the ClickHouse writer.")
SINK_INSERT_SECONDS = Histogram(
    "fraud_clickhouse_insert_seconds",
    "Time to insert one batch, retries included.",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SINK_RETRIES = Counter(
    "fraud_clickhouse_insert_retries", "Transient insert failures retried.", ["table"]
)
RULE_ERRORS = Counter(
    "fraud_rule_errors",
    "Events a rule raised on (skipped for that event), by rule id.",
    ["rule"],
)
SHADOW_HITS = Counter(
    "fraud_shadow_hits", "Hits of shadow rules (stored, deciding nothing), by rule id.", ["rule"]
)
POLICY_VERSION = Gauge(
    "fraud_policy_version", "Version of the rule policy this process scores with (0: built-in)."
)
POLICY_REJECTED = Counter(
    "fraud_policy_rejected",
    "Messages on the rules topic ignored: not a policy, not compilable, or an older version.",
    ["reason"],
)
CARD_VERDICTS = Counter(
    "fraud_card_verdicts",
    "Analysts' verdicts applied to the compromised-card state, by outcome: marked, cleared, "
    "or ignored (unknown_user, unknown_card: the card could not be resolved).",
    ["outcome"],
)
SNAPSHOT_TIME = Gauge(
    "fraud_recovery_snapshot_timestamp_seconds",
    "When a stateful step last snapshotted its state (Unix time; age = time() - this).",
)

_last_offset: dict[tuple[str, int], int] = {}
"""Highest offset read per (topic, partition) in this process, for the lag."""


def count_read(items: Iterable[Any]) -> None:
    """Count a batch of source items by topic and partition (Kafka messages; anything
    else counts under topic "" and partition -1) and remember the last offset read."""
    tally: Tally[tuple[str, int]] = Tally()
    for m in items:
        topic = getattr(m, "topic", None)
        if topic is None:
            msg = getattr(m, "msg", None)  # a consumer error wraps its message
            topic = getattr(msg, "topic", None)
            m = msg
        part = getattr(m, "partition", None)
        key = (topic if isinstance(topic, str) else "", part if isinstance(part, int) else -1)
        tally[key] += 1
        offset = getattr(m, "offset", None)
        if isinstance(offset, int) and offset > _last_offset.get(key, -1):
            _last_offset[key] = offset
    for (topic, part), n in tally.items():
        EVENTS_READ.labels(topic, str(part)).inc(n)


def count_scored(rows: list[Any]) -> list[Any]:
    """Count a batch of scored rows by decision, rule errors and shadow hits by rule, and
    observe their scoring latency; returns the batch unchanged (a pass-through step)."""
    tally: Tally[str] = Tally()
    rules: Tally[tuple[bool, str]] = Tally()
    observe = SCORING_LATENCY.observe
    for r in rows:
        tally[r.decision] += 1
        if r.ingested_at is not None:
            observe(max(0.0, (r.processed_at - r.ingested_at).total_seconds()))
        if r.rule_errors or r.shadow:  # rare: rules failing, shadow rules hitting
            rules.update((True, rid) for rid in r.rule_errors)
            rules.update((False, h.code) for h in r.shadow)
    for decision, n in tally.items():
        DECISIONS.labels(decision).inc(n)
    for (error, rid), n in rules.items():
        (RULE_ERRORS if error else SHADOW_HITS).labels(rid).inc(n)
    return rows


def count_dead_letter(_step_id: str, d: Any) -> None:
    """Inspector of the dead-letter streams (dead letters are rare: per item is fine)."""
    DEAD_LETTERS.labels(d.error_code).inc()


_served: dict[int, Any] = {}


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Expose ``/metrics`` on ``port`` once per process (0 = off)."""
    if port and port not in _served:
        _served[port] = start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)


class LagWatcher:
    """Sets :data:`CONSUMER_LAG` every ``every_s`` from the partitions' high watermarks
    and the last offsets this process read (bytewax's Kafka source does not expose lag)."""

    def __init__(self, config: dict[str, Any], every_s: float = 5.0) -> None:
        self.config, self.every_s = config, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lag-watcher", daemon=True)

    def start(self) -> LagWatcher:
        self.thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({**self.config, "enable.auto.commit": False})
        try:
            while not self.stop.wait(self.every_s):
                for (topic, part), offset in list(_last_offset.items()):
                    if not topic or part < 0:
                        continue
                    try:
                        _, high = consumer.get_watermark_offsets(
                            TopicPartition(topic, part), timeout=2.0, cached=False
                        )
                    except Exception as e:  # broker away: the broker watch logs it
                        log.debug("lag of %s/%d unknown: %s", topic, part, e)
                        continue
                    CONSUMER_LAG.labels(topic, str(part)).set(max(0, high - offset - 1))
        finally:
            consumer.close()
