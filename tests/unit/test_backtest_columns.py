"""The backtest's vectorised evaluation agrees with the flow's scalar code on random rows:
every rule's hits (equal) and contributions (within 1e-12), the noisy-OR (bitwise) and
the decision with effects (equal)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from clickhouse.backtest import decide_columns, evaluate_policy, noisy_or
from dataflows.detection.policy import activate, decide, run_rules
from dataflows.detection.scoring import combine
from schemas.rules import FEATURES, Case, Policy, Rule, compile_columns, compile_rule
from schemas.rules import default_policy as builtin
from schemas.scored import Reason
from schemas.settings import load_settings

N = 4000
S = load_settings()
DEFAULT = builtin(S)


def rule(rid: str, when: str, contribution: str, **kw: Any) -> Rule:
    return Rule(rid, rid, (Case("True", contribution, ""),), when, **kw)


EXTRA = (
    rule("strs", "country in ('FR', 'DE') and channel != 'atm'", "min(0.9, amount_usd / 9000)"),
    rule("ifexp", "(cnt_1h if card_present else cnt_10m) >= 3 or not new_device", "0.2"),
    rule("arith", "cnt_24h // 4 % 3 == 1 and 2 < hour_local <= 20", "round(hour_share, 2)"),
    rule("absmax", "abs(amount_z) > 1.5", "max(0.1, min(1.0, abs(amount_z) / 10))"),
    rule("dev", "device_id == '' and not has_location", "0.35"),
    rule("late", "late or sum_24h_usd > 3 * sum_1h_usd", "round(0.123456789, 4)"),
    rule("merch", "merchant_category not in ('grocery',) and amount > 100", "0.15"),
    rule("ratio", "cnt_1h > 0 and sum_1h_usd / cnt_1h > 200", "0.4"),
    rule("hst", "hst_raw > 0.5 and hst_pct > 0.9", "hst_pct - 0.9"),
    rule("log", "amount_rarity < 0.5", "round(min(1.0, -log10(amount_rarity) / 5), 4)"),
    rule("spend", "cnt_30d > 3 and amount_usd > 4 * avg_usd_30d", "min(0.9, cnt_7d / 40)"),
)


def random_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """Columns over every stored feature, with ranges that make each rule both hit and
    miss (the default thresholds: 5 per minute, 3 small charges, 900 km/h, ...)."""
    g = np.random.default_rng(seed)
    ints = {
        "history": 60,
        "cnt_1m": 10,
        "cnt_10m": 20,
        "cnt_1h": 40,
        "cnt_24h": 80,
        "small_10m": 8,
        "hour_local": 24,
    }
    c: dict[str, np.ndarray] = {k: g.integers(0, hi, n) for k, hi in ints.items()}
    c["amount_usd"] = np.round(np.exp(g.normal(4.0, 1.5, n)), 2)
    c["amount"] = c["amount_usd"] * 0.9
    c["amount_z"] = g.normal(0, 3, n)
    c["sum_1h_usd"] = c["amount_usd"] * g.integers(1, 5, n)
    c["sum_24h_usd"] = c["sum_1h_usd"] * g.uniform(1, 6, n)
    c["km_prev"] = g.uniform(0, 6000, n)
    c["dt_prev_s"] = g.uniform(1, 20000, n)
    c["speed_kmh"] = c["km_prev"] / c["dt_prev_s"] * 3600
    c["hour_share"] = g.uniform(0, 0.3, n)
    c["hst_pct"] = g.uniform(0, 1, n)
    c["hst_raw"] = g.uniform(0, 1, n)
    c["cnt_7d"] = g.uniform(0, 30, n)
    c["cnt_30d"] = c["cnt_7d"] * g.uniform(1, 5, n)
    c["avg_usd_7d"] = np.where(c["cnt_7d"] < 1, 0.0, np.exp(g.normal(4.0, 1.0, n)))
    c["avg_usd_30d"] = np.where(c["cnt_30d"] < 1, 0.0, np.exp(g.normal(4.0, 1.0, n)))
    c["cal_weight"] = np.where(g.random(n) < 0.5, 1.0, np.round(g.uniform(0, 1, n), 4))
    c["amount_rarity"] = np.where(g.random(n) < 0.02, 0.0, 10 ** g.uniform(-6, 0, n))
    for b in ("new_country", "new_device", "card_present", "late", "card_compromised"):
        c[b] = g.random(n) < 0.3
    c["known_place"] = g.random(n) < 0.5
    c["has_location"] = g.random(n) < 0.8
    c["fx_known"] = np.ones(n, dtype=bool)
    pick = lambda *v: np.array(v, dtype=object)[g.integers(0, len(v), n)]  # noqa: E731
    c["country"] = pick("US", "FR", "DE", "GB")
    c["channel"] = np.where(c["card_present"], pick("pos", "atm"), "ecom").astype(object)
    c["currency"] = pick("USD", "EUR")
    c["merchant_category"] = pick("grocery", "travel", "digital_goods")
    c["merchant_id"] = pick("m1", "m2")
    c["card_id"] = pick("c1", "c2")
    c["user_id"] = pick("u1", "u2")
    c["device_id"] = pick("", "d1", "d2")
    return c


def scalar_row(c: dict[str, np.ndarray], i: int) -> tuple[Any, Any, float, float]:
    """The flow's view of row ``i``: Features-like ``f``, Transaction-like ``t``."""
    val = {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in c.items()}
    f = SimpleNamespace(**{k: val[k] for k, ft in FEATURES.items() if ft.source == "f"})
    t = SimpleNamespace(**{k: val[k] for k, ft in FEATURES.items() if ft.source == "t"})
    t.device_id = val["device_id"] or None
    t.lat = 1.0 if val["has_location"] else None
    return f, t, val["hst_raw"], val["hst_pct"]


@pytest.mark.parametrize("seed", [1, 2])
def test_columns_agree_with_the_scalar_rule(seed: int) -> None:
    c = random_rows(N, seed)
    rows = [scalar_row(c, i) for i in range(N)]
    for r in (*DEFAULT.rules, *EXTRA):
        scalar = compile_rule(r, DEFAULT.params, Reason).fn
        hit, contrib = compile_columns(r, DEFAULT.params).fn(c, N)
        want = np.zeros(N, dtype=bool)
        wc = np.zeros(N)
        for i, (f, t, raw, pct) in enumerate(rows):
            try:
                x = scalar(f, t, raw, pct)
            except (ArithmeticError, ValueError):
                x = None  # the flow skips the rule for this event
            if x is not None:
                want[i], wc[i] = True, x.contribution
        assert 0 < want.sum() < N, f"{r.id}: the rows must make it both hit and miss"
        assert np.array_equal(hit, want), (r.id, np.flatnonzero(hit != want)[:5])
        assert np.abs(contrib - wc).max() <= 1e-12, r.id


def test_division_by_zero_does_not_hit_like_the_flow() -> None:
    r = rule("per_txn", "sum_1h_usd / cnt_1h > 200", "0.4")
    c = {"sum_1h_usd": np.array([500.0]), "cnt_1h": np.array([0])}
    hit, _ = compile_columns(r, {}).fn(c, 1)
    f = SimpleNamespace(sum_1h_usd=500.0, cnt_1h=0)
    with pytest.raises(ZeroDivisionError):  # the flow: skipped, counted in rule_errors
        compile_rule(r, {}, Reason).fn(f, None, 0.0, 0.0)
    assert not hit[0]


def test_not_of_a_parameter_comparison_is_false_like_the_flow() -> None:
    r = rule("neg", "cnt_1m > 3 or not (min_history < 10)", "0.5")
    hit, _ = compile_columns(r, {"min_history": 5}).fn({"cnt_1m": np.array([1, 5])}, 2)
    fn = compile_rule(r, {"min_history": 5}, Reason).fn
    assert [fn(SimpleNamespace(cnt_1m=c), None, 0.0, 0.0) is not None for c in (1, 5)] == [
        False,
        True,
    ]
    assert hit.tolist() == [False, True]


def test_noisy_or_is_the_flows_combine_bitwise() -> None:
    g = np.random.default_rng(5)
    n, k = 20000, 6
    grid = np.array([0.0, 0.1, 0.2, 0.25, 0.3, 0.45, 0.5, 0.55, 0.6, 0.85, 0.9])
    c = np.where(g.random((k, n)) < 0.35, g.choice(grid, (k, n)), 0.0)
    c[:2] = np.where(g.random((2, n)) < 0.5, g.uniform(0, 1, (2, n)), c[:2])
    got = noisy_or(list(c), n)
    for i in range(n):
        reasons = sorted(
            (Reason("r", "", float(x)) for x in c[:, i] if x), key=lambda r: -r.contribution
        )
        assert got[i] == combine(reasons), (i, c[:, i])
    assert noisy_or([], 3).tolist() == [0.0, 0.0, 0.0]


def test_decisions_equal_the_flows_decide() -> None:
    p = Policy(
        1,
        (
            rule("sc", "True", "0.1"),
            rule("rv", "True", "0.1", effect="review"),
            rule("bl", "True", "0.1", effect="block"),
            rule("ex", "True", "0.1", effect="exempt"),
        ),
        0.5,
        0.8,
    )
    active = activate(p)
    g = np.random.default_rng(9)
    n = 5000
    risk = g.choice([0.0, 0.3, 0.4999999, 0.5, 0.6, 0.7999999, 0.8, 0.95], n)
    hits = {e: g.random(n) < 0.2 for e in ("rv", "bl", "ex")}
    forced = {"review": hits["rv"], "block": hits["bl"], "exempt": hits["ex"]}
    got = decide_columns(risk, 0.5, 0.8, forced)
    names = ("approve", "review", "block")
    for i in range(n):
        reasons = [
            Reason(code, "", 0.1)
            for code in ("sc", "rv", "bl", "ex")
            if code == "sc" or hits[code][i]
        ]
        assert names[got[i]] == decide(float(risk[i]), reasons, active), i


def test_a_policy_over_columns_decides_as_the_flow() -> None:
    """The default policy plus effects over random rows: the risk from the scalar hits
    combined as the flow does, and the flow's decide, equal the vectorised ones."""
    p = DEFAULT.with_rule(
        rule("big_new", "amount_usd > 2000 and new_device", "0.2", effect="block")
    )
    p = p.with_rule(rule("homely", "known_place and history > 30", "0.0", effect="exempt"))
    p = p.with_rule(rule("peek", "cnt_1m > 3", "0.3", status="shadow"))
    c = random_rows(N, 3)
    fb = [np.where(np.arange(N) % 7 == 0, 0.4, 0.0)]
    run = evaluate_policy(p, c, fb, N)
    active = activate(p)
    assert set(run.hits) == {r.id for r in p.rules}
    assert run.risk is not None
    flagged = 0
    for i in range(N):
        f, t, raw, pct = scalar_row(c, i)
        reasons: list[Reason] = []
        run_rules((*active.early, *active.late), f, t, raw, pct, reasons, None)  # as the flow
        w = f.cal_weight  # as the flow weighed the calibrated hits of this row
        reasons = [
            Reason(r.code, r.detail, round(r.contribution * w, 4))
            if r.code in active.calibrated
            else r
            for r in reasons
        ]
        if fb[0][i]:
            reasons.append(Reason("compromised_merchant", "", 0.4))
        reasons.sort(key=lambda r: -r.contribution)
        risk = combine(reasons)
        assert run.risk[i] == risk, i
        d = decide(risk, reasons, active)
        assert ("approve", "review", "block")[run.decision[i]] == d, i
        flagged += d != "approve"
    assert 0 < flagged < N
