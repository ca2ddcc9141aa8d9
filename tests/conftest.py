"""Shared fixtures and builders for all test layers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from clickhouse.store import Store, migrate
from schemas.settings import Settings, load_settings
from tests.chserver import ChServer

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


# --- ClickHouse engines -----------------------------------------------------------
# chDB allows one data directory per process, so every in-process chDB use in the test
# session shares one directory (tests isolate themselves by database name).  The HTTP
# variant talks to tests/chserver.py, a chDB-backed ClickHouse-HTTP server subprocess.

CH_ENGINES = ["chdb", "http", "server"]


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture(scope="session")
def ch_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChServer]:
    with ChServer(tmp_path_factory.mktemp("chserver")) as srv:
        yield srv


def ch_url(engine: str, request: pytest.FixtureRequest) -> str:
    """URL of ``engine``; the real-server case runs only when FRAUD_TEST_CLICKHOUSE_URL is set
    (e.g. against ``docker compose up clickhouse``): the one skip this suite allows."""
    if engine == "chdb":
        return request.getfixturevalue("chdb_url")
    if engine == "http":
        return request.getfixturevalue("ch_http").url
    url = os.environ.get("FRAUD_TEST_CLICKHOUSE_URL")
    if not url:
        pytest.skip("FRAUD_TEST_CLICKHOUSE_URL not set (real ClickHouse server)")
    return url


@pytest.fixture(params=CH_ENGINES)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A migrated, empty database of its own on each engine; dropped after the test."""
    s = Store(ch_url(request.param, request), f"test_{uuid.uuid4().hex[:10]}")
    migrate(s, ttl_days=3650)  # test rows are scored "in the past"; keep them
    yield s
    s.client.command(f"DROP DATABASE IF EXISTS {s.database}")
    s.close()
