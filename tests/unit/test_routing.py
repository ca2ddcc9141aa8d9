"""bytewax's routing, pinned against a real cluster run: if an upgrade changes how keys or
source partitions are assigned to workers, these fail (alignment would silently stop
saving the exchange otherwise; correctness never depends on it)."""

from __future__ import annotations

import threading
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatefulSinkPartition, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main

from dataflows.connectors.chsink import ClickHouseSink
from dataflows.connectors.routing import (
    Alignment,
    aligned_key,
    keyed_partition,
    partition_owner,
    route,
)
from dataflows.flow import row_part


class _Where(DynamicSink[Any]):
    """Records which worker each item reached (a dynamic sink writes where items are)."""

    def __init__(self, out: dict[Any, int]) -> None:
        self.out = out

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        out = self.out

        class Part(StatelessSinkPartition[Any]):
            def write_batch(self, items: list[Any]) -> None:
                for it in items:
                    out[it] = worker_index

        return Part()


def _key_workers(keys: list[str], workers: int) -> dict[str, int]:
    out: dict[Any, int] = {}
    flow = Dataflow("route")
    keyed = op.key_on("k", op.input("in", flow, TestingSource(keys)), lambda x: x)
    step = op.stateful_map("m", keyed, lambda st, v: (None, v))
    op.output("o", op.key_rm("rm", step), _Where(out))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


_READ_ON: dict[str, int] = {}  # source partition -> thread (worker) that read it


class _OnePart(StatefulSourcePartition[str, None]):
    def __init__(self, part: str) -> None:
        self.part: str | None = part

    def next_batch(self) -> list[str]:
        if self.part is None:
            raise StopIteration
        part, self.part = self.part, None
        _READ_ON[part] = threading.get_ident()
        return [part]

    def snapshot(self) -> None:
        return None


class _Parts(FixedPartitionedSource[str, None]):
    def __init__(self, parts: list[str]) -> None:
        self.parts = parts

    def list_parts(self) -> list[str]:
        return self.parts

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OnePart:
        return _OnePart(for_part)


def _part_workers(parts: list[str], workers: int) -> dict[str, int]:
    out: dict[Any, int] = {}
    flow = Dataflow("parts")
    op.output("o", op.input("in", flow, _Parts(parts)), _Where(out))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_keys_route_by_siphash13_like_bytewax(workers: int) -> None:
    keys = [f"k{i}" for i in range(120)] + [str(i) for i in range(40)] + ["", "ü-ß", "x" * 70]
    assert _key_workers(keys, workers) == {k: route(k, workers) for k in keys}


@pytest.mark.parametrize(("partitions", "workers"), [(12, 2), (12, 5), (24, 4), (7, 3)])
def test_source_partitions_are_dealt_in_sorted_order(partitions: int, workers: int) -> None:
    parts = [f"{p}-tx" for p in range(partitions)]
    got = _part_workers(parts, workers)
    assert got == {
        f"{p}-tx": partition_owner(p, "tx", partitions, workers) for p in range(partitions)
    }


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5, 6, 12])
def test_aligned_keys_land_where_their_partition_is_read(workers: int) -> None:
    keys = [aligned_key(p, "transactions", 12, workers) for p in range(12)]
    assert len(set(keys)) == 12, "one state key per partition"
    landed = _key_workers(keys, workers)
    for p, k in enumerate(keys):
        assert landed[k] == partition_owner(p, "transactions", 12, workers)


class _WrittenOn(StatefulSinkPartition[Any, None]):
    def __init__(self, out: dict[Any, int]) -> None:
        self.out = out

    def write_batch(self, values: list[Any]) -> None:
        for v in values:
            self.out[v] = threading.get_ident()

    def snapshot(self) -> None:
        return None


class _RecordingRows(ClickHouseSink):
    """The row sink's partitioning (list_parts, part_fn, placed) with a recording writer."""

    def __init__(self, out: dict[Any, int]) -> None:
        super().__init__("http://unused", "db", 1, 1.0)
        self.out = out

    built = 0

    def _writer(self) -> Any:
        _RecordingRows.built += 1
        return _WrittenOn(self.out)


@pytest.mark.parametrize(("partitions", "workers"), [(12, 1), (12, 2), (12, 5), (24, 4), (7, 3)])
def test_placed_rows_are_written_on_the_worker_that_read_them(
    partitions: int, workers: int
) -> None:
    """The row sink placed with one partition per source partition: every item is
    written on the thread (worker) that read its source partition, for any number of
    workers, and one writer per worker serves all the partitions it owns."""
    parts = [f"{p}-tx" for p in range(partitions)]
    align = Alignment(parts, workers)

    def part_of(part: str) -> int:
        return sorted(parts).index(part)

    written: dict[Any, int] = {}
    sink = _RecordingRows(written).placed(part_of, align.size)
    flow = Dataflow("placed")
    keyed = op.map("key", op.input("in", flow, _Parts(parts)), lambda p: (p, p))
    op.output("o", keyed, sink)
    _READ_ON.clear()
    _RecordingRows.built = 0
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert set(written) == set(parts)
    assert written == {p: _READ_ON[p] for p in parts}
    assert len(set(written.values())) == workers
    assert _RecordingRows.built == workers, "one writer per worker"


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_a_users_rows_go_to_the_sink_partition_of_its_source_partition(workers: int) -> None:
    parts = [f"{p}-transactions" for p in range(12)]
    part_of = row_part(Alignment(parts, workers))
    for uid in [f"u{i}" for i in range(300)] + ["", "ü"]:
        p = keyed_partition(uid.encode(), 12)
        assert part_of(uid) == sorted(parts).index(f"{p}-transactions"), uid


def test_aligned_keys_are_the_same_for_every_divisor_of_the_partition_count() -> None:
    """A restart on 1, 2, 3, 4, 6 or 12 workers finds each partition's state under the
    key its events use (bytewax moves snapshotted keys to where they now route)."""
    for partitions, divisors in ((12, (1, 2, 3, 4, 6, 12)), (24, (1, 2, 3, 4, 6, 8, 12, 24))):
        keys = {
            w: [aligned_key(p, "tx", partitions, w) for p in range(partitions)] for w in divisors
        }
        assert all(k == keys[1] for k in keys.values()), partitions
        for w in divisors:
            for p, k in enumerate(keys[w]):
                assert route(k, w) == partition_owner(p, "tx", partitions, w)
