"""Scores are frozen: optimisations (batching, the numpy HST engine) change no output.

``GOLDEN`` is the digest of every scored row of a seeded stream, computed with the
per-event River code before the batched scoring path and the numpy engine existed
(commit 1766e1b).  Change it only with a deliberate change to scoring, and say so in the
commit.  Changed three times since, all for issue 19: compromised cards, established
places, two new feature keys in every row, model version rules-v2; then the label-free
calibration (rare-amount rule, weak signals weighed by how rare their pattern is, the
profile's 2-sigma clip, feature keys ``amount_rarity`` and ``cal_weight``, rules-v3);
then four more feature keys (the user's 7/30-day spend windows, for the learner's lr-v3
inputs; scores unchanged).  The stream itself is unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from dataflows.flow import build_flow
from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.settings import load_settings
from tests.conftest import fixed_clock

GOLDEN = "b43137035cbe926b634d62422e902681e0090f8ec991cb689e076660a87aafd5"
N_EVENTS = 6000


def _two_workers(flow: Any) -> None:
    cluster_main(flow, [], 0, worker_count_per_proc=2)


@pytest.fixture(scope="module")
def events() -> list[bytes]:
    return [
        v for _, v in event_stream(GeneratorConfig(seed=5, users=500, fraud_rate=0.05), N_EVENTS)
    ]


def digest(rows: list[Any]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.txn.txn_id):
        h.update(repr(r).encode())
    return h.hexdigest()


@pytest.mark.parametrize("engine", ["river", "numpy"])
@pytest.mark.parametrize("batch", [1, 100, 1000])
@pytest.mark.parametrize("runner", [run_main, _two_workers], ids=["run_main", "cluster_2"])
def test_scores_equal_the_reference(
    events: list[bytes], engine: str, batch: int, runner: Callable[[Any], None]
) -> None:
    rows: list[Any] = []
    s = load_settings(hst_engine=engine)
    flow = build_flow(
        s,
        TestingSource(events, batch_size=batch),
        TestingSink([]),
        TestingSink(rows),
        TestingSink([]),
        clock=fixed_clock,
    )
    runner(flow)
    assert len(rows) == N_EVENTS
    assert sum(r.flagged for r in rows) > 50  # the digest covers real decisions
    assert digest(rows) == GOLDEN
