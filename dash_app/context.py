"""What callbacks need at run time: settings, the store, the feedback publisher and the
rule policy announcer.

Set once by :func:`dash_app.app.create_app`; callbacks read it through :func:`ctx` so
they stay plain functions that unit tests call after installing their own context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from clickhouse import queries as q
from clickhouse.store import Store
from dash_app.live import AlertHub
from schemas.rules import Policy
from schemas.scored import Review
from schemas.settings import Settings

__all__ = ["RANGES", "AppContext", "ctx", "resolve_range", "set_context"]

RANGES: dict[str, int] = {
    "15 min": 900,
    "1 hour": 3600,
    "6 hours": 6 * 3600,
    "24 hours": 86400,
    "7 days": 7 * 86400,
    "30 days": 30 * 86400,
}
"""Time-range picker choices (seconds), anchored on the latest stored event."""


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    store: Store
    publish: Callable[[list[Review]], None] | None = None
    """Sends verdicts to the feedback topic; None when no broker is configured."""
    announce_policy: Callable[[Policy], None] | None = None
    """Announces a policy stored by ``clickhouse.rules.publish_policy`` on the rules topic
    (hot reload of the running flows); None when no broker is configured."""
    hub: AlertHub | None = None
    """Pushes new alerts to open pages (``/live/alerts``); None without a broker: pages
    then poll every ``dash_refresh_s``."""


_current: AppContext | None = None


def set_context(c: AppContext) -> None:
    global _current
    _current = c


def ctx() -> AppContext:
    if _current is None:
        raise RuntimeError("dash_app context not set: build the app with create_app()")
    return _current


def resolve_range(store: Store, label: str) -> tuple[datetime, datetime] | None:
    """[start, end) of the last ``label`` of event time, ending at the latest event.

    Anchoring on the data rather than the wall clock shows replayed history and live
    traffic the same way.  None when the store holds no transaction yet.
    """
    if label not in RANGES:
        raise ValueError(f"time range {label!r} not one of {list(RANGES)}")
    bounds = q.data_bounds(store)
    if bounds is None:
        return None
    end = bounds[1] + timedelta(milliseconds=1)
    return end - timedelta(seconds=RANGES[label]), end
