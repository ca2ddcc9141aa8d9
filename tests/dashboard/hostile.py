"""Stored rows whose ids and texts are attacks on the analyst app (markdown links, paths,
spreadsheet formulas), built from the known rows so they are valid end to end."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from clickhouse.store import Store
from clickhouse.tables import ALERTS, REVIEWS, TRANSACTIONS, alert_row, review_row, txn_row
from schemas.scored import Alert, Reason, Review, ScoredTransaction
from tests.conftest import T0
from tests.store import known

MD_LINK = "x](https://evil.example) [y"
"""Rendered as markdown ``[{id}](/users/{id})`` this becomes a link to evil.example."""

HOSTILE_IDS = (
    MD_LINK,
    "a b",
    "o'neil",
    "<script>",
    "x/y",
    "100%",
    "ü-ß",
    '=HYPERLINK("https://evil.example","x")',
    "-2+3",
    " @SUM(A1)",
)
"""Ten ids (the overview lists the top ten flagged users)."""

FORMULA_MERCHANT = "=cmd|' /C calc'!A0"
FORMULA_NOTE = "+SUM(1,2)"
FORMULA_ASSIGNEE = "@evil"
FORMULA_DETAIL = "\t=1+1"


def amount_of(i: int) -> float:
    """Each hostile user's one amount, so a page showing it proves which user was read."""
    return 10.0 + i


def scored(i: int, user_id: str, at: timedelta) -> ScoredTransaction:
    """A blocked transaction of ``user_id`` at T0 + ``at`` with formula-like texts."""
    tmpl = known.scored()[3]  # t4: u2, block
    txn = replace(
        tmpl.txn,
        txn_id=f"h{i}",
        ts=T0 + at,
        user_id=user_id,
        card_id=f"-c{i}",
        merchant_id=FORMULA_MERCHANT,
        amount=amount_of(i),
    )
    return replace(
        tmpl,
        txn=txn,
        features={"amount_usd": amount_of(i), "cnt_1m": 1.0},
        reasons=(Reason("velocity", FORMULA_DETAIL, 0.8),),
        processed_at=txn.ts + timedelta(milliseconds=50),
        ingested_at=txn.ts,
    )


def load(store: Store, ids: tuple[str, ...] = HOSTILE_IDS, at: timedelta = timedelta(0)) -> None:
    """One blocked transaction and alert per id (i seconds after ``at``), each judged a
    false positive by a formula-named analyst with a formula note."""
    rows = [scored(i, uid, at + timedelta(seconds=i)) for i, uid in enumerate(ids)]
    alerts = [Alert.from_scored(s) for s in rows]
    store.insert(TRANSACTIONS, [txn_row(s) for s in rows])
    store.insert(ALERTS, [alert_row(a) for a in alerts])
    reviews = [
        Review(
            a.alert_id,
            a.txn_id,
            a.user_id,
            "false_positive",
            FORMULA_ASSIGNEE,
            FORMULA_NOTE,
            T0 + timedelta(hours=3),
        )
        for a in alerts
    ]
    store.insert(REVIEWS, [review_row(r) for r in reviews])
