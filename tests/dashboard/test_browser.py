"""The app in a real headless Chromium (selenium + chromedriver, installed by `make test`).

The server runs in-process on the session's chDB store with the known rows; each test
waits for text, acts like an analyst, and ends with an empty browser console (no JS
errors, no failed callbacks).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from clickhouse import queries as q
from clickhouse.store import Store
from dash_app.app import create_app
from dash_app.encode import user_href
from dataflows.connectors.embedded import free_port
from schemas.cases import AppUser, case_id_for
from schemas.settings import load_settings
from tests.conftest import T0
from tests.dashboard import hostile
from tests.store import known

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app_url(chdb_url: str) -> Iterator[tuple[str, Store]]:
    import uuid

    from clickhouse.store import migrate

    store = Store(chdb_url, f"ui_{uuid.uuid4().hex[:8]}")
    migrate(store, 3650)
    known.load(store, duplicates=True)
    app = create_app(load_settings(dash_refresh_s=1.0), store)
    port = free_port()
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{port}", store
    server.shutdown()
    store.client.command(f"DROP DATABASE {store.database}")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    exe = shutil.which("chromedriver")
    assert exe, "chromedriver missing: `make test` installs chromium and chromium-driver"
    opts = webdriver.ChromeOptions()
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=exe), options=opts)
    yield d
    d.quit()


def _wait_text(d: webdriver.Chrome, css: str, text: str, timeout: float = 20) -> None:
    WebDriverWait(d, timeout).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def _console_errors(d: webdriver.Chrome) -> list[dict]:
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def test_overview_shows_the_store_kpis(browser: webdriver.Chrome, app_url) -> None:
    url, store = app_url
    browser.get(url + "/")
    end = T0 + timedelta(hours=1, milliseconds=1)
    k = q.kpis(store, end - timedelta(hours=24), end)  # the default range
    _wait_text(browser, "#ov-kpi-txns", f"{k.txns:,}")
    _wait_text(browser, "#ov-kpi-open", f"{k.open_alerts:,}")
    _wait_text(browser, "#ov-top", "u2")
    # The world map is drawn from the vendored topojson (no CDN): land has a shape.
    WebDriverWait(browser, 20).until(
        lambda d: any(
            p.get_attribute("d")
            for p in d.find_elements(By.CSS_SELECTOR, "#ov-map g.layer.land path")
        )
    )
    assert _console_errors(browser) == []


def _select_row(d: webdriver.Chrome, grid: str, row_id: str) -> None:
    sel = f"#{grid} .ag-row[row-id='{row_id}'] .ag-selection-checkbox .ag-checkbox-input-wrapper"
    WebDriverWait(d, 20).until(ec.element_to_be_clickable((By.CSS_SELECTOR, sel))).click()


def test_triage_a_case_in_the_queue(browser: webdriver.Chrome, app_url) -> None:
    url, _ = app_url
    browser.get(url + "/alerts")
    _wait_text(browser, "#al-count", "2 cases")  # u2 (2 alerts) and u3, open by default
    _wait_text(browser, "#al-grid", "high amount, impossible travel")  # reasons in words
    _select_row(browser, "al-grid", case_id_for("u2", 1))
    browser.find_element(By.ID, "al-apply").click()
    _wait_text(
        browser,
        "#al-message",
        "Recorded confirmed fraud on 2 alert(s) of 1 case(s); closed 1 case(s).",
    )
    _wait_text(browser, "#al-count", "1 cases")  # it left the open queue at once
    assert _console_errors(browser) == []


def test_user_drill_down(browser: webdriver.Chrome, app_url) -> None:
    url, _ = app_url
    browser.get(url + "/users/u3")
    _wait_text(browser, "h2", "User u3")
    _wait_text(browser, "#us-profile", "transactions")
    _wait_text(browser, "#us-alerts", "card_testing")
    assert _console_errors(browser) == []


def test_hostile_ids_are_text_and_open_their_own_page(browser: webdriver.Chrome, app_url) -> None:
    """Ids that are markdown links or paths: shown as text, no foreign link anywhere, a
    click and the encoded /users/ path both open that user (reviewed alerts, so the
    queue counts above are unchanged)."""
    url, store = app_url
    ids = (hostile.MD_LINK, "x/y", "100%", "<script>", "o'neil")
    hostile.load(store, ids, at=timedelta(minutes=30))
    browser.get(url + "/")
    _wait_text(browser, "#ov-top", hostile.MD_LINK)
    assert browser.find_elements(By.CSS_SELECTOR, "a[href*='evil']") == []
    cells = browser.find_elements(By.CSS_SELECTOR, "#ov-top .ag-cell[col-id='user_id']")
    next(c for c in cells if c.text == hostile.MD_LINK).click()
    _wait_text(browser, "h2", f"User {hostile.MD_LINK}")
    assert urlsplit(browser.current_url).path == user_href(hostile.MD_LINK)
    browser.get(url + "/alerts")  # the queue's user cells open the case, shown as text
    _wait_text(browser, "#al-grid", hostile.MD_LINK)
    assert browser.find_elements(By.CSS_SELECTOR, "a[href*='evil']") == []
    cells = browser.find_elements(By.CSS_SELECTOR, "#al-grid .ag-cell[col-id='user_id']")
    next(c for c in cells if c.text == hostile.MD_LINK).click()
    _wait_text(browser, "#cs-title", f"Case #1 of user {hostile.MD_LINK}")
    browser.find_element(By.LINK_TEXT, "user page →").click()
    _wait_text(browser, "h2", f"User {hostile.MD_LINK}")
    assert browser.find_elements(By.CSS_SELECTOR, "a[href*='evil']") == []
    for uid in ids[1:]:
        browser.get(url + user_href(uid))
        _wait_text(browser, "h2", f"User {uid}")
        _wait_text(browser, "#us-alerts", "false_positive")
    assert _console_errors(browser) == []


@pytest.fixture(scope="module")
def signed_app(chdb_url: str) -> Iterator[tuple[str, Store]]:
    """The app with accounts (sign-in required): analyst ana."""
    import uuid

    from werkzeug.security import generate_password_hash

    from clickhouse.store import migrate

    store = Store(chdb_url, f"ui_{uuid.uuid4().hex[:8]}")
    migrate(store, 3650)
    known.load(store, duplicates=True)
    h = generate_password_hash("ana-password", method="pbkdf2:sha256:1000")
    q.save_app_user(store, AppUser("ana", "analyst", h, T0))
    app = create_app(load_settings(dash_refresh_s=1.0), store)
    port = free_port()
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}", store
    server.shutdown()
    store.client.command(f"DROP DATABASE {store.database}")


def test_case_workflow_as_a_signed_in_analyst(browser: webdriver.Chrome, signed_app) -> None:
    """Sign in, open a case from the queue, claim it (keyboard), confirm fraud with a
    note: the case leaves the queue and the audit trail names the analyst."""
    url, store = signed_app
    browser.get(url + "/alerts")
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "login-user")))
    browser.find_element(By.ID, "login-user").send_keys("ana")
    browser.find_element(By.ID, "login-password").send_keys("ana-password")
    browser.find_element(By.ID, "login-submit").click()
    _wait_text(browser, "#al-count", "2 cases")
    _wait_text(browser, "nav", "ana (analyst)")
    cells = browser.find_elements(By.CSS_SELECTOR, "#al-grid .ag-cell[col-id='user_id']")
    next(c for c in cells if c.text == "u3").click()
    _wait_text(browser, "#cs-title", "Case #1 of user u3")
    _wait_text(browser, "#cs-alerts", "card_testing (0.7): card_testing detail")
    assert browser.find_element(By.ID, "cs-assign").get_attribute("disabled") is not None
    browser.find_element(By.TAG_NAME, "body").send_keys("c")  # shortcut: claim
    _wait_text(browser, "#cs-message", "ana claimed 1 case(s).")
    _wait_text(browser, "#cs-summary", "claimed")
    browser.find_element(By.ID, "cs-note").send_keys("customer confirmed the card was stolen")
    browser.find_element(By.ID, "cs-fraud").click()
    _wait_text(browser, "#cs-message", "closed 1 case(s)")
    for text in ("claim", "verdict", "close", "confirmed_fraud", "customer confirmed"):
        _wait_text(browser, "#cs-history", text)
    assert "ana" in browser.find_element(By.ID, "cs-history").text
    browser.find_element(By.LINK_TEXT, "← case queue").click()
    _wait_text(browser, "#al-count", "1 cases")
    h = q.case_history(store, case_id_for("u3", 1))
    assert list(zip(h.actor, h.action, strict=True)) == [
        ("ana", "claim"),
        ("ana", "verdict"),
        ("ana", "close"),
    ]
    assert _console_errors(browser) == []
