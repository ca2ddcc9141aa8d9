"""Small layout helpers shared by the pages (no queries, no figures)."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from clickhouse.store import describe_url
from dash_app.context import RANGES

__all__ = ["error_banner", "kpi", "range_picker", "user_link"]


def kpi(label: str, value: str, cid: str) -> html.Div:
    return html.Div(
        [html.Div(label, className="kpi-label"), html.Div(value, className="kpi-value", id=cid)],
        className="kpi",
    )


def range_picker(cid: str, value: str = "1 hour") -> dcc.Dropdown:
    return dcc.Dropdown(
        id=cid,
        options=list(RANGES),
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


def user_link(user_id: str) -> str:
    """Markdown link to the user drill-down (DataTable markdown cells)."""
    return f"[{user_id}](/users/{user_id})"


def money(v: Any) -> str:
    return f"${float(v):,.0f}"
