"""History at scale: Hive-partitioned Parquet from the generator, read by pyarrow and
chDB alike, and ``fraud backfill`` scoring it through the flow into ClickHouse, resumable
(a source resumed at any (file, row) yields exactly the rest, in event-time order)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import chdb
import orjson
import pyarrow.dataset as ds
import pytest

from dataflows.connectors.local import HistorySource, history_files
from generators.stream import write_parquet
from generators.synth import GeneratorConfig

ROOT = Path(__file__).resolve().parents[2]
N = 6000


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


def _read(source: HistorySource, resume: tuple[int, int] | None) -> list[bytes]:
    part = source.build_part("s", "history", resume)
    out: list[bytes] = []
    try:
        while True:
            out += part.next_batch()
    except StopIteration:
        return out


def test_history_source_is_time_ordered_and_resumes_exactly(history: Path) -> None:
    source = HistorySource(history, batch=700)
    every = _read(source, None)
    assert len(every) == N
    ts = [orjson.loads(e)["ts"] for e in every]
    assert ts == sorted(ts), "event-time order across month files"
    # Resume at every snapshot the partition would have taken.
    part = source.build_part("s", "history", None)
    seen: list[bytes] = []
    snapshots = []
    try:
        while True:
            seen += part.next_batch()
            snapshots.append((part.snapshot(), len(seen)))
    except StopIteration:
        pass
    for state, n in snapshots[:: max(1, len(snapshots) // 5)]:
        assert _read(source, state) == every[n:]


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
