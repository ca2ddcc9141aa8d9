"""What analysts do to cases: claim, assign, verdict, note (and the close a final verdict
implies).  Each step is appended to ``case_actions`` by the signed-in actor; verdicts also
go to ``alert_reviews`` and through the injected ``publish`` (the feedback topic).

Callbacks call these with the case ids and the alert ids the analyst saw; the case's real
content is read back from ClickHouse, so a stale or forged page cannot act on alerts
outside the case, and alerts raised after the page was drawn are not judged unseen: they
stay out of the close and open the user's next case.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse import queries as q
from dash_app.auth import Actor, accounts, require
from dash_app.context import ctx
from dash_app.metrics import VERDICTS_RECORDED, VERDICTS_UNPUBLISHED
from schemas.cases import CASE_STATUSES, FINAL_VERDICTS, CaseAction
from schemas.scored import Review

__all__ = ["VERDICT_LABELS", "add_note", "assign", "claim", "give_verdict", "next_case"]

VERDICT_LABELS = {
    "confirmed_fraud": "Confirmed fraud",
    "false_positive": "False positive",
    "escalated": "Escalate",
}


def _cases(case_ids: list[str]) -> list[dict[str, Any]]:
    if not case_ids:
        return []
    df = q.case_queue(ctx().store, q.CaseFilter(statuses=CASE_STATUSES, case_ids=tuple(case_ids)))
    return [r._asdict() for r in df.itertuples(index=False)]


def _action(
    case: dict[str, Any], action: str, actor: Actor, now: datetime, **kw: Any
) -> CaseAction:
    return CaseAction(
        str(uuid.uuid4()),
        case["case_id"],
        case["user_id"],
        int(case["seq"]),
        action,
        actor.name,
        now,
        **kw,
    )


def _save(actions: list[CaseAction], actor: Actor) -> None:
    """Record the actions, then tell every open queue (live push) that cases changed."""
    c = ctx()
    q.save_case_actions(c.store, actions)
    if c.hub is not None and actions:
        c.hub.publish_change(sorted({a.case_id for a in actions}), actor.name)


def _open(case_ids: list[str]) -> tuple[list[dict[str, Any]], str]:
    cases = _cases(case_ids)
    closed = [c for c in cases if c["is_closed"]]
    note = f" ({len(closed)} already closed, left as they are)" if closed else ""
    return [c for c in cases if not c["is_closed"]], note


def claim(case_ids: list[str], now: datetime) -> str:
    """The signed-in analyst takes the cases."""
    actor = require()
    if not case_ids:
        return "Select one or more cases first."
    cases, skipped = _open(case_ids)
    _save([_action(c, "claim", actor, now, assignee=actor.name) for c in cases], actor)
    return f"{actor.name} claimed {len(cases)} case(s){skipped}."


def assign(case_ids: list[str], assignee: str | None, now: datetime) -> str:
    """Give the cases to another analyst: admins only."""
    actor = require("admin")
    if not case_ids:
        return "Select one or more cases first."
    if not assignee or (accounts().role(assignee) is None and assignee != actor.name):
        return "Pick an existing account to assign to."
    cases, skipped = _open(case_ids)
    _save([_action(c, "assign", actor, now, assignee=assignee) for c in cases], actor)
    return f"Assigned {len(cases)} case(s) to {assignee}{skipped}."


def add_note(case_id: str, note: str | None, now: datetime) -> str:
    actor = require()
    text = (note or "").strip()
    if not text:
        return "Write a note first."
    cases = _cases([case_id])
    if not cases:
        return "No such case."
    _save([_action(cases[0], "note", actor, now, note=text[:2000])], actor)
    return "Note added."


def give_verdict(
    case_ids: list[str],
    seen: dict[str, list[str]],
    verdict: str,
    note: str | None,
    now: datetime,
    selected: list[str] | None = None,
) -> str:
    """``verdict`` on each case: on ``selected`` alerts when given (one case), else on
    every alert the analyst saw (``seen[case_id]``).  A confirmed-fraud or false-positive
    verdict that leaves no alert of the case unjudged closes the case, listing exactly
    the alerts it judged."""
    actor = require()
    if verdict not in VERDICT_LABELS:
        return f"Unknown verdict {verdict!r}."
    if not case_ids:
        return "Select one or more cases first."
    text = (note or "").strip()[:2000] or None
    cases, skipped = _open(case_ids)
    c = ctx()
    reviews: list[Review] = []
    actions: list[CaseAction] = []
    for case in cases:
        members = list(case["alert_ids"])
        shown = [a for a in seen.get(case["case_id"], members) if a in members]
        targets = [a for a in (selected or shown) if a in shown]
        if not targets:
            continue
        txns = dict(zip(members, case["txn_ids"], strict=True))
        # The card travels with the verdict: the flow marks (confirmed fraud) or clears
        # (false positive) it even when the transaction left the user's recent memory.
        cards = dict(zip(members, case["card_ids"], strict=True))
        reviews += [
            Review(a, txns[a], case["user_id"], verdict, actor.name, text, now, card_id=cards[a])
            for a in targets
        ]
        ids = tuple(targets)
        act = _action(case, "verdict", actor, now, alert_ids=ids, verdict=verdict, note=text)
        actions.append(act)
        if verdict in FINAL_VERDICTS and _settled(case["case_id"], shown, set(targets)):
            # 1 ms after the verdict, so the audit trail reads verdict, then close
            later = now + timedelta(milliseconds=1)
            actions.append(_action(case, "close", actor, later, alert_ids=tuple(shown)))
    if not reviews:
        return "Select one or more alerts of an open case first." + skipped
    c.store.save_reviews(reviews)
    _save(actions, actor)
    VERDICTS_RECORDED.labels(verdict).inc(len(reviews))
    closed = sum(a.action == "close" for a in actions)
    msg = (
        f"Recorded {VERDICT_LABELS[verdict].lower()} on {len(reviews)} alert(s) "
        f"of {len(actions) - closed} case(s)"
    )
    if closed:
        msg += f"; closed {closed} case(s)"
    if c.publish is not None:
        try:
            c.publish(reviews)
            msg += f"; published to {c.settings.topic_feedback}"
        except Exception as e:  # stored already; say what did not happen
            VERDICTS_UNPUBLISHED.inc(len(reviews))
            msg += f"; publishing to {c.settings.topic_feedback} failed: {e}"
    return msg + skipped + "."


def _settled(case_id: str, shown: list[str], judged_now: set[str]) -> bool:
    """True when every alert the analyst saw has a final verdict after this one."""
    if set(shown) <= judged_now:
        return True
    df = q.case_alerts(ctx().store, case_id)
    final = {a for a, s in zip(df.alert_id, df.status, strict=True) if s in FINAL_VERDICTS}
    return set(shown) <= final | judged_now


def next_case(current: str | None) -> str | None:
    """The highest-priority case still needing work other than ``current``: one of the
    actor's own or an unclaimed one first."""
    actor = require()
    df = q.case_queue(ctx().store, q.CaseFilter(), limit=50)
    rows = [r for r in df.itertuples(index=False) if r.case_id != current]
    mine = [r for r in rows if r.assignee in ("", actor.name)]
    pick = (mine or rows or [None])[0]
    return None if pick is None else pick.case_id


def now_utc() -> datetime:
    return datetime.now(UTC)
