"""Migrations, insert column lists and the store's error messages, on real engines."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from clickhouse.store import Migration, Store, connect, is_transient, load_migrations, migrate
from clickhouse.tables import ALERTS, REVIEWS, TABLES, TRANSACTIONS, alert_row, txn_row
from schemas.errors import StoreError
from schemas.scored import Alert
from tests.conftest import T0, ch_url
from tests.store import known


def _columns(store: Store, table: str) -> list[tuple[str, str]]:
    return [
        (n, t)
        for n, t in store.client.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String}"
            " AND table = {t:String} ORDER BY position",
            parameters={"db": store.database, "t": table},
        ).result_rows
    ]


def test_insert_columns_match_the_migrations(store: Store) -> None:
    """The schema specs (Kafka JSON, inserts) and the hand-written DDL agree exactly."""
    for table in TABLES:
        assert _columns(store, table.name) == list(zip(table.columns, table.types, strict=True))


def test_row_builders_follow_column_order() -> None:
    s = known.scored()[3]
    a = Alert.from_scored(s)
    row = dict(zip(ALERTS.columns, alert_row(a), strict=True))
    assert {k: v for k, v in row.items() if k != "reasons"} == {
        c: getattr(a, c) for c in ALERTS.columns if c != "reasons"
    }
    trow = dict(zip(TRANSACTIONS.columns, txn_row(s), strict=True))
    assert (trow["txn_id"], trow["amount_usd"], trow["decision"], trow["is_fraud"]) == (
        "t4",
        500.0,
        "block",
        1,
    )
    assert trow["reasons"] == [("impossible_travel", "impossible_travel detail", 0.8)]


def test_migrate_is_idempotent_and_records_versions(store: Store) -> None:
    assert migrate(store, ttl_days=3650) == []
    rows = store.client.query(
        f"SELECT version, name FROM {store.database}.schema_migrations FINAL ORDER BY version"
    ).result_rows
    assert [n for _, n in rows] == [m.name for m in load_migrations()]


def test_migrate_refuses_a_changed_landed_migration(store: Store) -> None:
    ms = load_migrations()
    edited = [*ms[:-1], Migration(ms[-1].version, ms[-1].name, ms[-1].sql + "\n-- edit\n")]
    with pytest.raises(StoreError, match=f"migration {ms[-1].name} changed after it was applied"):
        migrate(store, ttl_days=3650, migrations=edited)


def test_migrate_refuses_a_database_from_a_newer_release(store: Store) -> None:
    with pytest.raises(StoreError, match="does not have; it was migrated by a newer release"):
        migrate(store, ttl_days=3650, migrations=load_migrations()[:-1])


def test_migrate_applies_only_pending_ones(store: Store) -> None:
    db = f"test_{uuid.uuid4().hex[:10]}"
    s2 = Store(store.url, db)
    try:
        assert migrate(s2, 3650, load_migrations()[:3]) == [m.name for m in load_migrations()[:3]]
        assert migrate(s2, 3650) == [m.name for m in load_migrations()[3:]]
    finally:
        store.client.command(f"DROP DATABASE IF EXISTS {db}")


def test_migration_files_are_well_formed(tmp_path: Path) -> None:
    ms = load_migrations()
    assert [m.version for m in ms] == list(range(1, len(ms) + 1))
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0003_b.sql").write_text("SELECT 1")
    with pytest.raises(StoreError, match=r"0003_b\.sql has version 3, expected 0002"):
        load_migrations(tmp_path)
    (tmp_path / "2_Bad.sql").write_text("SELECT 1")
    with pytest.raises(StoreError, match=r"must be named NNNN_snake_case\.sql"):
        load_migrations(tmp_path)


def test_ttl_setting_is_applied_and_drops_expired_rows(store: Store) -> None:
    migrate(store, ttl_days=7)
    ((engine,),) = store.client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String}"
        " AND name = 'transactions'",
        parameters={"db": store.database},
    ).result_rows
    assert "toIntervalDay(7)" in engine
    known.load(store, duplicates=False)  # processed in March 2026: past a 7-day TTL
    store.client.command(f"OPTIMIZE TABLE {store.database}.transactions FINAL")
    ((n,),) = store.client.query(f"SELECT count() FROM {store.database}.transactions").result_rows
    assert n == 0


def test_reviews_round_trip(store: Store) -> None:
    rs = known.reviews()
    from clickhouse.tables import review_row

    store.insert(REVIEWS, [review_row(r) for r in rs])
    got = store.client.query(
        f"SELECT alert_id, verdict, assignee, note, reviewed_at FROM {store.database}"
        ".alert_reviews ORDER BY reviewed_at"
    ).result_rows
    assert [(g[1], g[2], g[3]) for g in got] == [(r.verdict, r.assignee, r.note) for r in rs]
    assert got[0][4].replace(tzinfo=T0.tzinfo) == T0 + timedelta(hours=3)


def test_bad_url_is_refused_naming_it() -> None:
    with pytest.raises(StoreError, match="clickhouse_url='ftp://x'"):
        connect("ftp://x")
    with pytest.raises(StoreError, match=r"cannot connect to ClickHouse at http://u:\*\*\*@127"):
        connect("http://u:secret@127.0.0.1:9/")


def test_unreachable_server_is_transient_and_schema_errors_are_not(
    request: pytest.FixtureRequest,
) -> None:
    with pytest.raises(StoreError) as e:
        connect("http://127.0.0.1:9/")
    assert is_transient(e.value)
    store = Store(ch_url("http", request), "default")
    with pytest.raises(Exception) as e2:
        store.client.query("SELECT * FROM no_such_table")
    assert not is_transient(e2.value)


HOLDER = (
    "import sys, clickhouse_connect as c\n"
    "h = c.get_client(interface='chdb', path=sys.argv[1])\n"  # kept open: holds the lock
    "h.command('CREATE DATABASE IF NOT EXISTS held')\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_locked_chdb_directory_is_named(tmp_path: Path) -> None:
    """chDB locks its directory per process; the error says which and why."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        code = (
            "import sys\nfrom clickhouse.store import connect\n"
            "try:\n    connect('chdb://' + sys.argv[1])\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parents[2],
        )
        assert f"StoreError chDB data directory {tmp_path} is locked by another process" in (
            out.stdout
        ), out.stderr
    finally:
        holder.communicate("", timeout=60)
