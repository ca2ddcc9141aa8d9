"""Sign-in and roles through the HTTP surface: the login page, the cookie session and the
callback API itself (a refused action is refused on the server, not only hidden in the
UI), plus ``fraud users add``."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from werkzeug.security import generate_password_hash

from clickhouse import queries as q
from clickhouse.store import Store
from dash_app.app import create_app
from dash_app.views import alerts
from dash_app.views import case as case_view
from dataflows.cli import main as fraud
from schemas.cases import AppUser, case_id_for
from schemas.settings import load_settings
from tests.dashboard.callbacks import call
from tests.store import known

NOW = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
CASE = case_id_for("u3", 1)


@pytest.fixture
def client(store: Store):
    known.load(store, duplicates=True)
    for name, role in (("ana", "analyst"), ("root", "admin")):
        h = generate_password_hash(f"{name}-password", method="pbkdf2:sha256:1000")
        q.save_app_user(store, AppUser(name, role, h, NOW))
    c = create_app(load_settings(), store).server.test_client()
    assert c.get("/healthz").status_code == 200
    return c


def _login(c, name: str) -> None:
    r = c.post("/login", data={"username": name, "password": f"{name}-password"})
    assert r.status_code == 302, r.get_data(as_text=True)
    assert c.get("/").status_code == 200  # Pages registers its callbacks on first request


def _case_act(c, trigger: str, assign_to: str | None = None, note: str | None = None):
    values = [None] * 6 + [CASE, [], [], assign_to, note, 0]
    return call(c, case_view.ACT_IO, values, f"{trigger}.n_clicks")


def _history(store: Store) -> list[tuple[str, str, str]]:
    h = q.case_history(store, CASE)
    return list(zip(h.actor, h.action, h.assignee, strict=True))


def test_an_analyst_cannot_assign_through_the_callback_api(client, store: Store) -> None:
    _login(client, "ana")
    status, out = _case_act(client, "cs-assign", assign_to="ana")
    assert status == 200
    assert out["cs-message.children"] == ("Refused: ana is an analyst; this needs the admin role.")
    values = [None, None, None, [{"id": CASE, "alert_ids": []}], "ana", "escalated", None, 0]
    status, out = call(client, alerts.ACT_IO, values, "al-assign.n_clicks")
    assert out["al-message.children"].startswith("Refused: ana is an analyst")
    assert _history(store) == [], "nothing was written"


def test_an_admin_assigns_and_the_analyst_claims_as_themselves(client, store: Store) -> None:
    _login(client, "root")
    _status, out = _case_act(client, "cs-assign", assign_to="ana")
    assert out["cs-message.children"] == "Assigned 1 case(s) to ana."
    client.get("/logout")
    _login(client, "ana")
    _case_act(client, "cs-claim")
    assert _history(store) == [("root", "assign", "ana"), ("ana", "claim", "ana")]
    assert list(q.case_queue(store, q.CaseFilter(assignee="ana")).case_id) == [CASE]


def test_the_reviewer_is_the_signed_in_account(client, store: Store) -> None:
    _login(client, "ana")
    alert_ids = q.case_summary(store, CASE)["alert_ids"]
    values = [None] * 6 + [CASE, [{"id": a} for a in alert_ids], [], None, "stolen", 0]
    _status, out = call(client, case_view.ACT_IO, values, "cs-fraud.n_clicks")
    assert out["cs-message.children"].startswith("Recorded confirmed fraud on 1 alert")
    df = q.alert_by_id(store, list(alert_ids))
    assert list(df.assignee) == ["ana"] and list(df.note) == ["stolen"]


def test_signed_out_requests_are_refused(client) -> None:
    r = client.get("/alerts")
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/alerts"
    assert client.get("/cases/" + CASE).status_code == 302
    status, _ = _case_act(client, "cs-claim")
    assert status == 401
    assert client.get("/_dash-layout").status_code == 401
    assert client.get("/metrics").status_code == 200
    bad = client.post("/login", data={"username": "ana", "password": "root-password"})
    assert bad.status_code == 401


def test_fraud_users_add_reads_the_password_without_echoing_it(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FRAUD_CLICKHOUSE_URL", store.url)
    monkeypatch.setenv("FRAUD_CLICKHOUSE_DATABASE", store.database)
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert fraud(["users", "add", "boss", "--role", "admin"]) == 0
    out = capsys.readouterr()
    assert "correct horse" not in out.out + out.err and "saved boss (admin)" in out.out
    role, h = q.app_users(store)["boss"]
    assert role == "admin" and h.startswith(("scrypt:", "pbkdf2:"))
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert fraud(["users", "add", "eve"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert fraud(["users", "add", "=cmd"]) == 2
    c = create_app(load_settings(), store).server.test_client()
    r = c.post("/login", data={"username": "boss", "password": "correct horse battery"})
    assert r.status_code == 302
