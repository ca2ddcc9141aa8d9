"""Rule policy versions in ClickHouse: the append-only source of truth.

Publishing checks the policy (every problem refused, with rule, field and column),
numbers it one above the highest stored version, records author, time, note and the diff
from the version before, and returns what was stored.  Nothing is ever updated in
place: a rollback publishes an older version's rules as a new version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from clickhouse.store import Store
from schemas.rules import (
    Policy,
    PolicyError,
    Problem,
    Rule,
    check_policy,
    decode_policy,
    encode_policy,
    policy_diff,
)

__all__ = [
    "PolicyVersion",
    "policy_at",
    "policy_history",
    "policy_in_force",
    "publish_policy",
    "rollback_policy",
]

COLUMNS = ["version", "created_at", "author", "action", "note", "policy", "diff", "sha256"]
TYPES = [
    "UInt32",
    "DateTime64(3, 'UTC')",
    "LowCardinality(String)",
    "LowCardinality(String)",
    "String",
    "String",
    "String",
    "String",
]


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One stored version: the policy and its audit fields."""

    policy: Policy
    action: str
    diff: str
    sha256: str


def _versions(store: Store) -> str:
    """Each version's owning row: the first written (see the migration)."""
    return (
        f"SELECT version, action, policy, diff, sha256 FROM {store.database}.rule_policies "
        "ORDER BY version, created_at, sha256 LIMIT 1 BY version"
    )


def policy_history(store: Store) -> list[PolicyVersion]:
    """Every stored version, oldest first."""
    r = store.client.query(f"SELECT action, policy, diff, sha256 FROM ({_versions(store)})")
    return [PolicyVersion(decode_policy(p), a, d, h) for a, p, d, h in r.result_rows]


def policy_at(store: Store, version: int) -> PolicyVersion | None:
    r = store.client.query(
        f"SELECT action, policy, diff, sha256 FROM ({_versions(store)}) "
        "WHERE version = {v:UInt32}",
        parameters={"v": version},
    )
    rows = r.result_rows
    return (
        PolicyVersion(decode_policy(rows[0][1]), rows[0][0], rows[0][2], rows[0][3])
        if rows
        else None
    )


def policy_in_force(store: Store) -> Policy | None:
    """The highest stored version (None until one is published: the built-in runs)."""
    r = store.client.query(f"SELECT policy FROM ({_versions(store)}) ORDER BY version DESC LIMIT 1")
    return decode_policy(r.result_rows[0][0]) if r.result_rows else None


def publish_policy(
    store: Store,
    policy: Policy,
    author: str,
    note: str,
    *,
    action: str = "publish",
    base: Policy | None = None,
    now: datetime | None = None,
) -> Policy:
    """Check and store ``policy`` as the next version; return it as stored.

    ``base`` is the version it replaces (the one in force if None), for the diff.  An
    empty note or author is refused: the audit trail must say who and why.
    """
    problems = check_policy(policy)
    if not note.strip():
        problems.append(Problem("", "note", 0, "a note saying why is required"))
    if not author.strip():
        problems.append(Problem("", "author", 0, "an author is required"))
    if problems:
        raise PolicyError(problems)
    before = policy_in_force(store) if base is None else base
    top = store.client.query(f"SELECT max(version) FROM {store.database}.rule_policies").result_rows
    version = max(int(top[0][0] or 0) if top else 0, 0) + 1
    at = (now or datetime.now(UTC)).astimezone(UTC)
    policy = _stamp_rules(policy, before, author, note, at.isoformat(timespec="milliseconds"))
    stored = replace(
        policy,
        version=version,
        author=author,
        note=note,
        created_at=at.isoformat(timespec="milliseconds"),
    )
    body = encode_policy(stored)
    store.client.insert(
        f"{store.database}.rule_policies",
        [
            [
                version,
                at,
                author,
                action,
                note,
                body.decode(),
                policy_diff(before, stored),
                hashlib.sha256(body).hexdigest(),
            ]
        ],
        column_names=COLUMNS,
        column_type_names=TYPES,
    )
    owner = policy_at(store, version)
    if owner is None or owner.sha256 != hashlib.sha256(body).hexdigest():
        who = owner.policy.author if owner is not None else "?"
        raise PolicyError(
            [
                Problem(
                    "",
                    "version",
                    0,
                    f"v{version} was published by {who} at the same time; reload and retry",
                )
            ]
        )
    return stored


def _stamp_rules(p: Policy, before: Policy | None, author: str, note: str, at: str) -> Policy:
    """Each rule that is new or changed since ``before`` gets the next rule version and
    this publish's author, time and note; unchanged rules keep theirs."""
    audit = ("version", "author", "updated_at", "note")

    def body(r: Rule) -> Rule:
        return replace(r, version=0, author="", updated_at="", note="")

    rules = []
    for r in p.rules:
        old = before.rule(r.id) if before is not None else None
        if old is not None and body(old) == body(r):
            rules.append(replace(r, **{k: getattr(old, k) for k in audit}))
        else:
            nxt = old.version + 1 if old is not None else 1
            rules.append(replace(r, version=nxt, author=author, updated_at=at, note=note))
    return replace(p, rules=tuple(rules))


def rollback_policy(store: Store, version: int, author: str, note: str) -> Policy:
    """Publish version ``version``'s rules and thresholds again, as a new version."""
    old = policy_at(store, version)
    if old is None:
        raise PolicyError([Problem("", "version", 0, f"no stored policy version {version}")])
    return publish_policy(
        store,
        old.policy,
        author,
        f"rollback to v{version}: {note}" if note.strip() else "",
        action="rollback",
    )
