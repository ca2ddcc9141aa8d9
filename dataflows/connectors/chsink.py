"""The bytewax ClickHouse sink: batched, retried, backpressured, idempotent on replay.

Every scored transaction becomes a ``transactions`` row and every flagged one also an
``alerts`` row.  Rows are buffered and inserted when ``clickhouse_batch_rows`` are
waiting or the oldest is ``clickhouse_batch_seconds`` old (each chDB insert costs
milliseconds and makes a part, so row-at-a-time inserts would drown it), and always at
the end of every epoch: bytewax snapshots after ``snapshot()`` returns, so nothing a
snapshot covers is still only in memory and a restart loses no rows.

Inserts run on one background thread per partition (``background=True``, the default),
so the worker keeps scoring and publishing alerts while a batch is written; at most
:data:`QUEUE_DEPTH` batches wait, and ``snapshot()`` waits for all of them.  This took
the worker's insert stalls (tens of ms per batch) out of the produce->alert path.

Transient failures (server down, timeouts, too many parts) are retried with capped
exponential backoff on that thread; the queue fills and ``write_batch`` blocks, so the
worker stops pulling input while ClickHouse is away (backpressure) and no row is
dropped.  Other errors (a schema
mismatch) raise, so the flow stops loudly and recovery resumes after the fix.  Replays
insert the same keys again; the tables and queries de-duplicate them.
"""

from __future__ import annotations

import copy
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from clickhouse.store import Store, describe_url, is_transient
from clickhouse.tables import (
    ALERTS,
    DEAD_LETTERS,
    TRANSACTIONS,
    Table,
    alert_row,
    dead_letter_row,
    txn_row,
)
from dataflows.connectors import metrics
from dataflows.connectors.encoded import Encoded
from schemas.errors import StoreError
from schemas.scored import Alert, DeadLetter, ScoredTransaction
from schemas.settings import Settings

__all__ = [
    "Batch",
    "ClickHouseSink",
    "DeadLetterSink",
    "RetryPolicy",
    "clickhouse_sink",
    "dead_letter_sink",
    "insert_with_retry",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff for transient insert failures; ``max_attempts=None`` retries forever."""

    initial_s: float = 0.2
    max_s: float = 5.0
    max_attempts: int | None = None

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** (attempt - 1))


def insert_with_retry(
    store: Store,
    table: Table,
    rows: list[tuple[Any, ...]],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Insert ``rows``, retrying transient errors; returns the attempts it took."""
    attempt = 0
    started = time.monotonic()
    while True:
        attempt += 1
        try:
            store.insert(table, rows)
            metrics.SINK_INSERT_SECONDS.labels(table.name).observe(time.monotonic() - started)
            if attempt > 1:
                log.warning(
                    "insert into %s.%s succeeded after %d attempts",
                    store.database,
                    table.name,
                    attempt,
                )
            return attempt
        except Exception as e:
            where = f"{describe_url(store.url)} {store.database}.{table.name}"
            if not is_transient(e):
                raise StoreError(f"insert of {len(rows)} rows into {where} failed: {e}") from e
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise StoreError(
                    f"insert of {len(rows)} rows into {where} still failing after "
                    f"{attempt} attempts: {e}"
                ) from e
            metrics.SINK_RETRIES.labels(table.name).inc()
            wait = policy.delay(attempt)
            log.warning(
                "insert of %d rows into %s failed (attempt %d, retry in %.1fs): %s",
                len(rows),
                where,
                attempt,
                wait,
                e,
            )
            store.reset()
            sleep(wait)


@dataclass(slots=True)
class Batch:
    """Rows waiting for the next insert and when the oldest arrived."""

    txns: list[tuple[Any, ...]] = field(default_factory=list)
    alerts: list[tuple[Any, ...]] = field(default_factory=list)
    since: float | None = None

    def add(self, s: ScoredTransaction, now: float) -> None:
        if self.since is None:
            self.since = now
        self.txns.append(txn_row(s))
        if s.flagged:
            self.alerts.append(alert_row(Alert.from_scored(s)))

    def due(self, now: float, rows: int, seconds: float) -> bool:
        return self.since is not None and (len(self.txns) >= rows or now - self.since >= seconds)


QUEUE_DEPTH = 2
"""Batches waiting for the background writer before ``write_batch`` blocks."""


class _Writer:
    """One thread inserting batches in order; a failure is re-raised to the worker."""

    def __init__(self, store: Store, policy: RetryPolicy, name: str) -> None:
        self.store, self.policy = store, policy
        self.q: queue.Queue[Batch | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, b: Batch) -> None:
        self.check()
        self.q.put(b)
        metrics.SINK_QUEUE.set(self.q.qsize())

    def wait(self) -> None:
        """Block until every submitted batch is inserted; raise the writer's failure."""
        self.q.join()
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.q.put(None)
        self.thread.join()

    def _run(self) -> None:
        _warm(self.store)
        while True:
            b = self.q.get()
            try:
                if b is None:
                    self.store.close()  # this thread's client
                    return
                if self.error is None:  # after a failure, keep draining; raise once
                    _insert(self.store, b, self.policy)
            except BaseException as e:
                self.error = e
            finally:
                self.q.task_done()
                metrics.SINK_QUEUE.set(self.q.qsize())


def _warm(store: Store) -> None:
    """Connect now rather than on the first batch (a chDB session takes ~1 s to open,
    which stalled the first alerts); if ClickHouse is down, the first insert retries."""
    try:
        store.client  # noqa: B018
    except Exception as e:
        log.warning("ClickHouse not reachable yet (%s); inserts will retry", e)
        store.reset()


def _insert(store: Store, b: Batch, policy: RetryPolicy) -> None:
    # Transactions first, then alerts: a crash in between replays both, and the
    # replayed transaction rows fold into the ones already written.
    insert_with_retry(store, TRANSACTIONS, b.txns, policy)
    insert_with_retry(store, ALERTS, b.alerts, policy)


class _Partition(StatefulSinkPartition[ScoredTransaction, None]):
    def __init__(
        self,
        store: Store,
        rows: int,
        seconds: float,
        policy: RetryPolicy,
        clock: Callable[[], float],
        background: bool = True,
    ) -> None:
        self.store = store
        self.rows = rows
        self.seconds = seconds
        self.policy = policy
        self.clock = clock
        self.batch = Batch()
        self.writer = _Writer(store, policy, "clickhouse-writer") if background else None
        if self.writer is None:
            _warm(store)

    def write_batch(self, values: list[ScoredTransaction]) -> None:
        now = self.clock()
        for v in values:
            self.batch.add(v, now)
        if self.batch.due(now, self.rows, self.seconds):
            self.flush()

    def flush(self) -> None:
        """Hand the buffered rows to the writer (or insert them, without one)."""
        b = self.batch
        if b.since is None:
            return
        self.batch = Batch()
        if self.writer is None:
            _insert(self.store, b, self.policy)
        else:
            self.writer.submit(b)

    def wait(self) -> None:
        """Every row handed over so far is in ClickHouse (raises a writer failure)."""
        if self.writer is not None:
            self.writer.wait()

    def snapshot(self) -> None:
        self.flush()
        self.wait()

    def close(self) -> None:
        try:
            self.flush()
            self.wait()
        finally:
            if self.writer is not None:
                self.writer.stop()
            self.store.close()


class _Slot(StatefulSinkPartition[ScoredTransaction, None]):
    """One partition of :class:`ClickHouseSink`.  The partitions a worker owns share one
    writer (buffer, client, insert thread), so owning many costs nothing per partition."""

    def __init__(self, shared: _Partition, release: Callable[[], None]) -> None:
        self.shared, self.release = shared, release

    def write_batch(self, values: list[ScoredTransaction]) -> None:
        self.shared.write_batch(values)

    def wait(self) -> None:
        self.shared.wait()

    def snapshot(self) -> None:
        self.shared.snapshot()

    def close(self) -> None:
        self.release()


class ClickHouseSink(FixedPartitionedSink[ScoredTransaction, None]):
    """Writes scored transactions and their alerts to ClickHouse.

    It has ``parts`` partitions, and one writer (client, buffer, insert thread) per
    worker that owns any.  By default rows go to a partition by user id; one writer
    inserts >100k rows/s.  On a cluster, :meth:`placed` keeps each row on the worker
    that scored it instead of sending it to another process to be written.
    """

    def __init__(
        self,
        url: str,
        database: str,
        rows: int,
        seconds: float,
        *,
        parts: int = 1,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        part_of: Callable[[str], int] | None = None,
    ) -> None:
        self.background = background
        self.url = url
        self.database = database
        self.rows = rows
        self.seconds = seconds
        self.parts = parts
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.part_of = part_of
        self._writers: dict[int, list[Any]] = {}  # worker thread -> [writer, partitions]
        self._lock = threading.Lock()

    def list_parts(self) -> list[str]:
        return [f"clickhouse-{i}" for i in range(self.parts)]

    def part_fn(self, item_key: str) -> int:
        return self.part_of(item_key) if self.part_of is not None else super().part_fn(item_key)

    def placed(self, part_of: Callable[[str], int], parts: int) -> ClickHouseSink:
        """This sink with ``parts`` partitions, the row of user ``u`` written by the
        ``part_of(u)``-th in sorted order.  bytewax deals sink partitions to workers like
        source partitions (round-robin in sorted order, pinned by
        ``tests/unit/test_routing.py``), so with one partition per source partition and
        ``part_of`` the index of the user's, a row is written on the worker that read
        and scored it, for any number of workers; a row placed elsewhere is still
        written, only after crossing.  The count stays fixed when workers are added, as
        the recovery store's partition keys require."""
        out = copy.copy(self)
        out.parts, out.part_of = parts, part_of
        out._writers, out._lock = {}, threading.Lock()
        return out

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Slot:
        worker = threading.get_ident()  # bytewax builds a worker's partitions on its thread
        with self._lock:
            entry = self._writers.get(worker)
            if entry is None:
                entry = self._writers[worker] = [self._writer(), 0]
            entry[1] += 1
        return _Slot(entry[0], functools.partial(self._release, worker))

    def _writer(self) -> _Partition:
        return _Partition(
            Store(self.url, self.database),
            self.rows,
            self.seconds,
            self.policy,
            self.clock,
            self.background,
        )

    def _release(self, worker: int) -> None:
        with self._lock:
            entry = self._writers[worker]
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._writers[worker]
        entry[0].close()


def _keyed(s: ScoredTransaction) -> tuple[str, ScoredTransaction]:
    return (s.txn.user_id, s)


def clickhouse_sink(s: Settings, policy: RetryPolicy | None = None) -> Encoded[ScoredTransaction]:
    """The row sink for :func:`dataflows.flow.build_flow`, configured from settings."""
    sink = ClickHouseSink(
        s.clickhouse_url,
        s.clickhouse_database,
        s.clickhouse_batch_rows,
        s.clickhouse_batch_seconds,
        policy=policy,
    )
    return Encoded(sink, _keyed)


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, store: Store, policy: RetryPolicy) -> None:
        self.store, self.policy = store, policy

    def write_batch(self, items: list[DeadLetter]) -> None:
        insert_with_retry(
            self.store, DEAD_LETTERS, [dead_letter_row(d) for d in items], self.policy
        )

    def close(self) -> None:
        self.store.close()


class DeadLetterSink(DynamicSink[DeadLetter]):
    """Every dead letter, whole, into ``dead_letters``: the durable copy of a payload too
    large for the DLQ topic, and a queryable dead-letter log.  Dead letters are rare, so
    each batch is inserted as it comes (no buffering to lose), retried like the rows."""

    def __init__(self, url: str, database: str, policy: RetryPolicy | None = None) -> None:
        self.url, self.database, self.policy = url, database, policy or RetryPolicy()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(Store(self.url, self.database), self.policy)


def dead_letter_sink(s: Settings, policy: RetryPolicy | None = None) -> DeadLetterSink:
    """The ``dlq_store`` of :func:`dataflows.flow.kafka_flow`, configured from settings."""
    return DeadLetterSink(s.clickhouse_url, s.clickhouse_database, policy)
