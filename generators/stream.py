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

__all__ = [
    "EventClock",
    "Pacer",
    "Progress",
    "arrival",
    "event_stream",
    "natural_rate",
    "prefetched",
    "users_for_rate",
    "write_jsonl",
    "write_parquet",
]

MEAN_DAILY_RATE = 3.39
"""Mean of the population's ``rate_per_day`` (lognormal, median 3; ``tests/unit/
test_generator.py`` checks it against a generated population)."""


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


class EventClock:
    """Paces a stream by its own event time: an event leaves when the wall clock has run
    ``(ts - start) / speed`` since the clock started, so at ``speed`` 1 event time *is*
    wall-clock time (the demo's dashboards then read true rates and ranges)."""

    def __init__(self, start_ms: float, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed={speed!r} must be positive")
        self.start_ms, self.speed = start_ms, speed
        self.t0 = time.monotonic()

    def wait(self, ts_ms: float) -> None:
        ahead = (ts_ms - self.start_ms) / 1000.0 / self.speed - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


MAX_DEMO_USERS = 1_000_000
"""The first chunk is generated before the first event leaves (1.1 s at 1,000,000 card
holders on this machine): the demo's population is capped so it starts within seconds."""


def users_for_rate(rate: float, cap: int = MAX_DEMO_USERS) -> int:
    """Card holders whose own daily habits (``rate_per_day`` ≈ 3.4 on average, by hour of
    day) add up to ``rate`` events/s over a day, at most ``cap``."""
    return max(1, min(cap, round(rate * 86_400 / MEAN_DAILY_RATE)))


def natural_rate(users: int) -> float:
    """Events/s ``users`` card holders make over a day, at event-time speed 1."""
    return users * MEAN_DAILY_RATE / 86_400


def prefetched(events: Iterator[Any], ahead: int = 50_000) -> Iterator[Any]:
    """``events`` generated on a daemon thread up to ``ahead`` items ahead, so a paced
    consumer never waits for the next chunk to be generated (only for the first)."""
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(ahead)
    end = object()

    def fill() -> None:
        try:
            for e in events:
                q.put(e)
        finally:
            q.put(end)

    threading.Thread(target=fill, daemon=True, name="generator-ahead").start()
    while (e := q.get()) is not end:
        yield e


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


def event_stream(
    cfg: GeneratorConfig, count: int | None = None, jitter_s: float = 0.0
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) JSON events of a seeded population, at most ``count`` of them.

    ``jitter_s`` > 0 shuffles the arrival order: each event arrives as if stamped within
    ±``jitter_s`` of its event time (seeded; the events themselves are unchanged), the
    out-of-order delivery of several producers and partitions.  An event then arrives at
    most 2 × ``jitter_s`` after a later-stamped one: keep that within ``lateness_s``.
    """
    pop = make_population(cfg.users, cfg.seed)
    chunks = generate_chunks(pop, cfg)
    if jitter_s > 0:
        rng = np.random.default_rng(cfg.seed + 3)
        events = (kv for ch in chunks for kv in iter_json(ch, order=arrival(ch, jitter_s, rng)))
    else:
        events = (kv for ch in chunks for kv in iter_json(ch))
    return itertools.islice(events, count) if count is not None else events


def arrival(chunk: Chunk, jitter_s: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``chunk`` in arrival order: by event time ± a uniform ``jitter_s``."""
    jitter = rng.uniform(-jitter_s * 1000.0, jitter_s * 1000.0, len(chunk))
    return np.argsort(chunk.ts_ms + jitter, kind="stable")


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
    """Columnar Transaction v1/v2 (+ label columns) of a chunk, for Parquet: an event
    without a location has null ``lat``/``lon`` and ``schema_version`` 2."""
    import pyarrow as pa

    ts = chunk.ts_ms.astype("datetime64[ms]")
    lat, lon = chunk.lat.astype(float), chunk.lon.astype(float)
    missing = np.isnan(lat)
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
            "lat": pa.array(lat, mask=missing),
            "lon": pa.array(lon, mask=missing),
            "country": pa.array(chunk.country.astype(str)).dictionary_encode(),
            "channel": pa.array(chunk.channel.astype(str)).dictionary_encode(),
            "device_id": pa.array(chunk.device, pa.string()),
            "ip": pa.array(chunk.ip, pa.string()),
            "schema_version": pa.array(np.where(missing, 2, 1).astype(np.uint8)),
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
