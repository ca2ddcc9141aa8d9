"""Per-rule figures of the Rules page on hand-made rows, exact values, on every engine,
with and without replayed duplicates."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pytest

from clickhouse import queries as q
from clickhouse import rule_stats as rs
from clickhouse.store import Store
from clickhouse.tables import ALERTS, REVIEWS, TRANSACTIONS, alert_row, review_row, txn_row
from schemas.cases import CaseAction, case_id_for
from schemas.scored import Alert, Reason, Review, alert_id_for
from tests.conftest import T0
from tests.store import known

SHADOW = {
    "t1": ("new_rule",),
    "t3": ("high_amount", "new_rule"),  # high_amount also hit live on t3: counted once
    "t6": ("new_rule",),
    "t7": ("new_rule",),
}


def _load(store: Store, duplicates: bool) -> None:
    """known.ROWS with shadow hits, t7 unlabelled, known reviews plus a false positive on
    t3 (t4 confirmed; t5 false positive then escalated in alert_reviews, then confirmed
    by a case verdict in case_actions, the latest: confirmed)."""
    for replay in (False, True) if duplicates else (False,):
        rows = []
        for s in known.scored(replay):
            codes = SHADOW.get(s.txn.txn_id, ())
            s = replace(s, shadow=tuple(Reason(c, f"{c} shadow", 0.4) for c in codes))
            rows.append(replace(s, label=None) if s.txn.txn_id == "t7" else s)
        store.insert(TRANSACTIONS, [txn_row(s) for s in rows])
        store.insert(ALERTS, [alert_row(Alert.from_scored(s)) for s in rows if s.flagged])
        fp = Review(alert_id_for("t3"), "t3", "u2", "false_positive", "ana", None, T0)
        store.insert(REVIEWS, [review_row(r) for r in [*known.reviews(), fp]])
    at = T0 + timedelta(hours=4)
    verdict = CaseAction(
        "a1",
        case_id_for("u3", 1),
        "u3",
        1,
        "verdict",
        "bob",
        at,
        (alert_id_for("t5"),),
        verdict="confirmed_fraud",
    )
    q.save_case_actions(store, [verdict])


@pytest.fixture(params=[False, True], ids=["once", "replayed"])
def loaded(store: Store, request: pytest.FixtureRequest) -> Store:
    _load(store, request.param)
    return store


def _table(df) -> list[tuple]:
    def nan(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 6)

    return [
        (
            r.code,
            r.hits,
            r.live_hits,
            r.shadow_hits,
            round(r.hit_usd, 2),
            r.confirmed,
            r.false_positive,
            nan(r.precision_verdicts),
            r.labelled,
            r.labelled_fraud,
            nan(r.precision_labels),
        )
        for r in df.itertuples()
    ]


def test_rule_stats_live_and_shadow(loaded: Store) -> None:
    df = rs.rule_stats(loaded, T0, T0 + timedelta(hours=2))
    assert _table(df) == [
        # code, hits, live, shadow, usd, confirmed, fp, p(verdicts), labelled, fraud, p(labels)
        ("new_rule", 4, 0, 4, 1127.0, 0, 1, 0.0, 3, 0, 0.0),
        ("card_testing", 2, 2, 0, 12.0, 1, 0, 1.0, 2, 1, 0.5),
        ("anomaly", 1, 1, 0, 110.0, 0, 1, 0.0, 1, 0, 0.0),
        ("high_amount", 1, 1, 1, 110.0, 0, 1, 0.0, 1, 0, 0.0),
        ("impossible_travel", 1, 1, 0, 500.0, 1, 0, 1.0, 1, 1, 1.0),
        ("velocity", 1, 1, 0, 5.0, 1, 0, 1.0, 1, 1, 1.0),
    ]
    assert rs.txn_count(loaded, T0, T0 + timedelta(hours=2)) == 7


def test_rule_stats_of_a_narrower_range(loaded: Store) -> None:
    end = T0 + timedelta(minutes=10)  # without t7 (1 h later)
    new = _table(rs.rule_stats(loaded, T0, end))[0]
    assert new == ("new_rule", 3, 0, 3, 127.0, 0, 1, 0.0, 3, 0, 0.0)
    assert rs.txn_count(loaded, T0, end) == 6
    quiet = rs.rule_stats(loaded, T0 - timedelta(days=1), T0)
    assert quiet.empty and "precision_labels" in quiet.columns
    with pytest.raises(ValueError, match="not after start"):
        rs.rule_stats(loaded, T0, T0)


def test_latest_sample_is_the_most_recent_row(loaded: Store) -> None:
    s = rs.latest_sample(loaded)
    assert s is not None
    assert (s["txn_id"], s["user_id"], s["amount_usd"], s["channel"]) == ("t7", "u1", 1000.0, "pos")
    assert s["ts"] == T0 + timedelta(hours=1)
    assert s["features"] == {"amount_usd": 1000.0, "cnt_1m": 1.0}


def test_latest_sample_of_an_empty_store(store: Store) -> None:
    assert rs.latest_sample(store) is None
