"""Inserts larger than one client block store every row, on every engine.

clickhouse-connect splits a large insert into blocks and compresses each on its own (one
LZ4 frame per block over HTTP); a server that decoded only the first frame once kept
16,384 of 20,000 rows and still answered 200, and no test inserted more than one block.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from clickhouse.store import Store
from clickhouse.tables import TRANSACTIONS, txn_row
from tests.store import known

N_ROWS = 50_000


def _rows(n: int) -> list[tuple[object, ...]]:
    """``n`` distinct transactions rows (unique txn_id, one per ms, all in one partition)."""
    base = txn_row(known.scored()[0])
    ts = base[TRANSACTIONS.columns.index("ts")]
    return [(f"bulk{i}", ts + timedelta(milliseconds=i), *base[2:]) for i in range(n)]


def test_insert_of_many_blocks_stores_every_row(
    store: Store, request: pytest.FixtureRequest
) -> None:
    http = request.node.callspec.params["store"] == "http"  # the test server, not a real one
    srv = request.getfixturevalue("ch_http") if http else None
    frames = srv.stats().get("request_lz4_frames", 0) if srv else 0
    store.insert(TRANSACTIONS, _rows(N_ROWS))
    ((n, distinct, lo, hi),) = store.client.query(
        "SELECT count(), uniqExact(txn_id), min(ts), max(ts)"
        f" FROM {store.database}.transactions FINAL"
    ).result_rows
    assert (n, distinct) == (N_ROWS, N_ROWS)
    assert hi - lo == timedelta(milliseconds=N_ROWS - 1), "first and last rows both landed"
    if srv:  # the insert did span several frames, else this test would prove nothing
        assert srv.stats()["request_lz4_frames"] - frames > 1
