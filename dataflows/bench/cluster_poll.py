"""What bytewax's cluster mode costs a worker: ``python -m dataflows.bench.cluster_poll``.

A process started as part of a cluster (``-i``/``-a``, or ``cluster_main``) runs its
workers on threads, through timely's inter-thread channels and progress tracking, while
the main thread loops: sleep 1 ms, take the GIL, check for signals (bytewax 0.21.1,
``src/run.rs`` ``cluster_main``; unchanged on its main branch).  A single process without
cluster flags runs its one worker on the main thread (``run_main``) with neither.  Both
cost per operator activation, so they show at small batches, which is what a flow at a
low rate sees (a few events per poll).  This times the same CPU-bound flow of ``steps``
map operators both ways, for batches of ``sizes`` items, and prints items/s.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import cluster_main, run_main

from dataflows.connectors.local import CallbackSink

__all__ = ["items_per_second", "timed_run"]


class _Timed(StatelessSourcePartition[int]):
    """Batches of ``size`` items until ``seconds`` have passed."""

    def __init__(self, size: int, seconds: float) -> None:
        self.size, self.until = size, time.monotonic() + seconds

    def next_batch(self) -> list[int]:
        if time.monotonic() > self.until:
            raise StopIteration
        return list(range(self.size))

    def next_awake(self) -> datetime | None:
        return None


class _Source(DynamicSource[int]):
    def __init__(self, size: int, seconds: float) -> None:
        self.size, self.seconds = size, seconds

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Timed:
        return _Timed(self.size, self.seconds)


def _work(x: int) -> int:
    """About 10 µs of Python per item: an operator that does something."""
    return sum(i * x for i in range(200))


def items_per_second(cluster: bool, size: int, steps: int = 10, seconds: float = 5.0) -> float:
    """Items through ``steps`` map operators per second on one worker, started as a
    one-process cluster (``cluster``) or as a single process."""
    count, elapsed = timed_run(cluster, size, steps, seconds)
    return count / elapsed


def timed_run(cluster: bool, size: int, steps: int, seconds: float) -> tuple[int, float]:
    """Items that came out of the last step, and the seconds the run took."""
    seen = [0]
    flow = Dataflow("cluster_poll")
    stream: Any = op.input("in", flow, _Source(size, seconds))
    for i in range(steps):
        stream = op.map(f"work{i}", stream, _work)
    op.output("out", stream, CallbackSink(lambda b: seen.__setitem__(0, seen[0] + len(b))))
    began = time.monotonic()
    if cluster:
        cluster_main(flow, [], 0, epoch_interval=timedelta(seconds=10))
    else:
        run_main(flow, epoch_interval=timedelta(seconds=10))
    return seen[0], time.monotonic() - began


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1, 10, 100, 1000]
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, 10 map steps, items/s (5 s each)")
    print("| batch | single process | one-process cluster | cluster / single |")
    print("|---:|---:|---:|---:|")
    for size in sizes:
        single = items_per_second(False, size)
        clustered = items_per_second(True, size)
        print(f"| {size} | {single:,.0f} | {clustered:,.0f} | {clustered / single:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
