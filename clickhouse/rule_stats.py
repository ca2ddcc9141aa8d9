"""Per-rule figures over stored rows for the Rules page: hits, hit rate, amount and
precision, live and shadow alike.

A rule's hits are the rows whose ``reasons`` (it ran live) or ``shadow_reasons`` (it ran
in shadow) carry its code; a row counts once per rule even if both do.  Rows are read
with ``FINAL`` (a replayed transaction folds into one row, see :mod:`clickhouse.queries`).
Precision is measured twice, because the two truths differ in coverage: against analyst
verdicts (a transaction's latest verdict in ``alert_reviews`` or ``case_actions``,
``confirmed_fraud`` vs ``false_positive``; escalated and unreviewed rows are not judged)
and against dataset labels (``is_fraud``, present on generated or labelled history).
Shadow hits raise no alert, so only their labels judge them (or a verdict the row got
for its live hits).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from clickhouse.backtest import LATEST_VERDICTS as _VERDICTS
from clickhouse.queries import _TS, _df, _range, _rows
from clickhouse.store import Store
from schemas.transaction import TRANSACTION_SPECS

__all__ = ["SAMPLE_COLUMNS", "TXN_FIELDS", "latest_sample", "rule_stats", "txn_count"]

_CODES = "arrayMap(x -> x.code, {col})"

RULE_STATS_SQL = f"""
SELECT code,
       count() AS hits,
       countIf(live) AS live_hits,
       countIf(shadow) AS shadow_hits,
       sum(amount_usd) AS hit_usd,
       countIf(verdict = 'confirmed_fraud') AS confirmed,
       countIf(verdict = 'false_positive') AS false_positive,
       confirmed / nullIf(confirmed + false_positive, 0) AS precision_verdicts,
       countIf(is_fraud IS NOT NULL) AS labelled,
       countIf(is_fraud = 1) AS labelled_fraud,
       labelled_fraud / nullIf(labelled, 0) AS precision_labels
FROM (
    SELECT t.amount_usd AS amount_usd, t.is_fraud AS is_fraud, code,
           has(t.live_codes, code) AS live, has(t.shadow_codes, code) AS shadow,
           r.verdict AS verdict
    FROM (SELECT txn_id, amount_usd, is_fraud,
                 {_CODES.format(col="reasons")} AS live_codes,
                 {_CODES.format(col="shadow_reasons")} AS shadow_codes
          FROM {{db}}.transactions FINAL
          WHERE ts >= {{start:{_TS}}} AND ts < {{end:{_TS}}}
            AND (notEmpty(reasons) OR notEmpty(shadow_reasons))) AS t
    ARRAY JOIN arrayDistinct(arrayConcat(t.live_codes, t.shadow_codes)) AS code
    LEFT JOIN ({_VERDICTS}) AS r ON r.txn_id = t.txn_id
)
GROUP BY code ORDER BY hits DESC, code
"""


def rule_stats(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """Per reason code in ``[start, end)``: hits (live or shadow, a row once), live_hits,
    shadow_hits, hit_usd, confirmed, false_positive, precision_verdicts (NaN until one is
    judged), labelled, labelled_fraud, precision_labels (NaN without labels)."""
    return _df(store, RULE_STATS_SQL, _range(start, end))


def txn_count(store: Store, start: datetime, end: datetime) -> int:
    """Distinct transactions in ``[start, end)``: the denominator of a hit rate."""
    ((n,),) = _rows(
        store,
        f"SELECT count() FROM {{db}}.transactions FINAL "
        f"WHERE ts >= {{start:{_TS}}} AND ts < {{end:{_TS}}}",
        _range(start, end),
    )
    return int(n)


TXN_FIELDS = tuple(f.name for f in TRANSACTION_SPECS)
"""The transaction's own fields, as the flow's rules see them (``t.<field>``)."""
SAMPLE_COLUMNS = (*TXN_FIELDS, "amount_usd", "late", "anomaly_raw", "anomaly_score", "features")


def latest_sample(store: Store) -> dict[str, Any] | None:
    """The most recent stored row (transaction fields and features), on which the rule
    editor previews a rule's detail text; None when nothing is stored."""
    rows = _rows(
        store,
        f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM {{db}}.transactions FINAL "
        "ORDER BY ts DESC, txn_id DESC LIMIT 1",
        {},
    )
    if not rows:
        return None
    row = dict(zip(SAMPLE_COLUMNS, rows[0], strict=True))
    if isinstance(row["ts"], datetime) and row["ts"].tzinfo is None:
        row["ts"] = row["ts"].replace(tzinfo=UTC)
    row["features"] = dict(row["features"] or {})
    return row
