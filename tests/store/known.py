"""A small hand-made store content with figures computed by hand (see the tests)."""

from __future__ import annotations

from datetime import timedelta

from clickhouse.store import Store
from clickhouse.tables import ALERTS, REVIEWS, TRANSACTIONS, alert_row, review_row, txn_row
from schemas.scored import Alert, Reason, Review, ScoredTransaction
from schemas.transaction import Label, Transaction
from tests.conftest import T0

# txn_id, user, seconds after T0, amount, currency, usd, risk, decision, reasons, latency ms
ROWS = [
    ("t1", "u1", 0, 10.0, "USD", 10.0, 0.05, "approve", (), 50),
    ("t2", "u1", 30, 20.0, "USD", 20.0, 0.15, "approve", (), 50),
    (
        "t3",
        "u2",
        61,
        100.0,
        "EUR",
        110.0,
        0.6,
        "review",
        (("high_amount", 0.4), ("anomaly", 0.3)),
        50,
    ),
    ("t4", "u2", 90, 500.0, "USD", 500.0, 0.9, "block", (("impossible_travel", 0.8),), 150),
    (
        "t5",
        "u3",
        125,
        5.0,
        "USD",
        5.0,
        0.85,
        "block",
        (("card_testing", 0.7), ("velocity", 0.2)),
        50,
    ),
    ("t6", "u3", 130, 7.0, "USD", 7.0, 0.2, "approve", (("card_testing", 0.1),), 50),
    ("t7", "u1", 3600, 1000.0, "USD", 1000.0, 0.1, "approve", (), 50),
]


def scored(replay: bool = False) -> list[ScoredTransaction]:
    """The scored transactions; ``replay`` re-scores them later (a restart's duplicates)."""
    out = []
    for tid, user, sec, amount, cur, usd, risk, decision, reasons, lat_ms in ROWS:
        ts = T0 + timedelta(seconds=sec)
        txn = Transaction(
            tid,
            ts,
            user,
            f"c-{user}",
            "m1",
            "grocery",
            amount,
            cur,
            40.0 + sec / 1000,
            -74.0,
            "US",
            "pos",
        )
        processed = ts + timedelta(milliseconds=lat_ms, hours=2 if replay else 0)
        out.append(
            ScoredTransaction(
                txn,
                Label(decision == "block"),
                {"amount_usd": usd, "cnt_1m": 1.0},
                0.5,
                0.5,
                tuple(Reason(c, f"{c} detail", w) for c, w in reasons),
                risk,
                decision,
                "rules-v1+test",
                processed,
                False,
                ts,
            )
        )
    return out


def reviews() -> list[Review]:
    """t4 confirmed by ana; t5 judged false positive by ana, then escalated by bob; t3 open."""
    by = {s.txn.txn_id: Alert.from_scored(s) for s in scored() if s.flagged}
    t = T0 + timedelta(hours=3)

    def rv(tid: str, verdict: str, who: str, at: timedelta) -> Review:
        a = by[tid]
        return Review(a.alert_id, a.txn_id, a.user_id, verdict, who, f"{verdict} note", t + at)

    return [
        rv("t4", "confirmed_fraud", "ana", timedelta(0)),
        rv("t5", "false_positive", "ana", timedelta(minutes=1)),
        rv("t5", "escalated", "bob", timedelta(minutes=2)),
    ]


def load(store: Store, duplicates: bool) -> None:
    """Insert the known rows; with ``duplicates`` everything is written twice, as after a
    crash and replay (the second copy has a later processed_at)."""
    for replay in (False, True) if duplicates else (False,):
        rows = scored(replay)
        store.insert(TRANSACTIONS, [txn_row(s) for s in rows])
        store.insert(ALERTS, [alert_row(Alert.from_scored(s)) for s in rows if s.flagged])
        store.insert(REVIEWS, [review_row(r) for r in reviews()])
