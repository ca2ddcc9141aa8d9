"""The Rules page's pure helpers: editor fields ↔ rule, problems as text, the preview on a
stored row, the policy a lifecycle button publishes, and the grid rows."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime

import pandas as pd
import pytest

from dash_app import rulework as rw
from dash_app.views.rules import rule_rows
from schemas.rules import Case, Problem, Rule, default_policy
from schemas.settings import load_settings

POLICY = default_policy(load_settings())
BIG_CNP = {
    "id": "big_cnp",
    "name": "Big card-not-present",
    "description": "",
    "effect": "score",
    "status": "draft",
    "when": "amount_usd > 1000 and not card_present",
    "cases": '[{"contribution": 0.4, "detail": "${amount_usd:,.0f} card-not-present"}]',
}
ROW = {
    "txn_id": "t9",
    "ts": datetime(2026, 3, 2, 13, 5, 7, tzinfo=UTC),
    "user_id": "u1",
    "card_id": "c1",
    "merchant_id": "m1",
    "merchant_category": "electronics",
    "amount": 1400.0,
    "currency": "EUR",
    "lat": None,
    "lon": None,
    "country": "FR",
    "channel": "ecom",
    "device_id": None,
    "amount_usd": 1512.5,
    "late": False,
    "anomaly_raw": 3.5,
    "anomaly_score": 0.97,
    "features": {"cnt_1m": 2.0, "hour_local": 14.0, "new_country": 1.0, "hour_share": 0.25},
}


@pytest.mark.parametrize("rule", POLICY.rules, ids=lambda r: r.id)
def test_every_default_rule_round_trips_through_the_editor(rule: Rule) -> None:
    form = rw.rule_to_form(rule)
    assert rw.rule_from_form(form, rule) == (rule, [])
    assert rw.check_edit(POLICY, rule) == []


@pytest.mark.parametrize(
    ("change", "field", "column", "message"),
    [
        ({"cases": '[{"contribution": 0.4,}]'}, "cases", 23, "not JSON (line 1)"),
        ({"cases": "[]"}, "cases", 0, "must be a non-empty list"),
        ({"effect": "kill"}, "effect", 0, "must be one of score, review, block, exempt"),
        ({"id": "Big CNP"}, "id", 0, "must match"),
        ({"cases": '[{"contribution": ["x"]}]'}, "cases[0].contribution", 0, "must be text"),
    ],
)
def test_malformed_editor_fields_are_refused_naming_the_field(
    change: dict, field: str, column: int, message: str
) -> None:
    rule, problems = rw.rule_from_form({**BIG_CNP, **change})
    assert rule is None
    assert [(p.field, p.column) for p in problems] == [(field, column)]
    assert message in problems[0].message


def test_a_typo_in_a_feature_is_a_problem_with_its_column() -> None:
    rule, problems = rw.rule_from_form({**BIG_CNP, "when": "amount_usd > 1000 and not card_presnt"})
    assert problems == [] and rule is not None
    problems = rw.check_edit(POLICY, rule)
    assert rw.problem_lines(problems) == [
        "big_cnp · when col 27: unknown feature or parameter 'card_presnt' "
        "(did you mean 'card_present'?)"
    ]


def test_sample_inputs_types_features_as_the_language_does() -> None:
    f, t, hst_raw, hst_pct = rw.sample_inputs(ROW)
    assert (f.cnt_1m, f.hour_local, f.new_country, f.card_present) == (2, 14, True, False)
    assert type(f.cnt_1m) is int and type(f.new_country) is bool
    assert (f.amount_usd, f.km_prev, f.known_place, f.fx_known) == (1512.5, 0.0, False, True)
    assert (t.country, t.amount, t.lat, t.device_id) == ("FR", 1400.0, None, None)
    assert (hst_raw, hst_pct) == (3.5, 0.97)


def test_preview_fires_does_not_fire_or_fails_on_the_sample() -> None:
    rule, _ = rw.rule_from_form(BIG_CNP)
    on = "the sample t9 (user u1, 2026-03-02 13:05:07)"
    assert rw.preview(rule, {}, ROW) == f"Fires on {on}: $1,512 card-not-present (contribution 0.4)"
    assert rw.preview(rule, {}, {**ROW, "channel": "pos"}) == f"Does not fire on {on}."
    broken = replace(rule, cases=(Case("True", "0.1 / cnt_24h", "x"),))
    assert (
        rw.preview(broken, {}, ROW) == f"Fails on {on}: ZeroDivisionError: float division by zero"
    )
    assert rw.preview(rule, {}, None) == "No stored transaction to preview on yet."
    travel = POLICY.rule("unusual_hour")
    hour_row = {**ROW, "features": {**ROW["features"], "history": 30.0, "hour_share": 0.01}}
    assert rw.preview(travel, dict(POLICY.params), hour_row).endswith(
        "local hour 14h is 1.0% of the user's activity (contribution 0.25)"
    )


def test_changed_policy_sets_the_status_and_spots_no_change() -> None:
    rule, _ = rw.rule_from_form(BIG_CNP)
    p1 = rw.changed_policy(POLICY, rule, "shadow")
    assert p1.rule("big_cnp") == replace(rule, status="shadow")
    assert [r.id for r in p1.rules] == [*(r.id for r in POLICY.rules), "big_cnp"]
    assert rw.changed_policy(p1, rule, "live").rule("big_cnp").status == "live"
    stamped = replace(p1.rule("big_cnp"), version=3, author="root", note="n")
    assert rw.changed_policy(p1, stamped, "shadow") is None  # audit fields are no change
    paused = rw.changed_policy(POLICY, POLICY.rule("velocity"), "paused")
    assert [r.status for r in paused.rules if r.id == "velocity"] == ["paused"]


def test_the_backtest_candidate_runs_a_draft_live_and_keeps_a_pause() -> None:
    rule, _ = rw.rule_from_form(BIG_CNP)
    assert rw.backtest_candidate(POLICY, rule).rule("big_cnp").status == "live"
    velocity = replace(POLICY.rule("velocity"), status="paused")
    assert rw.backtest_candidate(POLICY, velocity).rule("velocity").status == "paused"


def test_rule_rows_join_the_figures_to_the_policy() -> None:
    stats = pd.DataFrame(
        {
            "code": ["velocity", "other"],
            "hits": [4, 9],
            "shadow_hits": [1, 0],
            "hit_usd": [120.456, 1.0],
            "confirmed": [1, 0],
            "false_positive": [2, 0],
            "precision_verdicts": [1 / 3, math.nan],
            "precision_labels": [math.nan, 0.5],
        }
    )
    rows = {r["id"]: r for r in rule_rows(POLICY, stats, 200)}
    assert list(rows) == [r.id for r in POLICY.rules]
    v = rows["velocity"]
    assert (v["hits"], v["hit_rate"], v["shadow_hits"], v["hit_usd"], v["judged"]) == (
        4,
        2.0,
        1,
        120.46,
        3,
    )
    assert (v["precision_verdicts"], v["precision_labels"]) == (33.33, None)
    quiet = rows["card_testing"]
    assert (quiet["hits"], quiet["hit_rate"], quiet["precision_verdicts"]) == (0, 0.0, None)
    assert rule_rows(POLICY, pd.DataFrame(), 0)[0]["hit_rate"] is None


def test_problem_lines_without_rule_or_column() -> None:
    assert rw.problem_lines([Problem("", "note", 0, "a note saying why is required")]) == [
        "note: a note saying why is required"
    ]
    assert json.loads(rw.json_cases(rw.NEW_CASES))[0]["contribution"] == "0.4"


REPORT = {
    "source": "store",
    "rows": 10,
    "start": "2026-03-02T12:00:00+00:00",
    "end": "2026-03-02T13:03:00.001000+00:00",
    "seconds": 0.04,
    "labelled": 10,
    "with_verdict": 1,
    "decisions": ["approve", "review", "block"],
    "candidate_rules": [
        {
            "rule": "big_cnp",
            "status": "live",
            "effect": "score",
            "hits": 2,
            "hit_rate": 0.2,
            "amount_usd": 3500.0,
            "precision_labels": 0.5,
            "recall_labels": None,
            "precision_verdicts": None,
            "recall_verdicts": 0.0,
            "overlap": {"new_device": 1, "velocity": 0, "anomaly": 1},
        }
    ],
    "live_rules": [],
    "live": dict.fromkeys(("flagged", "reviews", "blocks", "flagged_usd", "blocked_usd"), 0)
    | {"version": 0, "precision_labels": None, "recall_labels": None}
    | {"precision_verdicts": None, "recall_verdicts": None},
    "candidate": {"version": 0, "flagged": 1, "reviews": 1, "blocks": 0}
    | {"flagged_usd": 1500.0, "blocked_usd": 0.0, "precision_labels": 0.0}
    | {"recall_labels": None, "precision_verdicts": None, "recall_verdicts": None},
    "alerts_per_day": [["2026-03-02", 0, 1]],
    "changes": [[9, 1, 0], [0, 0, 0], [0, 0, 0]],
    "examples": {"approve->review": ["e1"]},
    "notes": [],
}


def test_report_rows_and_figures_from_a_backtest_report() -> None:
    from dash_app import figures
    from dash_app.views.rules import report_rule_rows, report_view

    (row,) = report_rule_rows(REPORT)
    assert row == {
        "rule": "big_cnp",
        "status": "live",
        "effect": "score",
        "hits": 2,
        "live_hits": 0,
        "hit_rate": 20.0,
        "amount_usd": 3500.0,
        "precision_labels": "50.0",
        "recall_labels": "–",
        "precision_verdicts": "–",
        "recall_verdicts": "0.0",
        "overlap": "anomaly 1, new_device 1",
    }
    heat = figures.decision_changes(REPORT["changes"], REPORT["decisions"]).data[0]
    assert list(heat.z[0]) == [None, 1, 0] and heat.zmax == 1 and heat.zmin == 0
    days = figures.backtest_alerts_per_day(REPORT["alerts_per_day"]).data
    assert [(t.name, tuple(t.y)) for t in days] == [("live", (0,)), ("candidate", (1,))]
    assert "No stored" in figures.backtest_alerts_per_day([]).layout.annotations[0].text
    text = str(report_view(REPORT))
    assert "10 stored transactions" in text and "approve->review: e1" in text
