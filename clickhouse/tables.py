"""Insert column lists, types and row builders, all derived from the schema specs.

The migrations in ``clickhouse/migrations`` are written by hand (they are frozen once
landed); a unit test applies them to a real engine and compares every table's columns
with the lists here, so a schema change without a migration fails the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.fields import FieldSpec
from schemas.scored import (
    ALERT_SPECS,
    DEAD_LETTER_SPECS,
    REVIEW_SPECS,
    SCORED_SPECS,
    Alert,
    DeadLetter,
    Review,
    ScoredTransaction,
    payload_sha256,
)
from schemas.transaction import LABEL_SPECS, TRANSACTION_SPECS

__all__ = [
    "ALERTS",
    "DEAD_LETTERS",
    "REVIEWS",
    "TABLES",
    "TRANSACTIONS",
    "Table",
    "alert_row",
    "dead_letter_row",
    "review_row",
    "txn_row",
]


@dataclass(frozen=True, slots=True)
class Table:
    """A table the application inserts into: name, columns and ClickHouse types."""

    name: str
    specs: tuple[FieldSpec, ...]

    @property
    def columns(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def types(self) -> list[str]:
        return [s.ch_type for s in self.specs]


TRANSACTIONS = Table("transactions", TRANSACTION_SPECS + LABEL_SPECS + SCORED_SPECS)
ALERTS = Table("alerts", ALERT_SPECS)
REVIEWS = Table("alert_reviews", REVIEW_SPECS)
DEAD_LETTERS = Table("dead_letters", DEAD_LETTER_SPECS)
TABLES = (TRANSACTIONS, ALERTS, REVIEWS, DEAD_LETTERS)


def _reasons(reasons: tuple[Any, ...]) -> list[tuple[str, str, float]]:
    return [(r.code, r.detail, r.contribution) for r in reasons]


def txn_row(s: ScoredTransaction) -> tuple[Any, ...]:
    """One ``transactions`` row, in :data:`TRANSACTIONS` column order."""
    t, lab = s.txn, s.label
    return (
        t.txn_id,
        t.ts,
        t.user_id,
        t.card_id,
        t.merchant_id,
        t.merchant_category,
        t.amount,
        t.currency,
        t.lat,
        t.lon,
        t.country,
        t.channel,
        t.device_id,
        t.ip,
        t.schema_version,
        None if lab is None else int(lab.is_fraud),
        None if lab is None else lab.pattern,
        s.features.get("amount_usd", 0.0),
        s.features,
        s.anomaly_raw,
        s.anomaly_score,
        _reasons(s.reasons),
        s.risk_score,
        s.decision,
        s.model_version,
        s.processed_at,
        s.late,
        s.ingested_at,
        s.policy_version,
        _reasons(s.shadow),
        list(s.rule_errors),
    )


def alert_row(a: Alert) -> tuple[Any, ...]:
    """One ``alerts`` row, in :data:`ALERTS` column order."""
    return (
        a.alert_id,
        a.txn_id,
        a.user_id,
        a.card_id,
        a.merchant_id,
        a.ts,
        a.amount,
        a.currency,
        a.country,
        a.channel,
        a.lat,
        a.lon,
        a.risk_score,
        a.decision,
        _reasons(a.reasons),
        a.anomaly_score,
        a.features,
        a.model_version,
        a.created_at,
        a.policy_version,
        a.schema_version,
    )


def review_row(r: Review) -> tuple[Any, ...]:
    """One ``alert_reviews`` row, in :data:`REVIEWS` column order."""
    return (
        r.alert_id,
        r.txn_id,
        r.user_id,
        r.card_id,
        r.verdict,
        r.assignee,
        r.note,
        r.reviewed_at,
        r.schema_version,
    )


def dead_letter_row(d: DeadLetter) -> tuple[Any, ...]:
    """One ``dead_letters`` row, in :data:`DEAD_LETTERS` column order."""
    return (
        payload_sha256(d.value),
        d.source_topic,
        d.source_partition,
        d.source_offset,
        d.error_code,
        d.error_message,
        d.key,
        d.value,
        len(d.value or b""),
        d.failed_at,
    )


# --- cases and analyst accounts (migrations 0009, 0010) ---------------------------

from schemas.cases import ACTION_SPECS, APP_USER_SPECS, AppUser, CaseAction  # noqa: E402

CASE_ACTIONS = Table("case_actions", ACTION_SPECS)
APP_USERS = Table("app_users", APP_USER_SPECS)
TABLES = (*TABLES, CASE_ACTIONS, APP_USERS)
__all__ += ["APP_USERS", "CASE_ACTIONS", "action_row", "app_user_row"]


def action_row(a: CaseAction) -> tuple[Any, ...]:
    """One ``case_actions`` row, in :data:`CASE_ACTIONS` column order."""
    return (
        a.action_id,
        a.case_id,
        a.user_id,
        a.seq,
        a.action,
        a.actor,
        a.at,
        list(a.alert_ids),
        a.assignee,
        a.verdict,
        a.note,
    )


def app_user_row(u: AppUser) -> tuple[Any, ...]:
    """One ``app_users`` row, in :data:`APP_USERS` column order."""
    return (u.name, u.role, u.password_hash, u.created_at, u.active)
