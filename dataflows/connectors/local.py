"""Sources and sinks that need no server: iterables, JSONL and Parquet files, callbacks.

Kafka and ClickHouse connectors live in their own modules; these serve the embedded
default, ``fraud run --input FILE`` and evaluation, which replays datasets through the
same ``build_flow`` as production.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = [
    "CallbackSink",
    "IterSource",
    "PartitionedSource",
    "StoppableSource",
    "jsonl_lines",
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
        items = self.parts[int(for_part)]
        return _IterPartition(iter(items), resume_state or 0, self.batch, None)


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
