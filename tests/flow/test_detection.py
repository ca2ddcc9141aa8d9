"""Detection quality on a seeded generator stream through the real flow.

Bars (raise them as detection improves; never lower them silently):
* every rule-detectable pattern: incident recall >= 0.9;
* single-transaction patterns and card testing: transaction recall >= 0.9;
* legitimate traffic flagged <= 0.3 % (was <= 1 %; 0.26 % before the label-free
  calibration of rules-v3, 0.19 % after);
* stealth_ecom incident recall >= 0.25, lowered from 0.5 on purpose (rules-v3): only a
  new device plus the anomaly model's top 5 % could catch it, and that same pair was the
  largest source of false positives (38 of 149 legitimate rows flagged); calibrated by
  how often the pair occurs, it no longer reviews alone (0.59 -> 0.28 on this stream,
  0.53 -> 0.32 on the scenario stream; legitimate flagged 0.26 % -> 0.19 % here).  The
  feedback loop's learner is what catches it once verdicts arrive.

Scenario stream (every pattern, issue 19), sorted and shuffled within ±2 min:
* a cash-out after card testing is blocked in >= 95 % of episodes, 1-8 min after the
  burst and 1-36 h after it (before the compromised-card state: 78 % and 9 %);
* the genuine holder back home after a cloned card's purchase is never blocked, and
  never called impossible travel (before established places: 8 % blocked);
* card-not-present purchases without a location: incident recall >= 0.9, no distance;
* shuffled arrival keeps card-testing transaction recall within 0.01 of the sorted
  stream's and blocks the same cash-outs (before order-independent windows: 0.934 ->
  0.869 on card testing, 0.921 -> 0.846 on the cash-out bursts).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.evaluation.patterns import format_report, pattern_report
from dataflows.flow import build_flow
from generators.stream import event_stream
from generators.synth import PATTERNS, RULE_PATTERNS, GeneratorConfig
from schemas.scored import ScoredTransaction
from schemas.settings import load_settings

N_EVENTS = 60_000
SCENARIOS = GeneratorConfig(seed=11, users=4000, fraud_rate=0.05, patterns=PATTERNS)


def _score(cfg: GeneratorConfig, jitter_s: float = 0.0) -> list[ScoredTransaction]:
    events = [v for _, v in event_stream(cfg, N_EVENTS, jitter_s=jitter_s)]
    rows: list = []
    flow = build_flow(
        load_settings(),
        TestingSource(events, batch_size=1000),
        TestingSink([]),
        TestingSink(rows),
        TestingSink([]),
    )
    run_main(flow)
    assert len(rows) == N_EVENTS
    return rows


@pytest.fixture(scope="module")
def report():
    stats = pattern_report(_score(GeneratorConfig(seed=11, users=4000, fraud_rate=0.03)))
    print("\n" + format_report(stats))
    return stats


@pytest.fixture(scope="module")
def scenarios() -> dict[str, list[ScoredTransaction]]:
    out = {"sorted": _score(SCENARIOS), "shuffled": _score(SCENARIOS, jitter_s=120.0)}
    print("\n" + format_report(pattern_report(out["sorted"])))
    return out


def _incidents(rows: list[ScoredTransaction], pattern: str) -> list[list[ScoredTransaction]]:
    """Each user's rows labelled ``pattern`` (fraudulent or not), in event-time order."""
    by_user: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        if r.label is not None and r.label.pattern == pattern:
            by_user[r.txn.user_id].append(r)
    return [sorted(v, key=lambda r: r.txn.ts) for v in by_user.values()]


def _cashouts(rows: list[ScoredTransaction]) -> tuple[list[Any], list[Any]]:
    """(cash-outs within 10 min of the burst, cash-outs later)."""
    soon, later = [], []
    for evs in _incidents(rows, "card_testing_cashout"):
        for prev, r in pairwise(evs):
            if r.features["amount_usd"] >= 5.0:
                gap = (r.txn.ts - prev.txn.ts).total_seconds()
                (soon if gap <= 600 else later).append(r)
    return soon, later


def _blocked(rs: list[ScoredTransaction]) -> float:
    return sum(r.decision == "block" for r in rs) / len(rs)


@pytest.mark.parametrize("pattern", RULE_PATTERNS)
def test_rule_patterns_are_caught(report, pattern: str) -> None:
    s = report[pattern]
    assert s.incidents >= 10, f"too few {pattern} incidents to measure"
    assert s.incident_recall >= 0.9, s


@pytest.mark.parametrize(
    "pattern", ["impossible_travel", "account_takeover", "amount_spike", "card_testing"]
)
def test_transaction_recall(report, pattern: str) -> None:
    assert report[pattern].txn_recall >= 0.9, report[pattern]


def test_legitimate_traffic_rarely_flagged(report) -> None:
    legit = report["legit"]
    assert legit.transactions > 50_000
    assert legit.txn_recall <= 0.003, legit


def test_anomaly_model_catches_some_of_the_subtle_pattern(report) -> None:
    # No single rule fires on stealth_ecom; only weak signals together can lift it (see
    # the module docstring for why this bar went from 0.5 to 0.25).
    assert report["stealth_ecom"].incident_recall >= 0.25, report["stealth_ecom"]


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_cash_out_after_card_testing_is_blocked(scenarios, order: str) -> None:
    soon, later = _cashouts(scenarios[order])
    assert len(soon) >= 10 and len(later) >= 10
    assert _blocked(soon) >= 0.95 and _blocked(later) >= 0.95, (_blocked(soon), _blocked(later))


def test_holder_back_home_is_not_blocked(scenarios) -> None:
    back = []
    for evs in _incidents(scenarios["sorted"], "holder_returns_home"):
        frauds = [i for i, r in enumerate(evs) if r.label.is_fraud]
        back += [r for r in evs[frauds[0] + 1 :] if not r.label.is_fraud][:1] if frauds else []
    assert len(back) >= 20
    assert not [r for r in back if r.decision == "block"]
    assert not [r for r in back if "impossible_travel" in {x.code for x in r.reasons}]


def test_card_not_present_without_location(scenarios) -> None:
    rows = [r for r in scenarios["sorted"] if r.txn.lat is None]
    assert rows and all(r.txn.schema_version == 2 for r in rows)
    assert all(r.features["km_prev"] == 0.0 for r in rows)  # no distance invented
    assert pattern_report(scenarios["sorted"])["cnp_no_location"].incident_recall >= 0.9


@pytest.mark.parametrize("pattern", ["card_testing", "card_testing_cashout"])
def test_arrival_order_keeps_card_testing_recall(scenarios, pattern: str) -> None:
    ordered = pattern_report(scenarios["sorted"])[pattern]
    shuffled = pattern_report(scenarios["shuffled"])[pattern]
    assert ordered.txn_recall >= 0.9, ordered
    assert shuffled.txn_recall >= ordered.txn_recall - 0.01, (ordered, shuffled)


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_scenario_stream_keeps_the_bars(scenarios, order: str) -> None:
    stats = pattern_report(scenarios[order])
    for p in RULE_PATTERNS:
        assert stats[p].incident_recall >= 0.9, stats[p]
    assert stats["legit"].txn_recall <= 0.004, stats["legit"]
