"""Live push on real components: tansu, the app's alerts listener, server-sent events and
the case queue in headless Chromium.  Alerts produced to the alerts topic (as the flow
raises them) appear on the open page with no reload and no polling; the measured
created -> on-screen times are printed (``make bench-push`` runs more of them)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from selenium import webdriver
from werkzeug.serving import make_server

from clickhouse.store import Store, migrate
from dash_app.app import create_app
from dash_app.context import ctx
from dataflows.connectors.alert_listener import alert_listener
from dataflows.connectors.embedded import free_port
from schemas.settings import Settings
from tests.dashboard.test_browser import browser  # noqa: F401 - the Chromium fixture
from tests.tools.push_latency import measure

pytestmark = pytest.mark.integration


@pytest.fixture
def live_app(kafka_settings: Settings, chdb_url: str) -> Iterator[str]:
    store = Store(chdb_url, f"live_{uuid.uuid4().hex[:8]}")
    migrate(store, 3650)
    s = kafka_settings.model_copy(update={"dash_refresh_s": 60.0})
    app = create_app(s, store, live_alerts=alert_listener(s))
    port = free_port()
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    app.server.extensions["fraud_live_stop"]()  # the listener, before the broker goes
    server.shutdown()
    store.client.command(f"DROP DATABASE {store.database}")


def test_new_alerts_are_pushed_to_the_open_queue(
    browser: webdriver.Chrome,  # noqa: F811
    live_app: str,
    kafka_settings: Settings,
) -> None:
    producer = Producer({"bootstrap.servers": kafka_settings.brokers})
    hub = ctx().hub
    assert hub is not None
    lat = measure(browser, live_app + "/alerts", producer, kafka_settings.topic_alerts, hub, 20, 10)
    print(lat.summary())
    assert lat.seen == lat.sent == 20  # every alert on screen, none lost, without a reload
    text = browser.find_element("id", "al-live-list").text
    assert "block" in text and "4 charges under $5 in 10 min" in text
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_pages_poll_without_a_broker(kafka_settings: Settings) -> None:
    from dash_app.views.alerts import live_strip

    assert "Live push is off" in str(live_strip(False))
    assert alert_listener(kafka_settings.model_copy(update={"brokers": ""})) is None
