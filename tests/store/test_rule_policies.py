"""The rule policy store (clickhouse/rules.py) on chDB: append-only versions that only
grow, each with author, time, note, action, diff and checksum; a rollback is a new
version; an invalid policy or an empty note is refused and nothing is stored."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from clickhouse.rules import (
    policy_at,
    policy_history,
    policy_in_force,
    publish_policy,
    rollback_policy,
)
from clickhouse.store import Store, migrate
from schemas.rules import Case, Policy, PolicyError, Rule, default_policy, encode_policy
from schemas.settings import load_settings

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(chdb_url: str) -> Iterator[Store]:
    s = Store(chdb_url, f"rp_{uuid.uuid4().hex[:10]}")
    migrate(s, ttl_days=3650)
    yield s
    s.client.command(f"DROP DATABASE IF EXISTS {s.database}")


@pytest.fixture
def builtin() -> Policy:
    return default_policy(load_settings())


REVIEW_ALL = Rule(
    "review_all",
    "Review all",
    (Case("True", "0.0", "amount {amount_usd:.2f}"),),
    effect="review",
)


def test_publish_numbers_versions_and_keeps_the_audit_trail(store: Store, builtin: Policy) -> None:
    assert policy_in_force(store) is None
    v1 = publish_policy(store, builtin, "ana", "first", now=AT)
    v2 = publish_policy(store, builtin.with_rule(REVIEW_ALL), "bob", "review all", now=AT)
    assert (v1.version, v2.version) == (1, 2)
    assert (v2.author, v2.note, v2.created_at) == (
        "bob",
        "review all",
        "2026-03-02T12:00:00.000+00:00",
    )
    in_force = policy_in_force(store)
    assert in_force is not None and in_force.version == 2
    assert in_force.rule("review_all") is not None
    history = policy_history(store)
    assert [(h.policy.version, h.policy.author, h.action) for h in history] == [
        (1, "ana", "publish"),
        (2, "bob", "publish"),
    ]
    stored = policy_at(store, 2)
    assert stored is not None
    assert stored.sha256 == hashlib.sha256(encode_policy(stored.policy)).hexdigest()
    # the diff says what changed: the added rule, and nothing of the untouched ones
    assert stored.diff.startswith("--- v1\n+++ v2")
    added = [ln for ln in stored.diff.splitlines() if ln.startswith("+") and "review_all" in ln]
    assert added, stored.diff
    assert "impossible_travel" not in stored.diff


def test_rollback_is_a_new_higher_version_with_the_old_rules(store: Store, builtin: Policy) -> None:
    publish_policy(store, builtin, "ana", "base")
    publish_policy(store, builtin.with_rule(REVIEW_ALL), "ana", "review all")
    back = rollback_policy(store, 1, "bob", "too many reviews")
    assert back.version == 3
    assert back.rule("review_all") is None
    assert [r.id for r in back.rules] == [r.id for r in builtin.rules]
    v3 = policy_at(store, 3)
    assert v3 is not None and v3.action == "rollback"
    assert v3.policy.note == "rollback to v1: too many reviews"
    assert '-      "id": "review_all",' in v3.diff
    assert [h.policy.version for h in policy_history(store)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("author", "note", "field"), [("ana", "  ", "note"), ("", "why", "author")]
)
def test_audit_fields_are_required(
    store: Store, builtin: Policy, author: str, note: str, field: str
) -> None:
    with pytest.raises(PolicyError) as e:
        publish_policy(store, builtin, author, note)
    assert [p.field for p in e.value.problems] == [field]
    assert policy_history(store) == []


def test_an_invalid_policy_is_refused_naming_rule_and_column(store: Store, builtin: Policy) -> None:
    bad = builtin.with_rule(replace(REVIEW_ALL, when="amount_usd > nope"))
    with pytest.raises(PolicyError) as e:
        publish_policy(store, bad, "ana", "typo")
    (p,) = e.value.problems
    assert (p.rule, p.field, p.column) == ("review_all", "when", 14)
    assert policy_in_force(store) is None, "nothing stored"
    with pytest.raises(PolicyError) as e:
        rollback_policy(store, 9, "ana", "no such")
    assert e.value.problems[0].field == "version"
