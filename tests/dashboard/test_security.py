"""Hostile data in the analyst app: ids that are markdown links, paths or spreadsheet
formulas are shown as text, open the right user page and leave the CSV inert.

Pages are rendered as plain functions and through Dash's own router (Flask test client)
on real engines (the ``store`` fixture)."""

from __future__ import annotations

import csv
import doctest
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest

from clickhouse.store import Store
from dash_app import encode
from dash_app import figures as fig
from dash_app.app import create_app
from dash_app.context import AppContext, set_context
from dash_app.encode import csv_cell, csv_safe, user_href, user_id_from_path
from dash_app.views import alerts, overview, user
from dash_app.views import case as case_view
from schemas.settings import load_settings
from tests.dashboard import hostile
from tests.dashboard.hostile import HOSTILE_IDS, MD_LINK

ALL_STATUSES = ["open", "claimed", "escalated", "closed"]
ANY = (None, None, None, None, None)


@pytest.fixture
def hostile_store(store: Store) -> Store:
    hostile.load(store)
    set_context(AppContext(load_settings(), store))
    return store


def _walk(node: Any) -> Iterator[Any]:
    """Every Dash component in a layout (or its JSON form)."""
    if isinstance(node, list | tuple):
        for n in node:
            yield from _walk(n)
        return
    if isinstance(node, dict):
        if "type" in node and "props" in node:  # a component as the router serialises it
            yield node
            yield from _walk(node["props"].get("children"))
        return
    if hasattr(node, "_prop_names"):
        yield node
        yield from _walk(getattr(node, "children", None))


def _type(c: Any) -> str:
    return c["type"] if isinstance(c, dict) else type(c).__name__


def _prop(c: Any, name: str) -> Any:
    return c["props"].get(name) if isinstance(c, dict) else getattr(c, name, None)


def _assert_nothing_parsed(layout: Any) -> None:
    """No table column and no component renders data as markdown or HTML."""
    for c in _walk(layout):
        assert _type(c) not in ("Markdown", "Iframe"), c
        if _type(c) == "DataTable":
            for col in _prop(c, "columns") or ():
                assert col.get("presentation") not in ("markdown", "html"), col
        if _type(c) == "AgGrid":
            assert not _prop(c, "dangerously_allow_code"), c
            for col in _prop(c, "columnDefs") or ():
                assert "cellRenderer" not in col, col  # the default renderer sets textContent
        href = _prop(c, "href")
        if href:
            assert not urlsplit(href).netloc, f"link to another host: {href}"


def _assert_user_href(href: str, user_id: str) -> None:
    """``href`` is this app's page of exactly ``user_id``, as one encoded path segment."""
    parts = urlsplit(href)
    assert (parts.scheme, parts.netloc, parts.query, parts.fragment) == ("", "", "", "")
    assert href.startswith("/users/") and href.count("/") == 2, href
    assert unquote(href.removeprefix("/users/")) == user_id


def _cell(rows: list[dict[str, Any]], user_id: str) -> dict[str, Any]:
    """The ``cellClicked`` AG Grid sends when the analyst clicks this user's cell."""
    i, row = next((i, r) for i, r in enumerate(rows) if r["user_id"] == user_id)
    return {"colId": "user_id", "rowIndex": i, "rowId": row["id"], "value": user_id}


# --- 1. ids are text, links are built (never markdown) ----------------------------


def _grid_cell(rows: list[dict[str, Any]], user_id: str) -> dict[str, Any]:
    """The ``cellClicked`` AG Grid sends when the analyst clicks this user's cell."""
    row = next(r for r in rows if r["user_id"] == user_id)
    return {"colId": "user_id", "rowId": row["id"], "value": user_id}


def test_case_queue_shows_ids_as_text_and_clicks_open_the_case_then_the_user(
    hostile_store: Store,
) -> None:
    _assert_nothing_parsed(alerts.layout())
    rows, *_ = alerts.queue("all time", [], ALL_STATUSES, *ANY, end=100)
    user_col = next(c for c in alerts.COLUMNS if c["field"] == "user_id")
    assert "cellRenderer" not in user_col, "the id is shown verbatim"
    assert sorted(r["user_id"] for r in rows) == sorted(HOSTILE_IDS)
    for row in rows:
        href = alerts.open_case(_grid_cell(rows, row["user_id"]))
        assert href == f"/cases/{row['id']}" and not urlsplit(href).netloc
        page = case_view.layout(case_path=row["id"])
        _assert_nothing_parsed(page)
        d = case_view.case_data(row["id"])
        assert d["title"] == f"Case #1 of user {row['user_id']}"
        link = case_view.refresh(None, 0, row["id"])[1]
        _assert_user_href(link.href, row["user_id"])
        assert [a["merchant"] for a in d["alerts"]] == [f"{hostile.FORMULA_MERCHANT} (grocery)"]


def test_only_user_and_case_cells_navigate(hostile_store: Store) -> None:
    rows, *_ = alerts.queue("all time", [], ALL_STATUSES, *ANY, end=100)
    cell = _grid_cell(rows, "x/y")
    assert alerts.open_case({**cell, "colId": "case"}) == f"/cases/{cell['rowId']}"
    assert alerts.open_case({**cell, "colId": "total_usd"}) is alerts.no_update
    assert alerts.open_case(None) is alerts.no_update
    assert alerts.open_case({**cell, "rowId": None}) is alerts.no_update


def test_overview_top_users_are_text_and_open_the_encoded_user_page(
    hostile_store: Store,
) -> None:
    _assert_nothing_parsed(overview.layout())
    top = overview.overview_data("7 days")["top"]
    assert sorted(r["user_id"] for r in top) == sorted(HOSTILE_IDS)
    for r in top:
        _assert_user_href(overview.open_user(_cell(top, r["user_id"]), top), r["user_id"])
    assert overview.open_user(None, top) is overview.no_update


def test_plotly_text_from_data_is_escaped(hostile_store: Store) -> None:
    """Plotly renders ``<a href>`` in annotations and hover text: data must not make one."""
    d = user.user_data('<a href="https://evil.example">x</a>')  # no such user
    text = d["timeline"].layout.annotations[0].text
    assert "<a" not in text and "&lt;a href" in text
    df = pd.DataFrame(
        {
            "user_id": ["<b>u</b>"],
            "amount_usd": [1.0],
            "rules": ["velocity"],
            "decision": ["block"],
            "lat": [1.0],
            "lon": [2.0],
        }
    )
    assert fig.alerts_map(df).data[0].text[0].startswith("&lt;b&gt;u&lt;/b&gt; · $1.00")


# --- 2. /users/<percent-encoded id> opens exactly that user ------------------------


PAGE_IDS = ["a b", "o'neil", "<script>", "x/y", "100%", "ü-ß", MD_LINK]


def _route(client: Any, pathname: str) -> dict[str, Any]:
    """What Dash's Pages router renders for the browser's (encoded) ``pathname``."""
    body = {
        "output": ".._pages_content.children..._pages_store.data..",
        "outputs": [
            {"id": "_pages_content", "property": "children"},
            {"id": "_pages_store", "property": "data"},
        ],
        "inputs": [
            {"id": "_pages_location", "property": "pathname", "value": pathname},
            {"id": "_pages_location", "property": "search", "value": ""},
        ],
        "changedPropIds": ["_pages_location.pathname"],
        "state": [],
    }
    r = client.post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return r.get_json()["response"]["_pages_content"]["children"]


def _page_user(layout: dict[str, Any]) -> tuple[str, str | None]:
    """The heading text and the user id the page's callbacks will query."""
    comps = list(_walk(layout))
    h2 = next(c for c in comps if c["type"] == "H2")
    store = next((c for c in comps if c["props"].get("id") == "us-user"), None)
    return h2["props"]["children"], None if store is None else store["props"]["data"]


@pytest.mark.parametrize("user_id", PAGE_IDS)
def test_encoded_user_path_opens_that_user(hostile_store: Store, user_id: str) -> None:
    client = create_app(load_settings(), hostile_store).server.test_client()
    assert client.get("/").status_code == 200  # Pages registers its router on first request
    path = user_href(user_id)
    assert client.get(path).status_code == 200
    page = _route(client, path)
    heading, stored = _page_user(page)
    assert (heading, stored) == (f"User {user_id}", user_id)
    _assert_nothing_parsed(page)
    profile, _, _, table, banner = user.refresh(None, stored)
    assert banner is None, banner
    values = {c.children[0].children: c.children[1].children for c in profile}
    assert values["transactions"] == "1"
    i = HOSTILE_IDS.index(user_id)
    assert [a["amount"] for a in table] == [f"{hostile.amount_of(i):,.2f} USD"]


def test_user_path_is_decoded_exactly_once() -> None:
    for uid in [*HOSTILE_IDS, "%2F", "100%25", "a+b", "?q=1#h", "../alerts"]:
        assert user_id_from_path(user_href(uid).removeprefix("/users/")) == uid
        _assert_user_href(user_href(uid), uid)


# --- 3. the CSV export is inert in spreadsheets ------------------------------------


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\tx", "'\tx"),
        (" =1", "' =1"),
        ("\n\u00a0 @x", "'\n\u00a0 @x"),
        ("u2", "u2"),
        ("a-b", "a-b"),
        ("", ""),
        ("   ", "   "),
        ("'=1", "'=1"),
    ],
)
def test_csv_cell(cell: str, safe: str) -> None:
    assert csv_cell(cell) == safe


def test_encode_doctests() -> None:
    result = doctest.testmod(encode)
    assert result.attempted >= 5 and result.failed == 0


def test_csv_safe_keeps_numbers_and_missing_values() -> None:
    df = pd.DataFrame(
        {"note": ["-x", None], "lon": [-74.0, -0.5], "n": [-1, 2], "s": ["=1", "ok"]}
    ).astype({"s": "string"})
    out = csv_safe(df)
    assert out["lon"].tolist() == [-74.0, -0.5] and out["n"].tolist() == [-1, 2]
    assert out["note"].tolist()[0] == "'-x" and out["note"].isna().tolist() == [False, True]
    assert out["s"].tolist() == ["'=1", "ok"]
    assert df["s"].tolist() == ["=1", "ok"], "the input frame is not modified"


def test_export_neutralises_every_text_cell(hostile_store: Store) -> None:
    out = alerts.export(1, "all time", [], ALL_STATUSES, *ANY)
    rows = list(csv.DictReader(io.StringIO(out["content"])))
    assert len(rows) == len(HOSTILE_IDS)
    for r in rows:
        for col, v in r.items():
            if col in ("lat", "lon", "amount", "amount_usd", "risk_score", "anomaly_score"):
                float(v)  # numbers stay numbers
                continue
            assert not v.lstrip().startswith(("=", "+", "-", "@")), (col, v)
            assert not v.startswith(("\t", "\r")), (col, v)
    by_user = {r["user_id"]: r for r in rows}
    assert set(by_user) == {csv_cell(u) for u in HOSTILE_IDS}
    hl = by_user["'" + '=HYPERLINK("https://evil.example","x")']
    assert hl["merchant_id"] == "'" + hostile.FORMULA_MERCHANT
    assert hl["card_id"].startswith("'-c")
    assert hl["note"] == "'" + hostile.FORMULA_NOTE
    assert hl["assignee"] == "'" + hostile.FORMULA_ASSIGNEE
    assert hl["reasons"] == "velocity: " + hostile.FORMULA_DETAIL  # not at the cell start
    assert by_user["'-2+3"]["lon"] == "-74.0" and by_user["o'neil"]["user_id"] == "o'neil"
    assert by_user["a b"]["user_id"] == "a b" and by_user["100%"]["user_id"] == "100%"
