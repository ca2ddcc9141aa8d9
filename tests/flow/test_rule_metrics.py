"""The flow's rule metrics: every scored row's rule errors and shadow hits are counted
by rule id (``fraud_rule_errors_total``, ``fraud_shadow_hits_total``), beside the row's
own ``rule_errors`` and ``shadow``; neither changes the decision."""

from __future__ import annotations

from dataclasses import replace

from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY

from dataflows.detection.policy import ActivePolicy, activate
from dataflows.flow import build_flow
from schemas.rules import Case, Rule, default_policy
from schemas.scored import ScoredTransaction
from schemas.settings import Settings
from tests.conftest import fixed_clock, txn_bytes


def _count(name: str, rule: str) -> float:
    return REGISTRY.get_sample_value(name, {"rule": rule}) or 0.0


def _run(s: Settings, events: list[bytes], policy: ActivePolicy) -> list[ScoredTransaction]:
    rows: list[ScoredTransaction] = []
    flow = build_flow(
        s,
        TestingSource(events, batch_size=3),
        TestingSink([]),
        TestingSink(rows),
        TestingSink([]),
        clock=fixed_clock,
        policy=lambda: policy,
    )
    run_main(flow)
    return sorted(rows, key=lambda r: r.txn.ts)


def test_rule_errors_and_shadow_hits_are_counted_per_rule(settings: Settings) -> None:
    broken = Rule(
        "broken_ratio",
        "Broken ratio",
        (Case("True", "min(1.0, 1.0 / (amount_usd - amount_usd))", "never"),),
        when="amount_usd > 50",
    )
    shadow = Rule(
        "shadow_big",
        "Shadow big",
        (Case("True", "0.9", "would flag ${amount_usd:.0f}"),),
        when="amount_usd > 45",
        status="shadow",
    )
    policy = activate(
        replace(default_policy(settings).with_rule(broken).with_rule(shadow), version=4)
    )
    events = [txn_bytes(i, txn_id=f"t{i}", amount=40.0 + 2 * i) for i in range(10)]
    errors0 = _count("fraud_rule_errors_total", "broken_ratio")
    hits0 = _count("fraud_shadow_hits_total", "shadow_big")
    rows = _run(settings, events, policy)
    builtin = _run(settings, events, activate(default_policy(settings)))
    assert len(rows) == 10
    failed = {r.txn.txn_id for r in rows if r.rule_errors == ("broken_ratio",)}
    shadowed = {r.txn.txn_id for r in rows if [h.code for h in r.shadow] == ["shadow_big"]}
    assert failed == {f"t{i}" for i in range(6, 10)}, "amount 52..58: the rule raised"
    assert shadowed == {f"t{i}" for i in range(3, 10)}, "amount 46..58"
    assert {r.policy_version for r in rows} == {4}
    assert [(r.risk_score, r.decision, r.reasons) for r in rows] == [
        (r.risk_score, r.decision, r.reasons) for r in builtin
    ], "neither decides"
    assert _count("fraud_rule_errors_total", "broken_ratio") - errors0 == 4
    assert _count("fraud_shadow_hits_total", "shadow_big") - hits0 == 7
