"""What the Rules page does with rules: read the policy in force, turn the editor's fields
into a rule and back, check it, preview it on a stored row, and publish lifecycle changes.

The pure helpers (form ↔ rule, problems as text, the sample's feature objects, the
policy with a rule changed) are unit-tested; :func:`publish_change` and :func:`rollback`
are the only writers.  Each checks the admin role and a non-empty note on the server,
publishes a new policy version (ClickHouse is the source of truth, append-only) and then
announces it to the running flow through the injected ``announce_policy``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from clickhouse import rules as store_rules
from clickhouse.rule_stats import TXN_FIELDS
from dash_app.auth import require
from dash_app.context import ctx
from schemas.rules import (
    FEATURES,
    Policy,
    PolicyError,
    Problem,
    Rule,
    check_policy,
    compile_rule,
    default_policy,
    policy_from_dict,
)
from schemas.scored import Reason

__all__ = [
    "ACTIONS",
    "backtest_candidate",
    "changed_policy",
    "check_edit",
    "json_cases",
    "policy_in_force",
    "policy_label",
    "preview",
    "problem_lines",
    "publish_change",
    "rollback",
    "rule_from_form",
    "rule_to_form",
    "sample_inputs",
]

ACTIONS = {
    "draft": "saved as draft",
    "shadow": "put in shadow",
    "live": "promoted to live",
    "paused": "paused",
    "archived": "archived",
}
"""Lifecycle buttons: the status each one publishes the edited rule with."""

NEW_CASES = [{"when": "True", "contribution": "0.4", "detail": "describe the hit"}]
"""The cases a new rule starts with."""


def policy_in_force() -> Policy:
    """The highest stored version, or the built-in policy (version 0) until one is
    published."""
    c = ctx()
    return store_rules.policy_in_force(c.store) or default_policy(c.settings)


def policy_label(p: Policy) -> str:
    """The line that says which policy the page shows."""
    if p.version == 0:
        return "built-in policy v0 (nothing published yet)"
    return f"policy v{p.version} in force, published by {p.author} at {p.created_at}"


# --- the editor's fields --------------------------------------------------------------


def rule_to_form(r: Rule) -> dict[str, Any]:
    """The editor's field values for ``r`` (cases as indented JSON, ``when: True``
    left out)."""
    cases = [
        {
            **({"when": c.when} if c.when.strip() != "True" else {}),
            "contribution": c.contribution,
            "detail": c.detail,
        }
        for c in r.cases
    ]
    return {
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "effect": r.effect,
        "status": r.status,
        "when": r.when,
        "cases": json_cases(cases),
        "calibrate": ["on"] if r.calibrate else [],
    }


def json_cases(cases: list[dict[str, str]]) -> str:
    """Cases as the editor shows them: indented JSON, one key per line."""
    return json.dumps(cases, indent=2, ensure_ascii=False)


def rule_from_form(
    form: dict[str, Any], base: Rule | None = None
) -> tuple[Rule | None, list[Problem]]:
    """The rule the editor describes, or None with the structural problems (cases not
    JSON, missing id, unknown effect...).  Audit fields come from ``base``, the stored
    rule of the same id, if any."""
    rid = str(form.get("id") or "").strip()
    text = str(form.get("cases") or "")
    try:
        cases = json.loads(text)
    except json.JSONDecodeError as e:
        msg = f"not JSON (line {e.lineno}): {e.msg}"
        return None, [Problem(rid or "?", "cases", e.colno, msg)]
    d = {
        "id": rid,
        "name": str(form.get("name") or "").strip() or rid,
        "description": str(form.get("description") or ""),
        "effect": form.get("effect") or "score",
        "status": form.get("status") or "draft",
        "when": str(form.get("when") or "").strip() or "True",
        "cases": cases,
        "calibrate": bool(form.get("calibrate")),
    }
    try:
        rule = policy_from_dict({"version": 0, "rules": [d]}).rules[0]
    except PolicyError as e:
        return None, e.problems
    if base is not None:
        rule = replace(
            rule,
            version=base.version,
            author=base.author,
            updated_at=base.updated_at,
            note=base.note,
        )
    return rule, []


def problem_lines(problems: list[Problem]) -> list[str]:
    """Each problem as ``rule · field col N: message`` (text, shown as text)."""
    out = []
    for p in problems:
        at = f" col {p.column}" if p.column else ""
        who = f"{p.rule} · " if p.rule else ""
        out.append(f"{who}{p.field}{at}: {p.message}")
    return out


def check_edit(policy: Policy, rule: Rule) -> list[Problem]:
    """Every problem of ``policy`` with ``rule`` replacing (or added beside) its own."""
    return check_policy(policy.with_rule(rule))


# --- the preview on a stored row ----------------------------------------------------

_CAST = {"int": lambda v: int(v), "float": float, "bool": bool, "str": str}


def sample_inputs(row: dict[str, Any]) -> tuple[SimpleNamespace, SimpleNamespace, float, float]:
    """The ``(f, t, hst_raw, hst_pct)`` a compiled rule reads, rebuilt from a stored row:
    the features map (typed as the language types them, 0 when absent), the columns
    that hold the rest (amount_usd, late, card_present = channel is not ecom), and the
    transaction's own fields.  ``fx_known`` is not stored: a stored amount had a rate."""
    feats = row.get("features") or {}
    direct = {
        "amount_usd": row.get("amount_usd", 0.0),
        "late": bool(row.get("late")),
        "card_present": row.get("channel") != "ecom",
        "fx_known": True,
    }
    f = {
        name: _CAST[feat.type](direct[name] if name in direct else feats.get(name, 0.0))
        for name, feat in FEATURES.items()
        if feat.source == "f"
    }
    t = SimpleNamespace(**{k: row.get(k) for k in TXN_FIELDS})
    return (
        SimpleNamespace(**f),
        t,
        float(row.get("anomaly_raw") or 0.0),
        float(row.get("anomaly_score") or 0.0),
    )


def preview(rule: Rule, params: dict[str, Any], row: dict[str, Any] | None) -> str:
    """What the rule says about the most recent stored row: its detail text and
    contribution, that it does not fire, or why it failed."""
    if row is None:
        return "No stored transaction to preview on yet."
    on = f"the sample {row['txn_id']} (user {row['user_id']}, {row['ts']:%Y-%m-%d %H:%M:%S})"
    try:
        fn = compile_rule(rule, params, Reason).fn
        hit = fn(*sample_inputs(row))
    except Exception as e:  # the flow skips such a rule for the event; say why here
        return f"Fails on {on}: {type(e).__name__}: {e}"
    if hit is None:
        return f"Does not fire on {on}."
    return f"Fires on {on}: {hit.detail} (contribution {hit.contribution:.3g})"


# --- publishing ---------------------------------------------------------------------


def _same(a: Rule, b: Rule) -> bool:
    audit = {"version": 0, "author": "", "updated_at": "", "note": ""}
    return replace(a, **audit) == replace(b, **audit)


def changed_policy(policy: Policy, rule: Rule, status: str) -> Policy | None:
    """``policy`` with ``rule`` at ``status``; None when that changes nothing.  Rule
    versions and audit fields are stamped by ``publish_policy``."""
    old = policy.rule(rule.id)
    new = replace(rule, status=status)
    if old is not None and _same(old, new):
        return None
    return policy.with_rule(new)


def backtest_candidate(policy: Policy, rule: Rule) -> Policy:
    """The policy a backtest weighs against the one in force: the edited rule as it would
    be if promoted (a draft or shadow rule runs live), paused or archived as it says."""
    status = "live" if rule.status in ("draft", "shadow", "live") else rule.status
    return policy.with_rule(replace(rule, status=status))


def _announce(p: Policy) -> str:
    announce = ctx().announce_policy
    if announce is None:
        return ""
    try:
        announce(p)
    except Exception as e:  # stored is what counts: workers read ClickHouse on restart
        return f"; announcing it to the flow failed: {type(e).__name__}: {e}"
    return "; announced to the flow"


def _note(note: str | None) -> str:
    text = (note or "").strip()
    if not text:
        raise ValueError("a note saying why is required")
    return text


def publish_change(form: dict[str, Any], status: str, note: str | None) -> str:
    """Publish the edited rule at ``status`` as a new policy version (admins, with a
    note); the message says what happened or why not."""
    actor = require("admin")
    text = _note(note)
    if status not in ACTIONS:
        raise ValueError(f"unknown status {status!r}")
    base = policy_in_force()
    rule, problems = rule_from_form(form, base.rule(str(form.get("id") or "").strip()))
    if rule is None:
        raise PolicyError(problems)
    new = changed_policy(base, rule, status)
    if new is None:
        return f"Nothing to publish: {rule.id} is already {status} as it stands."
    stored = store_rules.publish_policy(ctx().store, new, author=actor.name, note=text, base=base)
    return f"Published v{stored.version}: {rule.id} {ACTIONS[status]}{_announce(stored)}."


def rollback(version: int | None, note: str | None) -> str:
    """Publish an older version's rules again as a new version (admins, with a note)."""
    actor = require("admin")
    text = _note(note)
    if version is None:
        raise ValueError("select a version in the history first")
    stored = store_rules.rollback_policy(ctx().store, int(version), actor.name, text)
    return f"Published v{stored.version}: rolled back to v{version}{_announce(stored)}."
