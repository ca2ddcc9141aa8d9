"""Case queue: one row per case (a user's open alerts), by priority, on AG Grid.

The grid uses AG Grid's infinite row model: each page it shows is a ``getRowsRequest``
answered from ClickHouse (:func:`clickhouse.queries.case_page`: the filter widgets'
conditions, the grid's sort model as a whitelisted ``ORDER BY``, ``LIMIT``/``OFFSET``),
so a queue of any size pages from the store and the count line is the true total.  A
tick, a push or an action refreshes the loaded pages in place (selection kept); a filter
change purges the cache and goes back to the first page.  Every cell is text (AG Grid's
default renderer sets textContent; no markdown/HTML renderer is used).  Selected cases
(tick them, or "Select page") can be claimed, assigned (admins) or judged as a whole; a
click on the user or the case opens the case page.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import dash_ag_grid as dag
import orjson
import pandas as pd
from dash import Input, Output, State, callback_context, dcc, html, no_update
from dash_extensions import EventSource

from clickhouse import queries as q
from dash_app import casework
from dash_app.auth import current_actor
from dash_app.components import (
    duration,
    error_banner,
    info_banner,
    range_picker,
    reasons_in_words,
)
from dash_app.context import RANGES, ctx, resolve_range
from dash_app.encode import case_href, csv_safe, user_href
from schemas.cases import CASE_STATUSES
from schemas.vocab import FEEDBACK_CODES, RULE_CODES, VERDICTS

__all__ = ["COLUMNS", "PAGE_SIZE", "case_rows", "layout", "page", "queue"]

PAGE_SIZE = 50
"""Cases per grid page (and per request to ClickHouse)."""
MAX_BLOCK = 500
"""The most cases one ``getRowsRequest`` may ask for."""
EXPORT_CASES = 100_000
"""Cases whose alerts the CSV export covers (the highest priorities first)."""
ALL_TIME = "all time"
QUEUE_RANGES = [ALL_TIME, *RANGES]
OPEN_STATUSES = ["open", "claimed", "escalated"]
VERDICT_LABELS = casework.VERDICT_LABELS

COLUMNS: list[dict[str, Any]] = [
    {"headerName": "priority", "field": "priority", "type": "numericColumn", "width": 110},
    {"headerName": "status", "field": "status", "width": 105},
    {"headerName": "SLA", "field": "sla", "width": 130},
    {"headerName": "age", "field": "age", "width": 110},
    {"headerName": "user", "field": "user_id", "cellClass": "link-cell", "width": 150},
    {"headerName": "case", "field": "case", "cellClass": "link-cell", "width": 90},
    {"headerName": "alerts", "field": "alerts", "type": "numericColumn", "width": 90},
    {"headerName": "worst", "field": "worst", "width": 90},
    {
        "headerName": "reasons",
        "field": "reasons",
        "flex": 1,
        "minWidth": 220,
        "tooltipField": "reasons",
        "sortable": False,
    },
    {"headerName": "total USD", "field": "total_usd", "type": "numericColumn", "width": 120},
    {"headerName": "max risk", "field": "max_risk", "type": "numericColumn", "width": 100},
    {"headerName": "assignee", "field": "assignee", "width": 120},
    {"headerName": "last alert (UTC)", "field": "last_ts", "width": 170},
]
for _c in COLUMNS:
    _c.setdefault("sortable", True)
    _c["filter"] = False  # the filter widgets above the grid filter, in ClickHouse

SORTS: dict[str, tuple[str, bool]] = {
    "priority": ("priority", False),
    "status": ("status", False),
    "sla": ("opened_at", False),  # the earliest deadline first
    "age": ("opened_at", True),  # the youngest first
    "user_id": ("user_id", False),
    "case": ("seq", False),
    "alerts": ("alerts", False),
    "worst": ("blocks", True),  # "block" before "review"
    "total_usd": ("total_usd", False),
    "max_risk": ("max_risk", False),
    "assignee": ("assignee", False),
    "last_ts": ("last_ts", False),
}
"""Grid column -> (:data:`clickhouse.queries.CASE_SORTS` key, whether ascending in the grid
is descending in SQL)."""

_WIDE = {"width": "9em"}


def layout(**_: Any) -> html.Div:
    c = ctx()
    refresh_ms = int(c.settings.dash_refresh_s * 1000)
    if c.hub is not None:  # pushed: the interval is only a safety net
        refresh_ms *= SAFETY_NET_FACTOR
    actor = current_actor()
    admin = actor is not None and actor.is_admin
    return html.Div(
        [
            html.Div(
                [
                    html.H2("Case queue"),
                    range_picker("al-range", ALL_TIME, QUEUE_RANGES),
                    html.Span(
                        f"signed in as {actor.name} ({actor.role})" if actor else "",
                        className="muted",
                    ),
                ],
                className="toolbar",
            ),
            html.Div(
                [
                    dcc.Checklist(
                        id="al-decisions",
                        options=["review", "block"],
                        value=["review", "block"],
                        inline=True,
                        persistence=True,
                    ),
                    dcc.Checklist(
                        id="al-statuses",
                        options=list(CASE_STATUSES),
                        value=OPEN_STATUSES,
                        inline=True,
                        persistence=True,
                    ),
                    dcc.Dropdown(
                        id="al-rule",
                        options=rule_codes(),
                        placeholder="any rule",
                        persistence=True,
                        style={"width": "14em"},
                    ),
                    dcc.Input(
                        id="al-min",
                        type="number",
                        placeholder="min USD",
                        min=0,
                        debounce=True,
                        persistence=True,
                        style=_WIDE,
                    ),
                    dcc.Input(
                        id="al-max",
                        type="number",
                        placeholder="max USD",
                        min=0,
                        debounce=True,
                        persistence=True,
                        style=_WIDE,
                    ),
                    dcc.Input(
                        id="al-assignee-filter",
                        type="text",
                        placeholder="assignee",
                        debounce=True,
                        persistence=True,
                        style=_WIDE,
                    ),
                    dcc.Input(
                        id="al-search",
                        type="search",
                        debounce=True,
                        placeholder="search user, card, merchant, txn, reason",
                        style={"width": "22em"},
                    ),
                    html.Button("Export CSV", id="al-export"),
                    dcc.Download(id="al-download"),
                ],
                className="filters",
            ),
            html.Div(
                [
                    dcc.Store(id="al-views", storage_type="local", data={}),
                    dcc.Dropdown(
                        id="al-view",
                        placeholder="saved views",
                        options=[],
                        style={"width": "14em"},
                    ),
                    dcc.Input(
                        id="al-view-name",
                        type="text",
                        maxLength=60,
                        placeholder="name these filters",
                        style={"width": "14em"},
                    ),
                    html.Button("Save view", id="al-view-save"),
                    html.Button("Delete view", id="al-view-delete"),
                    html.Span(id="al-view-message", className="muted", role="status"),
                ],
                className="filters views",
            ),
            html.Div(id="al-banner"),
            live_strip(c.hub is not None),
            html.Div(id="al-count", className="muted"),
            dag.AgGrid(
                id="al-grid",
                columnDefs=COLUMNS,
                rowModelType="infinite",
                getRowId="params.data.id",
                dashGridOptions={
                    "rowSelection": {"mode": "multiRow", "headerCheckbox": False},
                    "pagination": True,
                    "paginationPageSize": PAGE_SIZE,
                    "paginationPageSizeSelector": False,
                    "cacheBlockSize": PAGE_SIZE,
                    "maxBlocksInCache": 10,
                    "maxConcurrentDatasourceRequests": 1,
                    "infiniteInitialRowCount": 1,
                    "tooltipShowDelay": 300,
                    "animateRows": False,
                },
                getRowStyle={
                    "styleConditions": [
                        {
                            "condition": "params.data && params.data.worst === 'block'",
                            "style": {"color": "#b00"},
                        }
                    ]
                },
                style={"height": "60vh"},
                className="ag-theme-quartz",
            ),
            html.Div(
                [
                    html.H4("Selected cases"),
                    html.Button("Select page", id="al-select-page", title="tick every case shown"),
                    html.Button("Clear", id="al-clear", title="untick every case"),
                    html.Button("Claim", id="al-claim"),
                    dcc.Dropdown(
                        id="al-assign-to",
                        placeholder="assign to…",
                        style={"width": "12em"},
                        disabled=not admin,
                    ),
                    html.Button(
                        "Assign",
                        id="al-assign",
                        disabled=not admin,
                        title="" if admin else "admins only",
                    ),
                    dcc.RadioItems(
                        id="al-verdict",
                        inline=True,
                        value="confirmed_fraud",
                        options=[{"label": VERDICT_LABELS[v], "value": v} for v in VERDICTS],
                    ),
                    dcc.Textarea(
                        id="al-note",
                        placeholder="note (optional)",
                        maxLength=2000,
                        style={"width": "26em", "height": "3em"},
                    ),
                    html.Button("Verdict on whole cases", id="al-apply"),
                    html.Div(id="al-message", role="status"),
                ],
                className="panel triage",
            ),
            dcc.Location(id="al-nav", refresh="callback-nav"),
            dcc.Store(id="al-version", data=0),
            dcc.Store(id="al-pushed", data=0),
            dcc.Store(id="al-reload", data=0),
            dcc.Store(id="al-selection", data=0),
            dcc.Interval(id="al-tick", interval=refresh_ms),
        ]
    )


def rule_codes() -> list[str]:
    """Reason codes to filter on: the live and shadow rules of the policy in force (rules
    are data: an analyst's new rule is filterable at once), then the feedback codes."""
    from dash_app.rulework import policy_in_force

    try:
        codes = [r.id for r in policy_in_force().rules if r.status in ("live", "shadow")]
    except Exception:  # ClickHouse down: the page still renders, with the built-in codes
        codes = list(RULE_CODES)
    return list(dict.fromkeys([*codes, *FEEDBACK_CODES]))


def build_filter(
    range_label: str,
    decisions: list[str] | None,
    statuses: list[str] | None,
    rule: str | None,
    min_usd: float | None,
    max_usd: float | None,
    assignee: str | None,
    search: str | None,
) -> q.CaseFilter | None:
    """The widgets as a validated CaseFilter (ValueError names the field); None when the
    store holds nothing yet."""
    start = end = None
    if range_label != ALL_TIME:
        rng = resolve_range(ctx().store, range_label)
        if rng is None:
            return None
        start, end = rng
    return q.CaseFilter(
        start,
        end,
        statuses=tuple(statuses or ()),
        decisions=tuple(decisions or ()),
        rule=rule or None,
        min_usd=min_usd,
        max_usd=max_usd,
        assignee=(assignee or "").strip() or None,
        search=(search or "").strip() or None,
    )


def case_rows(df: pd.DataFrame, now: datetime, sla_minutes: int) -> list[dict[str, Any]]:
    """Grid rows (``id`` = case id, so selection survives refreshes); every value text or
    a number."""
    rows = []
    for r in df.itertuples(index=False):
        opened = r.opened_at.replace(tzinfo=UTC)
        age = max((now - opened).total_seconds() / 60, 0.0)
        if r.is_closed:
            sla = "closed"
        elif age <= sla_minutes:
            sla = f"{duration(sla_minutes - age)} left"
        else:
            sla = f"overdue {duration(age - sla_minutes)}"
        rows.append(
            {
                "id": r.case_id,
                "case": f"#{int(r.seq)}",
                "user_id": r.user_id,
                "priority": round(float(r.priority), 2),
                "status": r.status,
                "sla": sla,
                "overdue": not r.is_closed and age > sla_minutes,
                "age": duration(age),
                "age_min": round(age, 1),
                "alerts": int(r.alerts),
                "worst": "block" if r.blocks else "review",
                "reasons": reasons_in_words(r.codes),
                "total_usd": round(float(r.total_usd), 2),
                "max_risk": round(float(r.max_risk), 3),
                "assignee": r.assignee,
                "last_ts": f"{r.last_ts:%Y-%m-%d %H:%M:%S}",
                "alert_ids": list(r.alert_ids),
            }
        )
    return rows


def sort_of(model: list[dict[str, Any]] | None) -> tuple[tuple[str, bool], ...]:
    """AG Grid's sort model (``[{"colId": "total_usd", "sort": "desc"}, ...]``) as
    :func:`clickhouse.queries.case_page` sort keys; unknown columns are ignored."""
    out = []
    for m in model or ():
        col = SORTS.get(str(m.get("colId"))) if isinstance(m, dict) else None
        if col is not None and m.get("sort") in ("asc", "desc"):
            key, flip = col
            out.append((key, (m["sort"] == "desc") != flip))
    return tuple(out)


def queue(
    range_label: str,
    *filters: Any,
    start: int = 0,
    end: int = PAGE_SIZE,
    sort_model: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], Any, str, int]:
    """Rows ``start .. end`` of the filtered queue, banner, count line and total."""
    c = ctx()
    try:
        f = build_filter(range_label, *filters)
        if f is None:
            return [], info_banner("No transactions stored yet."), "", 0
    except ValueError as e:
        return [], info_banner(f"Filter refused: {e}"), "", 0
    except Exception as e:  # ClickHouse down: explicit banner, app keeps running
        return [], error_banner(c.store.url, e), "", 0
    now = datetime.now(UTC)
    sla = c.settings.dash_case_sla_minutes
    limit = min(max(end - start, 0), MAX_BLOCK)
    try:
        pg = q.case_page(
            c.store, f, max(start, 0), limit, sort_of(sort_model), now - timedelta(minutes=sla)
        )
    except Exception as e:
        return [], error_banner(c.store.url, e), "", 0
    rows = case_rows(pg.rows, now, sla)
    return rows, None, f"{pg.total:,} cases · {pg.overdue:,} past the SLA", pg.total


FILTERS = (
    Input("al-range", "value"),
    Input("al-decisions", "value"),
    Input("al-statuses", "value"),
    Input("al-rule", "value"),
    Input("al-min", "value"),
    Input("al-max", "value"),
    Input("al-assignee-filter", "value"),
    Input("al-search", "value"),
)

# --- saved views: named filter sets, kept in the analyst's browser --------------------

MAX_VIEWS = 30


def save_view(
    views: dict[str, list[Any]] | None, name: str | None, values: list[Any]
) -> tuple[dict[str, list[Any]], str]:
    """``views`` with ``name`` set to the filter ``values`` (or unchanged, with why)."""
    views = dict(views or {})
    name = (name or "").strip()
    if not name:
        return views, "Name the view first."
    if name not in views and len(views) >= MAX_VIEWS:
        return views, f"At most {MAX_VIEWS} views: delete one first."
    views[name] = list(values)
    return views, f"Saved view “{name}”."


SAVE_VIEW_IO = (
    Output("al-views", "data"),
    Output("al-view-message", "children"),
    Input("al-view-save", "n_clicks"),
    Input("al-view-delete", "n_clicks"),
    State("al-view-name", "value"),
    State("al-view", "value"),
    State("al-views", "data"),
    *[State(i.component_id, i.component_property) for i in FILTERS],
)


def on_save_view(
    _save: Any,
    _delete: Any,
    name: str | None,
    chosen: str | None,
    views: dict[str, list[Any]] | None,
    *values: Any,
    trigger: str | None = None,
) -> tuple[Any, str]:
    """Save the current filters under a name, or delete the chosen view."""
    trigger = trigger or callback_context.triggered_id
    if trigger == "al-view-delete":
        if not chosen or chosen not in (views or {}):
            return no_update, "Choose a view to delete."
        return {k: v for k, v in (views or {}).items() if k != chosen}, f"Deleted “{chosen}”."
    return save_view(views, name, list(values))


VIEW_OPTIONS_IO = (Output("al-view", "options"), Input("al-views", "data"))


def view_options(views: dict[str, list[Any]] | None) -> list[str]:
    return sorted(views or {})


APPLY_VIEW_IO = (
    *[Output(i.component_id, i.component_property, allow_duplicate=True) for i in FILTERS],
    Input("al-view", "value"),
    State("al-views", "data"),
)


def apply_view(name: str | None, views: dict[str, list[Any]] | None) -> tuple[Any, ...]:
    """The chosen view's filters into the widgets (the grid reloads from them)."""
    got = (views or {}).get(name or "")
    if not isinstance(got, list) or len(got) != len(FILTERS):
        return tuple(no_update for _ in FILTERS)
    return tuple(got)


PAGE_IO = (
    Output("al-grid", "getRowsResponse"),
    Output("al-banner", "children"),
    Output("al-count", "children"),
    Input("al-grid", "getRowsRequest"),
    *[State(i.component_id, i.component_property) for i in FILTERS],
)


def page(request: dict[str, Any] | None, range_label: str, *filters: Any) -> tuple[Any, ...]:
    """Answer the grid's ``getRowsRequest`` (rows ``startRow .. endRow`` in its sort
    order) from ClickHouse; ``rowCount`` is the filtered queue's true size."""
    req = request or {}
    start = int(req.get("startRow") or 0)
    end = int(req.get("endRow") or start + PAGE_SIZE)
    rows, banner, count, total = queue(
        range_label, *filters, start=start, end=end, sort_model=req.get("sortModel")
    )
    return {"rowData": rows, "rowCount": total}, banner, count


RELOAD_IO = (
    Output("al-reload", "data"),
    Input("al-tick", "n_intervals"),
    Input("al-version", "data"),
    Input("al-pushed", "data"),
    *FILTERS,
)
"""A tick, an action or a push refreshes the loaded pages in place; a filter change
purges them and shows the first page (clientside: ``assets/queue.js``)."""

SELECT_IO = (
    Output("al-selection", "data"),
    Input("al-select-page", "n_clicks"),
    Input("al-clear", "n_clicks"),
)
"""Tick every case of the page shown, or untick all (clientside: ``assets/queue.js``)."""


# --- live push ------------------------------------------------------------------------

LIVE_SHOWN = 8
"""Newest pushed alerts listed above the grid."""
PUSH_REFRESH_S = 2.0
"""A push reloads the grid from ClickHouse at most this often (the strip shows each push
at once; the grid follows)."""
SAFETY_NET_FACTOR = 6
"""With push, the grid also reloads every ``dash_refresh_s`` × this (a missed push)."""


def live_strip(pushed: bool) -> html.Div:
    """The newest alerts as they are pushed (or a line saying the page polls)."""
    if not pushed:
        return html.Div(
            "Live push is off (no broker configured): the queue reloads every few seconds.",
            className="muted",
        )
    return html.Div(
        [
            EventSource(id="al-live", url="/live/alerts"),
            dcc.Store(id="al-live-items", data=[]),
            html.Span("Live", className="live-badge", title="new alerts are pushed here"),
            html.Ul(id="al-live-list", className="live-list"),
            html.Div(id="al-notice", className="notice", role="alert"),
        ],
        className="live",
    )


def live_items(message: str | None, items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The alerts of a pushed snapshot (JSON from ``/live/alerts``), newest first; the
    shown ones if the message is not a snapshot."""
    try:
        msg = orjson.loads(message or b"")
    except orjson.JSONDecodeError:
        return list(items or [])
    got = msg.get("items") if isinstance(msg, dict) and msg.get("kind") == "alerts" else None
    if not isinstance(got, list):
        return list(items or [])
    return [i for i in got if isinstance(i, dict) and "alert_id" in i][:LIVE_SHOWN]


def live_list(items: list[dict[str, Any]]) -> list[html.Li]:
    """One line per pushed alert; text only, the user a link to their page."""
    return [
        html.Li(
            [
                html.Span(i.get("decision", ""), className=f"pill {i.get('decision', '')}"),
                dcc.Link(str(i.get("user_id", "")), href=user_href(str(i.get("user_id", "")))),
                html.Span(f" {i.get('amount', '')} · risk {i.get('risk', '')} · "),
                html.Span(str(i.get("reason", ""))),
                html.Span(f" · {str(i.get('ts', ''))[11:19]}", className="muted"),
            ],
            key=str(i.get("alert_id", "")),
            **{"data-alert": str(i.get("alert_id", ""))},
        )
        for i in items
    ]


LIVE_IO = (
    Output("al-live-items", "data"),
    Output("al-live-list", "children"),
    Output("al-pushed", "data"),
    Output("al-notice", "children"),
    Input("al-live", "message"),
    State("al-live-items", "data"),
    State("al-pushed", "data"),
)


def on_push(
    message: str | None,
    items: list[dict[str, Any]] | None,
    last_ms: int | None,
    now_ms: int | None = None,
) -> tuple[Any, Any, Any, Any]:
    """Show a pushed alert now (a block also as a notice); reload the grid if the last
    reload is old enough, or at once when another analyst changed cases."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        kind = orjson.loads(message or b"").get("kind")
    except (orjson.JSONDecodeError, AttributeError):
        kind = None
    if kind == "case":
        return no_update, no_update, now_ms, no_update
    shown = live_items(message, items)
    reload = now_ms - int(last_ms or 0) >= PUSH_REFRESH_S * 1000
    before = {i.get("alert_id") for i in items or []}
    blocks = [i for i in shown if i.get("decision") == "block" and i["alert_id"] not in before]
    new = blocks[0] if blocks else None
    notice = (
        f"New block: {new['user_id']} · {new['amount']} · {new['reason']}"
        if new is not None
        else no_update
    )
    return shown, live_list(shown), now_ms if reload else no_update, notice


ASSIGNEES_IO = (Output("al-assign-to", "options"), Input("al-version", "data"))


def assignees(_version: Any) -> list[str]:
    from dash_app.auth import accounts

    return accounts().names()


ACT_IO = (
    Output("al-message", "children"),
    Output("al-version", "data"),
    Input("al-claim", "n_clicks"),
    Input("al-assign", "n_clicks"),
    Input("al-apply", "n_clicks"),
    State("al-grid", "selectedRows"),
    State("al-assign-to", "value"),
    State("al-verdict", "value"),
    State("al-note", "value"),
    State("al-version", "data"),
)


def act(
    _claim: Any,
    _assign: Any,
    _apply: Any,
    selected: list[dict[str, Any]] | None,
    assign_to: str | None,
    verdict: str,
    note: str | None,
    version: int | None,
    trigger: str | None = None,
) -> tuple[str, int]:
    """Claim, assign or judge the selected cases (``trigger`` = the button's id)."""
    trigger = trigger or callback_context.triggered_id
    ids = [r["id"] for r in selected or () if isinstance(r, dict) and "id" in r]
    seen = {r["id"]: list(r.get("alert_ids") or ()) for r in selected or () if "id" in r}
    now = datetime.now(UTC)
    try:
        if trigger == "al-claim":
            msg = casework.claim(ids, now)
        elif trigger == "al-assign":
            msg = casework.assign(ids, assign_to, now)
        else:
            msg = casework.give_verdict(ids, seen, verdict, note, now)
    except PermissionError as e:
        return f"Refused: {e}.", version or 0
    except Exception as e:
        return f"Could not record it: {e}", version or 0
    return msg, (version or 0) + 1


NAV_IO = (Output("al-nav", "href"), Input("al-grid", "cellClicked"))


def open_case(cell: dict[str, Any] | None) -> Any:
    """A click on a case's user or number opens the case page."""
    if not cell or cell.get("colId") not in ("user_id", "case") or not cell.get("rowId"):
        return no_update
    return case_href(str(cell["rowId"]))


EXPORT_IO = (
    Output("al-download", "data"),
    Input("al-export", "n_clicks"),
    *[State(i.component_id, i.component_property) for i in FILTERS],
)

CSV_LIMIT = 100_000
CSV_TIME_COLUMNS = ("ts", "created_at", "reviewed_at")
CSV_MONEY_COLUMNS = ("amount", "amount_usd")


def alerts_csv(df: pd.DataFrame) -> str:
    """The export as CSV text: times as ISO-8601 UTC (empty when unset, e.g. an unreviewed
    alert's reviewed_at), amounts with two decimals, every text cell neutralised for
    spreadsheets (ids, merchants, notes are attacker-controllable; see :func:`csv_safe`)."""
    out = df.copy()
    for col in CSV_TIME_COLUMNS:
        if col in out:
            out[col] = [_iso(v) for v in out[col]]
    for col in CSV_MONEY_COLUMNS:
        if col in out:
            out[col] = [f"{float(v):.2f}" for v in out[col]]
    return csv_safe(out).to_csv(index=False)


def _iso(v: Any) -> str:
    if v is None or pd.isna(v):
        return ""
    return pd.Timestamp(v).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def export(_n: int, range_label: str, *filters: Any, now: datetime | None = None) -> Any:
    """The alerts of the listed cases (with their case id) as CSV, named by the wall-clock
    time of the export."""
    c = ctx()
    f = build_filter(range_label, *filters)
    if f is None:
        return no_update
    cases = q.case_queue(c.store, f, limit=EXPORT_CASES)
    case_of = {a: cid for cid, ids in zip(cases.case_id, cases.alert_ids, strict=True) for a in ids}
    df = (
        q.alert_by_id(c.store, list(case_of)[:CSV_LIMIT]) if case_of else q.alert_by_id(c.store, [])
    )
    df.insert(0, "case_id", [case_of.get(a, "") for a in df.alert_id])
    at = now or datetime.now(UTC)
    return {
        "content": alerts_csv(df),
        "filename": f"alerts-{at:%Y%m%dT%H%M%SZ}.csv",
        "type": "text/csv",
    }
