"""Detection quality on a seeded generator stream through the real flow.

Bars (raise them as detection improves; never lower them silently):
* every rule-detectable pattern: incident recall >= 0.9;
* single-transaction patterns and card testing: transaction recall >= 0.9;
* legitimate traffic flagged <= 1 %.
"""

from __future__ import annotations

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from dataflows.evaluation.patterns import format_report, pattern_report
from dataflows.flow import build_flow
from generators.stream import event_stream
from generators.synth import RULE_PATTERNS, GeneratorConfig
from schemas.settings import load_settings

N_EVENTS = 60_000


@pytest.fixture(scope="module")
def report():
    cfg = GeneratorConfig(seed=11, users=4000, fraud_rate=0.03)
    events = [v for _, v in event_stream(cfg, N_EVENTS)]
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
    stats = pattern_report(rows)
    print("\n" + format_report(stats))
    return stats


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
    assert legit.txn_recall <= 0.01, legit


def test_anomaly_model_catches_some_of_the_subtle_pattern(report) -> None:
    # No single rule fires on stealth_ecom; only the model's percentile can lift it.
    assert report["stealth_ecom"].incident_recall >= 0.5, report["stealth_ecom"]
