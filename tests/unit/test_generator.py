"""The generator facts the demo relies on: population size from a rate, event-time pacing."""

from __future__ import annotations

import pytest


def test_the_demo_sizes_its_population_from_the_rate() -> None:
    """The demo's event time tracks the wall clock only if the population's own habits
    make the requested rate: the constant must follow the generator."""
    from generators.population import make_population
    from generators.stream import MEAN_DAILY_RATE, natural_rate, users_for_rate

    mean = float(make_population(200_000, 11).rate_per_day.mean())
    assert abs(mean - MEAN_DAILY_RATE) / MEAN_DAILY_RATE < 0.02
    assert users_for_rate(20) == 509_735
    assert natural_rate(users_for_rate(20)) == pytest.approx(20, 1e-4)
    assert users_for_rate(1000) == 1_000_000  # capped: the demo then runs event time faster


def test_event_clock_releases_events_at_their_event_time() -> None:
    import time

    from generators.stream import EventClock

    clock = EventClock(1_000_000.0, speed=10.0)
    t = time.monotonic()
    clock.wait(1_000_000.0)  # now: no wait
    clock.wait(1_002_000.0)  # 2 s of event time at 10x: 0.2 s
    took = time.monotonic() - t
    assert 0.19 <= took < 0.6
    with pytest.raises(ValueError, match="speed"):
        EventClock(0.0, speed=0)
