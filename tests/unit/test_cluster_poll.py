"""The cluster-mode microbenchmark runs both ways and counts every item."""

from __future__ import annotations

import pytest

from dataflows.bench.cluster_poll import items_per_second


@pytest.mark.parametrize("cluster", [False, True])
def test_both_modes_move_items(cluster: bool) -> None:
    assert items_per_second(cluster, size=10, steps=2, seconds=0.3) > 100
