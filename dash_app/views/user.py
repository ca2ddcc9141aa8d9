"""User drill-down logic: timeline, locations with travel lines, profile, alerts and verdicts."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html

from clickhouse import queries as q
from dash_app import figures as fig
from dash_app.components import error_banner, info_banner, money, text_grid
from dash_app.context import ctx
from dash_app.encode import plotly_text, user_id_from_path

ALERT_COLUMNS = [
    {"headerName": n, "field": i}
    for n, i in (
        ("time (UTC)", "ts"),
        ("amount", "amount"),
        ("risk", "risk"),
        ("decision", "decision"),
        ("reasons", "rules"),
        ("status", "status"),
        ("assignee", "assignee"),
        ("note", "note"),
    )
]


def layout(user_path: str | None = None, **_: Any) -> html.Div:
    """The page of the user whose percent-encoded id ends the path (``/users/x%2Fy`` is
    user ``x/y``); the id is only ever shown as text and passed as a bound parameter."""
    user_id = user_id_from_path(user_path or "")
    refresh_ms = int(ctx().settings.dash_refresh_s * 1000)
    return html.Div(
        [
            html.Div(
                [html.H2(f"User {user_id}"), dcc.Link("← alert queue", href="/alerts")],
                className="toolbar",
            ),
            html.Div(id="us-banner"),
            html.Div(id="us-profile", className="kpis"),
            html.Div(
                [dcc.Graph(id="us-timeline"), dcc.Graph(id="us-map", config=fig.GEO_CONFIG)],
                className="row",
            ),
            html.H4("Alerts and verdicts"),
            text_grid("us-alerts", ALERT_COLUMNS, page_size=15),
            dcc.Store(id="us-user", data=user_id),
            dcc.Interval(id="us-tick", interval=refresh_ms),
        ]
    )


def profile_cards(p: dict[str, Any]) -> list[html.Div]:
    """Profile stats as KPI cards (typical amount, active hours, countries...)."""
    items = [
        ("transactions", f"{p['txns']:,}"),
        ("flagged", f"{p['flagged']:,}"),
        ("blocked", f"{p['blocked']:,}"),
        ("typical amount", money(p["median_usd"])),
        ("p90 amount", money(p["p90_usd"])),
        ("active hours (UTC)", ", ".join(f"{h:02d}h" for h in p["top_hours"])),
        ("countries", ", ".join(p["countries"])),
        ("channels", ", ".join(p["channels"])),
        ("cards / devices", f"{p['cards']} / {p['devices']}"),
        ("seen", f"{p['first_seen']:%Y-%m-%d} → {p['last_seen']:%Y-%m-%d %H:%M}"),
    ]
    return [
        html.Div(
            [html.Div(k, className="kpi-label"), html.Div(v, className="kpi-value")],
            className="kpi",
        )
        for k, v in items
    ]


def user_data(user_id: str) -> dict[str, Any]:
    store = ctx().store
    try:
        p = q.user_profile(store, user_id)
        if p is None:
            blank = fig.empty(f"No transactions stored for {plotly_text(user_id)}")
            return {
                "profile": [],
                "timeline": blank,
                "map": blank,
                "alerts": [],
                "banner": info_banner(f"Unknown user {user_id!r}."),
            }
        tl = q.user_timeline(store, user_id)
        al = q.user_alerts(store, user_id)
    except Exception as e:
        blank = fig.empty("ClickHouse unavailable")
        return {
            "profile": [],
            "timeline": blank,
            "map": blank,
            "alerts": [],
            "banner": error_banner(store.url, e),
        }
    alerts = [
        {
            "id": r.alert_id,
            "ts": f"{r.ts:%Y-%m-%d %H:%M:%S}",
            "amount": f"{r.amount:,.2f} {r.currency}",
            "risk": round(float(r.risk_score), 3),
            "decision": r.decision,
            "rules": r.rules,
            "status": r.status,
            "assignee": r.assignee,
            "note": r.note or "",
        }
        for r in al.itertuples()
    ]
    return {
        "profile": profile_cards(p),
        "timeline": fig.user_timeline(tl),
        "map": fig.user_map(tl),
        "alerts": alerts,
        "banner": None,
    }


REFRESH_IO = (
    Output("us-profile", "children"),
    Output("us-timeline", "figure"),
    Output("us-map", "figure"),
    Output("us-alerts", "rowData"),
    Output("us-banner", "children"),
    Input("us-tick", "n_intervals"),
    State("us-user", "data"),
)


def refresh(_tick: Any, user_id: str | None) -> tuple[Any, ...]:
    d = user_data(user_id or "")
    return d["profile"], d["timeline"], d["map"], d["alerts"], d["banner"]
