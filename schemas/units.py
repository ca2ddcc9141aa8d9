"""Time and geography helpers shared by every package: one definition of each.

Event time travels as epoch milliseconds inside the flow and as ISO-8601 UTC with a
``Z`` suffix on the wire; distances are great-circle kilometres on the mean Earth radius.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["DAY_MS", "EARTH_KM", "format_ts", "haversine_km", "iso_ms", "utc_now"]

DAY_MS = 86_400_000
"""Milliseconds in a day: windows, label delays and TTLs count in event-time ms."""
EARTH_KM = 6371.0088
"""Mean Earth radius (IUGG), the sphere every distance here is measured on."""


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km.

    >>> round(haversine_km(48.8566, 2.3522, 51.5074, -0.1278))  # Paris - London
    344
    >>> haversine_km(10.0, 20.0, 10.0, 20.0)
    0.0
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def format_ts(ts: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z`` suffix (the wire format).

    >>> format_ts(datetime(2026, 1, 5, 9, 30, 0, 123456, tzinfo=UTC))
    '2026-01-05T09:30:00.123Z'
    """
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def iso_ms(ts_ms: int) -> str:
    """Epoch milliseconds in the wire format (no float rounding of the milliseconds).

    >>> iso_ms(1_767_605_400_123)
    '2026-01-05T09:30:00.123Z'
    """
    s, ms = divmod(int(ts_ms), 1000)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}Z"


def utc_now() -> datetime:
    """The wall clock in UTC (the default clock the flow stamps processed_at with)."""
    return datetime.now(UTC)
