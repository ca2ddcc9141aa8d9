"""Alert queue logic: filter, sort and select alerts; record verdicts; export CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dash import Input, Output, State, dash_table, dcc, html, no_update

from clickhouse import queries as q
from dash_app.components import (
    USER_CELL_STYLE,
    clicked_user_href,
    error_banner,
    info_banner,
    range_picker,
    user_nav,
)
from dash_app.context import ctx, resolve_range
from dash_app.encode import csv_safe
from dash_app.metrics import VERDICTS_RECORDED, VERDICTS_UNPUBLISHED
from schemas.scored import Review
from schemas.vocab import RULE_CODES, VERDICTS

COLUMNS = [
    {"name": "time (UTC)", "id": "ts"},
    {"name": "raised (UTC)", "id": "raised"},
    {"name": "user", "id": "user_id"},
    {"name": "amount", "id": "amount"},
    {"name": "USD", "id": "amount_usd", "type": "numeric"},
    {"name": "risk", "id": "risk_score", "type": "numeric"},
    {"name": "decision", "id": "decision"},
    {"name": "status", "id": "status"},
    {"name": "assignee", "id": "assignee"},
    {"name": "reasons", "id": "rules"},
]
VERDICT_LABELS = {
    "confirmed_fraud": "Confirmed fraud",
    "false_positive": "False positive",
    "escalated": "Escalate",
}


def layout(**_: Any) -> html.Div:
    refresh_ms = int(ctx().settings.dash_refresh_s * 1000)
    return html.Div(
        [
            html.Div(
                [html.H2("Alert queue"), range_picker("al-range", "24 hours")], className="toolbar"
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
                        options=list(q.STATUSES),
                        value=["open", "escalated"],
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
                    ),
                    dcc.Input(
                        id="al-max",
                        type="number",
                        placeholder="max USD",
                        min=0,
                        debounce=True,
                        persistence=True,
                    ),
                    dcc.Input(
                        id="al-assignee-filter",
                        type="text",
                        placeholder="assignee",
                        debounce=True,
                        persistence=True,
                    ),
                    html.Button("Export CSV", id="al-export"),
                    dcc.Download(id="al-download"),
                ],
                className="filters",
            ),
            html.Div(id="al-banner"),
            html.Div(id="al-count", className="muted"),
            dash_table.DataTable(
                id="al-table",
                columns=COLUMNS,
                data=[],
                row_selectable="multi",
                sort_action="native",
                page_size=20,
                style_cell={
                    "textAlign": "left",
                    "padding": "4px",
                    "maxWidth": "28em",
                    "overflow": "hidden",
                    "textOverflow": "ellipsis",
                },
                style_data_conditional=[
                    {"if": {"filter_query": "{decision} = block"}, "color": "#b00"},
                    USER_CELL_STYLE,
                ],
                tooltip_duration=None,
            ),
            html.Div(
                [
                    html.H4("Verdict for the selected alerts"),
                    dcc.RadioItems(
                        id="al-verdict",
                        inline=True,
                        value="confirmed_fraud",
                        options=[{"label": VERDICT_LABELS[v], "value": v} for v in VERDICTS],
                    ),
                    dcc.Input(
                        id="al-assignee", type="text", placeholder="your name", persistence=True
                    ),
                    dcc.Textarea(
                        id="al-note",
                        placeholder="note (optional)",
                        maxLength=2000,
                        style={"width": "30em", "height": "3em"},
                    ),
                    html.Button("Apply", id="al-apply"),
                    html.Div(id="al-message", role="status"),
                ],
                className="panel triage",
            ),
            user_nav("al-nav"),
            dcc.Store(id="al-version", data=0),
            dcc.Interval(id="al-tick", interval=refresh_ms),
        ]
    )


def build_filter(
    start: datetime,
    end: datetime,
    decisions: list[str] | None,
    statuses: list[str] | None,
    rule: str | None,
    min_usd: float | None,
    max_usd: float | None,
    assignee: str | None,
) -> q.AlertFilter:
    """The analyst's widgets as a validated AlertFilter (raises ValueError naming the field)."""
    return q.AlertFilter(
        start,
        end,
        decisions=tuple(decisions or ()),
        statuses=tuple(statuses or ()),
        rule=rule or None,
        min_usd=min_usd,
        max_usd=max_usd,
        assignee=(assignee or "").strip() or None,
    )


def table_rows(df: Any) -> list[dict[str, Any]]:
    """DataTable rows; ``id`` is the alert id so selection survives refreshes."""
    return [
        {
            "id": r.alert_id,
            "alert_id": r.alert_id,
            "txn_id": r.txn_id,
            "user_id": r.user_id,
            "ts": f"{r.ts:%Y-%m-%d %H:%M:%S}",
            "raised": f"{r.created_at:%Y-%m-%d %H:%M:%S.%f}"[:-3],
            "amount": f"{r.amount:,.2f} {r.currency}",
            "amount_usd": round(float(r.amount_usd), 2),
            "risk_score": round(float(r.risk_score), 3),
            "decision": r.decision,
            "status": r.status,
            "assignee": r.assignee,
            "rules": r.rules,
            "reasons": r.reasons,
        }
        for r in df.itertuples()
    ]


def queue(range_label: str, *filters: Any) -> tuple[list[dict[str, Any]], Any, str]:
    """Rows, banner and count line for the current filters."""
    store = ctx().store
    try:
        rng = resolve_range(store, range_label)
        if rng is None:
            return [], info_banner("No transactions stored yet."), ""
        f = build_filter(*rng, *filters)
    except ValueError as e:
        return [], info_banner(f"Filter refused: {e}"), ""
    except Exception as e:  # ClickHouse down: explicit banner, app keeps running
        return [], error_banner(store.url, e), ""
    try:
        rows = table_rows(q.latest_alerts(store, f, limit=2000))
    except Exception as e:
        return [], error_banner(store.url, e), ""
    return rows, None, f"{len(rows):,} alerts" + (" (first 2,000)" if len(rows) == 2000 else "")


REFRESH_IO = (
    Output("al-table", "data"),
    Output("al-table", "selected_rows"),
    Output("al-table", "tooltip_data"),
    Output("al-banner", "children"),
    Output("al-count", "children"),
    Input("al-tick", "n_intervals"),
    Input("al-version", "data"),
    Input("al-range", "value"),
    Input("al-decisions", "value"),
    Input("al-statuses", "value"),
    Input("al-rule", "value"),
    Input("al-min", "value"),
    Input("al-max", "value"),
    Input("al-assignee-filter", "value"),
    State("al-table", "selected_row_ids"),
)


def refresh(
    _tick: Any,
    _version: Any,
    range_label: str,
    decisions: list[str],
    statuses: list[str],
    rule: str | None,
    min_usd: float | None,
    max_usd: float | None,
    assignee: str | None,
    selected_ids: list[str] | None,
) -> tuple[Any, ...]:
    rows, banner, count = queue(range_label, decisions, statuses, rule, min_usd, max_usd, assignee)
    keep = set(selected_ids or ())
    selected = [i for i, r in enumerate(rows) if r["id"] in keep]
    tips = [{"rules": {"value": r["reasons"], "type": "text"}} for r in rows]
    return rows, selected, tips, banner, count


def record_verdicts(
    rows: list[dict[str, Any]], verdict: str, assignee: str | None, note: str | None, now: datetime
) -> str:
    """Store (and publish) one Review per selected alert; returns the message to show."""
    if not rows:
        return "Select one or more alerts first."
    who = (assignee or "").strip()
    if not who:
        return "Enter your name as assignee."
    try:
        reviews = [
            Review(
                r["alert_id"],
                r["txn_id"],
                r["user_id"],
                verdict,
                who,
                (note or "").strip() or None,
                now,
            )
            for r in rows
        ]
    except ValueError as e:
        return f"Verdict refused: {e}"
    c = ctx()
    c.store.save_reviews(reviews)
    VERDICTS_RECORDED.labels(verdict).inc(len(reviews))
    msg = f"Recorded {VERDICT_LABELS[verdict].lower()} on {len(reviews)} alert(s)"
    if c.publish is not None:
        try:
            c.publish(reviews)
            msg += f" and published to {c.settings.topic_feedback}"
        except Exception as e:  # stored already; say what did not happen
            VERDICTS_UNPUBLISHED.inc(len(reviews))
            msg += f"; publishing to {c.settings.topic_feedback} failed: {e}"
    return msg + "."


APPLY_IO = (
    Output("al-message", "children"),
    Output("al-version", "data"),
    Input("al-apply", "n_clicks"),
    State("al-table", "selected_row_ids"),
    State("al-table", "data"),
    State("al-verdict", "value"),
    State("al-assignee", "value"),
    State("al-note", "value"),
    State("al-version", "data"),
)


def apply(
    _n: int,
    selected_ids: list[str] | None,
    data: list[dict[str, Any]],
    verdict: str,
    assignee: str | None,
    note: str | None,
    version: int,
) -> tuple[str, int]:
    keep = set(selected_ids or ())
    rows = [r for r in data or [] if r["id"] in keep]
    try:
        msg = record_verdicts(rows, verdict, assignee, note, datetime.now(UTC))
    except Exception as e:
        return f"Could not record the verdict: {e}", version
    return msg, (version or 0) + 1


EXPORT_IO = (
    Output("al-download", "data"),
    Input("al-export", "n_clicks"),
    State("al-range", "value"),
    State("al-decisions", "value"),
    State("al-statuses", "value"),
    State("al-rule", "value"),
    State("al-min", "value"),
    State("al-max", "value"),
    State("al-assignee-filter", "value"),
)


NAV_IO = (
    Output("al-nav", "href"),
    Input("al-table", "active_cell"),
    State("al-table", "data"),
)


def open_user(cell: dict[str, Any] | None, data: list[dict[str, Any]] | None) -> Any:
    """A click on a user cell opens that user's page."""
    return clicked_user_href(cell, data) or no_update


CSV_LIMIT = 100_000
CSV_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def alerts_csv(df: Any) -> str:
    """The export as CSV text, every text cell neutralised for spreadsheets (user ids,
    merchants, notes and assignees are attacker-controllable; see :func:`csv_safe`)."""
    return csv_safe(df).to_csv(index=False, date_format=CSV_DATE_FORMAT)


def export(_n: int, range_label: str, *filters: Any) -> Any:
    store = ctx().store
    rng = resolve_range(store, range_label)
    if rng is None:
        return no_update
    df = q.latest_alerts(store, build_filter(*rng, *filters), limit=CSV_LIMIT)
    text = alerts_csv(df)
    return {"content": text, "filename": f"alerts-{rng[1]:%Y%m%dT%H%M}.csv", "type": "text/csv"}
