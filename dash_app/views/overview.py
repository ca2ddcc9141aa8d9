"""Overview page logic: KPIs, decisions per minute, risk, rule hits, alert map, top users."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html, no_update

from clickhouse import queries as q
from dash_app import figures as fig
from dash_app.components import (
    clicked_user_href,
    error_banner,
    info_banner,
    kpi,
    money,
    range_picker,
    reasons_in_words,
    text_grid,
    user_nav,
)
from dash_app.context import ctx, resolve_range
from dash_app.encode import case_href

KPI_IDS = (
    "ov-kpi-rate",
    "ov-kpi-txns",
    "ov-kpi-volume",
    "ov-kpi-flagged",
    "ov-kpi-blocked",
    "ov-kpi-open",
    "ov-kpi-latency",
)


def layout(**_: Any) -> html.Div:
    refresh_ms = int(ctx().settings.dash_refresh_s * 1000)
    return html.Div(
        [
            html.Div([html.H2("Overview"), range_picker("ov-range")], className="toolbar"),
            html.Div(id="ov-banner"),
            html.Div(
                [
                    kpi("transactions/s", "–", KPI_IDS[0]),
                    kpi("transactions", "–", KPI_IDS[1]),
                    kpi("volume (USD)", "–", KPI_IDS[2]),
                    kpi("flagged rate", "–", KPI_IDS[3]),
                    kpi("blocked (USD)", "–", KPI_IDS[4]),
                    dcc.Link(
                        kpi("open alerts", "–", KPI_IDS[5]),
                        href="/alerts",
                        title="open the case queue",
                        className="kpi-link",
                    ),
                    kpi("p95 ingest→decision", "–", KPI_IDS[6]),
                ],
                className="kpis",
            ),
            html.Div([dcc.Graph(id="ov-series", className="wide")], className="row"),
            html.Div([dcc.Graph(id="ov-risk"), dcc.Graph(id="ov-rules")], className="row"),
            html.Div(
                [
                    dcc.Graph(id="ov-map", config=fig.GEO_CONFIG),
                    html.Div(
                        [
                            html.H4("Top flagged users"),
                            text_grid(
                                "ov-top",
                                [
                                    {"headerName": "user", "field": "user_id", "minWidth": 140},
                                    {"headerName": "flagged", "field": "flagged"},
                                    {"headerName": "txns", "field": "txns"},
                                    {"headerName": "flagged USD", "field": "flagged_usd"},
                                    {"headerName": "max risk", "field": "max_risk"},
                                ],
                            ),
                        ],
                        className="panel",
                    ),
                ],
                className="row",
            ),
            html.Div(
                [
                    html.H4("Latest high-risk alerts"),
                    html.Ul(id="ov-latest", className="latest"),
                ],
                className="panel",
            ),
            user_nav("ov-nav"),
            dcc.Interval(id="ov-tick", interval=refresh_ms),
        ]
    )


def _blank(message: str, banner: Any) -> dict[str, Any]:
    """Every output empty, saying why (no data yet, ClickHouse down)."""
    blank = fig.empty(message)
    return {
        "kpis": ["–"] * len(KPI_IDS),
        "series": blank,
        "risk": blank,
        "rules": blank,
        "map": blank,
        "top": [],
        "latest": [],
        "banner": banner,
    }


def overview_data(range_label: str) -> dict[str, Any]:
    """Everything the page shows for a range: KPI strings, figures, top users, banner."""
    store = ctx().store
    try:
        rng = resolve_range(store, range_label)
        if rng is None:
            msg = "No transactions stored yet: start the generator and the dataflow."
            return _blank(msg, info_banner(msg))
        start, end = rng
        k = q.kpis(store, start, end)
        bucket = q.bucket_seconds(start, end)
        alerts = q.latest_alerts(store, q.AlertFilter(start, end), limit=500)
        high = alerts[alerts.risk_score >= ctx().settings.block_threshold]
        top = q.top_flagged_users(store, start, end)
        return {
            "kpis": [
                f"{k.txn_per_s:,.1f}",
                f"{k.txns:,}",
                money(k.volume_usd),
                f"{k.flagged_rate:.2%}",
                money(k.blocked_usd),
                f"{k.open_alerts:,}",
                "–" if k.p95_latency_ms is None else _ms(k.p95_latency_ms),
            ],
            "series": fig.volume_series(q.volume_series(store, start, end, bucket), bucket),
            "risk": fig.risk_histogram(q.risk_distribution(store, start, end)),
            "rules": fig.rule_bars(q.rule_hits(store, start, end)),
            "map": fig.alerts_map(alerts),
            "top": [
                {
                    "id": r.user_id,
                    "user_id": r.user_id,
                    "flagged": int(r.flagged),
                    "txns": int(r.txns),
                    "flagged_usd": money(r.flagged_usd),
                    "max_risk": f"{r.max_risk:.2f}",
                }
                for r in top.itertuples()
            ],
            "latest": latest_items(high, q.alert_cases(store, _latest_ids(high))),
            "banner": None,
        }
    except Exception as e:  # any store failure becomes an explicit banner, not a crash
        return _blank("ClickHouse unavailable", error_banner(ctx().store.url, e))


LATEST = 10


def latest_items(alerts: Any, cases: dict[str, str]) -> list[html.Li]:
    """The newest blocked alerts (then the riskiest reviews), each a link to its case;
    texts are plain strings."""
    if alerts.empty:
        return [html.Li("No alerts in this range.", className="muted")]
    top = alerts.sort_values(["ts", "risk_score"], ascending=False).head(LATEST)
    items = []
    for r in top.itertuples(index=False):
        line = (
            f"{r.ts:%H:%M:%S} · {r.decision} · risk {r.risk_score:.2f} · "
            f"${float(r.amount_usd):,.2f} · {r.user_id} · {reasons_in_words(r.rules.split(', '))}"
        )
        cid = cases.get(r.alert_id)
        items.append(html.Li(dcc.Link(line, href=case_href(cid)) if cid else line))
    return items


def _latest_ids(alerts: Any) -> list[str]:
    if alerts.empty:
        return []
    return list(alerts.sort_values(["ts", "risk_score"], ascending=False).alert_id[:LATEST])


def _ms(v: float) -> str:
    return f"{v:,.0f} ms" if v < 10_000 else f"{v / 1000:,.0f} s"


REFRESH_IO = (
    [Output(i, "children") for i in KPI_IDS]
    + [
        Output("ov-series", "figure"),
        Output("ov-risk", "figure"),
        Output("ov-rules", "figure"),
        Output("ov-map", "figure"),
        Output("ov-top", "rowData"),
        Output("ov-latest", "children"),
        Output("ov-banner", "children"),
    ],
    Input("ov-tick", "n_intervals"),
    Input("ov-range", "value"),
)


def refresh(_tick: int | None, range_label: str) -> list[Any]:
    d = overview_data(range_label)
    return [
        *d["kpis"],
        d["series"],
        d["risk"],
        d["rules"],
        d["map"],
        d["top"],
        d["latest"],
        d["banner"],
    ]


NAV_IO = (Output("ov-nav", "href"), Input("ov-top", "cellClicked"), State("ov-top", "rowData"))


def open_user(cell: dict[str, Any] | None, data: list[dict[str, Any]] | None) -> Any:
    """A click on a top user opens that user's page."""
    return clicked_user_href(cell, data) or no_update
