"""History at scale: Hive-partitioned Parquet from the generator, read by pyarrow and
chDB alike, and ``fraud backfill`` scoring it through the flow into ClickHouse, resumable
(a source resumed at any (file, row) yields exactly the rest, in event-time order)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import chdb
import orjson
import pyarrow.dataset as ds
import pytest

from dataflows.connectors.local import HistorySource, Position, history_files, read_progress
from dataflows.connectors.routing import keyed_partition
from generators.stream import write_parquet
from generators.synth import GeneratorConfig
from tests.chserver import ChServer

ROOT = Path(__file__).resolve().parents[2]
N = 6000
BACKFILL = [sys.executable, "-m", "dataflows.cli", "backfill"]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history")
    cfg = GeneratorConfig(seed=3, users=15, start=datetime(2019, 11, 20, tzinfo=UTC))
    assert write_parquet(cfg, N, root, partitioned=True) == N
    return root


def test_partitioned_history_reads_as_one_table_everywhere(history: Path) -> None:
    files = history_files(history)
    assert len(files) >= 3, "spans several months"
    assert files[0].parts[-3:-1] < files[-1].parts[-3:-1] or len(files) == 1
    table = ds.dataset(history, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == N
    years = set(table.column("year").to_pylist())
    assert years >= {2019, 2020}
    got = chdb.query(
        f"SELECT count(), uniqExact(txn_id), toYear(min(ts)) FROM file('{history}/**/*.parquet',"
        " Parquet)",
        "CSV",
    )
    assert str(got).strip() == f"{N},{N},2019"


def _read(source: HistorySource, part: str, resume: Position | None) -> list[bytes]:
    p = source.build_part("s", part, resume)
    out: list[bytes] = []
    try:
        while True:
            out += [m.value for m in p.next_batch()]
    except StopIteration:
        return out


def test_history_source_is_time_ordered_and_resumes_exactly(history: Path) -> None:
    source = HistorySource(history, batch=700)
    every = _read(source, "0", None)
    assert len(every) == N
    ts = [orjson.loads(e)["ts"] for e in every]
    assert ts == sorted(ts), "event-time order across month files"
    # Resume at every snapshot the partition would have taken.
    part = source.build_part("s", "0", None)
    seen: list[bytes] = []
    snapshots = []
    try:
        while True:
            seen += [m.value for m in part.next_batch()]
            snapshots.append((part.snapshot(), len(seen)))
    except StopIteration:
        pass
    for state, n in snapshots[:: max(1, len(snapshots) // 5)]:
        assert _read(source, "0", state) == every[n:]


def test_history_events_are_the_generators_events(history: Path) -> None:
    """The JSON a backfill feeds the flow is what the generator streams for the same
    seed (a producer's bytes): every field, the label included; coordinates differ only
    below the stream's 5 decimals."""
    from generators.stream import event_stream

    cfg = GeneratorConfig(seed=3, users=15, start=datetime(2019, 11, 20, tzinfo=UTC))
    streamed = [orjson.loads(v) for _, v in event_stream(cfg, N)]
    stored = [orjson.loads(e) for e in _read(HistorySource(history), "0", None)]
    for row in stored:
        row["lat"], row["lon"] = round(row["lat"], 5), round(row["lon"], 5)
    assert stored == streamed


def test_history_partitions_split_users_keep_their_order_and_resume(history: Path) -> None:
    """Each user in the partition producers put them in, every row exactly once, each
    partition in event-time order and resumable on its own, whichever partitions a
    process happens to build (so any worker can read any subset of them)."""
    every = _read(HistorySource(history, batch=700), "0", None)
    source = HistorySource(history, parts=4, batch=300)
    assert source.list_parts() == ["0", "1", "2", "3"]
    got: dict[str, list[bytes]] = {}
    for part in reversed(source.list_parts()):  # out of order: the shared decode copes
        got[part] = _read(source, part, None)
        users = {orjson.loads(e)["user_id"] for e in got[part]}
        assert {keyed_partition(u.encode(), 4) for u in users} == {int(part)}
        ts = [orjson.loads(e)["ts"] for e in got[part]]
        assert ts == sorted(ts)
    assert sorted(e for p in got.values() for e in p) == sorted(every)
    assert all(got.values()), "15 users over 4 partitions: none empty here"
    p = source.build_part("s", "2", None)
    seen = p.next_batch() + p.next_batch()
    state = p.snapshot()
    assert [m.value for m in seen] + _read(HistorySource(history, 4), "2", state) == got["2"]
    assert {m.partition for m in seen} == {2}


def test_a_history_row_without_its_label_or_a_field_is_judged_by_the_flow(
    tmp_path: Path,
) -> None:
    """A history file from elsewhere (no label columns, a field missing) still reads:
    the guarded parse decides, the source never crashes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataflows.flow import parse_message
    from schemas.scored import DeadLetter

    f = tmp_path / "h.parquet"
    pq.write_table(pa.table({"user_id": ["u1", None], "amount": [3.5, 1.0]}), f)
    out = _read(HistorySource(f, parts=2), "0", None) + _read(HistorySource(f, parts=2), "1", None)
    assert sorted(orjson.loads(e).get("user_id") or "" for e in out) == ["", "u1"]
    judged = [parse_message(e, 1 << 20, lambda: datetime.now(UTC)) for e in out]
    assert all(isinstance(d, DeadLetter) for d in judged), judged
    # each refusal names what the row lacks: here, first, its schema version
    assert {(d.error_code, "schema_version" in d.error_message) for d in judged} == {
        ("unknown_schema_version", True)
    }, judged


@pytest.mark.integration
def test_backfill_scores_the_history_and_a_rerun_adds_nothing(
    history: Path, tmp_path: Path
) -> None:
    url = f"chdb://{tmp_path / 'ch'}"
    cmd = [
        sys.executable,
        "-m",
        "dataflows.cli",
        "backfill",
        "--input",
        str(history),
        "--set",
        f"clickhouse_url={url}",
        "--set",
        f"recovery_dir={tmp_path / 'rec'}",
        "--set",
        "hst_warmup=0",
    ]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"backfilled {N:,} events" in first.stdout
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "backfilled 0 events" in again.stdout, "resumed after the end: nothing twice"
    count = chdb.query(
        f"SELECT count(), uniqExact(txn_id) FROM file('{history}/**/*.parquet', Parquet)", "CSV"
    )
    assert str(count).strip() == f"{N},{N}"
    from clickhouse.store import Store

    store = Store(url, "fraud")
    ((rows, uniq),) = store.client.query(
        "SELECT count(), uniqExact(txn_id) FROM fraud.transactions FINAL"
    ).result_rows
    assert (rows, uniq) == (N, N)
    store.close()


def _backfill(history: Path, *settings: str, processes: int = 1) -> subprocess.CompletedProcess:
    cmd = [*BACKFILL, "--input", str(history), "--processes", str(processes)]
    cmd += ["--snapshot-s", "1"]
    for kv in ("hst_warmup=0", *settings):
        cmd += ["--set", kv]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _scores(url: str, db: str) -> dict[str, tuple[float, str]]:
    from clickhouse.store import Store

    store = Store(url, db)
    rows = store.client.query(
        f"SELECT txn_id, risk_score, decision FROM {db}.transactions FINAL"
    ).result_rows
    store.close()
    return {t: (round(r, 9), d) for t, r, d in rows}


@pytest.mark.integration
def test_backfill_on_two_processes_scores_like_one(
    history: Path, ch_http: ChServer, tmp_path: Path
) -> None:
    """The same history on 1 and on 2 processes (aligned partitions: each user read,
    scored and stored on one worker) gives every transaction the same score, once."""
    common = ("align_partitions=true", "partitions=4", f"clickhouse_url={ch_http.url}")
    got = {}
    for procs in (1, 2):
        db = f"bf{procs}_{uuid.uuid4().hex[:6]}"
        run = _backfill(
            history,
            *common,
            f"clickhouse_database={db}",
            f"recovery_dir={tmp_path / f'rec{procs}'}",
            processes=procs,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"backfilled {N:,} events" in run.stdout
        assert f"4 partitions on {procs} process(es)" in run.stderr
        got[procs] = _scores(ch_http.url, db)
    assert len(got[1]) == N
    assert got[2] == got[1]
    assert sum(d != "approve" for _, d in got[1].values()) > 0, "the history has fraud to flag"


@pytest.mark.integration
def test_backfill_refuses_what_it_cannot_run(history: Path, tmp_path: Path) -> None:
    chdb_two = _backfill(history, f"clickhouse_url=chdb://{tmp_path / 'ch'}", processes=2)
    assert chdb_two.returncode == 2
    assert "clickhouse_url" in chdb_two.stderr and "--processes 2" in chdb_two.stderr
    bad = tmp_path / "bad"
    (bad / "year=2020" / "month=1").mkdir(parents=True)
    (bad / "year=2020" / "month=1" / "part-0.parquet").write_bytes(b"not parquet at all")
    run = subprocess.run(
        [*BACKFILL, "--input", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "part-0.parquet: not a readable Parquet file" in run.stderr
    none = _backfill(history, processes=0)
    assert none.returncode == 2 and "--processes" in none.stderr
    half = subprocess.run(
        [*BACKFILL, "--input", str(history), "--snapshot-s", "0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert half.returncode == 2 and "--snapshot-s must be an integer" in half.stderr
    http = "clickhouse_url=http://127.0.0.1:9"  # refused before anything connects
    unaligned = _backfill(history, http, "align_partitions=false", processes=2)
    assert unaligned.returncode == 2 and "align_partitions" in unaligned.stderr


@pytest.mark.integration
def test_backfill_resumes_only_the_same_plan(history: Path, tmp_path: Path) -> None:
    """A rerun resumes the snapshots of the same history split the same way; another
    partition count or history on that recovery directory is refused, not resumed into
    skipped or repeated rows."""
    rec = f"recovery_dir={tmp_path / 'rec'}"
    url = f"clickhouse_url=chdb://{tmp_path / 'ch'}"
    first = _backfill(history, url, rec, "partitions=3")
    assert first.returncode == 0, first.stderr[-3000:]
    other = _backfill(history, url, rec, "partitions=4")
    assert other.returncode == 2 and "partitions = 3" in other.stderr
    files = history_files(history)
    fewer = _backfill(files[0].parent, url, rec, "partitions=3")
    assert fewer.returncode == 2 and "the history's files" in fewer.stderr


@pytest.mark.integration
def test_backfill_survives_a_killed_process_and_stores_each_row_once(
    tmp_path_factory: pytest.TempPathFactory, ch_http: ChServer, tmp_path: Path
) -> None:
    """2 processes, one SIGKILLed part-way: the supervisor restarts both from the last
    snapshot and the stored scores equal an uninterrupted run's, each row once."""
    import os
    import signal
    import time

    n = 40_000
    root = tmp_path_factory.mktemp("history_40k")
    cfg = GeneratorConfig(seed=5, users=200, start=datetime(2024, 3, 1, tzinfo=UTC))
    assert write_parquet(cfg, n, root, partitioned=True) == n
    common = ("align_partitions=true", "partitions=4", f"clickhouse_url={ch_http.url}")
    clean = f"bfk_clean_{uuid.uuid4().hex[:6]}"
    run = _backfill(root, *common, f"clickhouse_database={clean}", processes=2)
    assert run.returncode == 0, run.stderr[-3000:]

    killed = f"bfk_{uuid.uuid4().hex[:6]}"
    cmd = [*BACKFILL, "--input", str(root), "--processes", "2", "--snapshot-s", "1"]
    for kv in (*common, "hst_warmup=0", f"clickhouse_database={killed}"):
        cmd += ["--set", kv]
    cmd += ["--set", f"recovery_dir={tmp_path / 'rec'}"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the progress files are
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            progress = read_progress(next(tmp_path.glob("fraud-backfill-*"), tmp_path))
            done = sum(emitted for _, emitted in progress.values())
            if len(progress) == 4 and done >= n // 4:
                break
            time.sleep(0.05)
        assert len(progress) == 4 and done < n, f"kill part-way: {done} of {n} read"
        time.sleep(1.5)  # a snapshot after rows were written
        os.kill(_children(proc.pid)[-1], signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"backfilled {n:,} events".encode() in out, "counted once across the restart"
    assert b"1 restart(s)" in out
    assert _scores(ch_http.url, killed) == _scores(ch_http.url, clean)
    assert len(_scores(ch_http.url, clean)) == n


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc), in order."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return sorted(kids)
