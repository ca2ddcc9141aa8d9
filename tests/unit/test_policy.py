"""Rules as data: the language's checks, the built-in policy's equality with the
hand-written rules it replaced, effects, shadow rules, and run-time fault isolation."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.unit.reference_rules as reference
from dataflows.detection.policy import activate, blocks_alone, decide, default_active, run_rules
from dataflows.detection.scoring import new_shard, score_batch
from dataflows.detection.state import Features
from schemas.rules import (
    FEATURES,
    Case,
    Policy,
    PolicyError,
    Rule,
    check_policy,
    compile_columns,
    compile_rule,
    decode_policy,
    default_policy,
    encode_policy,
    policy_diff,
)
from schemas.scored import Reason
from schemas.settings import load_settings
from schemas.transaction import Transaction

S = load_settings()
DEFAULT = default_policy(S)
TXN = Transaction(
    "t1",
    datetime(2026, 1, 1, 12, tzinfo=UTC),
    "u1",
    "c1",
    "m1",
    "electronics",
    120.0,
    "USD",
    48.85,
    2.35,
    "FR",
    "ecom",
    "d1",
    None,
)


def rule(when: str, contribution: str = "0.4", detail: str = "hit", **kw: Any) -> Rule:
    return Rule(kw.pop("id", "r1"), "R", (Case("True", contribution, detail),), when, **kw)


def problems(r: Rule, params: dict | None = None) -> list[str]:
    return [str(p) for p in check_policy(Policy(1, (r,), params=params or {}))]


# --- validation -----------------------------------------------------------------------

REFUSED = [
    ("amount_usd >", "when col 13: syntax error"),
    ("amount_ud > 10", "unknown feature or parameter 'amount_ud' (did you mean 'amount_usd'?)"),
    ("amount_usd", "when must be bool, got float"),
    ("amount_usd > 'x'", "cannot compare float with str"),
    ("new_country + 1 > 0", "arithmetic operand must be int or float, got bool"),
    ("amount_usd.__class__ is None", "Attribute not allowed"),
    ("__import__('os') is None", "only min(), max(), abs(), round() and log10() may be called"),
    ("amount_usd ** 2 > 1", "operator not allowed"),
    ("(lambda: 1)() == 1", "only min(), max(), abs(), round() and log10() may be called"),
    ("[x for x in 'ab'] == 1", "ListComp not allowed"),
    ("country in countries", "'in' takes a non-empty tuple of constants"),
    ("country in ('FR', 2)", "int constant in a set tested with a str"),
    ("new_device > False", "booleans compare only with == and !="),
    ("amount_usd > 1e300", "out of range"),
    ("a" * 2001, "longer than 2000 characters"),
    ("card_present if new_device else 1", "both branches must have one type"),
]


@pytest.mark.parametrize(("when", "message"), REFUSED)
def test_bad_expressions_are_refused_with_rule_field_and_message(when: str, message: str) -> None:
    got = problems(rule(when))
    assert got and got[0].startswith("rule 'r1' when")
    assert message in got[0]


def test_a_problem_names_its_column() -> None:
    (p,) = check_policy(Policy(1, (rule("amount_usd > 1 and kmprev > 5"),)))
    assert (p.rule, p.field, p.column) == ("r1", "when", 20)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (Case("True", "1.5", "x"), "cases[0].contribution col 1: must be within [0, 1]"),
        (Case("True", "country", "x"), "contribution must be int or float, got str"),
        (Case("True", "0.2", "{amount_usd:02d}"), "format '02d' does not fit a float"),
        (Case("True", "0.2", "{amount_usd"), "unclosed '{'"),
        (Case("True", "0.2", "a } b"), "single '}'"),
        (Case("cnt_1m", "0.2", "x"), "cases[0].when"),
    ],
)
def test_bad_cases_are_refused(case: Case, message: str) -> None:
    got = problems(Rule("r1", "R", (case,)))
    assert any(message in g for g in got), got


def test_everything_wrong_is_reported_at_once() -> None:
    bad = Rule("r1", "R", (Case("nope", "2.0", "{x}"),), "amount_usd")
    fields = {p.field for p in check_policy(Policy(1, (bad, replace(bad, id="r2"))))}
    assert fields == {"when", "cases[0].when", "cases[0].contribution", "cases[0].detail"}


def test_structure_is_refused_naming_the_field() -> None:
    with pytest.raises(PolicyError, match=r"rule 'X' id: must match"):
        decode_policy(b'{"rules": [{"id": "X", "contribution": "0.1"}]}')
    with pytest.raises(PolicyError, match="review_threshold: must be below block_threshold"):
        decode_policy(b'{"rules": [], "review_threshold": 0.9, "block_threshold": 0.8}')
    with pytest.raises(PolicyError, match="effect: must be one of"):
        decode_policy(b'{"rules": [{"id": "ab", "effect": "ban", "contribution": "0.1"}]}')
    with pytest.raises(PolicyError, match=r"params\.amount_usd: not a valid, free parameter"):
        decode_policy(b'{"rules": [], "params": {"amount_usd": 3}}')
    with pytest.raises(PolicyError, match="not JSON"):
        decode_policy(b"{")
    p = Policy(1, (rule("True"), rule("True")))
    assert [x.message for x in check_policy(p)] == ["duplicate rule id"]


def test_every_feature_compiles_and_runs() -> None:
    for name, feat in FEATURES.items():
        expr = {"bool": name, "str": f"{name} == 'x'"}.get(feat.type, f"{name} >= 0")
        c = compile_rule(rule(expr, detail=f"{{{name}}}"), {}, Reason)
        f = _features(hour_local=3)
        c.fn(f, TXN, 1.0, 0.5)  # no exception: every name resolves on the real objects


# --- the built-in policy is the old code ------------------------------------------------


def _features(**over: Any) -> Features:
    base = dict(
        amount_usd=40.0, fx_known=True, history=50, amount_z=0.1, cnt_1m=1, cnt_10m=1,
        cnt_1h=1, cnt_24h=3, sum_1h_usd=40.0, sum_24h_usd=120.0, small_10m=0, km_prev=2.0,
        dt_prev_s=3600.0, speed_kmh=2.0, new_country=False, new_device=False, hour_local=14,
        hour_share=0.12, card_present=True, late=False,
    )  # fmt: skip
    base.update(over)
    return Features(**base)


features = st.builds(
    _features,
    amount_usd=st.floats(0, 20000),
    history=st.integers(0, 60),
    amount_z=st.floats(-5, 40),
    cnt_1m=st.integers(0, 9),
    cnt_10m=st.integers(0, 12),
    cnt_1h=st.integers(0, 30),
    small_10m=st.integers(0, 6),
    km_prev=st.floats(0, 20000),
    dt_prev_s=st.floats(0, 1e6),
    speed_kmh=st.floats(0, 1e5),
    new_country=st.booleans(),
    new_device=st.booleans(),
    hour_local=st.integers(0, 23),
    hour_share=st.floats(0, 1),
    card_present=st.booleans(),
    card_compromised=st.booleans(),
    known_place=st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(f=features, pct=st.floats(0, 1))
def test_builtin_policy_equals_the_hand_written_rules(f: Features, pct: float) -> None:
    p = default_active(S)
    got: list[Reason] = []
    run_rules(p.early, f, TXN, 0.0, 0.0, got, None)
    assert got == reference.evaluate_rules(f, S)  # codes, details and exact floats
    assert blocks_alone(got, p) == (bool(got) and reference.blocks_alone(got, S))
    late: list[Reason] = []
    run_rules(p.late, f, TXN, 0.5, pct, late, None)
    old = reference_anomaly(pct)
    assert late == ([old] if old else [])


def reference_anomaly(pct: float) -> Reason | None:
    """The hand-written anomaly ramp the ``anomaly`` rule replaced."""
    if pct <= S.anomaly_floor:
        return None
    c = S.anomaly_weight * (pct - S.anomaly_floor) / (1.0 - S.anomaly_floor)
    return Reason("anomaly", f"anomaly score above {pct:.1%} of recent traffic", round(c, 4))


def test_default_policy_follows_the_settings_and_round_trips() -> None:
    tuned = default_policy(load_settings(velocity_1m=9, review_threshold=0.4))
    assert tuned.params["velocity_1m"] == 9 and tuned.review_threshold == 0.4
    assert decode_policy(encode_policy(DEFAULT)) == DEFAULT
    assert not check_policy(DEFAULT)


# --- effects, shadow rules, errors ------------------------------------------------------


def _policy(*rules: Rule) -> Any:
    return activate(Policy(7, (*DEFAULT.rules, *rules), params=DEFAULT.params))


@pytest.mark.parametrize(
    ("effect", "over", "decision"),
    [
        ("score", {}, "approve"),
        ("review", {}, "review"),
        ("block", {}, "block"),
        ("exempt", {"new_country": True, "new_device": True, "hour_share": 0.0}, "approve"),
        ("exempt", {"km_prev": 5000.0, "speed_kmh": 9000.0}, "block"),  # exempt never unblocks
    ],
)
def test_effects(effect: str, over: dict, decision: str) -> None:
    p = _policy(rule("channel == 'ecom'", "0.0", "ecom", id="vip", effect=effect))
    got: list[Reason] = []
    run_rules(p.early, _features(**over), TXN, 0.0, 0.0, got, None)
    risk = 1.0 - math.prod(1.0 - r.contribution for r in got)
    assert decide(round(risk, 6), got, p) == decision


def test_a_block_rule_compromises_the_card() -> None:
    p = _policy(rule("channel == 'ecom'", "0.0", id="blk", effect="block"))
    got: list[Reason] = []
    run_rules(p.early, _features(), TXN, 0.0, 0.0, got, None)
    assert blocks_alone(got, p) and not blocks_alone(got, default_active(S))


def _score(p: Any, n: int = 30) -> list[Any]:
    items = [
        (replace(TXN, txn_id=f"t{i}", ts=TXN.ts.replace(minute=i), amount=10.0 + i), None, None)
        for i in range(n)
    ]
    return score_batch(new_shard(S), items, S, TXN.ts, p)


def test_shadow_hits_are_kept_beside_the_row_and_decide_nothing() -> None:
    shadow = rule("amount > 25", "0.99", "{amount:.0f} > 25", id="big", status="shadow")
    with_shadow, without = _score(_policy(shadow)), _score(_policy())
    assert [r.decision for r in with_shadow] == [r.decision for r in without]
    assert [r.risk_score for r in with_shadow] == [r.risk_score for r in without]
    hits = [r.shadow for r in with_shadow]
    assert hits[:16] == [()] * 16 and hits[16] == (Reason("big", "26 > 25", 0.99),)
    assert all(r.policy_version == 7 for r in with_shadow)


def test_a_rule_failing_on_one_event_is_skipped_for_that_event_only() -> None:
    bad = rule("100 / (amount - 15.0) > 0", "0.7", "div", id="div")
    rows = _score(_policy(bad))
    assert all(r.__class__.__name__ == "ScoredTransaction" for r in rows)  # nothing dead
    assert rows[5].rule_errors == ("div",) and "div" not in {x.code for x in rows[5].reasons}
    assert all(r.rule_errors == () for r in rows if r.txn.txn_id != "t5")
    assert all("div" in {x.code for x in r.reasons} for r in rows[6:])
    out_of_range = rule("True", "amount / 10", "x", id="oor")  # 1.0 at amount 10, then > 1
    rows = _score(_policy(out_of_range))
    assert rows[0].rule_errors == () and "oor" in {x.code for x in rows[0].reasons}
    assert {r.rule_errors for r in rows[1:]} == {("oor",)}


def test_only_live_and_shadow_rules_run() -> None:
    for status in ("draft", "paused", "archived"):
        p = _policy(rule("True", "0.9", "x", id="off", status=status))
        assert "off" not in {rid for _, rid in p.early + p.late + p.shadow_early}


def test_diff_shows_what_changed() -> None:
    new = replace(DEFAULT, version=1).with_rule(rule("amount_usd > 1000", id="big"))
    d = policy_diff(DEFAULT, new)
    assert '+      "id": "big",' in d and d.startswith("--- v0\n+++ v1")


# --- the vectorised backend agrees with the flow's --------------------------------------


@settings(max_examples=25, deadline=None)
@given(fs=st.lists(features, min_size=1, max_size=40), pct=st.floats(0, 1))
def test_columns_equal_scalar(fs: list[Features], pct: float) -> None:
    extra = (
        rule(
            "country in ('FR', 'DE') and amount_usd > 500", "min(0.9, amount_usd / 9000)", id="x1"
        ),
        rule("(cnt_1h if card_present else cnt_10m) >= 3 or not new_device", "0.2", id="x2"),
        rule("True", "abs(amount_z) / 50 if amount_z < 50 else 1.0", id="x3"),
    )
    for r in (*DEFAULT.rules, *extra):
        scalar = compile_rule(r, DEFAULT.params, Reason)
        cols = compile_columns(r, DEFAULT.params)
        c: dict[str, Any] = {
            k: np.array([getattr(f, k) for f in fs]) for k in FEATURES if FEATURES[k].source == "f"
        }
        c |= {"country": np.array(["FR"] * len(fs)), "hst_pct": np.full(len(fs), pct)}
        hit, contrib = cols.fn(c, len(fs))
        txn = SimpleNamespace(country="FR")
        for i, f in enumerate(fs):
            try:
                want = scalar.fn(f, txn, 0.0, pct)
            except (ValueError, ZeroDivisionError):
                want = None
            assert bool(hit[i]) == (want is not None), (r.id, f)
            if want is not None:
                assert contrib[i] == pytest.approx(want.contribution, abs=1e-12)


def test_the_readme_example_rule_is_valid_and_fires() -> None:
    text = (Path(__file__).parents[2] / "README.md").read_text()
    block = text.split("### Rules as data", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    example = decode_policy(orjson.dumps({"rules": [orjson.loads(block)]}))
    assert not check_policy(example)
    c = compile_rule(replace(example.rules[0], status="live"), {}, Reason)
    txn = replace(TXN, merchant_category="digital_goods")
    hit = c.fn(_features(card_present=False, new_device=True, amount_usd=500.0), txn, 0.0, 0.0)
    assert hit == Reason(
        "digital_goods_new_device", "$500.00 of digital goods from an unseen device", 0.65
    )


def test_feedback_steps_decide_with_the_policy_that_scored_the_row() -> None:
    from dataflows.detection.merchants import rescore

    blocking = _policy(rule("True", "0.0", "x", id="blk", effect="block"))  # v7
    row = _score(blocking, 1)[0]
    assert row.decision == "block" and row.policy_version == 7
    newer = activate(Policy(8, DEFAULT.rules, params=DEFAULT.params))
    assert rescore(row, None, {}, S, policy=newer).decision == "block"  # v7's effects
    row0 = replace(row, policy_version=0, reasons=())
    assert rescore(row0, None, {}, S, policy=newer).decision == "approve"
