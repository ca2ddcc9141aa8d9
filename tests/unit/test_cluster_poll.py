"""The cluster-mode microbenchmark runs both ways and counts every item."""

from __future__ import annotations

import pytest

from dataflows.bench.cluster_poll import timed_run


@pytest.mark.parametrize("cluster", [False, True])
def test_both_modes_carry_whole_batches_through_every_step(cluster: bool) -> None:
    count, elapsed = timed_run(cluster, size=7, steps=3, seconds=0.3)
    assert count > 0 and count % 7 == 0, count  # no item lost between the steps
    assert 0.3 <= elapsed < 30
