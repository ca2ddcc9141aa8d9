"""Push latency: from an alert raised by the flow to the line on the analyst's screen.

``make bench-push`` (or ``python -m tests.tools.push_latency --alerts 100 --rate 10``)
starts an embedded tansu broker and the analyst app (with its live-push listener) on a
scratch chDB, opens the case queue in headless Chromium, produces alerts to the alerts
topic as the flow does (``created_at`` = now), and records in the page, with a
MutationObserver, the wall-clock time each alert's line appears.  It prints p50 / p95 /
max of (on screen − created_at): topic → listener → server-sent event → Dash callback →
DOM.  ``tests/integration/test_live_push.py`` runs the same measurement on 20 alerts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from schemas.scored import Alert, Reason, alert_id_for, encode_alert

WATCH = """
window.__seen = {};
new MutationObserver(function (ms) {
  var now = Date.now();
  ms.forEach(function (m) {
    if (m.type === 'attributes') {
      var a = m.target.getAttribute('data-alert');
      if (a && !(a in window.__seen)) { window.__seen[a] = now; }
      return;
    }
    m.addedNodes.forEach(function (n) {
    if (n.querySelectorAll) {
      var all = [n].concat(Array.from(n.querySelectorAll('[data-alert]')));
      all.forEach(function (e) {
        var id = e.getAttribute && e.getAttribute('data-alert');
        if (id && !(id in window.__seen)) { window.__seen[id] = now; }
      });
    }
  }); });
}).observe(document.body, {childList: true, subtree: true, attributes: true,
                           attributeFilter: ['data-alert']});
"""


def make_alert(i: int, tag: str) -> Alert:
    """An Alert v3 as the flow raises it, ``created_at`` now."""
    now = datetime.now(UTC)
    txn = f"push-{tag}-{i}"
    reason = Reason("card_testing", "4 charges under $5 in 10 min", 0.85)
    return Alert(
        *(alert_id_for(txn), txn, f"user-{i % 7}", "c1", "m1", now, 120.0 + i, "EUR"),
        *("FR", "ecom", None, None, 0.91, "block", (reason,), 0.5, {"amount_usd": 130.0}),
        *("rules-v2", now, 0),
    )


@dataclass
class Latency:
    sent: int
    seen: int
    ms: list[float]

    def summary(self) -> str:
        if not self.ms:
            return f"0 of {self.sent} alerts reached the screen"
        q = statistics.quantiles(self.ms, n=20, method="inclusive") if len(self.ms) > 1 else []
        p95 = q[18] if q else self.ms[0]
        return (
            f"{self.seen} of {self.sent} alerts on screen; created -> on screen: "
            f"p50 {statistics.median(self.ms):.0f} ms, p95 {p95:.0f} ms, max {max(self.ms):.0f} ms"
        )

    @property
    def p95(self) -> float:
        if len(self.ms) < 2:
            return self.ms[0] if self.ms else float("inf")
        return statistics.quantiles(self.ms, n=20, method="inclusive")[18]


def measure(
    browser: Any, page_url: str, producer: Any, topic: str, hub: Any, n: int, rate: float
) -> Latency:
    """Open the queue, wait until the push path is live, send ``n`` alerts at ``rate``/s
    and return each one's created -> on-screen time."""
    browser.get(page_url)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".live-badge"))
    WebDriverWait(browser, 30).until(lambda _: hub.streams > 0)
    browser.execute_script(WATCH)
    tag = uuid.uuid4().hex[:6]
    # The listener starts at the end of the topic: warm up until one push goes through.
    deadline = time.monotonic() + 30
    while hub.published == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("no alert reached the app's listener within 30 s")
        producer.produce(topic, key=b"warm", value=encode_alert(make_alert(-1, tag)))
        producer.flush(5)
        time.sleep(0.5)
    time.sleep(0.5)
    sent: list[Alert] = []
    for i in range(n):
        a = make_alert(i, tag)
        producer.produce(topic, key=a.user_id.encode(), value=encode_alert(a))
        producer.poll(0)
        sent.append(a)
        time.sleep(1.0 / rate)
    producer.flush(5)
    ids = {a.alert_id for a in sent}
    WebDriverWait(browser, 20).until(
        lambda d: ids <= set(d.execute_script("return Object.keys(window.__seen)"))
    )
    seen = browser.execute_script("return window.__seen")
    ms = [seen[a.alert_id] - a.created_at.timestamp() * 1000 for a in sent if a.alert_id in seen]
    return Latency(n, len(ms), ms)


def main(argv: list[str] | None = None) -> int:
    from confluent_kafka import Producer

    from clickhouse.store import Store, migrate
    from dash_app.app import create_app
    from dataflows.connectors.alert_listener import alert_listener
    from dataflows.connectors.embedded import EmbeddedBroker, free_port
    from dataflows.connectors.kafka import create_topics
    from schemas.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0, help="alerts per second")
    a = ap.parse_args(argv)
    if a.alerts < 2 or a.rate <= 0:
        ap.error("--alerts must be at least 2 and --rate positive")
    exe = shutil.which("chromedriver")
    if not exe:
        raise SystemExit("chromedriver not found: run `make browser`")
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        s = load_settings(brokers=broker.bootstrap, clickhouse_url=f"chdb://{tmp}/ch")
        create_topics(s)
        store = Store.from_settings(s)
        migrate(store, 30)
        app = create_app(s, store, live_alerts=alert_listener(s))
        port = free_port()
        server = make_server("127.0.0.1", port, app.server, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        opts = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            opts.add_argument(arg)
        d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=exe), options=opts)
        try:
            from dash_app.context import ctx

            producer = Producer({"bootstrap.servers": broker.bootstrap})
            page = f"http://127.0.0.1:{port}/alerts"
            lat = measure(d, page, producer, s.topic_alerts, ctx().hub, a.alerts, a.rate)
        finally:
            d.quit()
            app.server.extensions["fraud_live_stop"]()
            server.shutdown()
    print(lat.summary(), flush=True)
    return 0 if lat.seen == lat.sent else 1


if __name__ == "__main__":
    sys.exit(main())
