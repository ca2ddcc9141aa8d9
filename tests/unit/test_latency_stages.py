"""The produce→alert breakdown: where the slowest alerts' time went."""

from __future__ import annotations

import pytest

from dataflows.bench.latency import _tail_stages


def test_the_tail_is_split_into_stages_over_the_slowest_percent() -> None:
    # 99 fast alerts (10 ms each: 4 + 3 + 3) and one slow one whose time is in scoring
    fast = [(t, t + 0.004, t + 0.007, t + 0.010) for t in range(99)]
    slow = [(500.0, 500.090, 500.095, 500.100)]
    stages = _tail_stages(fast + slow)
    assert stages["tail_to_scored_ms"] == pytest.approx(90.0)
    assert stages["tail_to_produced_ms"] == pytest.approx(5.0)
    assert stages["tail_to_consumed_ms"] == pytest.approx(5.0)


def test_no_alerts_no_stages() -> None:
    assert _tail_stages([]) == {}
