"""Turn generated chunks into a paced stream and write it to stdout, JSONL or Parquet."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from generators.population import make_population
from generators.synth import Chunk, GeneratorConfig, generate_chunks, iter_json

__all__ = ["Pacer", "Progress", "event_stream", "write_jsonl", "write_parquet"]


class Pacer:
    """Sleeps so that ``rate`` events/s are not exceeded (None or 0 = as fast as possible)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate or 0.0
        self.t0 = time.monotonic()
        self.n = 0

    def tick(self, n: int = 1) -> None:
        self.n += n
        if self.rate > 0:
            ahead = self.n / self.rate - (time.monotonic() - self.t0)
            if ahead > 0:
                time.sleep(ahead)


class Progress:
    """A periodic one-line rate report on stderr (long work shows progress)."""

    def __init__(self, label: str, total: int | None = None, every_s: float = 2.0) -> None:
        self.label, self.total, self.every = label, total, every_s
        self.t0 = self.last = time.monotonic()
        self.n = 0

    def update(self, n: int = 1, extra: str = "") -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._print(extra)

    def done(self, extra: str = "") -> float:
        self._print(extra, end="\n")
        return self.n / max(time.monotonic() - self.t0, 1e-9)

    def _print(self, extra: str, end: str = "\r") -> None:
        dt = max(time.monotonic() - self.t0, 1e-9)
        tot = f"/{self.total:,}" if self.total else ""
        print(
            f"{self.label}: {self.n:,}{tot} events, {self.n / dt:,.0f}/s, {dt:.0f}s {extra}   ",
            end=end,
            file=sys.stderr,
            flush=True,
        )


def event_stream(cfg: GeneratorConfig, count: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) JSON events of a seeded population, at most ``count`` of them."""
    pop = make_population(cfg.users, cfg.seed)
    events = (kv for ch in generate_chunks(pop, cfg) for kv in iter_json(ch))
    return itertools.islice(events, count) if count is not None else events


def write_jsonl(
    events: Iterable[tuple[bytes, bytes]],
    out: BinaryIO,
    rate: float | None,
    progress: Progress | None = None,
) -> int:
    pacer = Pacer(rate)
    n = 0
    for _, value in events:
        out.write(value + b"\n")
        n += 1
        pacer.tick()
        if progress:
            progress.update()
    out.flush()
    return n


def chunk_table(chunk: Chunk):  # -> pyarrow.Table
    """Columnar Transaction v1 (+ label columns) of a chunk, for Parquet."""
    import pyarrow as pa

    ts = chunk.ts_ms.astype("datetime64[ms]")
    return pa.table(
        {
            "txn_id": pa.array(chunk.txn_id, pa.string()),
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "user_id": pa.array(np.char.add("u", chunk.user.astype(str))),
            "card_id": pa.array(np.char.add("c", chunk.card.astype(np.int64).astype(str))),
            "merchant_id": pa.array(np.char.add("m", chunk.merchant.astype(np.int64).astype(str))),
            "merchant_category": pa.array(chunk.category.astype(str)).dictionary_encode(),
            "amount": pa.array(chunk.amount.astype(float)),
            "currency": pa.array(chunk.currency.astype(str)).dictionary_encode(),
            "lat": pa.array(chunk.lat.astype(float)),
            "lon": pa.array(chunk.lon.astype(float)),
            "country": pa.array(chunk.country.astype(str)).dictionary_encode(),
            "channel": pa.array(chunk.channel.astype(str)).dictionary_encode(),
            "device_id": pa.array(chunk.device, pa.string()),
            "ip": pa.array(chunk.ip, pa.string()),
            "schema_version": pa.array(np.ones(len(chunk), np.uint8)),
            "is_fraud": pa.array(chunk.is_fraud.astype(bool)),
            "pattern": pa.array(chunk.pattern, pa.string()),
        }
    )


def write_parquet(
    cfg: GeneratorConfig,
    count: int,
    path: Path,
    progress: Progress | None = None,
    partitioned: bool = False,
) -> int:
    """Historical mode: ``count`` events to Parquet, chunk by chunk (bounded memory).

    ``partitioned`` writes a Hive-partitioned dataset instead of one file:
    ``path/year=YYYY/month=MM/part-0.parquet``, which ClickHouse (``file('…/**/*.parquet')``,
    ``s3(...)``), DuckDB, pandas/pyarrow and Athena read as one table with ``year`` and
    ``month`` columns.  Chunks come in event-time order, so one file per month is open at a
    time and each is written once.
    """
    import pyarrow.parquet as pq

    pop = make_population(cfg.users, cfg.seed)
    written = 0
    writers = _MonthWriters(path, pq) if partitioned else None
    writer = None
    try:
        for chunk in generate_chunks(pop, cfg):
            table = chunk_table(chunk)
            if written + len(chunk) > count:
                table = table.slice(0, count - written)
            if writers is not None:
                writers.write(table, chunk.ts_ms[: table.num_rows])
            else:
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                writer.write_table(table)
            written += table.num_rows
            if progress:
                progress.update(table.num_rows)
            if written >= count:
                break
    finally:
        if writer is not None:
            writer.close()
        if writers is not None:
            writers.close()
    return written


class _MonthWriters:
    """The open file of the current month of a Hive-partitioned dataset."""

    def __init__(self, root: Path, pq: Any) -> None:
        self.root, self.pq = root, pq
        self.month: np.datetime64 | None = None
        self.writer: Any = None

    def write(self, table: Any, ts_ms: np.ndarray) -> None:
        months = ts_ms.astype("datetime64[ms]").astype("datetime64[M]")
        cuts = np.flatnonzero(months[1:] != months[:-1]) + 1
        for lo, hi in zip([0, *cuts], [*cuts, len(months)], strict=True):
            if hi > lo:
                self._open(months[lo], table.schema)
                self.writer.write_table(table.slice(lo, hi - lo))

    def _open(self, month: np.datetime64, schema: Any) -> None:
        if month == self.month:
            return
        self.close()
        year, mon = str(month).split("-")
        folder = self.root / f"year={year}" / f"month={mon}"
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = self.pq.ParquetWriter(folder / "part-0.parquet", schema, compression="zstd")
        self.month = month

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
