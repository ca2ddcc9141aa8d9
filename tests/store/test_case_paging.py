"""The case queue paged and sorted in ClickHouse (the grid's infinite row model asks for
rows ``offset .. offset + limit`` in its sort order), and a case's age under replays.

Runs on every engine (the ``store`` fixture): eight users with one alert each, known
amounts, risks and decisions, so every page and every order is an exact list.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, timedelta

import pytest

from clickhouse import queries as q
from clickhouse.store import Store
from clickhouse.tables import ALERTS, alert_row
from schemas.cases import case_id_for
from schemas.scored import Alert, alert_id_for
from tests.conftest import T0
from tests.store import known

# user, minutes after T0 (event time = raised time), USD, risk, decision
CASES = [
    ("p0", 0, 100.0, 0.90, "block"),  # priority  90
    ("p1", 1, 300.0, 0.50, "review"),  # priority 150
    ("p2", 2, 50.0, 0.95, "block"),  # priority  47.5
    ("p3", 3, 1000.0, 0.60, "review"),  # priority 600
    ("p4", 4, 20.0, 0.80, "review"),  # priority  16
    ("p5", 5, 400.0, 0.85, "block"),  # priority 340
    ("p6", 6, 10.0, 0.70, "review"),  # priority   7
    ("p7", 7, 200.0, 0.40, "review"),  # priority  80
]
PRIORITY_ORDER = ["p5", "p0", "p2", "p3", "p1", "p7", "p4", "p6"]  # blocks first
NOW = T0 + timedelta(hours=1)


def _alert(user: str, minutes: int, usd: float, risk: float, decision: str) -> Alert:
    tmpl = Alert.from_scored(known.scored()[3])  # t4: a blocked alert
    at = T0 + timedelta(minutes=minutes)
    return replace(
        tmpl,
        alert_id=alert_id_for(f"x-{user}"),
        txn_id=f"x-{user}",
        user_id=user,
        card_id=f"c-{user}",
        ts=at,
        amount=usd,
        currency="USD",
        risk_score=risk,
        decision=decision,
        features={**tmpl.features, "amount_usd": usd},
        created_at=at,
    )


@pytest.fixture
def cases(store: Store) -> Store:
    store.insert(ALERTS, [alert_row(_alert(*c)) for c in CASES])
    return store


def _users(pg: q.CasePage) -> list[str]:
    return list(pg.rows.user_id)


def test_pages_follow_the_priority_order_with_the_true_total(cases: Store) -> None:
    f = q.CaseFilter()
    pages = [q.case_page(cases, f, offset, 3) for offset in (0, 3, 6, 9)]
    assert [_users(p) for p in pages] == [["p5", "p0", "p2"], ["p3", "p1", "p7"], ["p4", "p6"], []]
    assert [p.total for p in pages] == [8, 8, 8, 8], "past the end still counts the queue"
    assert list(pages[0].rows.priority) == pytest.approx([340.0, 90.0, 47.5])
    assert list(pages[0].rows.case_id) == [case_id_for(u, 1) for u in ("p5", "p0", "p2")]
    assert _users(q.case_page(cases, f, 0, 100)) == PRIORITY_ORDER
    assert list(q.case_queue(cases, f, limit=2, offset=1).user_id) == ["p0", "p2"]


def test_sorts_are_done_in_clickhouse_then_priority(cases: Store) -> None:
    f = q.CaseFilter()

    def order(*sort: tuple[str, bool]) -> list[str]:
        return _users(q.case_page(cases, f, 0, 100, sort))

    assert order(("total_usd", True)) == ["p3", "p5", "p1", "p7", "p0", "p2", "p4", "p6"]
    assert order(("total_usd", False)) == ["p6", "p4", "p2", "p0", "p7", "p1", "p5", "p3"]
    assert order(("max_risk", True)) == ["p2", "p0", "p5", "p4", "p6", "p3", "p1", "p7"]
    assert order(("opened_at", False)) == [f"p{i}" for i in range(8)]
    assert order(("opened_at", True)) == [f"p{i}" for i in reversed(range(8))]
    assert order(("user_id", True)) == [f"p{i}" for i in reversed(range(8))]
    # ties (every case is #1, has 1 alert) keep the priority order
    assert order(("seq", False)) == order(("alerts", True)) == PRIORITY_ORDER
    # blocks first, then the second key inside each group
    assert order(("blocks", True), ("total_usd", False)) == [
        *["p2", "p0", "p5"],
        *["p6", "p4", "p7", "p1", "p3"],
    ]
    # a page of a sorted queue: the 3rd and 4th by amount
    assert _users(q.case_page(cases, f, 2, 2, (("total_usd", True),))) == ["p1", "p7"]
    with pytest.raises(ValueError, match="sort: unknown column 'amount; DROP"):
        q.case_page(cases, f, 0, 10, (("amount; DROP", True),))


def test_filters_apply_before_paging_and_count(cases: Store) -> None:
    pg = q.case_page(cases, q.CaseFilter(decisions=("review",), min_usd=20.0), 1, 2)
    assert pg.total == 4 and _users(pg) == ["p1", "p7"]  # of p3 p1 p7 p4
    assert q.case_page(cases, q.CaseFilter(search="c-p6"), 0, 10).total == 1


def test_overdue_counts_open_cases_raised_before_the_cut(cases: Store) -> None:
    cut = T0 + timedelta(minutes=3)  # p0, p1, p2 were raised before it
    pg = q.case_page(cases, q.CaseFilter(), 6, 3, overdue_before=cut)
    assert (pg.total, pg.overdue, _users(pg)) == (8, 3, ["p4", "p6"])
    empty = q.case_page(cases, q.CaseFilter(), 50, 3, overdue_before=cut)
    assert (empty.total, empty.overdue, len(empty.rows)) == (8, 3, 0)
    assert q.case_page(cases, q.CaseFilter(), 0, 3).overdue == 0, "no cut given"
    assert q.case_page(cases, q.CaseFilter(search="nobody"), 0, 3, overdue_before=cut).total == 0


def test_a_replayed_alert_does_not_reset_the_case_age(cases: Store) -> None:
    """A replay writes the alert again (same alert_id) with a later created_at; FINAL keeps
    that version, but the case's age and SLA run from when the alert was first raised."""
    first = _alert(*CASES[3])  # p3, raised at T0 + 3 min
    later = [
        replace(first, created_at=first.created_at + timedelta(hours=h), risk_score=0.61)
        for h in (5, 2)  # two replays, the later one stored first
    ]
    for a in later:
        cases.insert(ALERTS, [alert_row(a)])
    n = cases.client.query(f"SELECT count() FROM {cases.database}.alerts").result_rows[0][0]
    assert n == len(CASES) + 2, "the replayed versions are really stored, unmerged"
    row = q.case_summary(cases, case_id_for("p3", 1))
    assert row is not None and row["alerts"] == 1
    assert row["opened_at"].replace(tzinfo=UTC) == T0 + timedelta(minutes=3), "not reset"
    assert row["max_risk"] == pytest.approx(0.61), "the figures are the latest version's"
    by_age = q.case_page(cases, q.CaseFilter(), 0, 3, (("opened_at", False),))
    assert _users(by_age) == ["p0", "p1", "p2"]
    cut = T0 + timedelta(minutes=4)  # p0..p3 first raised before it, p3 replayed after
    assert q.case_page(cases, q.CaseFilter(), 0, 1, overdue_before=cut).overdue == 4
