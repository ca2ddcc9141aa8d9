"""Turn generated chunks into a paced stream and write it to stdout, JSONL or Parquet."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

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
    cfg: GeneratorConfig, count: int, path: Path, progress: Progress | None = None
) -> int:
    """Historical mode: ``count`` events to a Parquet file, chunk by chunk (bounded memory)."""
    import pyarrow.parquet as pq

    pop = make_population(cfg.users, cfg.seed)
    written = 0
    writer = None
    try:
        for chunk in generate_chunks(pop, cfg):
            table = chunk_table(chunk)
            if written + len(chunk) > count:
                table = table.slice(0, count - written)
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
    return written
