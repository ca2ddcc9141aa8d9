"""Named, parameterised analytics queries shared by the dashboard and reports.

Rules every query here follows:

* Values are bound server-side (``{name:Type}``); no user input is formatted into SQL.
  The only formatted name is the database, which settings validate as an identifier.
* Raw tables are read with ``FINAL`` and the rollup with ``uniqExactMerge``, so every
  figure is exact while replayed duplicates are still present (no reliance on merges).
* Time ranges are half-open ``[start, end)`` in event time; timestamps come back as
  naive UTC ``datetime64[ms]``.

An alert's status is its latest verdict (``confirmed_fraud``, ``false_positive``,
``escalated``) or ``open`` when nobody has reviewed it; the open-alert KPI counts
``open`` and ``escalated`` (both still need an analyst).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from clickhouse.store import Store
from schemas.scored import DECISIONS, VERDICTS

__all__ = [
    "STATUSES",
    "AlertFilter",
    "Kpis",
    "alert_by_id",
    "alerts_csv",
    "bucket_seconds",
    "data_bounds",
    "kpis",
    "latest_alerts",
    "review_backlog",
    "risk_distribution",
    "rule_hits",
    "top_flagged_users",
    "user_alerts",
    "user_profile",
    "user_timeline",
    "verdict_stats",
    "volume_series",
]

STATUSES = ("open", *VERDICTS)
NEEDS_ANALYST = ("open", "escalated")
_TS = "DateTime64(3, 'UTC')"


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts!r} must be timezone-aware")
    return ts.astimezone(UTC)


def _range(start: datetime, end: datetime) -> dict[str, Any]:
    if end <= start:
        raise ValueError(f"time range end {end.isoformat()} is not after start {start.isoformat()}")
    return {"start": _utc(start), "end": _utc(end)}


def _df(store: Store, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    # Built from the column lists rather than query_df so an empty result keeps its columns.
    sql = sql.replace("{db}", store.database)
    r = store.client.query(sql, parameters=params)
    if r.column_names:
        return pd.DataFrame(dict(zip(r.column_names, r.result_columns, strict=True)))
    # chDB sends no header block for an empty result; ask for the names (cheap, rare).
    names = [
        row[0] for row in store.client.query(f"DESCRIBE ({sql})", parameters=params).result_rows
    ]
    return pd.DataFrame({n: [] for n in names})


def _rows(store: Store, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return store.client.query(sql.replace("{db}", store.database), parameters=params).result_rows


# --- overview ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kpis:
    """Headline figures of a time range."""

    txns: int
    txn_per_s: float
    volume_usd: float
    flagged: int
    flagged_rate: float
    blocked: int
    blocked_usd: float
    open_alerts: int
    p95_latency_ms: float | None


def kpis(store: Store, start: datetime, end: datetime) -> Kpis:
    """Volume, counts, flagged rate, blocked amount, open alerts and p95 scoring latency
    (ingest to decision)."""
    p = _range(start, end)
    ((n, vol, flagged, blocked, blocked_usd),) = _rows(
        store,
        f"""SELECT count(), sum(amount_usd), countIf(decision != 'approve'),
                   countIf(decision = 'block'), sumIf(amount_usd, decision = 'block')
            FROM {{db}}.transactions FINAL
            WHERE ts >= {{start:{_TS}}} AND ts < {{end:{_TS}}}""",
        p,
    )
    # Latency = processed_at - ingested_at (event time for rows from before ingested_at
    # existed).  A replayed row is scored again later; its first scoring is the latency
    # that happened, so take the smallest per transaction.
    ((p95,),) = _rows(
        store,
        f"""SELECT quantileExact(0.95)(ms) FROM (
                SELECT txn_id, min(dateDiff('millisecond', coalesce(ingested_at, ts),
                                            processed_at)) AS ms
                FROM {{db}}.transactions
                WHERE ts >= {{start:{_TS}}} AND ts < {{end:{_TS}}} GROUP BY txn_id)""",
        p,
    )
    ((open_alerts,),) = _rows(
        store,
        f"""SELECT count() FROM {{db}}.alerts AS a FINAL
            LEFT JOIN (SELECT alert_id, argMax(verdict, reviewed_at) AS verdict
                       FROM {{db}}.alert_reviews GROUP BY alert_id) AS r
                   ON r.alert_id = a.alert_id
            WHERE a.ts >= {{start:{_TS}}} AND a.ts < {{end:{_TS}}}
              AND (r.verdict = '' OR r.verdict = 'escalated')""",
        p,
    )
    seconds = (end - start).total_seconds()
    return Kpis(
        txns=int(n),
        txn_per_s=n / seconds,
        volume_usd=float(vol),
        flagged=int(flagged),
        flagged_rate=flagged / n if n else 0.0,
        blocked=int(blocked),
        blocked_usd=float(blocked_usd),
        open_alerts=int(open_alerts),
        p95_latency_ms=float(p95) if n else None,
    )


def bucket_seconds(start: datetime, end: datetime, max_points: int = 360) -> int:
    """The smallest of 1, 5, 15, 30, 60 min, 3, 6, 12, 24 h giving <= max_points buckets."""
    span = (end - start).total_seconds()
    for minutes in (1, 5, 15, 30, 60, 180, 360, 720, 1440):
        if span / (minutes * 60) <= max_points:
            return minutes * 60
    return 1440 * 60


def volume_series(store: Store, start: datetime, end: datetime, bucket_s: int = 60) -> pd.DataFrame:
    """Transactions per bucket and decision from the per-minute rollup.

    Columns: bucket (naive UTC), decision, txns.  ``bucket_s`` is a multiple of 60.
    """
    if bucket_s < 60 or bucket_s % 60:
        raise ValueError(f"bucket_s={bucket_s}: must be a positive multiple of 60")
    return _df(
        store,
        f"""SELECT toStartOfInterval(minute, toIntervalSecond({{bucket:UInt32}})) AS bucket,
                   decision, uniqExactMerge(txns) AS txns
            FROM {{db}}.decisions_per_minute
            WHERE minute >= toStartOfMinute({{start:{_TS}}}) AND minute < {{end:{_TS}}}
            GROUP BY bucket, decision ORDER BY bucket, decision""",
        {**_range(start, end), "bucket": bucket_s},
    )


def risk_distribution(store: Store, start: datetime, end: datetime, bins: int = 20) -> pd.DataFrame:
    """Histogram of risk scores: columns low (bin's lower edge), decision, txns."""
    if not 1 <= bins <= 1000:
        raise ValueError(f"bins={bins}: must be 1..1000")
    return _df(
        store,
        f"""SELECT least(floor(risk_score * {{bins:UInt32}}), toFloat64({{bins:UInt32}}) - 1)
                       / {{bins:UInt32}} AS low,
                   decision, count() AS txns
            FROM {{db}}.transactions FINAL
            WHERE ts >= {{start:{_TS}}} AND ts < {{end:{_TS}}}
            GROUP BY low, decision ORDER BY low, decision""",
        {**_range(start, end), "bins": bins},
    )


def rule_hits(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """Per reason code: hits on any transaction and hits on flagged ones."""
    return _df(
        store,
        f"""SELECT r.code AS code, count() AS hits,
                   countIf(decision != 'approve') AS flagged_hits,
                   avg(r.contribution) AS mean_contribution
            FROM {{db}}.transactions FINAL ARRAY JOIN reasons AS r
            WHERE ts >= {{start:{_TS}}} AND ts < {{end:{_TS}}}
            GROUP BY code ORDER BY hits DESC, code""",
        _range(start, end),
    )


def top_flagged_users(
    store: Store, start: datetime, end: datetime, limit: int = 10
) -> pd.DataFrame:
    """Users with the most flagged transactions (then flagged amount, then id)."""
    return _df(
        store,
        f"""SELECT user_id, countIf(decision != 'approve') AS flagged, count() AS txns,
                   sumIf(amount_usd, decision != 'approve') AS flagged_usd,
                   max(risk_score) AS max_risk
            FROM {{db}}.transactions FINAL
            WHERE ts >= {{start:{_TS}}} AND ts < {{end:{_TS}}}
            GROUP BY user_id HAVING flagged > 0
            ORDER BY flagged DESC, flagged_usd DESC, user_id LIMIT {{limit:UInt32}}""",
        {**_range(start, end), "limit": limit},
    )


def data_bounds(store: Store) -> tuple[datetime, datetime] | None:
    """Earliest and latest event time stored (UTC-aware), or None when empty.

    The dashboard anchors relative ranges ("last hour") on the latest event, so replayed
    history and live traffic read the same way.
    """
    ((n, lo, hi),) = _rows(store, "SELECT count(), min(ts), max(ts) FROM {db}.transactions", {})
    if not n:
        return None
    return lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC)


# --- alert queue ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """What the analyst asked for; empty tuples and None mean "any"."""

    start: datetime
    end: datetime
    decisions: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    rule: str | None = None
    min_usd: float | None = None
    max_usd: float | None = None
    assignee: str | None = None
    user_id: str | None = None

    def __post_init__(self) -> None:
        _range(self.start, self.end)
        if bad := set(self.decisions) - set(DECISIONS):
            raise ValueError(f"decisions: unknown {sorted(bad)}; expected {DECISIONS}")
        if bad := set(self.statuses) - set(STATUSES):
            raise ValueError(f"statuses: unknown {sorted(bad)}; expected {STATUSES}")
        if self.min_usd is not None and self.max_usd is not None and self.min_usd > self.max_usd:
            raise ValueError(f"min_usd={self.min_usd} is above max_usd={self.max_usd}")

    def where(self) -> tuple[str, dict[str, Any]]:
        """SQL conditions (constant fragments) and their bound values."""
        conds = [f"a.ts >= {{start:{_TS}}}", f"a.ts < {{end:{_TS}}}"]
        p: dict[str, Any] = _range(self.start, self.end)
        if self.decisions:
            conds.append("a.decision IN {decisions:Array(String)}")
            p["decisions"] = list(self.decisions)
        if self.statuses:
            conds.append("status IN {statuses:Array(String)}")
            p["statuses"] = list(self.statuses)
        if self.rule:
            conds.append("arrayExists(x -> x.code = {rule:String}, a.reasons)")
            p["rule"] = self.rule
        if self.min_usd is not None:
            conds.append("amount_usd >= {min_usd:Float64}")
            p["min_usd"] = self.min_usd
        if self.max_usd is not None:
            conds.append("amount_usd <= {max_usd:Float64}")
            p["max_usd"] = self.max_usd
        if self.assignee:
            conds.append("assignee = {assignee:String}")
            p["assignee"] = self.assignee
        if self.user_id:
            conds.append("a.user_id = {user_id:String}")
            p["user_id"] = self.user_id
        return " AND ".join(conds), p


_ALERT_SELECT = """
SELECT a.alert_id AS alert_id, a.ts AS ts, a.user_id AS user_id, a.txn_id AS txn_id,
       a.card_id AS card_id, a.merchant_id AS merchant_id, a.amount AS amount,
       a.currency AS currency, a.features['amount_usd'] AS amount_usd,
       a.country AS country, a.channel AS channel, a.lat AS lat, a.lon AS lon,
       a.risk_score AS risk_score, a.decision AS decision,
       arrayStringConcat(arrayMap(x -> x.code, a.reasons), ', ') AS rules,
       arrayStringConcat(arrayMap(x -> concat(x.code, ': ', x.detail), a.reasons), '; ')
           AS reasons,
       a.anomaly_score AS anomaly_score, a.created_at AS created_at,
       if(r.alert_id = '', 'open', r.verdict) AS status, r.assignee AS assignee,
       r.note AS note, r.last_at AS reviewed_at
FROM {db}.alerts AS a FINAL
LEFT JOIN (SELECT alert_id, argMax(verdict, reviewed_at) AS verdict,
                  argMax(assignee, reviewed_at) AS assignee,
                  argMax(note, reviewed_at) AS note, max(reviewed_at) AS last_at
           FROM {db}.alert_reviews GROUP BY alert_id) AS r ON r.alert_id = a.alert_id
"""


def latest_alerts(store: Store, f: AlertFilter, limit: int = 500) -> pd.DataFrame:
    """Alerts matching ``f``, newest first, with their reasons and review status."""
    where, p = f.where()
    return _df(
        store,
        f"{_ALERT_SELECT} WHERE {where} ORDER BY a.ts DESC, a.alert_id LIMIT {{limit:UInt32}}",
        {**p, "limit": limit},
    )


def alert_by_id(store: Store, alert_ids: list[str]) -> pd.DataFrame:
    """The given alerts (any time), same columns as :func:`latest_alerts`."""
    return _df(
        store,
        f"{_ALERT_SELECT} WHERE a.alert_id IN {{ids:Array(String)}} ORDER BY a.ts DESC",
        {"ids": list(alert_ids)},
    )


def alerts_csv(store: Store, f: AlertFilter, limit: int = 100_000) -> str:
    """CSV text of the alerts matching ``f`` (what the analyst sees, for export)."""
    df = latest_alerts(store, f, limit)
    buf = io.StringIO()
    df.to_csv(buf, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    return buf.getvalue()


def review_backlog(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """Alerts in the range per status and decision (columns status, decision, alerts)."""
    return _df(
        store,
        f"""SELECT status, decision, count() AS alerts FROM (
                SELECT if(r.alert_id = '', 'open', r.verdict) AS status, a.decision AS decision
                FROM {{db}}.alerts AS a FINAL
                LEFT JOIN (SELECT alert_id, argMax(verdict, reviewed_at) AS verdict
                           FROM {{db}}.alert_reviews GROUP BY alert_id) AS r
                       ON r.alert_id = a.alert_id
                WHERE a.ts >= {{start:{_TS}}} AND a.ts < {{end:{_TS}}})
            GROUP BY status, decision ORDER BY status, decision""",
        _range(start, end),
    )


def verdict_stats(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """Per reason code: alerts, reviewed, confirmed, false positives and precision.

    Precision = confirmed / (confirmed + false positives), NaN until one is judged; it
    tells analysts which rules earn their keep.
    """
    return _df(
        store,
        f"""SELECT code, count() AS alerts, countIf(verdict != '') AS reviewed,
                   countIf(verdict = 'confirmed_fraud') AS confirmed,
                   countIf(verdict = 'false_positive') AS false_positive,
                   confirmed / nullIf(confirmed + false_positive, 0) AS precision
            FROM (SELECT a.alert_id, r.verdict AS verdict, x.code AS code
                  FROM {{db}}.alerts AS a FINAL ARRAY JOIN a.reasons AS x
                  LEFT JOIN (SELECT alert_id, argMax(verdict, reviewed_at) AS verdict
                             FROM {{db}}.alert_reviews GROUP BY alert_id) AS r
                         ON r.alert_id = a.alert_id
                  WHERE a.ts >= {{start:{_TS}}} AND a.ts < {{end:{_TS}}})
            GROUP BY code ORDER BY alerts DESC, code""",
        _range(start, end),
    )


# --- user drill-down --------------------------------------------------------------


def user_timeline(store: Store, user_id: str, limit: int = 2000) -> pd.DataFrame:
    """A user's latest transactions in time order with locations and decisions."""
    return _df(
        store,
        """SELECT * FROM (
               SELECT ts, txn_id, amount, currency, amount_usd, merchant_id,
                      merchant_category, country, channel, lat, lon, device_id,
                      risk_score, decision,
                      arrayStringConcat(arrayMap(x -> x.code, reasons), ', ') AS rules
               FROM {db}.transactions FINAL
               WHERE user_id = {user:String}
               ORDER BY ts DESC, txn_id DESC LIMIT {limit:UInt32})
           ORDER BY ts, txn_id""",
        {"user": user_id, "limit": limit},
    )


def user_profile(store: Store, user_id: str) -> dict[str, Any] | None:
    """Typical amount, active hours, countries, channels and flagged counts of a user."""
    rows = _rows(
        store,
        """SELECT count(), min(ts), max(ts),
                  medianExact(amount_usd), quantileExact(0.9)(amount_usd),
                  countIf(decision != 'approve'), countIf(decision = 'block'),
                  arraySort(groupUniqArray(country)),
                  arraySort(groupUniqArray(channel)),
                  topK(3)(toHour(ts)), uniqExact(card_id), uniqExact(device_id)
           FROM {db}.transactions FINAL WHERE user_id = {user:String}""",
        {"user": user_id},
    )
    n, first, last, med, p90, flagged, blocked, countries, channels, hours, cards, devs = rows[0]
    if not n:
        return None
    return {
        "user_id": user_id,
        "txns": int(n),
        "first_seen": first,
        "last_seen": last,
        "median_usd": float(med),
        "p90_usd": float(p90),
        "flagged": int(flagged),
        "blocked": int(blocked),
        "countries": list(countries),
        "channels": list(channels),
        "top_hours": sorted(int(h) for h in hours),
        "cards": int(cards),
        "devices": int(devs),
    }


def user_alerts(store: Store, user_id: str, limit: int = 200) -> pd.DataFrame:
    """A user's alerts (any time) with their review status, newest first."""
    return _df(
        store,
        f"{_ALERT_SELECT} WHERE a.user_id = {{user:String}} ORDER BY a.ts DESC "
        "LIMIT {limit:UInt32}",
        {"user": user_id, "limit": limit},
    )
