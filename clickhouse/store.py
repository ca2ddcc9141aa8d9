"""The ClickHouse store: one URL picks the engine, clickhouse-connect is the only client.

``http(s)://host:port`` talks to a ClickHouse server; ``chdb:///abs/path``,
``chdb://./relative/path`` or ``chdb://memory`` opens the embedded chDB engine in this
process (zero set-up, the default).  The same SQL serves both.

chDB allows one data directory per process and locks it against every other process;
its own error is vague, so :func:`connect` says which directory is locked and by whom.
clickhouse-connect HTTP clients refuse concurrent queries in one session, so
:class:`Store` hands out one client per thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from clickhouse.tables import REVIEWS, Table, review_row
from schemas.errors import StoreError
from schemas.scored import Review
from schemas.settings import Settings, mask_url

__all__ = [
    "Migration",
    "Store",
    "connect",
    "describe_url",
    "is_transient",
    "load_migrations",
    "migrate",
]

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
TRANSIENT_CODES = frozenset({159, 160, 164, 202, 209, 210, 241, 242, 252, 285, 319, 425, 999})
"""Server error codes worth retrying: timeouts, network, memory limit, read-only replica,
too many parts / simultaneous queries, Keeper errors.  Anything else is a bug or a
schema mismatch and retrying would only hide it."""


def describe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs.

    Delegates to the one masker settings refusals use: never echoes any part of a
    password, even one urlsplit cannot parse.
    """
    return mask_url(url)


def chdb_path(url: str) -> str | None:
    """Data directory of a ``chdb:`` URL (None = in memory); relative paths are kept."""
    rest = url.split(":", 1)[1]
    rest = rest[2:] if rest.startswith("//") else rest
    if rest in ("memory", ":memory:", ""):
        return None
    return rest


def _lock_holder(path: Path) -> str | None:
    """Why ``path`` cannot be opened: another process holds ClickHouse's status lock."""
    status = path / "status"
    if not status.exists():
        return None
    with status.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            head = status.read_text(errors="replace").strip().replace("\n", "; ")
            return head or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def connect(url: str, database: str | None = None) -> Client:
    """A new clickhouse-connect client for ``url`` (raises StoreError naming the URL)."""
    shown = describe_url(url)
    try:
        if url.startswith("chdb:"):
            raw = chdb_path(url)
            path = None if raw is None else str(Path(raw).resolve())
            if path is not None:
                Path(path).mkdir(parents=True, exist_ok=True)
            try:
                return clickhouse_connect.get_client(interface="chdb", path=path, database=database)
            except ClickHouseError as e:
                holder = None if path is None else _lock_holder(Path(path))
                if holder is not None:
                    raise StoreError(
                        f"chDB data directory {path} is locked by another process ({holder}). "
                        "chDB lets one process own a directory: stop that process, or point "
                        "this one at the same process's HTTP endpoint or another directory"
                    ) from e
                raise
        if not url.startswith(("http://", "https://")):
            raise StoreError(
                f"clickhouse_url={shown!r}: expected http(s)://host:port or chdb:///path"
            )
        return clickhouse_connect.get_client(
            dsn=url,
            database=database or "default",
            compress="lz4",
            autogenerate_session_id=False,
            connect_timeout=5,
            send_receive_timeout=60,
        )
    except StoreError:
        raise
    except Exception as e:
        raise StoreError(f"cannot connect to ClickHouse at {shown}: {e}") from e


def is_transient(err: BaseException) -> bool:
    """True if retrying the same insert later may succeed (server down, overloaded)."""
    if isinstance(err, StoreError) and err.__cause__ is not None:
        return is_transient(err.__cause__)
    if isinstance(err, OperationalError):
        return True
    if isinstance(err, DatabaseError):
        m = re.search(r"Code: (\d+)", str(err))
        return bool(m) and int(m.group(1)) in TRANSIENT_CODES
    return isinstance(err, ConnectionError | TimeoutError)


class Store:
    """Thread-safe access to one ClickHouse database: a client per thread, typed inserts."""

    def __init__(self, url: str, database: str) -> None:
        self.url = url
        self.database = database
        self._local = threading.local()

    @classmethod
    def from_settings(cls, s: Settings) -> Store:
        return cls(s.clickhouse_url, s.clickhouse_database)

    def __repr__(self) -> str:
        return f"Store({describe_url(self.url)!r}, {self.database!r})"

    @property
    def client(self) -> Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = connect(self.url, self.database)
            self._local.client = c
        return c

    def reset(self) -> None:
        """Drop this thread's client (after a connection error) so the next use reconnects."""
        c = getattr(self._local, "client", None)
        self._local.client = None
        if c is not None:
            try:
                c.close()
            except Exception:
                log.debug("closing a broken client failed", exc_info=True)

    def insert(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` in ``table`` column order; types are passed, so no DESCRIBE."""
        if rows:
            self.client.insert(
                f"{self.database}.{table.name}",
                rows,
                column_names=table.columns,
                column_type_names=table.types,
            )

    def save_reviews(self, reviews: Sequence[Review]) -> None:
        """Record analyst verdicts (one insert; a retried write folds on merge)."""
        self.insert(REVIEWS, [review_row(r) for r in reviews])

    def close(self) -> None:
        self.reset()


# --- migrations -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    """A numbered SQL file. The checksum covers the file as committed, before rendering."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def render(self, database: str, ttl_days: int) -> str:
        return self.sql.replace("{database}", database).replace("{ttl_days}", str(ttl_days))


_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def load_migrations(folder: Path | None = None) -> list[Migration]:
    """The migration files in version order; refuses gaps, duplicates and odd names."""
    root = folder or Path(str(resources.files("clickhouse") / "migrations"))
    out: list[Migration] = []
    for p in sorted(root.iterdir()):
        if p.suffix != ".sql":
            continue
        m = _NAME.match(p.name)
        if not m:
            raise StoreError(f"migration file {p.name!r} must be named NNNN_snake_case.sql")
        out.append(Migration(int(m.group(1)), p.name, p.read_text()))
    for i, m in enumerate(out, start=1):
        if m.version != i:
            raise StoreError(f"migration {m.name} has version {m.version}, expected {i:04d}")
    return out


def _statements(sql: str) -> Iterator[str]:
    body = "\n".join(ln for ln in sql.splitlines() if not ln.lstrip().startswith("--"))
    for stmt in body.split(";"):
        if stmt.strip():
            yield stmt.strip()


def migrate(store: Store, ttl_days: int, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations and return their names ([] when up to date).

    Refuses, before changing anything, a landed migration whose file changed and a
    database that has migrations this code does not know (a newer release wrote it).
    Each file's statements are idempotent (IF NOT EXISTS), so a crash between applying
    and recording is repaired by running again.
    """
    ms = load_migrations() if migrations is None else migrations
    db = store.database
    c = connect(store.url)
    try:
        c.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        c.command(
            f"CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE} (version UInt32, name String,"
            " checksum String, applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree"
            " ORDER BY version"
        )
        applied = {
            int(v): (n, h)
            for v, n, h in c.query(
                f"SELECT version, argMax(name, applied_at), argMax(checksum, applied_at)"
                f" FROM {db}.{MIGRATIONS_TABLE} GROUP BY version"
            ).result_rows
        }
        known = {m.version: m for m in ms}
        for v, (name, _) in sorted(applied.items()):
            if v not in known:
                raise StoreError(
                    f"database {db} has migration {name} that this code does not have; "
                    "it was migrated by a newer release"
                )
            if known[v].checksum != applied[v][1]:
                raise StoreError(
                    f"migration {name} changed after it was applied to {db} "
                    f"(recorded sha256 {applied[v][1][:12]}, file {known[v].checksum[:12]}). "
                    "Landed migrations are frozen: restore the file and add a new numbered one"
                )
        done: list[str] = []
        for m in ms:
            if m.version in applied:
                continue
            for stmt in _statements(m.render(db, ttl_days)):
                c.command(stmt)
            c.insert(
                f"{db}.{MIGRATIONS_TABLE}",
                [(m.version, m.name, m.checksum, datetime.now(UTC))],
                column_names=["version", "name", "checksum", "applied_at"],
            )
            log.info("applied migration %s to %s", m.name, db)
            done.append(m.name)
        _apply_ttl(c, db, ttl_days)
        return done
    finally:
        c.close()


def _apply_ttl(c: Client, db: str, ttl_days: int) -> None:
    """Bring the raw-row TTL to the configured value (a metadata change, no rewrite)."""
    rows = c.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String}"
        " AND name = 'transactions'",
        parameters={"db": db},
    ).result_rows
    if not rows:
        return
    m = re.search(r"toIntervalDay\((\d+)\)", rows[0][0])
    if m and int(m.group(1)) == ttl_days:
        return
    c.command(
        f"ALTER TABLE {db}.transactions MODIFY TTL toDateTime(processed_at)"
        f" + INTERVAL {int(ttl_days)} DAY",
        settings={"materialize_ttl_after_modify": 0},
    )
    log.info("set %s.transactions TTL to %d days", db, ttl_days)
