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
from clickhouse.tables import APP_USERS as APP_USERS_TABLE
from clickhouse.tables import CASE_ACTIONS as CASE_ACTIONS_TABLE
from clickhouse.tables import action_row, app_user_row
from schemas.cases import CASE_NS, CASE_STATUSES, AppUser, CaseAction
from schemas.scored import DECISIONS, VERDICTS, Decision, Reason, rules_version_of

__all__ = [
    "CASE_ALERTS",
    "CASE_SORTS",
    "STATUSES",
    "AlertFilter",
    "CaseFilter",
    "CasePage",
    "Kpis",
    "alert_by_id",
    "alert_cases",
    "alerts_csv",
    "app_users",
    "bucket_seconds",
    "case_alerts",
    "case_history",
    "case_page",
    "case_queue",
    "case_summary",
    "data_bounds",
    "decision_by_txn",
    "kpis",
    "latest_alerts",
    "open_cases",
    "review_backlog",
    "risk_distribution",
    "rule_hits",
    "save_app_user",
    "save_case_actions",
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
       r.note AS note, if(r.alert_id = '', NULL, r.last_at) AS reviewed_at
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


# --- decision API -------------------------------------------------------------------


def decision_by_txn(store: Store, txn_id: str) -> Decision | None:
    """The stored decision of a transaction (Decision v1), or None if it is unknown: the
    answer for a client that could not wait for the live one.  A full scan of the raw
    table's key range: the table is ordered by hour and user, not by txn_id."""
    rows = _rows(
        store,
        """SELECT txn_id, user_id, decision, risk_score, reasons, model_version, processed_at
           FROM {db}.transactions FINAL WHERE txn_id = {txn:String}
           ORDER BY processed_at LIMIT 1""",
        {"txn": txn_id},
    )
    if not rows:
        return None
    txn, user, decision, risk, reasons, version, processed_at = rows[0]
    if processed_at.tzinfo is None:
        processed_at = processed_at.replace(tzinfo=UTC)
    return Decision(
        txn,
        user,
        decision,
        float(risk),
        tuple(Reason(*r) if isinstance(r, tuple) else Reason(**r) for r in reasons),
        version,
        rules_version_of(version),
        processed_at.astimezone(UTC),
    )


# --- cases ------------------------------------------------------------------------
# A case is derived at read time from alerts and case_actions (see schemas.cases): a
# closed case is the alerts its close action lists; the open case of a user is every
# other alert of that user; case_id = uuid5(f"{seq}:{user_id}") computed here in SQL
# exactly as schemas.cases.case_id_for does in Python.


def _uuid5_sql(hex_expr: str) -> str:
    """A uuid5 string from ``hex_expr``, the lowercase hex of the name's SHA-1 (first
    16 bytes): version nibble 5, variant bits 10 (RFC 4122)."""
    h = hex_expr
    return (
        f"concat(substring({h}, 1, 8), '-', substring({h}, 9, 4), '-5', substring({h}, 14, 3),"
        f" '-', substring('89ab', (position('0123456789abcdef', substring({h}, 17, 1)) - 1)"
        f" % 4 + 1, 1), substring({h}, 18, 3), '-', substring({h}, 21, 12))"
    )


_CASE_NS_HEX = CASE_NS.hex

_CLOSES = """(SELECT case_id, any(user_id) AS user_id, any(seq) AS seq,
                     groupUniqArrayArray(alert_ids) AS members, min(at) AS closed_at
              FROM {db}.case_actions FINAL WHERE action = 'close' GROUP BY case_id)"""

CASE_ALERTS = f"""
SELECT alert_id, user_id, txn_id, card_id, merchant_id, ts, created_at, raised_at, amount,
       currency, amount_usd, risk_score, decision, codes, reasons,
       if(closed_case != '', closed_case, {_uuid5_sql("h")}) AS case_id,
       if(closed_case != '', closed_seq, open_seq) AS seq
FROM (
    SELECT a.alert_id AS alert_id, a.user_id AS user_id, a.txn_id AS txn_id,
           a.card_id AS card_id, a.merchant_id AS merchant_id, a.ts AS ts,
           a.created_at AS created_at, f.raised_at AS raised_at,
           a.amount AS amount, a.currency AS currency,
           a.features['amount_usd'] AS amount_usd, a.risk_score AS risk_score,
           a.decision AS decision, arrayMap(x -> x.code, a.reasons) AS codes,
           a.reasons AS reasons,
           m.case_id AS closed_case, m.seq AS closed_seq, n.closed + 1 AS open_seq,
           lower(hex(substring(SHA1(concat(unhex('{_CASE_NS_HEX}'), toString(n.closed + 1),
                                            ':', a.user_id)), 1, 16))) AS h
    FROM {{db}}.alerts AS a FINAL
    LEFT JOIN (SELECT alert_id, min(created_at) AS raised_at FROM {{db}}.alerts
               GROUP BY alert_id) AS f ON f.alert_id = a.alert_id
    LEFT JOIN (SELECT arrayJoin(members) AS alert_id, any(case_id) AS case_id,
                      any(seq) AS seq
               FROM {_CLOSES} GROUP BY alert_id) AS m ON m.alert_id = a.alert_id
    LEFT JOIN (SELECT user_id, count() AS closed FROM {_CLOSES} GROUP BY user_id) AS n
           ON n.user_id = a.user_id
)
"""
"""Every alert with its case (case_id, seq): the membership every case query reads.
``created_at`` is the latest version's (what ``FINAL`` keeps); ``raised_at`` is when the
alert was first raised (the earliest ``created_at`` of its versions), so a replay, which
writes the alert again later, does not make it look new."""

_CASE_STATE = """
SELECT case_id,
       argMaxIf(assignee, at, action IN ('claim', 'assign')) AS assignee,
       argMaxIf(verdict, at, action = 'verdict') AS last_verdict,
       countIf(action = 'close') > 0 AS is_closed,
       minIf(at, action = 'close') AS closed_at,
       max(at) AS last_action_at
FROM {db}.case_actions FINAL GROUP BY case_id
"""

_LATEST_VERDICT = """
SELECT alert_id, argMax(verdict, reviewed_at) AS verdict,
       argMax(assignee, reviewed_at) AS reviewer, argMax(note, reviewed_at) AS note,
       max(reviewed_at) AS last_reviewed_at
FROM {db}.alert_reviews GROUP BY alert_id
"""

CASE_STATUS_SQL = (
    "if(s.is_closed, 'closed', if(s.last_verdict = 'escalated', 'escalated',"
    " if(s.assignee != '', 'claimed', 'open')))"
)

_CASES = f"""
SELECT c.case_id AS case_id, any(c.user_id) AS user_id, any(c.seq) AS seq,
       count() AS alerts, min(c.ts) AS first_ts, max(c.ts) AS last_ts,
       min(c.raised_at) AS opened_at, max(c.risk_score) AS max_risk,
       sum(c.amount_usd) AS total_usd, countIf(c.decision = 'block') AS blocks,
       arraySort(groupUniqArrayArray(c.codes)) AS codes,
       arraySort(groupUniqArray(c.card_id)) AS cards,
       arraySort(groupUniqArray(c.merchant_id)) AS merchants,
       groupArray(c.txn_id) AS txn_ids, groupArray(c.alert_id) AS alert_ids,
       groupArray(c.card_id) AS card_ids,
       countIf(r.verdict IN ('confirmed_fraud', 'false_positive')) AS judged,
       any(s.assignee) AS assignee, any({CASE_STATUS_SQL}) AS status,
       any(s.closed_at) AS closed_at, any(s.is_closed) AS is_closed
FROM ({CASE_ALERTS}) AS c
LEFT JOIN ({_LATEST_VERDICT}) AS r ON r.alert_id = c.alert_id
LEFT JOIN ({_CASE_STATE}) AS s ON s.case_id = c.case_id
GROUP BY c.case_id
"""


@dataclass(frozen=True, slots=True)
class CaseFilter:
    """The case queue's filters; None / empty mean "any".  The time range keeps cases
    with an alert in ``[start, end)`` (event time); the case's figures cover all of it."""

    start: datetime | None = None
    end: datetime | None = None
    statuses: tuple[str, ...] = ("open", "claimed", "escalated")
    decisions: tuple[str, ...] = ()
    rule: str | None = None
    min_usd: float | None = None
    max_usd: float | None = None
    assignee: str | None = None
    search: str | None = None
    case_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither")
        if self.start is not None and self.end is not None:
            _range(self.start, self.end)
        if bad := set(self.statuses) - set(CASE_STATUSES):
            raise ValueError(f"statuses: unknown {sorted(bad)}; expected {CASE_STATUSES}")
        if bad := set(self.decisions) - {"review", "block"}:
            raise ValueError(f"decisions: unknown {sorted(bad)}; expected review, block")
        if self.min_usd is not None and self.max_usd is not None and self.min_usd > self.max_usd:
            raise ValueError(f"min_usd={self.min_usd} is above max_usd={self.max_usd}")

    def having(self) -> tuple[str, dict[str, Any]]:
        conds = ["1"]
        p: dict[str, Any] = {}
        if self.start is not None and self.end is not None:
            conds += [f"last_ts >= {{start:{_TS}}}", f"first_ts < {{end:{_TS}}}"]
            p.update(_range(self.start, self.end))
        if self.statuses:
            conds.append("status IN {statuses:Array(String)}")
            p["statuses"] = list(self.statuses)
        if set(self.decisions) == {"block"}:
            conds.append("blocks > 0")
        elif set(self.decisions) == {"review"}:
            conds.append("blocks < alerts")
        if self.rule:
            conds.append("has(codes, {rule:String})")
            p["rule"] = self.rule
        if self.min_usd is not None:
            conds.append("total_usd >= {min_usd:Float64}")
            p["min_usd"] = self.min_usd
        if self.max_usd is not None:
            conds.append("total_usd <= {max_usd:Float64}")
            p["max_usd"] = self.max_usd
        if self.assignee:
            conds.append("assignee = {assignee:String}")
            p["assignee"] = self.assignee
        if self.case_ids:
            conds.append("case_id IN {case_ids:Array(String)}")
            p["case_ids"] = list(self.case_ids)
        if self.search:
            conds.append(
                "(positionCaseInsensitiveUTF8(user_id, {q:String}) > 0 OR has(cards, {q:String})"
                " OR has(merchants, {q:String}) OR has(txn_ids, {q:String})"
                " OR arrayExists(x -> positionCaseInsensitiveUTF8(x, {q:String}) > 0, codes))"
            )
            p["q"] = self.search
        return " AND ".join(conds), p


CASE_SORTS: dict[str, str] = {
    "priority": "priority",
    "status": "status",
    "opened_at": "opened_at",
    "user_id": "user_id",
    "seq": "seq",
    "alerts": "alerts",
    "blocks": "blocks",
    "total_usd": "total_usd",
    "max_risk": "max_risk",
    "assignee": "assignee",
    "first_ts": "first_ts",
    "last_ts": "last_ts",
}
"""Columns the queue can be sorted by (key -> SQL expression): the only sort text that
reaches SQL, chosen from this constant mapping."""

_PRIORITY_ORDER = "blocks > 0 DESC, priority DESC, opened_at, case_id"


def _order_by(sort: tuple[tuple[str, bool], ...]) -> str:
    """``ORDER BY`` for ``(key, descending)`` pairs of :data:`CASE_SORTS`, then priority
    order and the case id (a total order, so pages never overlap or skip a case)."""
    terms = []
    for key, desc in sort:
        if key not in CASE_SORTS:
            raise ValueError(f"sort: unknown column {key!r}; expected one of {sorted(CASE_SORTS)}")
        terms.append(f"{CASE_SORTS[key]} {'DESC' if desc else 'ASC'}")
    return ", ".join([*terms, _PRIORITY_ORDER])


def case_queue(
    store: Store,
    f: CaseFilter,
    limit: int = 5000,
    offset: int = 0,
    sort: tuple[tuple[str, bool], ...] = (),
) -> pd.DataFrame:
    """Cases matching ``f``, rows ``offset .. offset + limit`` of the queue's order: the
    ``sort`` keys (``(key, descending)`` of :data:`CASE_SORTS`) first, then priority
    (cases with a block first, then risk × amount at stake = max risk × total USD, then
    the oldest), then the case id.  Columns: case_id, user_id, seq, alerts, first_ts,
    last_ts, opened_at (when the case's first alert was first raised), max_risk,
    total_usd, blocks, codes, cards, merchants, txn_ids, alert_ids, card_ids (same order),
    judged, assignee, status, closed_at, is_closed, priority."""
    return case_page(store, f, offset, limit, sort).rows


@dataclass(frozen=True, slots=True)
class CasePage:
    """One page of the queue and the figures of the whole filtered queue."""

    rows: pd.DataFrame
    total: int
    """Cases matching the filter (all pages)."""
    overdue: int
    """Of those, open cases opened before ``overdue_before`` (past the SLA)."""


def case_page(
    store: Store,
    f: CaseFilter,
    offset: int = 0,
    limit: int = 100,
    sort: tuple[tuple[str, bool], ...] = (),
    overdue_before: datetime | None = None,
) -> CasePage:
    """Rows ``offset .. offset + limit`` of the filtered queue in :func:`case_queue`'s
    order, with the total and overdue counts of the whole queue (window aggregates over
    the same scan: paging any queue size costs one query per page)."""
    if offset < 0 or limit < 0:
        raise ValueError(f"offset={offset}, limit={limit}: must be >= 0")
    having, p = f.having()
    p = {
        **p,
        "limit": limit,
        "offset": offset,
        "overdue_before": _utc(overdue_before or datetime(1970, 1, 1, tzinfo=UTC)),
    }
    counts = f"NOT is_closed AND opened_at < {{overdue_before:{_TS}}}"
    df = _df(
        store,
        f"""SELECT *, count() OVER () AS _total, countIf({counts}) OVER () AS _overdue
            FROM (SELECT *, max_risk * total_usd AS priority FROM ({_CASES}))
            WHERE {having}
            ORDER BY {_order_by(sort)}
            LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}""",
        p,
    )
    if len(df):
        total, overdue = int(df._total.iloc[0]), int(df._overdue.iloc[0])
    else:  # past the last page (or nothing matches): count on their own
        ((total, overdue),) = _rows(
            store,
            f"""SELECT count(), countIf({counts})
                FROM (SELECT *, max_risk * total_usd AS priority FROM ({_CASES}))
                WHERE {having}""",
            p,
        )
    rows = df.drop(columns=["_total", "_overdue"]).reset_index(drop=True)
    return CasePage(rows, int(total), int(overdue) if overdue_before is not None else 0)


def open_cases(store: Store) -> int:
    """Cases not closed yet (open, claimed or escalated), any time."""
    ((n,),) = _rows(store, f"SELECT count() FROM ({_CASES}) WHERE NOT is_closed", {})
    return int(n)


def case_summary(store: Store, case_id: str) -> dict[str, Any] | None:
    """One case's row of :func:`case_queue` as a dict (None when no alert is in it)."""
    df = _df(
        store,
        f"SELECT *, max_risk * total_usd AS priority FROM ({_CASES}) WHERE case_id = {{c:String}}",
        {"c": case_id},
    )
    return None if df.empty else df.iloc[0].to_dict()


def case_alerts(store: Store, case_id: str) -> pd.DataFrame:
    """The case's alerts in time order with everything an investigator needs: the
    transaction (merchant, category, channel, device, IP, location, features), every
    reason with its detail, and the alert's latest verdict."""
    return _df(
        store,
        f"""SELECT c.alert_id AS alert_id, c.txn_id AS txn_id, c.ts AS ts,
                   c.created_at AS created_at, c.amount AS amount, c.currency AS currency,
                   c.amount_usd AS amount_usd, c.risk_score AS risk_score,
                   c.decision AS decision, c.card_id AS card_id,
                   c.merchant_id AS merchant_id,
                   arrayStringConcat(c.codes, ', ') AS rules,
                   arrayStringConcat(arrayMap(x -> concat(x.code, ' (',
                       toString(round(x.contribution, 2)), '): ', x.detail), c.reasons), '\n')
                       AS reasons,
                   t.merchant_category AS merchant_category, t.channel AS channel,
                   t.country AS country, t.device_id AS device_id, t.ip AS ip,
                   t.lat AS lat, t.lon AS lon,
                   arrayStringConcat(arrayMap((k, v) -> concat(k, '=', toString(round(v, 3))),
                       mapKeys(t.features), mapValues(t.features)), ', ') AS features,
                   if(r.alert_id = '', 'open', r.verdict) AS status, r.reviewer AS reviewer,
                   r.note AS note, r.last_reviewed_at AS reviewed_at
            FROM ({CASE_ALERTS}) AS c
            LEFT JOIN (SELECT txn_id, merchant_category, channel, country, device_id, ip,
                              lat, lon, features
                       FROM {{db}}.transactions FINAL
                       WHERE txn_id IN (SELECT txn_id FROM ({CASE_ALERTS})
                                        WHERE case_id = {{c:String}})) AS t
                   ON t.txn_id = c.txn_id
            LEFT JOIN ({_LATEST_VERDICT}) AS r ON r.alert_id = c.alert_id
            WHERE c.case_id = {{c:String}}
            ORDER BY c.ts, c.alert_id""",
        {"c": case_id},
    )


def case_history(store: Store, case_id: str) -> pd.DataFrame:
    """The case's audit trail, oldest first: when, who, what, for whom, verdict, how
    many alerts, note."""
    return _df(
        store,
        """SELECT at, actor, action, assignee, verdict, length(alert_ids) AS alerts,
                  alert_ids, note, action_id
           FROM {db}.case_actions FINAL WHERE case_id = {c:String}
           ORDER BY at, action_id""",
        {"c": case_id},
    )


def save_case_actions(store: Store, actions: list[CaseAction]) -> None:
    """Append analyst actions to the audit trail (one insert)."""
    store.insert(CASE_ACTIONS_TABLE, [action_row(a) for a in actions])


# --- analyst accounts -------------------------------------------------------------


def app_users(store: Store) -> dict[str, tuple[str, str]]:
    """Active accounts: name -> (role, password hash); the latest row per name wins."""
    return {
        n: (role, h)
        for n, role, h, active in _rows(
            store,
            """SELECT name, argMax(role, created_at), argMax(password_hash, created_at),
                      argMax(active, created_at)
               FROM {db}.app_users FINAL GROUP BY name ORDER BY name""",
            {},
        )
        if active
    }


def save_app_user(store: Store, user: AppUser) -> None:
    """Append an account version (new user, new password, new role or disabled)."""
    store.insert(APP_USERS_TABLE, [app_user_row(user)])


def alert_cases(store: Store, alert_ids: list[str]) -> dict[str, str]:
    """The case of each given alert: alert_id -> case_id."""
    if not alert_ids:
        return {}
    rows = _rows(
        store,
        f"SELECT alert_id, case_id FROM ({CASE_ALERTS}) WHERE alert_id IN {{ids:Array(String)}}",
        {"ids": list(alert_ids)},
    )
    return {a: c for a, c in rows}
