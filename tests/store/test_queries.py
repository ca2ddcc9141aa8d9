"""The query layer on known data, exact values, on every engine, with and without replays.

Each test runs on chDB in-process, through clickhouse-connect's HTTP client against the
chDB-backed test server, and (when FRAUD_TEST_CLICKHOUSE_URL is set) a real server.
``duplicates=True`` writes every row twice, as a crash and replay would, and no merge has
run: every figure must be the same.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from datetime import timedelta

import pytest

from clickhouse import queries as q
from clickhouse.store import Store
from schemas.scored import alert_id_for
from tests.conftest import T0
from tests.store import known

START, END = T0, T0 + timedelta(minutes=10)


@pytest.fixture(params=[False, True], ids=["once", "replayed"])
def loaded(store: Store, request: pytest.FixtureRequest) -> Store:
    known.load(store, duplicates=request.param)
    if request.param:
        sql = f"SELECT count() FROM {store.database}.transactions"
        ((n,),) = store.client.query(sql).result_rows
        assert n == 2 * len(known.ROWS), "the duplicates must really be there, unmerged"
    return store


def test_kpis(loaded: Store) -> None:
    k = q.kpis(loaded, START, END)
    assert (k.txns, k.flagged, k.blocked, k.open_alerts) == (6, 3, 2, 2)
    assert k.volume_usd == pytest.approx(652.0)
    assert k.blocked_usd == pytest.approx(505.0)
    assert k.flagged_rate == pytest.approx(0.5)
    assert k.txn_per_s == pytest.approx(6 / 600)
    assert k.p95_latency_ms == 150  # first scoring of t4, not its replay 2 h later


def test_kpis_of_a_quiet_range(loaded: Store) -> None:
    k = q.kpis(loaded, T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=1))
    assert (k.txns, k.flagged, k.open_alerts, k.volume_usd) == (1, 0, 0, 1000.0)
    empty = q.kpis(loaded, T0 - timedelta(days=1), T0 - timedelta(hours=1))
    assert (empty.txns, empty.flagged_rate, empty.p95_latency_ms) == (0, 0.0, None)


def test_volume_series_from_rollup(loaded: Store) -> None:
    df = q.volume_series(loaded, START, END, 60)
    got = [(b.minute, d, n) for b, d, n in zip(df.bucket, df.decision, df.txns, strict=True)]
    assert got == [
        (0, "approve", 2),
        (1, "block", 1),
        (1, "review", 1),
        (2, "approve", 1),
        (2, "block", 1),
    ]
    five = q.volume_series(loaded, START, END, 300)
    assert sorted(zip(five.decision, five.txns, strict=True)) == [
        ("approve", 3),
        ("block", 2),
        ("review", 1),
    ]


def test_bucket_seconds_keeps_points_bounded() -> None:
    assert q.bucket_seconds(START, START + timedelta(minutes=15)) == 60
    assert q.bucket_seconds(START, START + timedelta(hours=24)) == 300
    assert q.bucket_seconds(START, START + timedelta(days=7)) == 1800


def test_risk_distribution(loaded: Store) -> None:
    df = q.risk_distribution(loaded, START, END, bins=10)
    got = [(round(lo, 2), d, n) for lo, d, n in zip(df.low, df.decision, df.txns, strict=True)]
    assert got == [
        (0.0, "approve", 1),
        (0.1, "approve", 1),
        (0.2, "approve", 1),
        (0.6, "review", 1),
        (0.8, "block", 1),
        (0.9, "block", 1),
    ]


def test_rule_hits(loaded: Store) -> None:
    df = q.rule_hits(loaded, START, END)
    assert list(zip(df.code, df.hits, df.flagged_hits, strict=True)) == [
        ("card_testing", 2, 1),
        ("anomaly", 1, 1),
        ("high_amount", 1, 1),
        ("impossible_travel", 1, 1),
        ("velocity", 1, 1),
    ]
    assert df.mean_contribution[0] == pytest.approx(0.4)


def test_top_flagged_users(loaded: Store) -> None:
    df = q.top_flagged_users(loaded, START, END)
    assert list(df.user_id) == ["u2", "u3"]
    assert list(df.flagged) == [2, 1] and list(df.txns) == [2, 2]
    assert list(df.flagged_usd) == pytest.approx([610.0, 5.0])
    assert list(df.max_risk) == pytest.approx([0.9, 0.85])
    assert list(q.top_flagged_users(loaded, START, END, limit=1).user_id) == ["u2"]


def test_latest_alerts_with_status_and_filters(loaded: Store) -> None:
    def ids(**f: object) -> list[str]:
        return list(q.latest_alerts(loaded, q.AlertFilter(START, END, **f)).txn_id)

    df = q.latest_alerts(loaded, q.AlertFilter(START, END))
    assert list(df.txn_id) == ["t5", "t4", "t3"]
    assert list(df.status) == ["escalated", "confirmed_fraud", "open"]
    assert list(df.assignee) == ["bob", "ana", ""]
    assert df.alert_id[0] == alert_id_for("t5")
    assert df.rules[0] == "card_testing, velocity"
    assert df.amount_usd[2] == pytest.approx(110.0)
    assert ids(decisions=("block",)) == ["t5", "t4"]
    assert ids(statuses=("open",)) == ["t3"]
    assert ids(statuses=("open", "escalated")) == ["t5", "t3"]
    assert ids(rule="card_testing") == ["t5"]
    assert ids(min_usd=100.0) == ["t4", "t3"]
    assert ids(max_usd=100.0) == ["t5"]
    assert ids(assignee="ana") == ["t4"]
    assert ids(user_id="u2") == ["t4", "t3"]
    assert ids(decisions=("review",), min_usd=200.0) == []


def test_alert_filter_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="decisions"):
        q.AlertFilter(START, END, decisions=("maybe",))
    with pytest.raises(ValueError, match="statuses"):
        q.AlertFilter(START, END, statuses=("closed",))
    with pytest.raises(ValueError, match="not after start"):
        q.AlertFilter(END, START)
    with pytest.raises(ValueError, match="min_usd"):
        q.AlertFilter(START, END, min_usd=5, max_usd=1)


def test_filter_values_are_bound_not_formatted(loaded: Store) -> None:
    evil = "x' OR 1=1 --"
    assert q.latest_alerts(loaded, q.AlertFilter(START, END, user_id=evil)).empty
    assert q.latest_alerts(loaded, q.AlertFilter(START, END, rule=evil)).empty


def test_alerts_csv(loaded: Store) -> None:
    text = q.alerts_csv(loaded, q.AlertFilter(START, END, decisions=("block",)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["txn_id"] for r in rows] == ["t5", "t4"]
    assert rows[0]["status"] == "escalated"
    assert rows[1]["reasons"] == "impossible_travel: impossible_travel detail"
    assert rows[1]["ts"] == "2026-03-02T12:01:30.000000Z"


def test_review_backlog_and_verdict_stats(loaded: Store) -> None:
    b = q.review_backlog(loaded, START, END)
    assert list(zip(b.status, b.decision, b.alerts, strict=True)) == [
        ("confirmed_fraud", "block", 1),
        ("escalated", "block", 1),
        ("open", "review", 1),
    ]
    v = q.verdict_stats(loaded, START, END)
    cols = zip(v.code, v.alerts, v.reviewed, v.confirmed, v.false_positive, strict=True)
    got = {c: (a, r, cf, fp) for c, a, r, cf, fp in cols}
    assert got == {
        "anomaly": (1, 0, 0, 0),
        "card_testing": (1, 1, 0, 0),
        "high_amount": (1, 0, 0, 0),
        "impossible_travel": (1, 1, 1, 0),
        "velocity": (1, 1, 0, 0),
    }
    prec = dict(zip(v.code, v.precision, strict=True))
    assert prec["impossible_travel"] == 1.0 and math.isnan(prec["card_testing"])


def test_user_drill_down(loaded: Store) -> None:
    tl = q.user_timeline(loaded, "u1")
    assert list(tl.txn_id) == ["t1", "t2", "t7"]
    assert list(tl.decision) == ["approve"] * 3
    assert tl.lat[1] == pytest.approx(40.03)
    assert list(q.user_timeline(loaded, "u1", limit=2).txn_id) == ["t2", "t7"]
    p = q.user_profile(loaded, "u1")
    assert p is not None
    assert (p["txns"], p["flagged"], p["median_usd"], p["p90_usd"]) == (3, 0, 20.0, 1000.0)
    assert (p["countries"], p["channels"], p["cards"], p["devices"]) == (["US"], ["pos"], 1, 0)
    assert p["top_hours"] == [12, 13]
    assert q.user_profile(loaded, "nobody") is None
    ua = q.user_alerts(loaded, "u3")
    assert list(ua.txn_id) == ["t5"] and list(ua.status) == ["escalated"]


def test_data_bounds(loaded: Store) -> None:
    lo, hi = q.data_bounds(loaded) or (None, None)
    assert (lo, hi) == (T0, T0 + timedelta(hours=1))


def test_data_bounds_empty(store: Store) -> None:
    assert q.data_bounds(store) is None
    assert q.latest_alerts(store, q.AlertFilter(START, END)).empty


def test_user_page_reads_only_granules_holding_the_user(store: Store) -> None:
    """History spread over years: the hour leads the sorting key, so a user's rows are in
    every part; the user_id skip index (migration 0015) keeps the user page's reads to
    the granules that hold the user, and the answer is the same as a full scan's."""
    from dataflows.bench.store import fill

    fill(store, 200_000, 0, span_days=730)
    ((user,),) = store.client.query(
        f"SELECT user_id FROM {store.database}.transactions GROUP BY user_id"
        " ORDER BY count() DESC, user_id LIMIT 1"
    ).result_rows
    sql = (
        f"SELECT count(), round(sum(amount), 2) FROM {store.database}.transactions FINAL"
        f" WHERE user_id = '{user}'"
    )
    plan = "\n".join(r[0] for r in store.client.query("EXPLAIN indexes = 1 " + sql).result_rows)
    assert "idx_user" in plan, plan
    skip = plan[plan.index("idx_user") :]
    kept, total = (int(x) for x in skip.split("Granules: ", 1)[1].split()[0].split("/"))
    assert kept < total / 3, plan
    fast = store.client.query(sql).result_rows
    full = store.client.query(sql + " SETTINGS use_skip_indexes = 0").result_rows
    assert fast == full and fast[0][0] > 0
    assert len(q.user_timeline(store, user)) == fast[0][0]


def test_bench_store_times_what_a_database_holds(
    loaded: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fraud bench-store --stored``: the dashboard's queries on stored data (a
    backfill's), ranges ending at its latest event, the busiest user's page."""
    from dataflows.bench.store import run_stored

    run_stored(loaded.url, loaded.database, repeat=1)
    out = capsys.readouterr().out
    per_user = Counter(r[1] for r in known.ROWS)
    busiest = {u for u, n in per_user.items() if n == max(per_user.values())}
    assert f"database {loaded.database}: " in out
    assert out.split("user page of ", 1)[1].split()[0] in busiest
    timed = dict(
        (cells[1].strip(), float(cells[2]))
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| query")
        for cells in [line.split("|")]
    )
    assert {"kpis 30d", "top flagged users 30d", "user timeline", "data bounds"} <= set(timed)
    assert all(ms > 0 for ms in timed.values())
