"""Case page: the user's timeline and map, every alert of the case with its full reasons and
transaction, the audit trail, and the actions (claim, assign, verdict, note).

Keyboard shortcuts (``assets/shortcuts.js``, ignored while typing in a field): ``n`` next
case, ``c`` claim, ``f`` confirm fraud, ``p`` false positive, ``e`` escalate.  A verdict
applies to the alerts ticked in the alerts grid, or to the whole case when none is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dash_ag_grid as dag
from dash import Input, Output, State, callback_context, dcc, html, no_update

from clickhouse import queries as q
from dash_app import casework
from dash_app import figures as fig
from dash_app.auth import accounts, current_actor
from dash_app.components import duration, error_banner, info_banner, money, reasons_in_words
from dash_app.context import ctx
from dash_app.encode import case_href, plotly_text, user_href, user_id_from_path

__all__ = ["ALERT_COLUMNS", "HISTORY_COLUMNS", "case_data", "layout"]

ALERT_COLUMNS: list[dict[str, Any]] = [
    {"headerName": "time (UTC)", "field": "ts", "width": 165},
    {"headerName": "txn", "field": "txn_id", "width": 110},
    {"headerName": "decision", "field": "decision", "width": 95},
    {"headerName": "risk", "field": "risk", "width": 75},
    {"headerName": "amount", "field": "amount", "width": 120},
    {"headerName": "USD", "field": "amount_usd", "width": 95},
    {
        "headerName": "reasons",
        "field": "reasons",
        "width": 340,
        "wrapText": True,
        "autoHeight": True,
        "cellStyle": {"whiteSpace": "pre-wrap", "lineHeight": "1.4"},
    },
    {
        "headerName": "merchant",
        "field": "merchant",
        "width": 160,
        "wrapText": True,
        "autoHeight": True,
    },
    {"headerName": "channel", "field": "channel", "width": 85},
    {"headerName": "card", "field": "card_id", "width": 100},
    {"headerName": "device", "field": "device_id", "width": 110},
    {"headerName": "IP", "field": "ip", "width": 120},
    {"headerName": "location", "field": "location", "width": 140},
    {
        "headerName": "features",
        "field": "features",
        "width": 300,
        "wrapText": True,
        "autoHeight": True,
    },
    {"headerName": "status", "field": "status", "width": 125},
    {"headerName": "reviewer", "field": "reviewer", "width": 100},
]
HISTORY_COLUMNS: list[dict[str, Any]] = [
    {"headerName": "when (UTC)", "field": "at", "width": 190},
    {"headerName": "who", "field": "actor", "width": 110},
    {"headerName": "action", "field": "action", "width": 90},
    {"headerName": "detail", "field": "detail", "width": 200},
    {"headerName": "alerts", "field": "alerts", "width": 80},
    {"headerName": "note", "field": "note", "flex": 1, "wrapText": True, "autoHeight": True},
]


def layout(case_path: str | None = None, **_: Any) -> html.Div:
    case_id = user_id_from_path(case_path or "")
    c = ctx()
    actor = current_actor()
    admin = actor is not None and actor.is_admin
    return html.Div(
        [
            html.Div(
                [
                    html.H2("Case", id="cs-title"),
                    dcc.Link("← case queue", href="/alerts"),
                    html.Span(id="cs-user-link"),
                    html.Span(
                        "keys: n next · c claim · f fraud · p false positive · e escalate",
                        className="muted",
                    ),
                ],
                className="toolbar",
            ),
            html.Div(id="cs-banner"),
            html.Div(id="cs-summary", className="kpis"),
            html.Div(
                [
                    html.Button("Claim (c)", id="cs-claim"),
                    dcc.Dropdown(
                        id="cs-assign-to",
                        placeholder="assign to…",
                        style={"width": "12em"},
                        disabled=not admin,
                    ),
                    html.Button(
                        "Assign",
                        id="cs-assign",
                        disabled=not admin,
                        title="" if admin else "admins only",
                    ),
                    dcc.Textarea(
                        id="cs-note",
                        placeholder="note (kept with the verdict)",
                        maxLength=2000,
                        style={"width": "26em", "height": "3em"},
                    ),
                    html.Button("Confirm fraud (f)", id="cs-fraud", className="danger"),
                    html.Button("False positive (p)", id="cs-fp"),
                    html.Button("Escalate (e)", id="cs-escalate"),
                    html.Button("Add note", id="cs-add-note"),
                    html.Button("Next case (n)", id="cs-next"),
                    html.Div(id="cs-message", role="status"),
                ],
                className="panel triage",
            ),
            html.H4("Alerts in this case (tick some to judge only those)"),
            dag.AgGrid(
                id="cs-alerts",
                columnDefs=ALERT_COLUMNS,
                rowData=[],
                getRowId="params.data.id",
                dashGridOptions={"rowSelection": {"mode": "multiRow"}, "animateRows": False},
                style={"height": "45vh"},
                className="ag-theme-quartz",
            ),
            html.Div(
                [dcc.Graph(id="cs-timeline"), dcc.Graph(id="cs-map", config=fig.GEO_CONFIG)],
                className="row",
            ),
            html.H4("Audit trail"),
            dag.AgGrid(
                id="cs-history",
                columnDefs=HISTORY_COLUMNS,
                rowData=[],
                getRowId="params.data.id",
                dashGridOptions={"domLayout": "autoHeight", "animateRows": False},
                className="ag-theme-quartz",
            ),
            dcc.Location(id="cs-nav", refresh="callback-nav"),
            dcc.Store(id="cs-case", data=case_id),
            dcc.Store(id="cs-version", data=0),
            dcc.Interval(id="cs-tick", interval=int(c.settings.dash_refresh_s * 1000)),
        ]
    )


def _text(v: Any) -> str:
    return "" if v is None or v != v else str(v)  # None and NaN are empty


def alert_rows(df: Any) -> list[dict[str, Any]]:
    rows = []
    for r in df.itertuples(index=False):
        located = r.lat is not None and r.lat == r.lat
        rows.append(
            {
                "id": r.alert_id,
                "ts": f"{r.ts:%Y-%m-%d %H:%M:%S}",
                "txn_id": r.txn_id,
                "decision": r.decision,
                "risk": f"{r.risk_score:.3f}",
                "amount": f"{r.amount:,.2f} {r.currency}",
                "amount_usd": f"{r.amount_usd:,.2f}",
                "reasons": r.reasons,
                "merchant": f"{r.merchant_id} ({_text(r.merchant_category)})",
                "channel": _text(r.channel),
                "card_id": r.card_id,
                "device_id": _text(r.device_id),
                "ip": _text(r.ip),
                "location": (
                    f"{_text(r.country)} {r.lat:.3f}, {r.lon:.3f}" if located else _text(r.country)
                ),
                "features": _text(r.features),
                "status": r.status,
                "reviewer": _text(r.reviewer),
            }
        )
    return rows


def history_rows(df: Any) -> list[dict[str, Any]]:
    out = []
    for r in df.itertuples(index=False):
        detail = {"claim": r.assignee, "assign": f"to {r.assignee}", "verdict": r.verdict}
        out.append(
            {
                "id": r.action_id,
                "at": f"{r.at:%Y-%m-%d %H:%M:%S.%f}"[:-3],
                "actor": r.actor,
                "action": r.action,
                "detail": detail.get(r.action, ""),
                "alerts": int(r.alerts),
                "note": _text(r.note),
            }
        )
    return out


def summary_cards(s: dict[str, Any], sla_minutes: int) -> list[html.Div]:
    opened = s["opened_at"].replace(tzinfo=UTC)
    age = (datetime.now(UTC) - opened).total_seconds() / 60
    sla = (
        "closed"
        if s["is_closed"]
        else f"{duration(sla_minutes - age)} left"
        if age <= sla_minutes
        else f"overdue {duration(age - sla_minutes)}"
    )
    items = [
        ("status", s["status"]),
        ("assignee", s["assignee"] or "nobody"),
        ("alerts", f"{int(s['alerts'])} ({int(s['blocks'])} blocked)"),
        ("at stake (USD)", money(s["total_usd"])),
        ("max risk", f"{s['max_risk']:.2f}"),
        ("SLA", sla),
        ("age", duration(max(age, 0))),
        ("reasons", reasons_in_words(s["codes"])),
    ]
    return [
        html.Div(
            [html.Div(k, className="kpi-label"), html.Div(v, className="kpi-value")],
            className="kpi",
        )
        for k, v in items
    ]


def case_data(case_id: str) -> dict[str, Any]:
    """Everything the page shows for a case, or an explicit banner."""
    c = ctx()
    blank = {
        "title": "Case",
        "user": None,
        "summary": [],
        "alerts": [],
        "history": [],
        "timeline": fig.empty(""),
        "map": fig.empty(""),
        "banner": None,
    }
    try:
        s = q.case_summary(c.store, case_id)
        if s is None:
            return {**blank, "banner": info_banner(f"No case {case_id!r}.")}
        alerts = q.case_alerts(c.store, case_id)
        history = q.case_history(c.store, case_id)
        tl = q.user_timeline(c.store, s["user_id"])
    except Exception as e:
        return {**blank, "banner": error_banner(c.store.url, e)}
    return {
        "title": f"Case #{int(s['seq'])} of user {s['user_id']}",
        "user": s["user_id"],
        "summary": summary_cards(s, c.settings.dash_case_sla_minutes),
        "alerts": alert_rows(alerts),
        "history": history_rows(history),
        "timeline": fig.user_timeline(tl),
        "map": fig.user_map(tl),
        "banner": None,
    }


REFRESH_IO = (
    Output("cs-title", "children"),
    Output("cs-user-link", "children"),
    Output("cs-summary", "children"),
    Output("cs-alerts", "rowData"),
    Output("cs-history", "rowData"),
    Output("cs-timeline", "figure"),
    Output("cs-map", "figure"),
    Output("cs-banner", "children"),
    Output("cs-assign-to", "options"),
    Input("cs-tick", "n_intervals"),
    Input("cs-version", "data"),
    State("cs-case", "data"),
)


def refresh(_tick: Any, _version: Any, case_id: str | None) -> tuple[Any, ...]:
    d = case_data(case_id or "")
    link = None if d["user"] is None else dcc.Link("user page →", href=user_href(d["user"]))
    return (
        d["title"],
        link,
        d["summary"],
        d["alerts"],
        d["history"],
        d["timeline"],
        d["map"],
        d["banner"],
        accounts().names(),
    )


ACT_IO = (
    Output("cs-message", "children"),
    Output("cs-version", "data"),
    Output("cs-note", "value"),
    Input("cs-claim", "n_clicks"),
    Input("cs-assign", "n_clicks"),
    Input("cs-fraud", "n_clicks"),
    Input("cs-fp", "n_clicks"),
    Input("cs-escalate", "n_clicks"),
    Input("cs-add-note", "n_clicks"),
    State("cs-case", "data"),
    State("cs-alerts", "rowData"),
    State("cs-alerts", "selectedRows"),
    State("cs-assign-to", "value"),
    State("cs-note", "value"),
    State("cs-version", "data"),
)

VERDICT_OF = {"cs-fraud": "confirmed_fraud", "cs-fp": "false_positive", "cs-escalate": "escalated"}


def act(
    *args: Any,
    trigger: str | None = None,
) -> tuple[Any, ...]:
    """One action on the case; the note box is emptied once the note is recorded."""
    _, _, _, _, _, _, case_id, rows, selected, assign_to, note, version = args
    trigger = trigger or callback_context.triggered_id
    seen = {case_id: [r["id"] for r in rows or () if isinstance(r, dict) and "id" in r]}
    picked = [r["id"] for r in selected or () if isinstance(r, dict) and "id" in r]
    now = datetime.now(UTC)
    keep_note = no_update
    try:
        if trigger == "cs-claim":
            msg = casework.claim([case_id], now)
        elif trigger == "cs-assign":
            msg = casework.assign([case_id], assign_to, now)
        elif trigger == "cs-add-note":
            msg = casework.add_note(case_id, note, now)
            keep_note = "" if msg == "Note added." else no_update
        elif trigger in VERDICT_OF:
            msg = casework.give_verdict(
                [case_id], seen, VERDICT_OF[trigger], note, now, selected=picked or None
            )
            keep_note = "" if msg.startswith("Recorded") else no_update
        else:
            return no_update, no_update, no_update
    except PermissionError as e:
        return f"Refused: {e}.", version or 0, no_update
    except Exception as e:
        return f"Could not record it: {e}", version or 0, no_update
    return msg, (version or 0) + 1, keep_note


NEXT_IO = (
    Output("cs-nav", "href"),
    Output("cs-message", "children", allow_duplicate=True),
    Input("cs-next", "n_clicks"),
    State("cs-case", "data"),
)


def go_next(_n: Any, case_id: str | None) -> tuple[Any, Any]:
    try:
        nxt = casework.next_case(case_id)
    except PermissionError as e:
        return no_update, f"Refused: {e}."
    if nxt is None:
        return no_update, "No other case needs work."
    return case_href(nxt), no_update


def title_text(case_id: str) -> str:
    """The plotly-safe title of an unknown case (data never becomes markup)."""
    return plotly_text(case_id)
