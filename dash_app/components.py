"""Small layout helpers shared by the pages (no queries, no figures)."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
from dash import dcc, html

from clickhouse.store import describe_url
from dash_app.context import RANGES
from dash_app.encode import user_href

__all__ = [
    "clicked_user_href",
    "error_banner",
    "kpi",
    "range_picker",
    "text_grid",
    "user_nav",
]


def kpi(label: str, value: str, cid: str) -> html.Div:
    return html.Div(
        [html.Div(label, className="kpi-label"), html.Div(value, className="kpi-value", id=cid)],
        className="kpi",
    )


def range_picker(
    cid: str, value: str = "24 hours", options: list[str] | None = None
) -> dcc.Dropdown:
    return dcc.Dropdown(
        id=cid,
        options=options or list(RANGES),
        value=value,
        clearable=False,
        persistence=True,
        style={"width": "10em"},
    )


def error_banner(url: str, err: BaseException) -> html.Div:
    """Explicit error state: which ClickHouse, what went wrong; the app keeps running."""
    return html.Div(
        [
            html.B("ClickHouse unreachable or failing "),
            html.Code(describe_url(url)),
            html.Span(f": {type(err).__name__}: {str(err)[:300]}"),
        ],
        className="banner banner-error",
        role="alert",
    )


def info_banner(text: str) -> html.Div:
    return html.Div(text, className="banner banner-info")


def user_nav(cid: str) -> dcc.Location:
    """Where a click on a user cell navigates: a callback sets ``href`` and Pages routes
    to it without a reload."""
    return dcc.Location(id=cid, refresh="callback-nav")


def text_grid(cid: str, columns: list[dict[str, Any]], **options: Any) -> dag.AgGrid:
    """A small read-only AG Grid (sortable, sized to its rows, paged by ``page_size``)
    whose cells are text: AG Grid's default renderer sets textContent, and no column
    has a cellRenderer.  A ``user_id`` column looks like a link (a click callback opens
    the user, see :func:`clicked_user_href`); rows are keyed by their ``id``."""
    page_size = options.pop("page_size", None)
    grid_options: dict[str, Any] = {"domLayout": "autoHeight", "animateRows": False}
    if page_size:
        grid_options |= {
            "pagination": True,
            "paginationPageSize": page_size,
            "paginationPageSizeSelector": False,
        }
    defs = [
        {"sortable": True, "resizable": True, **c}
        | ({"cellClass": "link-cell"} if c.get("field") == "user_id" else {})
        for c in columns
    ]
    return dag.AgGrid(
        id=cid,
        columnDefs=defs,
        rowData=[],
        getRowId="params.data.id",
        defaultColDef={"flex": 1, "minWidth": 90},
        dashGridOptions=grid_options,
        className="ag-theme-quartz",
        **options,
    )


def clicked_user_href(cell: dict[str, Any] | None, rows: list[dict[str, Any]] | None) -> str | None:
    """The user page for a click (AG Grid's ``cellClicked``) on a grid's ``user_id``
    cell, None for any other cell.

    User ids are shown as plain text (never markdown, which would let an id such as
    ``x](https://evil.example) [y`` become a link); the href is built by
    :func:`~dash_app.encode.user_href` from the row's id, found by ``rowId`` so sorting
    and paging cannot open the wrong user.
    """
    if not cell or cell.get("colId") != "user_id" or cell.get("rowId") is None:
        return None
    row = next((r for r in rows or () if r.get("id") == cell["rowId"]), None)
    return None if row is None else user_href(str(row["user_id"]))


def money(v: Any) -> str:
    return f"${float(v):,.0f}"


RULE_WORDS = {
    "impossible_travel": "impossible travel",
    "card_testing": "card testing",
    "velocity": "burst of payments",
    "high_amount": "high amount",
    "amount_zscore": "unusual amount for this user",
    "new_country": "new country",
    "new_device": "new device",
    "unusual_hour": "unusual hour",
    "anomaly": "anomalous pattern",
    "compromised_merchant": "merchant with recent fraud",
    "learned_pattern": "resembles confirmed fraud",
}
"""Reason codes in words for the queue; an unknown code is shown as itself."""


def reasons_in_words(codes: Any) -> str:
    """``["card_testing", "velocity"]`` -> ``"Card testing, burst of payments"``.

    >>> reasons_in_words(["card_testing", "velocity"])
    'Card testing, burst of payments'
    >>> reasons_in_words([])
    ''
    """
    text = ", ".join(RULE_WORDS.get(str(c), str(c)) for c in codes)
    return text[:1].upper() + text[1:]


def duration(minutes: float) -> str:
    """``95`` -> ``"1 h 35 min"``.

    >>> duration(5.4), duration(95), duration(3000)
    ('5 min', '1 h 35 min', '2 d 2 h')
    """
    m = int(minutes)
    if m < 60:
        return f"{m} min"
    if m < 1440:
        return f"{m // 60} h {m % 60} min"
    return f"{m // 1440} d {m % 1440 // 60} h"
