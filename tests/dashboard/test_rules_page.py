"""The Rules page through the callback API (as the browser posts it): the admin role and
the note are checked on the server, each action publishes one audited version and
announces it, rollback republishes an older version, the grid and backtest read the
store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from werkzeug.security import generate_password_hash

from clickhouse import queries as q
from clickhouse import rules as store_rules
from clickhouse.store import Store
from dash_app.app import create_app
from dash_app.views import rules as v
from schemas.cases import AppUser
from schemas.rules import Policy
from schemas.settings import load_settings
from tests.dashboard.callbacks import call
from tests.store import known

NOW = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
FORM = [
    "big_cnp",
    "Big card-not-present",
    "",
    "score",
    "draft",
    "amount_usd > 100 and card_present",
    '[{"contribution": 0.4, "detail": "${amount_usd:,.0f} at {merchant_id}"}]',
    [],  # calibrate: unchecked
]
NO_CLICKS = [None] * len(v.BUTTONS)


@pytest.fixture
def app(store: Store):
    known.load(store, duplicates=True)
    for name, role in (("ana", "analyst"), ("root", "admin")):
        h = generate_password_hash(f"{name}-password", method="pbkdf2:sha256:1000")
        q.save_app_user(store, AppUser(name, role, h, NOW))
    announced: list[Policy] = []
    c = create_app(load_settings(), store, announce_policy=announced.append).server.test_client()
    return c, announced


def _login(c, name: str) -> None:
    r = c.post("/login", data={"username": name, "password": f"{name}-password"})
    assert r.status_code == 302
    assert c.get("/").status_code == 200  # Pages registers its callbacks on first request


def _act(c, button: str, note: str | None, form=FORM, selected: int | None = None) -> str:
    status, out = call(c, v.ACT_IO, [*NO_CLICKS, *form, note, selected, 0], f"{button}.n_clicks")
    assert status == 200, out
    return out["rl-message.children"]


def test_an_analyst_cannot_publish_through_the_callback_api(app, store: Store) -> None:
    c, announced = app
    _login(c, "ana")
    for button in v.BUTTONS:
        msg = _act(c, button, "a note", selected=1)
        assert msg == "Refused: ana is an analyst; this needs the admin role."
    assert store_rules.policy_history(store) == [] and announced == []


def test_publish_needs_a_note_and_a_valid_rule(app, store: Store) -> None:
    c, announced = app
    _login(c, "root")
    assert _act(c, "rl-shadow", "   ") == "Refused: a note saying why is required."
    typo = [*FORM[:5], "amount_usd > 100 and card_presnt", *FORM[6:]]
    assert _act(c, "rl-shadow", "try it", typo) == (
        "Refused: big_cnp · when col 22: unknown feature or parameter 'card_presnt' "
        "(did you mean 'card_present'?)."
    )
    assert _act(c, "rl-rollback", "undo") == "Refused: select a version in the history first."
    assert store_rules.policy_history(store) == [] and announced == []


def test_shadow_promote_pause_and_roll_back(app, store: Store) -> None:
    c, announced = app
    _login(c, "root")
    assert _act(c, "rl-shadow", "try it") == (
        "Published v1: big_cnp put in shadow; announced to the flow."
    )
    assert _act(c, "rl-shadow", "again") == (
        "Nothing to publish: big_cnp is already shadow as it stands."
    )
    assert _act(c, "rl-promote", "looks right").startswith("Published v2: big_cnp promoted")
    assert _act(c, "rl-pause", "too noisy").startswith("Published v3: big_cnp paused")
    assert _act(c, "rl-rollback", "back to live", selected=2) == (
        "Published v4: rolled back to v2; announced to the flow."
    )
    h = store_rules.policy_history(store)
    assert [(x.policy.version, x.action, x.policy.author) for x in h] == [
        (1, "publish", "root"),
        (2, "publish", "root"),
        (3, "publish", "root"),
        (4, "rollback", "root"),
    ]
    assert [x.policy.note for x in h] == [
        "try it",
        "looks right",
        "too noisy",
        "rollback to v2: back to live",
    ]
    rule = h[3].policy.rule("big_cnp")
    assert (rule.status, rule.version, rule.note) == ("live", 4, "rollback to v2: back to live")
    assert [p.version for p in announced] == [1, 2, 3, 4]
    assert '+      "id": "big_cnp",' in h[0].diff  # v1's diff is from the built-in v0
    assert '-      "status": "shadow",' in h[1].diff and '+      "status": "live",' in h[1].diff

    _status, out = call(c, v.HISTORY_IO, [1, None], "rl-version.data")
    assert [r["version"] for r in out["rl-history.rowData"]] == [4, 3, 2, 1]
    _status, out = call(c, v.DIFF_IO, [2, 1], "rl-selected-version.data")
    assert out["rl-diff-title.children"].startswith("v2 (publish by root)")
    assert out["rl-diff.children"] == h[1].diff


def test_the_grid_shows_the_policy_in_force_with_its_figures(app) -> None:
    c, _ = app
    _login(c, "ana")
    status, out = call(c, v.REFRESH_IO, [None, 0, "all time"], "rl-range.value")
    assert status == 200
    assert out["rl-policy.children"] == "built-in policy v0 (nothing published yet)"
    rows = {r["id"]: r for r in out["rl-grid.rowData"]}
    # known rows: impossible_travel hit t4 (confirmed fraud, labelled fraud) of 7 rows
    t = rows["impossible_travel"]
    assert (t["hits"], t["hit_rate"], t["precision_verdicts"], t["precision_labels"]) == (
        1,
        round(100 / 7, 3),
        100.0,
        100.0,
    )
    assert out["rl-count.children"].startswith("7 transactions from 2026-03-02 12:00")


def test_validate_and_backtest_the_edited_rule(app) -> None:
    c, _ = app
    _login(c, "ana")  # read-only users may still check and backtest
    status, out = call(c, v.VALIDATE_IO, [*FORM, 0], "rl-when.value")
    assert out["rl-preview.children"] == (
        "Fires on the sample t7 (user u1, 2026-03-02 13:00:00): $1,000 at m1 (contribution 0.4)"
    )
    status, out = call(c, v.BACKTEST_IO, [1, *FORM, "all time"], "rl-backtest.n_clicks")
    assert status == 200
    text = str(out["rl-report.children"])
    assert "7 stored transactions" in text and "big_cnp" in text


def test_a_new_rule_is_a_queue_filter_once_it_runs(app, store: Store) -> None:
    from dataclasses import replace as dc_replace

    from dash_app.views.alerts import rule_codes
    from schemas.rules import Case, Rule, default_policy

    assert "big_cnp" not in rule_codes() and "anomaly" in rule_codes()
    new = Rule("big_cnp", "Big", (Case("True", "0.4", "x"),), "amount_usd > 100", status="shadow")
    base = default_policy(load_settings())
    store_rules.publish_policy(store, dc_replace(base, rules=(*base.rules, new)), "root", "try")
    codes = rule_codes()
    assert "big_cnp" in codes and codes[-2:] == ["compromised_merchant", "learned_pattern"]
