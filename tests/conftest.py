"""Shared fixtures and builders for all test layers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.settings import Settings, load_settings

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FIXED_NOW = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


def txn_dict(n: int = 0, **over: Any) -> dict[str, Any]:
    """A valid Transaction v1 as a dict; ``n`` makes txn_id and (minutes) ts unique."""
    d: dict[str, Any] = {
        "txn_id": f"t{n}",
        "ts": (T0 + timedelta(minutes=n)).isoformat().replace("+00:00", "Z"),
        "user_id": "alice",
        "card_id": "c1",
        "merchant_id": "m1",
        "merchant_category": "grocery",
        "amount": 42.5,
        "currency": "USD",
        "lat": 40.7128,
        "lon": -74.006,
        "country": "US",
        "channel": "pos",
        "device_id": None,
        "ip": None,
        "schema_version": 1,
    }
    d.update(over)
    return d


def txn_bytes(n: int = 0, **over: Any) -> bytes:
    return orjson.dumps(txn_dict(n, **over))


@pytest.fixture
def settings() -> Settings:
    """Defaults with a model that counts from its first window (small test streams)."""
    return load_settings(hst_warmup=0, shards=4)


def fixed_clock() -> datetime:
    return FIXED_NOW
