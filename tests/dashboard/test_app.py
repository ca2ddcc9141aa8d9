"""The analyst app's figures, data functions and callbacks as plain functions on known
data (real engines via the ``store`` fixture), plus its HTTP surface and login."""

from __future__ import annotations

import base64
from datetime import timedelta

import pandas as pd
import pytest

from clickhouse import queries as q
from clickhouse.store import Store
from dash_app import figures as fig
from dash_app.app import create_app
from dash_app.context import AppContext, resolve_range, set_context
from dash_app.views import alerts, overview, user
from schemas.settings import Settings, load_settings
from tests.conftest import T0
from tests.store import known


@pytest.fixture
def app_store(store: Store) -> Store:
    known.load(store, duplicates=True)
    set_context(AppContext(load_settings(), store))
    return store


# --- figures ----------------------------------------------------------------------


def test_series_figure_stacks_decisions() -> None:
    df = pd.DataFrame(
        {
            "bucket": [T0, T0, T0 + timedelta(minutes=1)],
            "decision": ["approve", "block", "approve"],
            "txns": [5, 1, 7],
        }
    )
    f = fig.volume_series(df, 60)
    assert [t.name for t in f.data] == ["approve", "block"]
    assert list(f.data[0].y) == [5, 7] and list(f.data[1].y) == [1]
    assert f.layout.title.text == "Transactions per 1 min by decision"
    assert fig.volume_series(df, 3600).layout.title.text.endswith("per 1 h by decision")


def test_empty_figures_say_why() -> None:
    f = fig.volume_series(pd.DataFrame(columns=["bucket", "decision", "txns"]), 60)
    assert f.data == () and "No transactions" in f.layout.annotations[0].text


def test_rule_bars_split_flagged_and_approved() -> None:
    df = pd.DataFrame(
        {
            "code": ["velocity", "new_device"],
            "hits": [10, 4],
            "flagged_hits": [7, 0],
            "mean_contribution": [0.5, 0.2],
        }
    )
    f = fig.rule_bars(df)
    assert list(f.data[0].x) == [0, 7] and list(f.data[1].x) == [4, 3]
    assert list(f.data[0].y) == ["new_device", "velocity"]


def test_user_map_draws_travel_lines_in_time_order() -> None:
    df = pd.DataFrame(
        {
            "ts": [T0, T0 + timedelta(hours=1)],
            "lat": [40.7, 51.5],
            "lon": [-74.0, -0.1],
            "decision": ["approve", "block"],
            "amount_usd": [10.0, 900.0],
            "country": ["US", "GB"],
        }
    )
    f = fig.user_map(df)
    assert f.data[0].mode == "lines" and list(f.data[0].lat) == [40.7, 51.5]
    assert {t.name for t in f.data[1:]} == {"approve", "block"}


# --- pages as plain functions -----------------------------------------------------


def test_resolve_range_anchors_on_latest_event(app_store: Store) -> None:
    start, end = resolve_range(app_store, "15 min") or (None, None)
    assert end == T0 + timedelta(hours=1, milliseconds=1)
    assert start == end - timedelta(minutes=15)
    with pytest.raises(ValueError, match="time range 'forever'"):
        resolve_range(app_store, "forever")


def test_overview_shows_exact_kpis_and_top_users(app_store: Store) -> None:
    d = overview.overview_data("7 days")
    assert d["banner"] is None
    assert d["kpis"][1:6] == ["7", "$1,652", "42.86%", "$505", "2"]
    assert [r["user_id"] for r in d["top"]] == ["u2", "u3"]
    assert {t.name for t in d["series"].data} == {"approve", "review", "block"}
    assert {t.name for t in d["map"].data} == {"review", "block"}


def test_overview_empty_store_says_so(store: Store) -> None:
    set_context(AppContext(load_settings(), store))
    d = overview.overview_data("1 hour")
    assert "No transactions stored yet" in str(d["banner"])


def test_clickhouse_down_is_a_banner_naming_the_url() -> None:
    dead = Store("http://u:pw@127.0.0.1:9", "fraud")
    set_context(AppContext(load_settings(), dead))
    d = overview.overview_data("1 hour")
    text = str(d["banner"])
    assert "http://u:***@127.0.0.1:9" in text and "pw" not in text.replace("***", "")
    rows, banner, _ = alerts.queue("24 hours", None, None, None, None, None, None)
    assert rows == [] and "127.0.0.1:9" in str(banner)


def test_alert_queue_filters_and_keeps_selection_across_refresh(app_store: Store) -> None:
    data, selected, tips, banner, count = alerts.refresh(
        1,
        0,
        "7 days",
        ["review", "block"],
        ["open", "escalated"],
        None,
        None,
        None,
        None,
        [known_alert("t3")],
    )
    assert banner is None and count == "2 alerts"
    assert [r["txn_id"] for r in data] == ["t5", "t3"]
    assert selected == [1], "selection follows the alert id, not the row index"
    assert tips[0]["rules"]["value"].startswith("card_testing: ")
    data, *_ = alerts.refresh(2, 0, "7 days", ["block"], [], "card_testing", 1.0, 10.0, None, [])
    assert [r["txn_id"] for r in data] == ["t5"]
    _, _, _, banner, _ = alerts.refresh(2, 0, "7 days", [], [], None, 50.0, 10.0, None, [])
    assert "min_usd=50.0 is above max_usd=10.0" in str(banner)


def known_alert(txn_id: str) -> str:
    from schemas.scored import alert_id_for

    return alert_id_for(txn_id)


def test_verdicts_are_recorded_and_the_queue_updates(app_store: Store) -> None:
    data, *_ = alerts.refresh(1, 0, "7 days", [], ["open"], None, None, None, None, [])
    assert [r["txn_id"] for r in data] == ["t3"]
    msg, version = alerts.apply(
        1, [known_alert("t3")], data, "false_positive", " zoe ", "card reissued", 4
    )
    assert msg == "Recorded false positive on 1 alert(s)." and version == 5
    data, *_ = alerts.refresh(1, 5, "7 days", [], ["open"], None, None, None, None, [])
    assert data == []
    df = q.latest_alerts(app_store, q.AlertFilter(T0, T0 + timedelta(hours=2), user_id="u2"))
    t3 = df[df.txn_id == "t3"].iloc[0]
    assert (t3.status, t3.assignee, t3.note) == ("false_positive", "zoe", "card reissued")
    assert alerts.apply(1, [], data, "escalated", "zoe", None, 5)[0].startswith("Select one")
    assert (
        "Enter your name"
        in alerts.apply(
            1, [known_alert("t4")], [{"id": known_alert("t4")}], "escalated", "  ", None, 5
        )[0]
    )


def test_export_is_the_current_filter_as_csv(app_store: Store) -> None:
    out = alerts.export(1, "7 days", ["block"], [], None, None, None, None)
    lines = out["content"].splitlines()
    assert lines[0].startswith("alert_id,ts,user_id,txn_id")
    assert len(lines) == 3 and out["filename"].endswith(".csv")


def test_user_page_profile_timeline_and_alerts(app_store: Store) -> None:
    d = user.user_data("u2")
    labels = [c.children[0].children for c in d["profile"]]
    values = dict(zip(labels, [c.children[1].children for c in d["profile"]], strict=True))
    assert values["transactions"] == "2" and values["flagged"] == "2"
    assert values["typical amount"] == "$500"  # exact median of 2 picks the upper value
    assert [a["status"] for a in d["alerts"]] == ["confirmed_fraud", "open"]
    assert {t.name for t in d["timeline"].data} == {"review", "block"}
    assert "Unknown user" in str(user.user_data("nobody")["banner"])


# --- HTTP surface -----------------------------------------------------------------


def _client(s: Settings, store: Store):
    return create_app(s, store).server.test_client()


@pytest.mark.parametrize("path", ["/", "/alerts", "/users/u1", "/_dash-layout"])
def test_pages_are_served(app_store: Store, path: str) -> None:
    r = _client(load_settings(), app_store).get(path)
    assert r.status_code == 200


def test_login_when_configured(app_store: Store) -> None:
    c = _client(load_settings(dash_auth="ana:s3cret,bob:pw2"), app_store)
    assert c.get("/").status_code == 401
    assert c.get("/healthz").status_code == 200
    bad = base64.b64encode(b"ana:wrong").decode()
    assert c.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    good = base64.b64encode(b"ana:s3cret").decode()
    assert c.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    assert "s3cret" not in str(load_settings(dash_auth="ana:s3cret").safe_dict())


def test_metrics_count_verdicts_and_need_no_login(app_store: Store) -> None:
    c = _client(load_settings(dash_auth="ana:s3cret"), app_store)

    def recorded() -> float:
        r = c.get("/metrics")
        assert r.status_code == 200 and r.mimetype == "text/plain"
        line = [
            ln
            for ln in r.get_data(as_text=True).splitlines()
            if ln.startswith('fraud_dashboard_verdicts_total{verdict="confirmed_fraud"}')
        ]
        return float(line[0].split()[-1]) if line else 0.0

    before = recorded()
    data, *_ = alerts.refresh(1, 0, "7 days", [], ["open"], None, None, None, None, [])
    msg, _ = alerts.apply(1, [known_alert("t3")], data, "confirmed_fraud", "zoe", None, 1)
    assert msg.startswith("Recorded confirmed fraud on 1 alert")
    assert recorded() == before + 1
