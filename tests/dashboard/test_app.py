"""The analyst app's figures, data functions and callbacks as plain functions on known
data (real engines via the ``store`` fixture), plus its HTTP surface and login."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from clickhouse import queries as q
from clickhouse.store import Store
from dash_app import figures as fig
from dash_app.app import create_app
from dash_app.context import AppContext, resolve_range, set_context
from dash_app.views import alerts, overview, user
from dash_app.views import case as case_view
from schemas.cases import case_id_for
from schemas.settings import Settings, load_settings
from tests.conftest import T0
from tests.dashboard.callbacks import call
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
    rows, banner, *_ = alerts.queue("24 hours", None, None, None, None, None, None)
    assert rows == [] and "127.0.0.1:9" in str(banner)


OPEN = ["open", "claimed", "escalated"]
NO_FILTER = (None, None, None, None, None)


def queue(statuses: list[str] = OPEN, decisions: list[str] | None = None, *more: object):
    """The case queue's first page as the grid asks for it: rows, banner, count line."""
    rest = more or NO_FILTER
    request = {"startRow": 0, "endRow": 50, "sortModel": []}
    resp, banner, count = alerts.page(
        request, "all time", decisions or ["review", "block"], statuses, *rest
    )
    return resp["rowData"], banner, count


def test_case_queue_lists_cases_by_priority_with_filters(app_store: Store) -> None:
    rows, banner, count = queue()
    assert banner is None and count.startswith("2 cases")
    assert [r["user_id"] for r in rows] == ["u2", "u3"], "block first, then risk x amount"
    u2 = rows[0]
    assert (u2["id"], u2["alerts"], u2["total_usd"], u2["status"]) == (
        case_id_for("u2", 1),
        2,
        610.0,
        "open",
    )
    assert u2["reasons"] == "Anomalous pattern, high amount, impossible travel"
    assert u2["sla"].startswith("overdue "), "raised long ago against a 60 min SLA"
    rows, *_ = queue(OPEN, ["block"], "card_testing", 1.0, 10.0, None, None)
    assert [r["user_id"] for r in rows] == ["u3"]
    rows, *_ = queue(OPEN, None, None, None, None, None, "c-u3")  # search a card id
    assert [r["user_id"] for r in rows] == ["u3"]
    _, banner, _ = queue(OPEN, None, None, 50.0, 10.0, None, None)
    assert "min_usd=50.0 is above max_usd=10.0" in str(banner)


def known_alert(txn_id: str) -> str:
    from schemas.scored import alert_id_for

    return alert_id_for(txn_id)


def _seen(case_id: str) -> list[dict[str, object]]:
    return [{"id": r["id"]} for r in case_view.case_data(case_id)["alerts"]]


def test_case_verdict_records_reviews_closes_the_case_and_the_queue_updates(
    app_store: Store,
) -> None:
    cid = case_id_for("u2", 1)
    rows = _seen(cid)
    msg, version, note = case_view.act(
        *[None] * 6, cid, rows, [], None, " card reissued ", 4, trigger="cs-fp"
    )
    assert msg == "Recorded false positive on 2 alert(s) of 1 case(s); closed 1 case(s)."
    assert (version, note) == (5, "")
    assert [r["user_id"] for r in queue()[0]] == ["u3"], "the closed case left the queue"
    df = q.latest_alerts(app_store, q.AlertFilter(T0, T0 + timedelta(hours=2), user_id="u2"))
    assert set(df.status) == {"false_positive"} and set(df.assignee) == {"local"}
    assert set(df.note) == {"card reissued"}
    # Each verdict carries its transaction's card (Review v2): the flow clears that card.
    cards = app_store.client.query(
        f"SELECT txn_id, card_id FROM {app_store.database}.alert_reviews FINAL"
        " WHERE user_id = 'u2' AND assignee = 'local' ORDER BY txn_id"
    ).result_rows
    assert cards == [("t3", "c-u2"), ("t4", "c-u2")]
    history = case_view.case_data(cid)["history"]
    assert [(h["actor"], h["action"], h["detail"]) for h in history] == [
        ("local", "verdict", "false_positive"),
        ("local", "close", ""),
    ]
    assert history[0]["note"] == "card reissued"
    again = case_view.act(*[None] * 6, cid, rows, [], None, None, 5, trigger="cs-fraud")
    assert again[0].startswith("Select one or more alerts of an open case first")


def test_verdict_on_selected_alerts_keeps_the_case_open(app_store: Store) -> None:
    cid = case_id_for("u2", 1)
    rows = _seen(cid)
    t3 = {"id": known_alert("t3")}
    msg, *_ = case_view.act(*[None] * 6, cid, rows, [t3], None, None, 0, trigger="cs-escalate")
    assert msg == "Recorded escalate on 1 alert(s) of 1 case(s)."
    got = {r["txn_id"]: r["status"] for r in case_view.case_data(cid)["alerts"]}
    assert got == {"t3": "escalated", "t4": "confirmed_fraud"}
    assert queue()[0][0]["status"] == "escalated"
    # t4 is already confirmed: confirming t3 settles every alert, so the case closes
    msg, *_ = case_view.act(*[None] * 6, cid, rows, [t3], None, None, 0, trigger="cs-fraud")
    assert msg.endswith("closed 1 case(s).")


def test_export_is_the_listed_cases_alerts_as_csv(app_store: Store) -> None:
    now = datetime(2026, 5, 1, 9, 30, 15, tzinfo=UTC)
    out = alerts.export(1, "all time", ["block", "review"], OPEN, *NO_FILTER, now=now)
    rows = list(csv.DictReader(io.StringIO(out["content"])))
    assert out["filename"] == "alerts-20260501T093015Z.csv", "named by the export time"
    assert {r["txn_id"] for r in rows} == {"t3", "t4", "t5"}
    t3 = next(r for r in rows if r["txn_id"] == "t3")
    assert t3["case_id"] == case_id_for("u2", 1)
    assert t3["reviewed_at"] == "", "unreviewed: empty, not 1970-01-01"
    assert (t3["amount"], t3["amount_usd"]) == ("100.00", "110.00")
    assert t3["ts"] == "2026-03-02T12:01:01.000Z"


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
    """FRAUD_DASH_AUTH accounts sign in on the login page (cookie session, analyst role)."""
    c = _client(load_settings(dash_auth="ana:s3cret,bob:pw2"), app_store)
    r = c.get("/alerts")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=/alerts")
    assert c.post("/_dash-update-component", json={}).status_code == 401
    assert c.get("/healthz").status_code == 200 and c.get("/login").status_code == 200
    bad = c.post("/login", data={"username": "ana", "password": "wrong"})
    assert bad.status_code == 401 and "wrong password" in bad.get_data(as_text=True)
    ok = c.post("/login?next=/alerts", data={"username": "ana", "password": "s3cret"})
    assert ok.status_code == 302 and ok.headers["Location"] == "/alerts"
    assert c.get("/alerts").status_code == 200
    assert (
        c.post(
            "/login?next=//evil.example", data={"username": "ana", "password": "s3cret"}
        ).headers["Location"]
        == "/"
    )
    c.get("/logout")
    assert c.get("/alerts").status_code == 302
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

    c.post("/login", data={"username": "ana", "password": "s3cret"})
    before = recorded()
    cid = case_id_for("u3", 1)
    rows = [{"id": known_alert("t5")}]
    status, out = call(
        c,
        case_view.ACT_IO,
        [None, None, 1, None, None, None, cid, rows, [], None, None, 1],
        "cs-fraud.n_clicks",
    )
    assert status == 200, out
    assert str(out["cs-message.children"]).startswith("Recorded confirmed fraud on 1 alert")
    assert recorded() == before + 1


def test_an_analysts_action_wakes_every_open_queue(store: Store) -> None:
    """Live push of case changes: claiming a case tells the other open queues to reload."""
    from dash_app import casework
    from dash_app.live import AlertHub

    known.load(store, duplicates=True)
    hub = AlertHub()
    set_context(AppContext(load_settings(), store, hub=hub))
    other = hub.subscribe()
    assert other is not None
    msg = casework.claim([case_id_for("u2", 1)], datetime(2026, 3, 2, tzinfo=UTC))
    assert "claimed 1 case" in msg
    assert other.get_nowait() == b"case"


def test_saved_views_name_apply_and_delete_filter_sets() -> None:
    from dash import no_update

    from dash_app.views import alerts as v

    values = ["24 hours", ["block"], ["open"], "card_testing", 10, None, "ann", "u2"]
    views, msg = v.save_view({}, "  ", values)
    assert views == {} and msg == "Name the view first."
    views, msg = v.save_view({}, "blocks to triage", values)
    assert views == {"blocks to triage": values} and "Saved" in msg
    assert v.view_options(views) == ["blocks to triage"]
    assert v.apply_view("blocks to triage", views) == tuple(values)
    assert all(x is no_update for x in v.apply_view("gone", views))
    left, msg = v.on_save_view(1, None, "", "blocks to triage", views, trigger="al-view-delete")
    assert left == {} and "Deleted" in msg
    full = {f"v{i}": values for i in range(v.MAX_VIEWS)}
    assert v.save_view(full, "one more", values)[1].startswith("At most")
