"""Cases and analyst accounts: the contracts of the analyst workbench.

A **case** groups a user's alerts: one open case per user at a time.  Nothing about a
case is stored except what analysts did to it (:class:`CaseAction`, append-only): the
alerts a case holds are derived from stored data each time it is read, so replayed
alerts (same ``alert_id``) never create or split cases:

* a closed case is exactly the alerts its close action lists;
* the user's open case is every alert of the user that no close action lists;
* ``case_id = uuid5(f"{seq}:{user_id}")`` where ``seq`` = 1 + the number of cases of
  that user already closed, so the open case keeps its id until it is closed, and the
  next alert of that user opens case ``seq + 1``.

``clickhouse.queries`` computes the same uuid5 in SQL (a test checks both agree).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from schemas.fields import FieldSpec
from schemas.vocab import VERDICTS

__all__ = [
    "ACTION_SPECS",
    "APP_USER_SPECS",
    "CASE_ACTIONS",
    "CASE_NS",
    "CASE_STATUSES",
    "FINAL_VERDICTS",
    "ROLES",
    "AppUser",
    "CaseAction",
    "case_id_for",
    "valid_login_name",
]

CASE_NS = uuid.UUID("0b6f1d3e-5b7a-4c1e-9a55-6a1f3c2d9e01")
"""Namespace of case ids (uuid5)."""

CASE_ACTIONS = ("claim", "assign", "verdict", "note", "close")
"""What an analyst can do to a case; each is one row of ``case_actions``."""

CASE_STATUSES = ("open", "claimed", "escalated", "closed")
"""A case is ``closed`` once a close action lists it, ``escalated`` when its latest verdict
is, ``claimed`` when someone owns it, else ``open``."""

FINAL_VERDICTS = ("confirmed_fraud", "false_positive")
"""Verdicts that settle an alert; a verdict on the whole case with one of them closes it."""

ROLES = ("analyst", "admin")
"""Analysts claim cases, give verdicts and notes; admins also assign cases to others."""

_LOGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def valid_login_name(name: str) -> bool:
    """Login names: 1-64 letters, digits, ``. _ @ -`` (not starting with a symbol).

    >>> [valid_login_name(n) for n in ("ana", "ana.b@bank", "", "-x", "a b", "=1")]
    [True, True, False, False, False, False]
    """
    return bool(_LOGIN.match(name))


def case_id_for(user_id: str, seq: int) -> str:
    """The id of ``user_id``'s ``seq``-th case (1-based).

    >>> case_id_for("u2", 1) == case_id_for("u2", 1) != case_id_for("u2", 2)
    True
    """
    if seq < 1:
        raise ValueError(f"case seq={seq} must be >= 1")
    return str(uuid.uuid5(CASE_NS, f"{seq}:{user_id}"))


@dataclass(frozen=True, slots=True)
class CaseAction:
    """One analyst action on a case (table ``case_actions``, append-only audit trail).

    ``alert_ids`` are the alerts the action covers: the verdict's alerts, or for
    ``close`` the case's members (which is what keeps closed cases exact).
    """

    action_id: str
    case_id: str
    user_id: str
    seq: int
    action: str
    actor: str
    at: datetime
    alert_ids: tuple[str, ...] = ()
    assignee: str = ""
    verdict: str = ""
    note: str | None = None

    def __post_init__(self) -> None:
        if self.action not in CASE_ACTIONS:
            raise ValueError(f"action={self.action!r} not one of {CASE_ACTIONS}")
        if self.seq < 1:
            raise ValueError(f"seq={self.seq} must be >= 1")
        if not self.actor or len(self.actor) > 64:
            raise ValueError("actor must be 1-64 characters")
        if self.at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        if self.action == "verdict" and self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r} not one of {VERDICTS}")
        if self.action in ("claim", "assign") and not self.assignee:
            raise ValueError(f"{self.action} needs an assignee")
        if self.action == "note" and not (self.note or "").strip():
            raise ValueError("a note action needs a note")
        if self.note is not None and len(self.note) > 2000:
            raise ValueError("note is longer than 2000 characters")


ACTION_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("action_id", "id", "String", "uuid4 of the action: a retried write folds."),
    FieldSpec("case_id", "id", "String", "uuid5 of the case (see schemas.cases)."),
    FieldSpec("user_id", "id", "String", "The case's user."),
    FieldSpec("seq", "int", "UInt32", "The case's number among the user's cases (1-based)."),
    FieldSpec("action", "enum", "LowCardinality(String)", "What was done.", choices=CASE_ACTIONS),
    FieldSpec("actor", "str", "LowCardinality(String)", "The signed-in analyst who did it."),
    FieldSpec("at", "ts", "DateTime64(3, 'UTC')", "When (wall clock)."),
    FieldSpec("alert_ids", "str", "Array(String)", "The alerts covered (close: the members)."),
    FieldSpec("assignee", "str", "LowCardinality(String)", "claim/assign: the new owner."),
    FieldSpec("verdict", "str", "LowCardinality(String)", "verdict: the verdict given."),
    FieldSpec("note", "str", "Nullable(String)", "Free text.", required=False, max_len=2000),
)


@dataclass(frozen=True, slots=True)
class AppUser:
    """An analyst account (table ``app_users``, append-only: the latest row per name is
    current).  ``password_hash`` is werkzeug's ``generate_password_hash`` output."""

    name: str
    role: str
    password_hash: str
    created_at: datetime
    active: bool = True

    def __post_init__(self) -> None:
        if not valid_login_name(self.name):
            raise ValueError(
                f"user name {self.name!r}: 1-64 letters, digits or . _ @ -, "
                "starting with a letter or digit"
            )
        if self.role not in ROLES:
            raise ValueError(f"role={self.role!r} not one of {ROLES}")
        if not self.password_hash:
            raise ValueError("password_hash is empty")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")


APP_USER_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("name", "id", "String", "Login name."),
    FieldSpec("role", "enum", "LowCardinality(String)", "analyst or admin.", choices=ROLES),
    FieldSpec("password_hash", "str", "String", "werkzeug password hash (never the password)."),
    FieldSpec("created_at", "ts", "DateTime64(3, 'UTC')", "When this version was written."),
    FieldSpec("active", "bool", "Bool", "False = the account is disabled."),
)
