"""bytewax's routing, pinned against a real cluster run: if an upgrade changes how keys or
source partitions are assigned to workers, these fail (alignment would silently stop
saving the exchange otherwise; correctness never depends on it)."""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main

from dataflows.connectors.routing import aligned_key, partition_owner, route


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


class _OnePart(StatefulSourcePartition[str, None]):
    def __init__(self, part: str) -> None:
        self.part: str | None = part

    def next_batch(self) -> list[str]:
        if self.part is None:
            raise StopIteration
        part, self.part = self.part, None
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


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 6])
def test_aligned_keys_land_where_their_partition_is_read(workers: int) -> None:
    keys = [aligned_key(p, "transactions", 12, workers) for p in range(12)]
    assert len(set(keys)) == 12, "one state key per partition"
    landed = _key_workers(keys, workers)
    for p, k in enumerate(keys):
        assert landed[k] == partition_owner(p, "transactions", 12, workers)
