"""Screenshots of the live demo's pages for the docs, and on-screen alert latency.

``make screenshots`` starts ``fraud demo`` on a scratch chDB directory, lets it run, then
captures the overview, the alert queue and the top flagged user's page with headless
Chromium.  With ``--measure S`` it then watches the alert queue for S seconds and prints
how long each new alert took from being raised by the dataflow (its "raised" time, wall
clock) to appearing on the analyst's screen: sink batching + the refresh interval +
query and render.  Produce -> raised is ``fraud latency`` (tens of ms).
"""

from __future__ import annotations

import argparse
import re
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


def _measure(d: webdriver.Chrome, url: str, seconds: float) -> None:
    """Print raised -> on-screen lag of alerts that appear while watching the queue."""
    from datetime import UTC, datetime

    d.get(url + "/alerts")
    WebDriverWait(d, 30).until(ec.text_to_be_present_in_element((By.ID, "al-count"), "alerts"))
    raised_col = [h.text for h in d.find_elements(By.CSS_SELECTOR, "#al-table th")].index(
        "raised (UTC)"
    )
    seen: set[str] = set()
    lags: list[float] = []
    first = True
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = datetime.now(UTC)
        for tr in d.find_elements(By.CSS_SELECTOR, "#al-table tbody tr"):
            cells = tr.find_elements(By.CSS_SELECTOR, "td")
            if len(cells) <= raised_col:
                continue
            raised = cells[raised_col].text
            if raised and raised not in seen:
                seen.add(raised)
                if not first:
                    t = datetime.strptime(raised, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
                    lags.append((now - t).total_seconds())
        first = False
        time.sleep(0.1)
    if lags:
        lags.sort()
        print(
            f"raised -> on screen over {len(lags)} new alerts: p50 {lags[len(lags) // 2]:.2f}s,"
            f" p95 {lags[int(len(lags) * 0.95)]:.2f}s, max {lags[-1]:.2f}s"
        )
    else:
        print("no new alert appeared while measuring")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img", help="output folder (default docs/img)")
    ap.add_argument("--warmup", type=float, default=90, help="seconds of traffic first")
    ap.add_argument("--port", type=int, default=8077)
    ap.add_argument("--measure", type=float, default=0, help="seconds of on-screen timing")
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
            "150",
            "--seconds",
            str(a.warmup + 120 + a.measure),
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
        d = _browser()
        try:
            d.get(url + "/")
            WebDriverWait(d, 30).until(
                ec.presence_of_element_located((By.CSS_SELECTOR, "#ov-map g.layer.land path"))
            )
            time.sleep(3)
            d.save_screenshot(str(out / "overview.png"))
            top = re.search(r'href="/users/([\w-]+)"', d.page_source)
            d.get(url + "/alerts")
            WebDriverWait(d, 30).until(
                ec.text_to_be_present_in_element((By.ID, "al-count"), "alerts")
            )
            time.sleep(2)
            d.save_screenshot(str(out / "alerts.png"))
            if top:
                d.get(url + f"/users/{top.group(1)}")
                WebDriverWait(d, 30).until(
                    ec.text_to_be_present_in_element((By.ID, "us-profile"), "transactions")
                )
                time.sleep(3)
                d.save_screenshot(str(out / "user.png"))
            if a.measure:
                _measure(d, url, a.measure)
        finally:
            d.quit()
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
        shutil.rmtree(data.parent, ignore_errors=True)
    print(f"wrote {sorted(p.name for p in out.glob('*.png'))} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
