"""The Rules page in a real headless Chromium: an admin writes a rule, sees a typo
refused as they type, backtests it on stored rows, shadows and promotes it with notes
and reads the history; an analyst sees the page read-only.  Each test ends with an empty
browser console, as the other browser tests do."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from clickhouse import queries as q
from clickhouse.store import Store, migrate
from clickhouse.tables import TRANSACTIONS, txn_row
from dash_app.app import create_app
from dash_app.views.rules import BUTTONS
from dataflows.connectors.embedded import free_port
from schemas.cases import AppUser
from schemas.rules import Policy
from schemas.scored import ScoredTransaction
from schemas.settings import load_settings
from schemas.transaction import Label, Transaction
from tests.conftest import T0
from tests.dashboard.test_browser import _console_errors, _wait_text, browser  # noqa: F401
from tests.store import known

pytestmark = pytest.mark.integration

# Card-not-present rows after the known ones (user u9): e1 is the one the new rule turns
# from approve into review (0.25 new device + 0.4 → 0.55); e2, the latest, previews it.
ECOM = [
    ("e3", 60, 50.0, {"history": 10.0}),
    ("e1", 120, 1500.0, {"history": 10.0, "new_device": 1.0}),
    ("e2", 180, 2000.0, {"history": 10.0}),
]
TYPO = "amount_usd > 1000 and not card_presnt"
RULE_WHEN = "amount_usd > 1000 and not card_present"
CASES = '[{"contribution": "0.4", "detail": "${amount_usd:,.0f} card-not-present"}]'


def _ecom_rows() -> list[ScoredTransaction]:
    out = []
    for tid, sec, usd, feats in ECOM:
        ts = T0 + timedelta(hours=1, seconds=sec)
        txn = Transaction(
            tid, ts, "u9", "c-u9", "shop", "electronics", usd, "USD", None, None, "US", "ecom", "d9"
        )
        out.append(
            ScoredTransaction(
                txn,
                Label(False),
                {"amount_usd": usd, **feats},
                0.5,
                0.5,
                (),
                0.25 if "new_device" in feats else 0.0,
                "approve",
                "rules-v1+test",
                ts + timedelta(milliseconds=50),
                False,
                ts,
            )
        )
    return out


@pytest.fixture(scope="module")
def rules_app(chdb_url: str) -> Iterator[tuple[str, Store, list[Policy]]]:
    """The app with accounts root (admin) and ana (analyst) over the known rows, replayed,
    plus the card-not-present rows; announced policies are recorded."""
    store = Store(chdb_url, f"ui_{uuid.uuid4().hex[:8]}")
    migrate(store, 3650)
    known.load(store, duplicates=True)
    store.insert(TRANSACTIONS, [txn_row(s) for s in _ecom_rows()])
    for name, role in (("root", "admin"), ("ana", "analyst")):
        h = generate_password_hash(f"{name}-password", method="pbkdf2:sha256:1000")
        q.save_app_user(store, AppUser(name, role, h, T0))
    announced: list[Policy] = []
    app = create_app(load_settings(dash_refresh_s=1.0), store, announce_policy=announced.append)
    port = free_port()
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}", store, announced
    server.shutdown()
    store.client.command(f"DROP DATABASE {store.database}")


def _sign_in(d: webdriver.Chrome, url: str, name: str) -> None:
    d.get(url + "/rules")
    WebDriverWait(d, 20).until(ec.presence_of_element_located((By.ID, "login-user")))
    d.find_element(By.ID, "login-user").send_keys(name)
    d.find_element(By.ID, "login-password").send_keys(f"{name}-password")
    d.find_element(By.ID, "login-submit").click()
    _wait_text(d, "nav", f"{name} (")


def _replace(d: webdriver.Chrome, element_id: str, text: str) -> None:
    """Type ``text`` over an input's content (as a user does: select all, type)."""
    el = d.find_element(By.ID, element_id)
    el.click()
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(text if text else Keys.DELETE)


def test_write_backtest_shadow_and_promote_a_rule(
    browser: webdriver.Chrome,  # noqa: F811
    rules_app,
) -> None:
    url, _store, announced = rules_app
    _sign_in(browser, url, "root")
    _wait_text(browser, "#rl-policy", "built-in policy v0")
    for rule in ("impossible_travel", "card_testing", "velocity", "anomaly"):
        _wait_text(browser, "#rl-grid", rule)
    _wait_text(browser, "#rl-count", "10 transactions")

    browser.find_element(By.ID, "rl-new").click()
    _wait_text(browser, "#rl-editing", "new rule")
    browser.find_element(By.ID, "rl-id").send_keys("big_cnp")
    browser.find_element(By.ID, "rl-name").send_keys("Big card-not-present")
    _replace(browser, "rl-cases", CASES)
    _replace(browser, "rl-when", TYPO)
    _wait_text(
        browser,
        "#rl-problems",
        "big_cnp · when col 27: unknown feature or parameter 'card_presnt' "
        "(did you mean 'card_present'?)",
    )
    _replace(browser, "rl-when", RULE_WHEN)
    _wait_text(browser, "#rl-problems", "Valid.")
    _wait_text(
        browser,
        "#rl-preview",
        "Fires on the sample e2 (user u9, 2026-03-02 13:03:00): $2,000 card-not-present "
        "(contribution 0.4)",
    )

    browser.find_element(By.ID, "rl-backtest").click()
    _wait_text(browser, "#rl-report-summary", "10 stored transactions", timeout=40)
    _wait_text(browser, "#rl-report-changes", "approve (live) 9 1 0")
    _wait_text(browser, "#rl-report-examples", "approve->review: e1")
    _wait_text(browser, "#rl-report-rules", "big_cnp")
    _wait_text(browser, "#rl-report-policy", "alerts (review + block) 0 1")
    assert browser.find_elements(By.CSS_SELECTOR, "#rl-report-days .main-svg")

    browser.find_element(By.ID, "rl-note").send_keys("watch it on live traffic")
    browser.find_element(By.ID, "rl-shadow").click()
    _wait_text(
        browser, "#rl-message", "Published v1: big_cnp put in shadow; announced to the flow."
    )
    _wait_text(browser, "#rl-policy", "policy v1 in force, published by root")
    _wait_text(browser, "#rl-grid .ag-row[row-id='big_cnp']", "shadow")

    _replace(browser, "rl-note", "")
    browser.find_element(By.ID, "rl-promote").click()
    _wait_text(browser, "#rl-message", "Refused: a note saying why is required.")
    browser.find_element(By.ID, "rl-note").send_keys("shadow hits look right")
    browser.find_element(By.ID, "rl-promote").click()
    _wait_text(browser, "#rl-message", "Published v2: big_cnp promoted to live")
    _wait_text(browser, "#rl-grid .ag-row[row-id='big_cnp']", "live")

    _wait_text(browser, "#rl-history .ag-row[row-id='2']", "shadow hits look right")
    _wait_text(browser, "#rl-history .ag-row[row-id='1']", "watch it on live traffic")
    _wait_text(browser, "#rl-diff-title", "v2 (publish by root)")
    _wait_text(browser, "#rl-diff", '+      "status": "live",')
    _wait_text(browser, "#rl-diff", '-      "status": "shadow",')
    browser.find_element(By.CSS_SELECTOR, "#rl-history .ag-row[row-id='1'] .ag-cell").click()
    _wait_text(browser, "#rl-diff-title", "v1 (publish by root)")
    _wait_text(browser, "#rl-diff", '+      "id": "big_cnp",')
    assert [p.version for p in announced] == [1, 2]
    assert _console_errors(browser) == []


def test_an_analyst_sees_the_rules_read_only(
    browser: webdriver.Chrome,  # noqa: F811
    rules_app,
) -> None:
    url, _, _ = rules_app
    _sign_in(browser, url, "ana")
    _wait_text(
        browser,
        "#rl-readonly",
        "Read-only: ana is an analyst; changing rules needs the admin role.",
    )
    _wait_text(browser, "#rl-grid", "impossible_travel")
    for bid in BUTTONS:
        assert browser.find_element(By.ID, bid).get_attribute("disabled") is not None, bid
    assert browser.find_element(By.ID, "rl-backtest").get_attribute("disabled") is None
    assert _console_errors(browser) == []
