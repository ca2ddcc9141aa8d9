"""Screenshots of the live demo's pages for the README (docs/img/*.png).

``make screenshots`` starts ``fraud demo`` on a scratch chDB directory, lets traffic
flow, then captures with headless Chromium: the overview, the case queue, the case page
of the queue's top case, the page of that case's user and the Rules page.  The demo has
no analyst accounts, so the app acts as ``local`` (admin) and shows no sign-in page; if
one appears (accounts configured through the environment) the tool stops and says so.

Push latency (alert produced -> on the analyst's screen) is measured by
``python -m tests.tools.push_latency``, not here.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from dash_app.encode import case_href, user_href

PAGES = ("overview.png", "alerts.png", "case.png", "user.png", "rules.png")
"""What the README shows, in this order (docs/img/)."""


def _browser() -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1500,1150",
    ):
        opts.add_argument(a)
    exe = shutil.which("chromedriver")
    if not exe:
        raise SystemExit("chromedriver not found: run `make browser`")
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=exe), options=opts)


def _wait(d: webdriver.Chrome, css: str, text: str = "", timeout: float = 60) -> None:
    cond = (
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
        if text
        else ec.presence_of_element_located((By.CSS_SELECTOR, css))
    )
    WebDriverWait(d, timeout).until(cond)


def _open(d: webdriver.Chrome, url: str) -> None:
    d.get(url)
    if d.find_elements(By.ID, "login-user"):
        raise SystemExit(
            "the app asks to sign in (analyst accounts exist): the screenshots are of the "
            "demo without accounts; unset FRAUD_DASH_AUTH and use a fresh store"
        )


def _top_case(d: webdriver.Chrome) -> tuple[str, str] | None:
    """The queue's first row (case id, user id), from the grid's loaded rows."""
    got = d.execute_script(
        """const n = dash_ag_grid.getApi('al-grid').getDisplayedRowAtIndex(0);
           return n && n.data ? [n.data.id, n.data.user_id] : null;"""
    )
    return None if not got else (str(got[0]), str(got[1]))


def capture(d: webdriver.Chrome, url: str, out: Path) -> list[str]:
    """Save the pages' PNGs into ``out``; returns the file names written."""
    written = []

    def shot(name: str) -> None:
        time.sleep(2)  # figures finish their transitions
        d.save_screenshot(str(out / name))
        written.append(name)

    _open(d, url + "/")
    _wait(d, "#ov-map g.layer.land path")
    _wait(d, "#ov-top .ag-cell[col-id='user_id']")
    shot("overview.png")

    _open(d, url + "/alerts")
    _wait(d, "#al-count", "cases")
    _wait(d, "#al-grid .ag-row .ag-cell[col-id='user_id']")
    shot("alerts.png")
    top = _top_case(d)
    if top is not None:
        case_id, user_id = top
        _open(d, url + case_href(case_id))
        _wait(d, "#cs-title", f"of user {user_id}")
        _wait(d, "#cs-alerts .ag-row")
        _wait(d, "#cs-history")
        shot("case.png")
        _open(d, url + user_href(user_id))
        _wait(d, "#us-profile", "transactions")
        _wait(d, "#us-alerts .ag-row")
        shot("user.png")

    _open(d, url + "/rules")
    _wait(d, "#rl-grid .ag-row")
    shot("rules.png")
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img", help="output folder (default docs/img)")
    ap.add_argument("--warmup", type=float, default=90, help="seconds of traffic first")
    ap.add_argument("--port", type=int, default=8077)
    ap.add_argument("--rate", type=float, default=150, help="demo events per second")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="shots-")) / "chdb"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataflows.cli",
            "demo",
            "--port",
            str(a.port),
            "--rate",
            str(a.rate),
            "--seconds",
            str(a.warmup + 180),
            "--set",
            f"clickhouse_url=chdb://{data}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{a.port}"
    try:
        print(f"demo running; waiting {a.warmup:.0f}s for traffic...", file=sys.stderr)
        time.sleep(a.warmup)
        if demo.poll() is not None:
            raise SystemExit(f"the demo stopped early (exit {demo.returncode})")
        d = _browser()
        try:
            written = capture(d, url, out)
        finally:
            d.quit()
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
        shutil.rmtree(data.parent, ignore_errors=True)
    print(f"wrote {written} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
