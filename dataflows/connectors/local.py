"""Sources and sinks that need no server: iterables, JSONL and Parquet files, callbacks.

Kafka and ClickHouse connectors live in their own modules; these serve the embedded
default, ``fraud run --input FILE`` and evaluation, which replays datasets through the
same ``build_flow`` as production.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = [
    "CallbackSink",
    "HistorySource",
    "IterSource",
    "LocalMessage",
    "PartitionedSource",
    "StoppableSource",
    "history_files",
    "jsonl_lines",
    "parquet_events",
    "stop_on_signals",
]

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
    """Transaction JSON (with its label) of a Parquet record batch of generated history."""
    import orjson

    out = []
    for r in batch.to_pylist():
        ts = r["ts"]
        r["ts"] = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        r["label"] = {"is_fraud": bool(r.pop("is_fraud")), "pattern": r.pop("pattern")}
        r.pop("year", None)
        r.pop("month", None)
        out.append(orjson.dumps(r))
    return out


class _HistoryPartition(StatefulSourcePartition[bytes, tuple[int, int]]):
    def __init__(self, files: list[Path], resume: tuple[int, int], batch: int) -> None:
        self.files, self.batch = files, batch
        self.file, self.row = resume
        self.it: Iterator[Any] | None = None

    def next_batch(self) -> list[bytes]:
        import pyarrow.parquet as pq

        while self.file < len(self.files):
            if self.it is None:
                pf = pq.ParquetFile(self.files[self.file])
                self.it = pf.iter_batches(batch_size=self.batch)
                skip = self.row
                while skip > 0:  # resume inside a file: skip what was read already
                    b = next(self.it)
                    if b.num_rows > skip:
                        self.it = itertools.chain([b.slice(skip)], self.it)
                        break
                    skip -= b.num_rows
            b = next(self.it, None)
            if b is None:
                self.file, self.row, self.it = self.file + 1, 0, None
                continue
            self.row += b.num_rows
            return parquet_events(b)
        raise StopIteration

    def snapshot(self) -> tuple[int, int]:
        return (self.file, self.row)


class HistorySource(FixedPartitionedSource[bytes, tuple[int, int]]):
    """Generated history in event-time order (``fraud backfill``), resumable.

    One partition reads the files in time order, so each user's events reach the flow in
    event-time order whatever the number of workers (scoring spreads by shard key after
    it); a restart from recovery resumes at the snapshotted (file, row).
    """

    def __init__(self, root: Path, batch: int = BATCH) -> None:
        self.files = history_files(root)
        self.batch = batch

    def list_parts(self) -> list[str]:
        return ["history"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[int, int] | None
    ) -> _HistoryPartition:
        return _HistoryPartition(self.files, resume_state or (0, 0), self.batch)
