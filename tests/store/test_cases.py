"""Cases derived from alerts and case actions, exact under replays and duplicates.

Runs on every engine (the ``store`` fixture).  A case is never stored: its alerts are
derived from ``alerts`` and the close actions in ``case_actions`` (schemas/cases.py), so
these tests replay alerts (same alert_id, later created_at), write actions twice and
close a case twice, and check the grouping does not move.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from clickhouse import queries as q
from clickhouse.store import Store
from clickhouse.tables import ALERTS, TRANSACTIONS, alert_row, txn_row
from schemas.cases import AppUser, CaseAction, case_id_for
from schemas.scored import Alert, ScoredTransaction, alert_id_for
from tests.conftest import T0
from tests.store import known

NOW = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
ALL = ("open", "claimed", "escalated", "closed")


def _cases(store: Store, **f: object) -> dict[str, tuple[str, int, int, str]]:
    """case_id -> (user, seq, alerts, status) of the cases matching the filter."""
    df = q.case_queue(store, q.CaseFilter(**f))  # type: ignore[arg-type]
    return {
        c: (u, int(s), int(n), st)
        for c, u, s, n, st in zip(df.case_id, df.user_id, df.seq, df.alerts, df.status, strict=True)
    }


def _alert_txns(store: Store, case_id: str) -> list[str]:
    return list(q.case_alerts(store, case_id).txn_id)


def _new_alert(txn_id: str, user: str, at: timedelta, replay: bool = False) -> ScoredTransaction:
    """A blocked transaction of ``user`` at T0 + ``at`` (t4's shape)."""
    tmpl = known.scored(replay)[3]
    txn = replace(tmpl.txn, txn_id=txn_id, user_id=user, ts=T0 + at)
    return replace(tmpl, txn=txn, processed_at=txn.ts + timedelta(hours=3 if replay else 0))


def _store_alerts(store: Store, rows: list[ScoredTransaction]) -> None:
    store.insert(TRANSACTIONS, [txn_row(s) for s in rows])
    store.insert(ALERTS, [alert_row(Alert.from_scored(s)) for s in rows])


def _act(case_id: str, user: str, seq: int, action: str, *txns: str, **kw: object) -> CaseAction:
    return CaseAction(
        str(uuid.uuid4()),
        case_id,
        user,
        seq,
        action,
        kw.pop("actor", "ana"),  # type: ignore[arg-type]
        kw.pop("at", NOW),  # type: ignore[arg-type]
        tuple(alert_id_for(t) for t in txns),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(params=[False, True], ids=["once", "replayed"])
def loaded(store: Store, request: pytest.FixtureRequest) -> Store:
    known.load(store, duplicates=request.param)
    return store


def test_alerts_group_into_one_case_per_user_by_priority(loaded: Store) -> None:
    u2, u3 = case_id_for("u2", 1), case_id_for("u3", 1)
    assert _cases(loaded) == {u2: ("u2", 1, 2, "open"), u3: ("u3", 1, 1, "open")}
    df = q.case_queue(loaded, q.CaseFilter())
    assert list(df.case_id) == [u2, u3], "block first, then max risk x amount at stake"
    assert list(df.total_usd) == pytest.approx([610.0, 5.0])
    assert list(df.priority) == pytest.approx([0.9 * 610.0, 0.85 * 5.0])
    assert list(df.codes[0]) == ["anomaly", "high_amount", "impossible_travel"]
    assert list(df.txn_ids[0]) == ["t3", "t4"] or list(df.txn_ids[0]) == ["t4", "t3"]
    assert list(df.judged) == [1, 0], "t4 is confirmed fraud, t5 only escalated"
    assert _alert_txns(loaded, u2) == ["t3", "t4"]
    assert q.open_cases(loaded) == 2


def test_sql_case_ids_equal_python_uuid5(store: Store) -> None:
    users = ["u2", "a:b", "1:x", "o'neil", "ü-ß", "x](https://evil.example) [y", "\\n"]
    _store_alerts(
        store, [_new_alert(f"k{i}", u, timedelta(seconds=i)) for i, u in enumerate(users)]
    )
    assert {u: c for c, (u, *_) in _cases(store).items()} == {u: case_id_for(u, 1) for u in users}


def test_a_closed_case_keeps_its_alerts_and_a_new_alert_opens_the_next(store: Store) -> None:
    known.load(store, duplicates=False)
    c1 = case_id_for("u2", 1)
    close = _act(c1, "u2", 1, "close", "t3", "t4")
    q.save_case_actions(store, [close, close])  # a retried write: same action id
    assert _cases(store, statuses=ALL)[c1] == ("u2", 1, 2, "closed")
    assert c1 not in _cases(store), "closed cases leave the default (open) queue"
    assert q.open_cases(store) == 1

    _store_alerts(store, [_new_alert("t8", "u2", timedelta(minutes=5))])
    c2 = case_id_for("u2", 2)
    assert _cases(store, statuses=ALL)[c2] == ("u2", 2, 1, "open")
    assert _alert_txns(store, c2) == ["t8"]

    # Replays of everything (same alert ids, scored again later) and a second analyst
    # closing the same case again move nothing.
    known.load(store, duplicates=False)
    _store_alerts(store, [_new_alert("t8", "u2", timedelta(minutes=5), replay=True)])
    store.insert(ALERTS, [alert_row(Alert.from_scored(s)) for s in known.scored(True)[2:5]])
    q.save_case_actions(store, [_act(c1, "u2", 1, "close", "t3", "t4", actor="bob")])
    got = _cases(store, statuses=ALL)
    assert got == {
        c1: ("u2", 1, 2, "closed"),
        c2: ("u2", 2, 1, "open"),
        case_id_for("u3", 1): ("u3", 1, 1, "open"),
    }
    assert _alert_txns(store, c1) == ["t3", "t4"]


def test_a_late_alert_after_the_close_goes_to_the_open_case(store: Store) -> None:
    """Membership is the close action's list, not a time cut: an alert with an earlier
    event time that arrives after the close is not silently added to the closed case."""
    known.load(store, duplicates=False)
    c1 = case_id_for("u2", 1)
    q.save_case_actions(store, [_act(c1, "u2", 1, "close", "t3", "t4")])
    _store_alerts(store, [_new_alert("t0late", "u2", timedelta(seconds=-30))])
    assert _alert_txns(store, c1) == ["t3", "t4"]
    assert _alert_txns(store, case_id_for("u2", 2)) == ["t0late"]


def test_status_assignee_and_history_from_actions(store: Store) -> None:
    known.load(store, duplicates=True)
    c = case_id_for("u3", 1)
    acts = [
        _act(c, "u3", 1, "claim", assignee="ana", at=NOW),
        _act(c, "u3", 1, "assign", assignee="bob", actor="root", at=NOW + timedelta(seconds=1)),
        _act(c, "u3", 1, "note", note="called the customer", at=NOW + timedelta(seconds=2)),
    ]
    q.save_case_actions(store, acts + acts)
    df = q.case_queue(store, q.CaseFilter(assignee="bob"))
    assert list(df.case_id) == [c] and list(df.status) == ["claimed"]
    q.save_case_actions(
        store, [_act(c, "u3", 1, "verdict", "t5", verdict="escalated", at=NOW + timedelta(3))]
    )
    assert _cases(store)[c][3] == "escalated"
    h = q.case_history(store, c)
    assert list(h.action) == ["claim", "assign", "note", "verdict"]
    assert list(h.actor) == ["ana", "root", "ana", "ana"]
    assert list(h.assignee)[:2] == ["ana", "bob"] and h.note[2] == "called the customer"
    assert list(h.alerts) == [0, 0, 0, 1]


def test_queue_filters_and_search(loaded: Store) -> None:
    u2, u3 = case_id_for("u2", 1), case_id_for("u3", 1)

    def ids(**f: object) -> list[str]:
        return list(q.case_queue(loaded, q.CaseFilter(**f)).case_id)  # type: ignore[arg-type]

    assert ids(search="U2") == [u2], "user id, case-insensitive substring"
    assert ids(search="c-u3") == [u3], "card id"
    assert ids(search="m1") == [u2, u3], "merchant id"
    assert ids(search="t5") == [u3], "transaction id"
    assert ids(search="travel") == [u2], "reason code"
    assert ids(search="x' OR 1=1 --") == [], "bound, not formatted"
    assert ids(rule="card_testing") == [u3]
    assert ids(min_usd=100.0) == [u2] and ids(max_usd=100.0) == [u3]
    assert ids(decisions=("review",)) == [u2], "u2 has a review alert, u3 only a block"
    assert ids(start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=3)) == [u3]
    with pytest.raises(ValueError, match="statuses"):
        q.CaseFilter(statuses=("pending",))
    with pytest.raises(ValueError, match="min_usd"):
        q.CaseFilter(min_usd=5, max_usd=1)


def test_app_users_latest_version_wins(store: Store) -> None:
    def user(name: str, role: str, h: str, at: int, active: bool = True) -> AppUser:
        return AppUser(name, role, h, NOW + timedelta(seconds=at), active)

    for u in (user("ana", "analyst", "h1", 0), user("root", "admin", "h2", 0)):
        q.save_app_user(store, u)
        q.save_app_user(store, u)  # duplicates fold
    q.save_app_user(store, user("ana", "admin", "h3", 5))
    assert q.app_users(store) == {"ana": ("admin", "h3"), "root": ("admin", "h2")}
    q.save_app_user(store, user("root", "admin", "h2", 9, active=False))
    assert q.app_users(store) == {"ana": ("admin", "h3")}
    with pytest.raises(ValueError, match="user name"):
        user("=cmd", "analyst", "h", 0)
    with pytest.raises(ValueError, match="role"):
        user("eve", "root", "h", 0)
