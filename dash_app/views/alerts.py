"""Case queue: one row per case (a user's open alerts), by priority, on AG Grid.

Filters and search run in ClickHouse (:func:`clickhouse.queries.case_queue`); the grid
pages, sorts and filters the first :data:`LIMIT` cases client-side.  Every cell is text
(AG Grid's default renderer sets textContent; no markdown/HTML renderer is used).
Selected cases can be claimed, assigned (admins) or judged as a whole; a click on the
user or the case opens the case page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dash_ag_grid as dag
import pandas as pd
from dash import Input, Output, State, callback_context, dcc, html, no_update

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
from dash_app.encode import case_href, csv_safe
from schemas.cases import CASE_STATUSES
from schemas.vocab import RULE_CODES, VERDICTS

__all__ = ["COLUMNS", "LIMIT", "case_rows", "layout", "queue"]

LIMIT = 5000
"""Cases loaded into the grid (the highest priorities first)."""
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
    },
    {"headerName": "total USD", "field": "total_usd", "type": "numericColumn", "width": 120},
    {"headerName": "max risk", "field": "max_risk", "type": "numericColumn", "width": 100},
    {"headerName": "assignee", "field": "assignee", "width": 120},
    {"headerName": "last alert (UTC)", "field": "last_ts", "width": 170},
]
for _c in COLUMNS:
    _c.setdefault("filter", True)
    _c.setdefault("sortable", True)

_WIDE = {"width": "9em"}


def layout(**_: Any) -> html.Div:
    c = ctx()
    refresh_ms = int(c.settings.dash_refresh_s * 1000)
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
                        options=list(RULE_CODES),
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
            html.Div(id="al-banner"),
            html.Div(id="al-count", className="muted"),
            dag.AgGrid(
                id="al-grid",
                columnDefs=COLUMNS,
                rowData=[],
                getRowId="params.data.id",
                dashGridOptions={
                    "rowSelection": {"mode": "multiRow", "selectAll": "filtered"},
                    "pagination": True,
                    "paginationPageSize": 50,
                    "tooltipShowDelay": 300,
                    "animateRows": False,
                },
                getRowStyle={
                    "styleConditions": [
                        {"condition": "params.data.worst === 'block'", "style": {"color": "#b00"}}
                    ]
                },
                style={"height": "60vh"},
                className="ag-theme-quartz",
            ),
            html.Div(
                [
                    html.H4("Selected cases"),
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
            dcc.Interval(id="al-tick", interval=refresh_ms),
        ]
    )


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


def queue(range_label: str, *filters: Any) -> tuple[list[dict[str, Any]], Any, str]:
    """Rows, banner and count line for the current filters."""
    c = ctx()
    try:
        f = build_filter(range_label, *filters)
        if f is None:
            return [], info_banner("No transactions stored yet."), ""
    except ValueError as e:
        return [], info_banner(f"Filter refused: {e}"), ""
    except Exception as e:  # ClickHouse down: explicit banner, app keeps running
        return [], error_banner(c.store.url, e), ""
    try:
        df = q.case_queue(c.store, f, limit=LIMIT)
    except Exception as e:
        return [], error_banner(c.store.url, e), ""
    rows = case_rows(df, datetime.now(UTC), c.settings.dash_case_sla_minutes)
    more = f" (the first {LIMIT:,} by priority)" if len(rows) == LIMIT else ""
    overdue = sum(r["overdue"] for r in rows)
    return rows, None, f"{len(rows):,} cases{more} · {overdue:,} past the SLA"


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

REFRESH_IO = (
    Output("al-grid", "rowData"),
    Output("al-banner", "children"),
    Output("al-count", "children"),
    Input("al-tick", "n_intervals"),
    Input("al-version", "data"),
    *FILTERS,
)


def refresh(_tick: Any, _version: Any, range_label: str, *filters: Any) -> tuple[Any, ...]:
    return queue(range_label, *filters)


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
    cases = q.case_queue(c.store, f, limit=LIMIT)
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
