"""The handbook's split rule and metrics on tiny hand-computed cases."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
import pytest

from dataflows.evaluation.handbook import card_precision_at_k, handbook_metrics, handbook_test_set

DAY0 = datetime(2018, 7, 1)


def _frame(rows: list[tuple[int, int, int, float]]) -> pd.DataFrame:
    """(day index, customer, fraud, score) -> a handbook-shaped frame."""
    return pd.DataFrame(
        {
            "TX_TIME_DAYS": [d for d, *_ in rows],
            "TX_DATETIME": [DAY0 + timedelta(days=d, hours=12) for d, *_ in rows],
            "CUSTOMER_ID": [c for _, c, *_ in rows],
            "TX_FRAUD": [f for *_, f, _ in rows],
            "s": [s for *_, s in rows],
        }
    )


def test_test_set_is_the_third_week_minus_known_compromised_cards() -> None:
    rows = [
        (0, 1, 1, 0.0),  # fraud in training week: customer 1 known from the start
        (8, 2, 1, 0.0),  # fraud on delay day 8: known from test day 16 (= 8 + 8) on
        (14, 1, 0, 0.1),
        (14, 2, 0, 0.2),
        (14, 3, 0, 0.3),
        (15, 2, 1, 0.4),
        (16, 2, 0, 0.5),
        (16, 3, 1, 0.6),
        (21, 3, 0, 0.7),  # day 21 is after the 7 test days
    ]
    test = handbook_test_set(_frame(rows), date(2018, 7, 1))
    assert list(zip(test.TX_TIME_DAYS, test.CUSTOMER_ID, strict=True)) == [
        (14, 2),
        (14, 3),
        (15, 2),
        (16, 3),
    ]


def test_card_precision_removes_cards_found_on_earlier_days() -> None:
    rows = [
        (14, 1, 1, 0.9),
        (14, 2, 0, 0.8),
        (14, 3, 1, 0.1),  # top-2: {1, 2} -> 1/2
        (15, 1, 1, 0.9),
        (15, 3, 1, 0.5),
        (15, 4, 0, 0.4),  # 1 removed; top-2 {3, 4} -> 1/2
        (16, 3, 1, 0.9),
        (16, 5, 0, 0.2),
        (16, 6, 0, 0.1),  # 3 removed; top-2 {5, 6} -> 0
    ]
    mean, daily = card_precision_at_k(_frame(rows), "s", k=2)
    assert daily == [0.5, 0.5, 0.0]
    assert mean == pytest.approx(1 / 3)


def test_card_score_is_its_max_and_label_its_max() -> None:
    rows = [(14, 1, 0, 0.9), (14, 1, 1, 0.1), (14, 2, 0, 0.5)]
    assert card_precision_at_k(_frame(rows), "s", k=1)[1] == [1.0]


def test_metrics_are_sklearn_values_rounded_to_3_decimals() -> None:
    rows = [(14, 1, 1, 0.9), (14, 2, 0, 0.8), (14, 3, 1, 0.7), (14, 4, 0, 0.1)]
    auc, ap, cp = handbook_metrics(_frame(rows), "s")
    # AUC: positive pairs ranked right 3 of 4 -> 0.75; AP = (1/1 + 2/3) / 2 = 0.833
    assert (auc, ap) == (0.75, 0.833)
    assert cp == 0.02  # 2 frauds among the top 100 (only 4 cards): 2/100


def test_label_free_ceiling_ranks_amount_scenarios_first_and_ties_terminal_frauds() -> None:
    from dataflows.evaluation.handbook import label_free_ceiling

    rows = [(14, 1, 1, 0.0), (14, 2, 1, 0.0), (14, 3, 0, 0.0), (14, 4, 0, 0.0)]
    test = _frame(rows).assign(TX_FRAUD_SCENARIO=[3, 2, 0, 0])
    auc, ap, cp = label_free_ceiling(test)
    # Fraud 1 (scenario 3) beats both legit rows; fraud 2 (scenario 2) ties them: AUC =
    # (2 + 0.5 + 0.5) / 4.  AP: rank 1 is a hit (1/1), then 3 tied rows holding 1 hit
    # (sklearn treats ties as one threshold: precision 2/4 at recall 1) -> (1 + 0.5) / 2.
    assert (auc, ap) == (0.75, 0.75)
    assert cp == 0.02  # CP@100 divides by 100 even with 4 cards: 2 fraud cards / 100
