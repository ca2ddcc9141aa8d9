"""The case queue pages from ClickHouse in headless Chromium (AG Grid's infinite row
model): 130 cases, 50 a page; the count line is the true total, the grid's sort and
pages are answered by the store, "Select page" ticks a page for a claim, a filter goes
back to the first page, and a push/tick refresh keeps the selection.  Ends with an empty
console (no errors, no AG Grid warnings)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from clickhouse import queries as q
from clickhouse.store import Store, migrate
from clickhouse.tables import ALERTS, alert_row
from dash_app.app import create_app
from dataflows.connectors.embedded import free_port
from schemas.cases import case_id_for
from schemas.settings import load_settings
from tests.dashboard.test_browser import _wait_text, browser  # noqa: F401 - the fixture
from tests.store.test_case_paging import _alert

pytestmark = pytest.mark.integration

N = 130
# u000 .. u129: every 10th a block; amounts 10 .. 1300 USD, risk 0.5 .. 0.63
USERS = [
    (f"u{i:03d}", i, 10.0 * (i + 1), 0.5 + i / 1000, "block" if i % 10 == 0 else "review")
    for i in range(N)
]


@pytest.fixture(scope="module")
def many(chdb_url: str) -> Iterator[tuple[str, Store]]:
    store = Store(chdb_url, f"pg_{uuid.uuid4().hex[:8]}")
    migrate(store, 3650)
    store.insert(ALERTS, [alert_row(_alert(*u)) for u in USERS])
    app = create_app(load_settings(dash_refresh_s=1.0), store)
    port = free_port()
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}", store
    server.shutdown()
    store.client.command(f"DROP DATABASE {store.database}")


def _rows(d: webdriver.Chrome) -> list[str]:
    """Users of the page shown, top to bottom (the grid's loaded rows of that page)."""
    return d.execute_script(
        """const api = dash_ag_grid.getApi('al-grid');
           const size = api.paginationGetPageSize();
           const first = api.paginationGetCurrentPage() * size, out = [];
           for (let i = first; i < first + size; i++) {
             const n = api.getDisplayedRowAtIndex(i);
             if (!n || !n.data) break;
             out.push(n.data.user_id);
           }
           return out;"""
    )


def _first_users(d: webdriver.Chrome, want: list[str], timeout: float = 20) -> None:
    WebDriverWait(d, timeout).until(lambda d: _rows(d)[: len(want)] == want)


def _page(d: webdriver.Chrome, label: str) -> None:
    d.find_element(By.CSS_SELECTOR, f"#al-grid .ag-paging-button[aria-label='{label}']").click()


def _selected(d: webdriver.Chrome) -> int:
    """Selected rows (all pages), as the grid reports them."""
    return int(d.execute_script("return dash_ag_grid.getApi('al-grid').getSelectedRows().length"))


def _console(d: webdriver.Chrome) -> list[dict]:
    return [
        e
        for e in d.get_log("browser")
        if e["level"] == "SEVERE" or "AG Grid" in e.get("message", "")
    ]


def test_the_queue_pages_sorts_and_selects_from_clickhouse(
    browser: webdriver.Chrome,  # noqa: F811
    many: tuple[str, Store],
) -> None:
    url, store = many
    expected = list(q.case_queue(store, q.CaseFilter(), limit=N).user_id)
    assert expected[:3] == ["u120", "u110", "u100"]  # blocks first, then risk x amount
    browser.get(url + "/alerts")
    _wait_text(browser, "#al-count", f"{N} cases")  # the true total, not a loaded page
    _first_users(browser, expected[:5])
    _wait_text(browser, "#al-grid .ag-paging-row-summary-panel", f"1 to 50 of {N}")

    # the next page is asked from the store
    _page(browser, "Next Page")
    _first_users(browser, expected[50:55])

    # the grid's sort is ClickHouse's ORDER BY (and goes back to the rows from the top)
    header = "#al-grid .ag-header-cell[col-id='total_usd'] .ag-header-cell-label"
    browser.find_element(By.CSS_SELECTOR, header).click()  # ascending
    _page(browser, "First Page")
    _first_users(browser, ["u000", "u001", "u002"])

    # select the page shown, claim: 50 cases, and the selection survives a refresh
    browser.find_element(By.ID, "al-select-page").click()
    WebDriverWait(browser, 10).until(lambda d: _selected(d) == 50)
    browser.find_element(By.ID, "al-claim").click()
    _wait_text(browser, "#al-message", "local claimed 50 case(s).")
    claimed = q.case_queue(store, q.CaseFilter(assignee="local"), limit=N)
    assert sorted(claimed.user_id) == [f"u{i:03d}" for i in range(50)]
    _wait_text(browser, f"#al-grid .ag-row[row-id='{case_id_for('u000', 1)}']", "claimed")
    assert _selected(browser) == 50, "the refresh after the claim kept the selection"

    # a filter purges the pages, clears the selection, and counts again
    browser.find_element(By.ID, "al-search").send_keys("u12\n")
    _wait_text(browser, "#al-count", "10 cases")
    WebDriverWait(browser, 10).until(lambda d: sorted(_rows(d)) == [f"u12{i}" for i in range(10)])
    assert _selected(browser) == 0
    browser.find_element(By.ID, "al-clear").click()

    # a click on the user opens the case
    cell = browser.find_element(By.CSS_SELECTOR, "#al-grid .ag-row .ag-cell[col-id='user_id']")
    user = cell.text
    cell.click()
    _wait_text(browser, "#cs-title", f"Case #1 of user {user}")
    assert case_id_for(user, 1) in browser.current_url
    assert _console(browser) == []
