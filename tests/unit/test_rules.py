"""Each rule of the built-in policy on a table of feature cases: fires or not, and with
which reason (the policy is data; these are the behaviours it must keep)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dataflows.detection.policy import blocks_alone, default_active, run_rules
from dataflows.detection.policy import decide as decide_with
from dataflows.detection.scoring import combine
from dataflows.detection.state import Features
from schemas.scored import Reason
from schemas.settings import Settings, load_settings
from schemas.vocab import RULE_CODES

S = load_settings()
P = default_active(S)


def evaluate_rules(f: Features, s: Settings) -> list[Reason]:
    out: list[Reason] = []
    run_rules(default_active(s).early, f, None, 0.0, 0.0, out, None)
    return out


def anomaly_reason(pct: float, s: Settings) -> Reason | None:
    out: list[Reason] = []
    run_rules(default_active(s).late, BASE, None, 0.0, pct, out, None)
    return out[0] if out else None


def decide(risk: float, s: Settings) -> str:
    return decide_with(risk, [], default_active(s))


BASE = Features(
    amount_usd=40.0,
    fx_known=True,
    history=50,
    amount_z=0.1,
    cnt_1m=1,
    cnt_10m=1,
    cnt_1h=1,
    cnt_24h=3,
    sum_1h_usd=40.0,
    sum_24h_usd=120.0,
    small_10m=0,
    km_prev=2.0,
    dt_prev_s=3600.0,
    speed_kmh=2.0,
    new_country=False,
    new_device=False,
    hour_local=14,
    hour_share=0.12,
    card_present=True,
    late=False,
)

CASES = [
    ({}, []),
    ({"km_prev": 5570.0, "dt_prev_s": 1800.0, "speed_kmh": 11140.0}, ["impossible_travel"]),
    ({"km_prev": 100.0, "dt_prev_s": 60.0, "speed_kmh": 6000.0}, []),  # too short a hop
    ({"km_prev": 800.0, "dt_prev_s": 7200.0, "speed_kmh": 400.0}, []),  # a drive/flight
    ({"small_10m": 3, "amount_usd": 1.5}, ["card_testing"]),
    ({"small_10m": 2, "amount_usd": 1.5}, []),
    ({"small_10m": 3, "amount_usd": 60.0}, []),  # the purchase itself is not small
    ({"cnt_1m": 6, "cnt_10m": 6}, ["velocity"]),
    ({"cnt_10m": 5}, ["velocity"]),
    ({"cnt_1h": 16}, ["velocity"]),
    ({"cnt_1h": 15}, []),
    ({"amount_usd": 3500.0}, ["high_amount"]),
    ({"amount_z": 4.0}, ["amount_zscore"]),
    ({"amount_z": 4.0, "history": 4}, []),  # not enough history for a profile
    ({"new_country": True}, ["new_country"]),
    ({"new_device": True}, ["new_device"]),
    ({"hour_share": 0.01}, ["unusual_hour"]),
    ({"hour_share": 0.01, "history": 10}, []),
    ({"km_prev": 5570.0, "speed_kmh": 1240.0, "known_place": True}, []),  # back home
    ({"card_compromised": True}, ["compromised_card"]),
    ({"card_compromised": True, "card_present": False, "amount_usd": 1.5}, ["compromised_card"]),
    (
        {"new_country": True, "new_device": True, "hour_share": 0.0, "amount_z": 4.0},
        ["amount_zscore", "new_country", "new_device", "unusual_hour"],
    ),
]


@pytest.mark.parametrize(("over", "codes"), CASES)
def test_rules_table(over: dict, codes: list[str]) -> None:
    reasons = evaluate_rules(replace(BASE, **over), S)
    assert [r.code for r in reasons] == codes
    for r in reasons:
        assert 0 < r.contribution <= 1 and r.detail and r.code in RULE_CODES


def test_strong_rules_decide_alone_weak_ones_need_company() -> None:
    travel = evaluate_rules(replace(BASE, km_prev=5000.0, speed_kmh=9000.0), S)
    assert decide(combine(travel), S) == "block"
    assert decide(combine(evaluate_rules(replace(BASE, new_country=True), S)), S) == "approve"
    ato = replace(BASE, new_country=True, new_device=True, hour_share=0.0, amount_z=4.0)
    assert decide(combine(evaluate_rules(ato, S)), S) in ("review", "block")


def test_combine_is_noisy_or() -> None:
    assert combine([]) == 0.0
    assert combine([Reason("a", "", 0.5), Reason("b", "", 0.5)]) == pytest.approx(0.75)
    assert combine([Reason("a", "", 1.0), Reason("b", "", 0.3)]) == 1.0


@pytest.mark.parametrize(
    ("pct", "expected"), [(0.5, None), (0.95, None), (0.975, 0.225), (1.0, 0.45)]
)
def test_anomaly_ramp(pct: float, expected: float | None) -> None:
    r = anomaly_reason(pct, S)
    assert (r.contribution if r else None) == (pytest.approx(expected) if expected else None)


@pytest.mark.parametrize(
    ("risk", "d"),
    [(0.0, "approve"), (0.49, "approve"), (0.5, "review"), (0.79, "review"), (0.8, "block")],
)
def test_decide_thresholds(risk: float, d: str) -> None:
    assert decide(risk, S) == d


@pytest.mark.parametrize(
    ("over", "d"),
    [
        ({"card_present": False, "amount_usd": 400.0}, "block"),  # the cash-out
        ({"card_present": False, "amount_usd": 5.0}, "review"),  # below the small amount
        ({}, "review"),  # card-present: maybe the holder
        ({"card_present": False, "amount_usd": 400.0, "known_place": True}, "approve"),
    ],
)
def test_compromised_card_strength(over: dict, d: str) -> None:
    f = replace(BASE, card_compromised=True, **over)
    assert decide(combine(evaluate_rules(f, S)), S) == d


def test_only_independent_evidence_compromises_a_card() -> None:
    hit = evaluate_rules(
        replace(BASE, card_compromised=True, card_present=False, amount_usd=99.0), S
    )
    assert decide(combine(hit), S) == "block" and not blocks_alone(hit, P)
    assert blocks_alone(evaluate_rules(replace(BASE, small_10m=3, amount_usd=1.0), S), P)
