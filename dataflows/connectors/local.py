"""Sources and sinks that need no server: iterables, JSONL and Parquet files, callbacks.

Kafka and ClickHouse connectors live in their own modules; these serve the embedded
default, ``fraud run --input FILE`` and evaluation, which replays datasets through the
same ``build_flow`` as production.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = [
    "CallbackSink",
    "HistorySource",
    "IterSource",
    "LocalMessage",
    "PartitionedSource",
    "Position",
    "StoppableSource",
    "history_files",
    "jsonl_lines",
    "parquet_events",
    "read_progress",
    "stop_on_signals",
]

log = logging.getLogger(__name__)
X = TypeVar("X")
BATCH = 1000
"""Items per source batch: bytewax pays per batch, batch size 1 costs ~40 % throughput."""


class _IterPartition(StatefulSourcePartition[Any, int]):
    def __init__(
        self, it: Iterator[Any], start: int, batch: int, pace: Callable[[int], None] | None
    ) -> None:
        self.it = itertools.islice(it, start, None)
        self.pos = start
        self.batch = batch
        self.pace = pace

    def next_batch(self) -> list[Any]:
        items = list(itertools.islice(self.it, self.batch))
        if not items:
            raise StopIteration
        self.pos += len(items)
        if self.pace:
            self.pace(len(items))
        return items

    def snapshot(self) -> int:
        return self.pos


class IterSource(FixedPartitionedSource[Any, int]):
    """One partition over a *re-creatable* iterable; resumes by skipping to its offset.

    ``make`` must yield the same items each call (a seeded generator or a file), so
    recovery resumes exactly after the last snapshotted item.
    """

    def __init__(
        self,
        make: Callable[[], Iterable[Any]],
        batch: int = BATCH,
        pace: Callable[[int], None] | None = None,
    ) -> None:
        self.make, self.batch, self.pace = make, batch, pace

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _IterPartition:
        return _IterPartition(iter(self.make()), resume_state or 0, self.batch, self.pace)


@dataclass(frozen=True, slots=True)
class LocalMessage:
    """A message of a local partitioned source, shaped like a Kafka message (key, value,
    topic, partition, offset) so the flow parses it and knows where it was read."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    timestamp: None = None


class PartitionedSource(FixedPartitionedSource[Any, int]):
    """In-memory events split into ``parts`` partitions by user (benchmarks, clusters).

    Each user's events stay in one partition, in order, so per-user ordering holds while
    several workers or processes read in parallel.
    """

    def __init__(self, events: list[bytes], parts: int = 1, batch: int = BATCH) -> None:
        import zlib

        import orjson

        self.parts: list[list[bytes]] = [[] for _ in range(parts)]
        for e in events:
            uid = orjson.loads(e).get("user_id", "")
            self.parts[zlib.crc32(str(uid).encode()) % parts].append(e)
        self.batch = batch

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(len(self.parts))]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _IterPartition:
        p = int(for_part)
        messages = (LocalMessage(None, e, "", p, i) for i, e in enumerate(self.parts[p]))
        return _IterPartition(messages, resume_state or 0, self.batch, None)


class _StoppablePartition(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], stop: Any) -> None:
        self.inner, self.stop = inner, stop

    def next_batch(self) -> list[Any]:
        if self.stop.is_set():
            raise StopIteration
        return self.inner.next_batch()

    def next_awake(self) -> Any:
        return self.inner.next_awake()

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class StoppableSource(FixedPartitionedSource[Any, Any]):
    """``inner`` until ``stop`` (a ``threading.Event``) is set, then end of input.

    A tailing Kafka source never ends; interrupting bytewax instead (Ctrl-C) unwinds
    through its Rust runtime, which prints a panic.  Ending the input lets the flow close
    its epoch and flush every sink, then return normally."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any], stop: Any) -> None:
        self.inner, self.stop = inner, stop

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StoppablePartition:
        return _StoppablePartition(
            self.inner.build_part(step_id, for_part, resume_state), self.stop
        )


def stop_on_signals() -> Any:
    """A ``threading.Event`` set by the first Ctrl-C or SIGTERM, for
    :class:`StoppableSource`; a second Ctrl-C interrupts at once.  Main thread only."""
    import _thread
    import signal
    import sys
    import threading

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            _thread.interrupt_main()
            return
        print("\nstopping: flushing the last rows...", file=sys.stderr, flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def jsonl_lines(path: Path) -> Iterator[bytes]:
    """Non-empty lines of a JSONL file as bytes (a blank line is not an event)."""
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if line:
                yield line


class _CallbackPartition(StatelessSinkPartition[X]):
    def __init__(self, fn: Callable[[list[X]], None]) -> None:
        self.fn = fn

    def write_batch(self, items: list[X]) -> None:
        self.fn(items)


class CallbackSink(DynamicSink[X]):
    """Calls ``fn(batch)`` for each batch of items (consoles, counters, collectors)."""

    def __init__(self, fn: Callable[[list[X]], None]) -> None:
        self.fn = fn

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CallbackPartition[X]:
        return _CallbackPartition(self.fn)


def history_files(root: Path) -> list[Path]:
    """The Parquet files of a Hive-partitioned history (``year=Y/month=M``) in time order
    (by partition values, numerically), or the one file ``root`` is."""
    if root.is_file():
        return [root]

    def order(p: Path) -> tuple[int, ...]:
        parts = dict(seg.split("=", 1) for seg in p.relative_to(root).parts[:-1] if "=" in seg)
        return tuple(int(parts.get(k, 0)) for k in ("year", "month", "day"))

    return sorted(root.rglob("*.parquet"), key=lambda p: (order(p), str(p)))


def parquet_events(batch: Any) -> list[bytes]:
    """Transaction JSON (with its label, when the file has one) of a Parquet record batch
    or table of generated history: the bytes a producer would have put on the topic, so
    the flow's guarded parse judges them (a row missing a field becomes a dead letter).

    Timestamps are formatted and dictionaries decoded by Arrow, column by column, before
    the rows become Python objects: 5 µs a row instead of 14 (the source had been a
    sixth of a backfill worker's time).
    """
    import orjson
    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    names, cols = [], []
    for name, col in zip(batch.column_names, batch.columns, strict=True):
        if name in ("year", "month", "is_fraud", "pattern"):
            continue
        if pa.types.is_timestamp(col.type):  # as producers write it: UTC, milliseconds
            col = pc.strftime(col.cast(pa.timestamp("ms", "UTC"), safe=False), "%Y-%m-%dT%H:%M:%SZ")
        elif pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        names.append(name)
        cols.append(col)
    if "is_fraud" in batch.column_names:
        fraud = pc.fill_null(_array(batch.column("is_fraud")).cast(pa.bool_()), False)
        pattern = (
            _array(batch.column("pattern")).cast(pa.string())
            if "pattern" in batch.column_names
            else pa.nulls(n, pa.string())
        )
        names.append("label")
        cols.append(pa.StructArray.from_arrays([fraud, pattern], ["is_fraud", "pattern"]))
    rows = pa.Table.from_arrays([_array(c) for c in cols], names=names).to_pylist()
    return [orjson.dumps(r, default=str) for r in rows]


def _array(col: Any) -> Any:
    """One Arrow array of a column (a table's column comes in chunks)."""
    return col.combine_chunks() if hasattr(col, "combine_chunks") else col


Position = tuple[int, int, int, int]
"""(file, row group, row in it where the partition's next window starts, events the
partition emitted before): a resume point that holds for any batch size, and the
partition's exact progress.  A history source resumes only the history and partition
count it was snapshotted with (``fraud backfill`` checks both)."""


class _RowGroups:
    """Row groups of the history, decoded once per process and shared by the partitions
    its worker reads: each row group with the partition of every row.

    A worker's partitions take turns through the same row groups, so a few recent ones
    cover them all; one that falls further behind decodes again (slower, never wrong).
    Threads of one process may share it, hence the lock.
    """

    KEEP = 4

    def __init__(self, files: list[Path], parts: int) -> None:
        self.files, self.parts = files, parts
        self.groups: dict[tuple[int, int], tuple[Any, Any]] = {}
        self.firsts: list[list[int]] | None = None
        self.open: tuple[int, Any] | None = None
        self.lock = threading.Lock()

    def _layout(self) -> list[list[int]]:
        """Per file, the history-wide number of each row group's first row (then the
        file's end): from the footers, read once."""
        import pyarrow.parquet as pq

        with self.lock:
            if self.firsts is None:
                firsts, at = [], 0
                for f in self.files:
                    meta = pq.ParquetFile(f).metadata
                    starts = [at]
                    for g in range(meta.num_row_groups):
                        at += meta.row_group(g).num_rows
                        starts.append(at)
                    firsts.append(starts)
                self.firsts = firsts
            return self.firsts

    def row_groups(self, file: int) -> int:
        return len(self._layout()[file]) - 1

    def first_row(self, file: int, group: int) -> int:
        """The history-wide number of the row group's first row (a dead letter's offset)."""
        return self._layout()[file][group]

    def rows_of(self, file: int, group: int, part: int, lo: int, hi: int) -> tuple[Any, Any]:
        """The row group's table and the indices of ``part``'s rows among its rows
        ``lo`` … ``hi - 1``, in file order."""
        with self.lock:
            got = self.groups.get((file, group))
            if got is None:
                got = self._decode(file, group)
                self.groups[(file, group)] = got
                while len(self.groups) > self.KEEP:
                    del self.groups[next(iter(self.groups))]
        table, owner = got
        return table, lo + np.flatnonzero(owner[lo:hi] == part)

    def _decode(self, file: int, group: int) -> tuple[Any, Any]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from dataflows.connectors.routing import keyed_partition

        if self.open is None or self.open[0] != file:
            self.open = (file, pq.ParquetFile(self.files[file]))
        table = self.open[1].read_row_group(group)
        if self.parts == 1 or "user_id" not in table.column_names:
            return table, np.zeros(table.num_rows, dtype=np.int64)
        users = pc.dictionary_encode(table.column("user_id").combine_chunks().cast("string"))
        names = users.dictionary.to_pylist()
        of = np.array([keyed_partition(str(u).encode(), self.parts) for u in names] or [0])
        idx = users.indices.fill_null(0).to_numpy(zero_copy_only=False)
        return table, of[idx]


class _Report:
    """A partition's progress in a file of its own, ``"<started> <emitted>"``: events it
    had emitted when it (re)started from its snapshot, and now.  Progress reporting never
    fails a backfill: a write error is logged once and reporting stops."""

    EVERY_S = 0.5

    def __init__(self, path: Path, started: int) -> None:
        self.path: Path | None = path
        self.started, self.last = started, 0.0

    def write(self, emitted: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self.last < self.EVERY_S):
            return
        self.last = now
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(f"{self.started} {emitted}\n")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("backfill progress not reported any more (%s)", e)
            self.path = None


def read_progress(folder: Path) -> dict[str, tuple[int, int]]:
    """Each partition's ``(started, emitted)`` as its :class:`_Report` last wrote it."""
    out = {}
    for f in folder.glob("*.count"):
        try:
            started, emitted = (int(x) for x in f.read_text().split())
        except (OSError, ValueError):  # being replaced as we read: next time
            continue
        out[f.stem] = (started, emitted)
    return out


class _HistoryPartition(StatefulSourcePartition[LocalMessage, Position]):
    def __init__(
        self,
        groups: _RowGroups,
        part: int,
        resume: tuple[int, ...],
        batch: int,
        report: Path | None,
    ) -> None:
        self.groups, self.part = groups, part
        self.window = batch * groups.parts
        self.file, self.group, self.row, self.emitted = (*resume, 0)[:4]
        self.report = _Report(report, self.emitted) if report is not None else None
        if self.report is not None:
            self.report.write(self.emitted, force=True)

    def next_batch(self) -> list[LocalMessage]:
        """The partition's rows among the next ``batch × partitions`` rows of the row
        group (``batch`` on average): every partition takes the same window per call, so
        the partitions sharing a worker move through the row groups together and one
        decode of each serves them all."""
        files = self.groups.files
        while self.file < len(files):
            if self.group >= self.groups.row_groups(self.file):
                self.file, self.group, self.row = self.file + 1, 0, 0
                continue
            at = self.groups.first_row(self.file, self.group)
            table, mine = self.groups.rows_of(
                self.file, self.group, self.part, self.row, self.row + self.window
            )
            self.row += self.window
            if self.row >= table.num_rows:
                self.group, self.row = self.group + 1, 0
            events = parquet_events(table.take(mine)) if len(mine) else []
            self.emitted += len(events)
            if self.report is not None:
                self.report.write(self.emitted)
            p, rows = self.part, (at + mine).tolist()
            return [LocalMessage(None, e, "", p, i) for i, e in zip(rows, events, strict=True)]
        self.close()
        raise StopIteration

    def snapshot(self) -> Position:
        return (self.file, self.group, self.row, self.emitted)

    def close(self) -> None:
        if self.report is not None:
            self.report.write(self.emitted, force=True)


class HistorySource(FixedPartitionedSource[LocalMessage, Position]):
    """Generated history (``fraud backfill``) in event-time order, in ``parts`` partitions
    by user, resumable.

    A user's rows go to partition ``crc32(user_id) % parts``, the one a producer here
    puts the user's messages in (:func:`~dataflows.connectors.routing.keyed_partition`),
    and each partition reads the files in time order: every user's events reach the flow
    in event-time order, on as many workers as there are partitions, and with aligned
    partitions each is scored where it is read.  Items are :class:`LocalMessage` (topic
    ``""``, offset the row's number in the whole history), partitions ``"0"`` …
    ``"parts-1"``.  With ``progress`` each partition keeps its count in a file there
    (:func:`read_progress`), exact across restarts from snapshots.
    """

    def __init__(
        self, root: Path, parts: int = 1, batch: int = BATCH, progress: Path | None = None
    ) -> None:
        self.files = history_files(root)
        self.parts = parts
        self.batch = batch
        self.progress = progress
        self._groups: _RowGroups | None = None

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.parts)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[int, ...] | None
    ) -> _HistoryPartition:
        if self._groups is None:
            self._groups = _RowGroups(self.files, self.parts)
        report = None
        if self.progress is not None:
            self.progress.mkdir(parents=True, exist_ok=True)
            report = self.progress / f"p{for_part}.count"
        return _HistoryPartition(
            self._groups, int(for_part), resume_state or (0, 0, 0, 0), self.batch, report
        )
