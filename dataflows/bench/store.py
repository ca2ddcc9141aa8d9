"""Store benchmark: sink insert rate and dashboard query latency on 1M/5M rows.

Printed figures, not timed tests (``fraud bench-store``, ``make bench-store``).  Bulk
rows for the query part are made inside ClickHouse with ``INSERT ... SELECT FROM
numbers(N)`` (seconds for millions of rows) with realistic shapes: 100k users, a week
of event time (``--span-days``: 9490 spreads them over 2000-2025 like a generated
history), ~1.5 % flagged, log-normal amounts, rule reasons on flagged rows.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse import queries as q
from clickhouse.store import Store, describe_url, migrate
from schemas.errors import ConfigError

__all__ = ["backtest_leg", "fill", "run", "run_stored"]

T_END = datetime(2026, 11, 20, tzinfo=UTC)
WEEK_S = 7 * 24 * 3600


def _sample_rows(n: int) -> list[Any]:
    """``n`` scored transactions built from one template (ids and times vary)."""
    from schemas.scored import Reason, ScoredTransaction
    from schemas.transaction import Transaction

    base = Transaction("x", T_END, "u", "c", "m", "grocery", 42.0, "USD", 40.7, -74.0, "US", "pos")
    feats = {"amount_usd": 42.0, "cnt_1m": 1.0, "cnt_10m": 2.0, "amount_z": 0.3}
    out = []
    for i in range(n):
        t = replace(base, txn_id=f"b{i}", user_id=f"u{i % 5000}", ts=T_END + timedelta(seconds=i))
        flagged = i % 60 == 0
        out.append(
            ScoredTransaction(
                t,
                None,
                feats,
                0.4,
                0.5,
                (Reason("velocity", "5 in 10 min", 0.6),) if flagged else (),
                0.6 if flagged else 0.05,
                "review" if flagged else "approve",
                "bench",
                T_END,
            )
        )
    return out


def sink_rate(store: Store, rows: int, batch_rows: int) -> float:
    """Rows/s through the bytewax sink partition (row building + batched inserts)."""
    from dataflows.connectors.chsink import ClickHouseSink

    data = _sample_rows(rows)
    part = ClickHouseSink(store.url, store.database, batch_rows, 0.5).build_part("b", "p", None)
    part.write_batch(data[:batch_rows])  # warm-up: first insert pays engine start-up
    part.snapshot()
    t0 = time.perf_counter()
    for i in range(batch_rows, rows, 250):  # bytewax hands sinks small batches
        part.write_batch(data[i : i + 250])
    part.snapshot()
    elapsed = time.perf_counter() - t0
    part.close()
    return (rows - batch_rows) / elapsed


# Named columns: later migrations add columns (with defaults) the fills do not write.
_COLUMNS = """(txn_id, ts, user_id, card_id, merchant_id, merchant_category,
    amount, currency, lat, lon, country, channel, device_id, ip, schema_version, is_fraud,
    pattern, amount_usd, features, anomaly_raw, anomaly_score, reasons, risk_score, decision,
    model_version, processed_at, late)"""

FILL_SQL = """
INSERT INTO {db}.transactions {cols}
SELECT
    concat('f', toString(number)) AS txn_id,
    toDateTime64({end:DateTime64(3, 'UTC')}, 3, 'UTC')
        - toIntervalMillisecond(cityHash64(number, 2) % {span_ms:UInt64}) AS ts,
    concat('u', toString(cityHash64(number) % 100000)) AS user_id,
    concat('c', toString(cityHash64(number) % 100000)) AS card_id,
    concat('m', toString(cityHash64(number, 1) % 5000)) AS merchant_id,
    ['grocery', 'fuel', 'restaurant', 'online', 'travel'][1 + number % 5] AS merchant_category,
    round(exp(3.5 + 1.1 * randNormal(0, 1)), 2) AS amount,
    'USD', 40 + (cityHash64(number) % 1000) / 100, -74 + (cityHash64(number) % 700) / 100,
    'US', ['pos', 'ecom', 'atm'][1 + number % 3], NULL, NULL, 1,
    NULL, NULL,
    amount AS amount_usd,
    map('amount_usd', amount, 'cnt_10m', toFloat64(number % 7)) AS features,
    rand() / 4294967295 AS anomaly_raw, rand(1) / 4294967295 AS anomaly_score,
    if(number % 67 = 0, [('velocity', '6 in 10 min', 0.6), ('anomaly', 'rare', 0.3)],
       if(number % 97 = 0, [('card_testing', '4 small charges', 0.7)], [])) AS reasons,
    if(number % 67 = 0, 0.72, if(number % 97 = 0, 0.88, 0.04)) AS risk_score,
    if(number % 67 = 0, 'review', if(number % 97 = 0, 'block', 'approve')) AS decision,
    'bench', ts + toIntervalMillisecond(40), false
FROM (SELECT number + {off:UInt64} AS number FROM numbers({n:UInt64}))
SETTINGS max_partitions_per_insert_block = 0
"""

ALERTS_SQL = """
INSERT INTO {db}.alerts (alert_id, txn_id, user_id, card_id, merchant_id, ts, amount, currency,
    country, channel, lat, lon, risk_score, decision, reasons, anomaly_score, features,
    model_version, created_at, schema_version)
SELECT generateUUIDv4(), txn_id, user_id, card_id, merchant_id, ts, amount, currency,
       country, channel, lat, lon, risk_score, decision, reasons, anomaly_score, features,
       model_version, processed_at, 1
FROM {db}.transactions
WHERE decision != 'approve' AND toUInt64(substring(txn_id, 2)) >= {off:UInt64}
SETTINGS max_partitions_per_insert_block = 0
"""


def fill(store: Store, n: int, offset: int = 0, span_days: int = 7) -> float:
    """Insert ``n`` synthetic scored rows (ids from ``offset``) and their alerts, over
    the ``span_days`` before :data:`T_END`."""
    t0 = time.perf_counter()
    params = {"end": T_END, "span_ms": span_days * 86_400_000, "n": n, "off": offset}
    sql = FILL_SQL.replace("{db}", store.database).replace("{cols}", _COLUMNS)
    store.client.command(sql, parameters=params)
    store.client.command(ALERTS_SQL.replace("{db}", store.database), parameters={"off": offset})
    return time.perf_counter() - t0


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm caches once, as a dashboard refresh would
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs)


def query_latencies(
    store: Store, repeat: int = 5, last: datetime = T_END, user: str = "u42"
) -> dict[str, float]:
    """Median ms of each dashboard query over the 24 h, 7 and 30 days (the range
    picker's longest) up to ``last``, of finding the stored range (every refresh does),
    and of ``user``'s page."""
    end = last + timedelta(seconds=1)
    cases: dict[str, Callable[[], Any]] = {"data bounds": lambda: q.data_bounds(store)}
    for label, days in (("24h", 1), ("7d", 7), ("30d", 30)):
        start = last - timedelta(days=days)
        f = q.AlertFilter(start, end)
        cases |= {
            f"kpis {label}": lambda s=start: q.kpis(store, s, end),
            f"per-minute series {label}": lambda s=start: q.volume_series(
                store, s, end, q.bucket_seconds(s, end)
            ),
            f"risk distribution {label}": lambda s=start: q.risk_distribution(store, s, end),
            f"rule hits {label}": lambda s=start: q.rule_hits(store, s, end),
            f"top flagged users {label}": lambda s=start: q.top_flagged_users(store, s, end),
            f"latest alerts (500) {label}": lambda f=f: q.latest_alerts(store, f),
            f"review backlog {label}": lambda s=start: q.review_backlog(store, s, end),
        }
    cases["user timeline"] = lambda: q.user_timeline(store, user)
    cases["user profile"] = lambda: q.user_profile(store, user)
    return {name: _timed(fn, repeat) for name, fn in cases.items()}


def run_stored(url: str, database: str, repeat: int = 5) -> None:
    """Print the dashboard query table for what ``database`` already holds (e.g. after
    ``fraud backfill``): ranges end at its latest event, the user page is that of a
    busiest user (``topK``, approximate)."""
    store = Store(url, database)
    try:
        bounds = q.data_bounds(store)
        if bounds is None:
            raise ConfigError(f"clickhouse_database {database}: no transactions to query")
        ((rows, user),) = store.client.query(
            f"SELECT count(), topK(1)(user_id)[1] FROM {database}.transactions FINAL"
        ).result_rows
        print(
            f"# dashboard queries on {describe_url(url)} database {database}: {rows:,} rows, "
            f"{bounds[0]:%Y-%m-%d} … {bounds[1]:%Y-%m-%d %H:%M}, user page of {user}",
            flush=True,
        )
        got = query_latencies(store, repeat, last=bounds[1], user=user)
        print(f"| query | ms (median of {repeat}) |\n|---|---:|")
        for name, ms in got.items():
            print(f"| {name} | {ms:.1f} |")
    finally:
        store.close()


# Rows shaped like scored ones for the backtest: every key a features map holds.
BACKTEST_FILL_SQL = """
INSERT INTO {db}.transactions {cols}
SELECT concat('k', toString(number)),
    toDateTime64({end:DateTime64(3, 'UTC')}, 3, 'UTC')
        - toIntervalMillisecond(cityHash64(number, 2) % {span_ms:UInt64}) AS ts,
    concat('u', toString(cityHash64(number) % 100000)), 'c', 'm', 'grocery',
    round(exp(3.5 + 1.1 * randNormal(0, 1)), 2) AS amount, 'USD', 40.7, -74.0, 'US',
    ['pos', 'ecom', 'atm'][1 + number % 3], NULL, NULL, 1, toUInt8(number % 100 = 0), NULL,
    amount,
    map('amount_usd', amount, 'history', toFloat64(number % 300),
        'amount_z', round(randNormal(0, 1.5), 4), 'cnt_1m', toFloat64(number % 4),
        'cnt_10m', toFloat64(number % 7), 'cnt_1h', toFloat64(number % 13),
        'cnt_24h', toFloat64(number % 30), 'sum_1h_usd', amount * 2, 'sum_24h_usd', amount * 5,
        'small_10m', toFloat64(number % 5 = 0) * 3, 'km_prev', toFloat64(number % 300),
        'dt_prev_s', toFloat64(60 + number % 9000), 'speed_kmh', toFloat64(number % 950),
        'new_country', toFloat64(number % 41 = 0), 'new_device', toFloat64(number % 37 = 0),
        'hour_local', toFloat64(number % 24), 'hour_share', (number % 100) / 100.,
        'card_compromised', toFloat64(number % 501 = 0),
        'known_place', toFloat64(number % 3 = 0)),
    rand() / 4294967295, rand(1) / 4294967295,
    if(number % 211 = 0, [('compromised_merchant', 'merchant', 0.3)], []), 0.05, 'approve',
    'bench', ts + toIntervalMillisecond(40), false
FROM numbers({n:UInt64})
"""


def backtest_leg(url: str, rows: int, repeat: int = 3) -> tuple[float, float]:
    """(fill seconds, median backtest seconds) of ``fraud rules backtest`` over ``rows``
    stored transactions in a database of their own: the built-in policy against itself
    plus a shadow rule and a lower review threshold."""
    from clickhouse.backtest import backtest_store
    from schemas.rules import Case, Rule, default_policy
    from schemas.settings import load_settings

    store = Store(url, f"bench_bt_{uuid.uuid4().hex[:8]}")
    try:
        migrate(store, 3650)
        t0 = time.perf_counter()
        params = {"end": T_END, "span_ms": WEEK_S * 1000, "n": rows}
        sql = BACKTEST_FILL_SQL.replace("{db}", store.database).replace("{cols}", _COLUMNS)
        store.client.command(sql, parameters=params)
        filled = time.perf_counter() - t0
        live = default_policy(load_settings())
        shadow = Rule(
            "big_ecom",
            "Big e-commerce",
            (Case("True", "0.4", "${amount_usd:.0f} online"),),
            "not card_present and amount_usd > 300",
            status="shadow",
        )
        cand = replace(live.with_rule(shadow), review_threshold=0.45)
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = backtest_store(store, cand, live)
            runs.append(time.perf_counter() - t0)
            assert r.rows == rows, (r.rows, rows)
        return filled, statistics.median(runs)
    finally:
        store.client.command(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()


BACKTEST_MAX_ROWS = 5_000_000
"""The backtest leg runs at table sizes up to this (it reads every stored row)."""


def run(url: str, sizes: list[int], sink_rows: int, batch_rows: int, span_days: int = 7) -> None:
    """Print the benchmark table for one engine URL."""
    store = Store(url, f"bench_{uuid.uuid4().hex[:8]}")
    print(f"# store benchmark on {describe_url(url)} (database {store.database})", flush=True)
    try:
        migrate(store, 3650)
        rate = sink_rate(store, sink_rows, batch_rows)
        print(
            f"sink insert: {rate:,.0f} rows/s ({sink_rows:,} rows, batch {batch_rows})", flush=True
        )
        for t in ("transactions", "alerts", "decisions_per_minute"):
            store.client.command(f"TRUNCATE TABLE {store.database}.{t}")
        have = 0
        results: dict[int, dict[str, float]] = {}
        for n in sorted(sizes):
            took = fill(store, n - have, have, span_days) if n > have else 0.0
            have = n
            print(
                f"filled to {n:,} rows in {took:.1f}s; timing queries...",
                file=sys.stderr,
                flush=True,
            )
            results[n] = query_latencies(store)
        print(f"rows spread over the {span_days:,} days before {T_END:%Y-%m-%d}", flush=True)
        names = list(next(iter(results.values())))
        head = "| query | " + " | ".join(f"{n / 1e6:g}M rows (ms)" for n in results) + " |"
        print(head)
        print("|---|" + "---:|" * len(results))
        for name in names:
            print(f"| {name} | " + " | ".join(f"{results[n][name]:.1f}" for n in results) + " |")
        for n in sorted(sizes):
            if n > BACKTEST_MAX_ROWS:
                print(f"rules backtest of {n:,} rows: skipped (> {BACKTEST_MAX_ROWS:,})")
                continue
            print(f"backtest: filling {n:,} scored rows...", file=sys.stderr, flush=True)
            _, took = backtest_leg(url, n)
            print(f"rules backtest of {n:,} stored rows: {took:.2f}s (median of 3)", flush=True)
    finally:
        store.client.command(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()
