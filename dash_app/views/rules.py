"""Rules page: the rules of the policy in force with their hits and precision, an editor
that validates as you type and previews the detail text on a stored row, a backtest,
the lifecycle buttons (admins, with a note) and the version history with diffs.

Every cell and message is text (AG Grid's default renderer, ``html.Pre`` for diffs);
nothing from the data is parsed as Markdown or HTML.  Writes go through
:mod:`dash_app.rulework`, which checks the role and the note on the server.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import dash_ag_grid as dag
import pandas as pd
from dash import Input, Output, State, callback_context, dcc, html, no_update

from clickhouse import backtest as bt
from clickhouse import queries as q
from clickhouse import rule_stats as rs
from clickhouse import rules as store_rules
from dash_app import figures as fig
from dash_app import rulework as rw
from dash_app.auth import current_actor
from dash_app.components import error_banner, info_banner, range_picker
from dash_app.context import RANGES, ctx, resolve_range
from schemas.rules import EFFECTS, STATUSES, Policy, PolicyError, Rule

__all__ = ["COLUMNS", "layout", "report_view", "rule_rows"]

ALL_TIME = "all time"
RULE_RANGES = [ALL_TIME, *RANGES]

COLUMNS: list[dict[str, Any]] = [
    {"headerName": "id", "field": "id", "cellClass": "link-cell", "width": 160},
    {"headerName": "name", "field": "name", "flex": 1, "minWidth": 150, "tooltipField": "name"},
    {"headerName": "status", "field": "status", "width": 95},
    {"headerName": "effect", "field": "effect", "width": 85},
    {"headerName": "version", "field": "version", "type": "numericColumn", "width": 90},
    {"headerName": "hits", "field": "hits", "type": "numericColumn", "width": 90},
    {"headerName": "hit rate %", "field": "hit_rate", "type": "numericColumn", "width": 105},
    {"headerName": "shadow hits", "field": "shadow_hits", "type": "numericColumn", "width": 110},
    {"headerName": "USD hit", "field": "hit_usd", "type": "numericColumn", "width": 110},
    {"headerName": "judged", "field": "judged", "type": "numericColumn", "width": 90},
    {
        "headerName": "precision % (verdicts)",
        "field": "precision_verdicts",
        "type": "numericColumn",
        "width": 120,
    },
    {
        "headerName": "precision % (labels)",
        "field": "precision_labels",
        "type": "numericColumn",
        "width": 120,
    },
]
for _c in COLUMNS:
    _c.setdefault("sortable", True)
    _c.setdefault("filter", True)

HISTORY_COLUMNS: list[dict[str, Any]] = [
    {"headerName": "version", "field": "version", "type": "numericColumn", "width": 95},
    {"headerName": "time (UTC)", "field": "created_at", "width": 200},
    {"headerName": "author", "field": "author", "width": 120},
    {"headerName": "action", "field": "action", "width": 110},
    {"headerName": "note", "field": "note", "flex": 1, "tooltipField": "note"},
]

FORM = ("id", "name", "description", "effect", "status", "when", "cases", "calibrate")
"""The editor's fields, in the order callbacks receive them."""
FORM_IDS = tuple(f"rl-{f}" for f in FORM)
BUTTONS = {
    "rl-draft": ("Save as draft", "draft"),
    "rl-shadow": ("Shadow", "shadow"),
    "rl-promote": ("Promote (live)", "live"),
    "rl-pause": ("Pause", "paused"),
    "rl-archive": ("Archive", "archived"),
    "rl-rollback": ("Roll back to the selected version", None),
}


def _field(label: str, comp: Any) -> html.Label:
    return html.Label([html.Span(label, className="field-label"), comp], className="field")


def _editor() -> html.Div:
    wide = {"width": "100%"}
    return html.Div(
        [
            html.Div(
                [
                    html.H4("Rule editor"),
                    html.Button("New rule", id="rl-new"),
                    html.Span(
                        "select a rule in the grid, or start a new one",
                        id="rl-editing",
                        className="muted",
                    ),
                ],
                className="toolbar",
            ),
            html.Div(
                [
                    _field("id", dcc.Input(id="rl-id", type="text", style={"width": "14em"})),
                    _field("name", dcc.Input(id="rl-name", type="text", style={"width": "22em"})),
                    _field(
                        "effect",
                        dcc.Dropdown(
                            id="rl-effect",
                            options=list(EFFECTS),
                            value="score",
                            clearable=False,
                            style={"width": "9em"},
                        ),
                    ),
                    _field(
                        "status",
                        dcc.Dropdown(
                            id="rl-status",
                            options=list(STATUSES),
                            value="draft",
                            clearable=False,
                            style={"width": "9em"},
                        ),
                    ),
                ],
                className="editor-row",
            ),
            _field("when (guard)", dcc.Input(id="rl-when", type="text", style=wide)),
            dcc.Checklist(
                id="rl-calibrate",
                options=[
                    {
                        "label": " calibrate: weigh hits by how rare their signal pattern is "
                        "in recent traffic (for signals weak alone)",
                        "value": "on",
                    }
                ],
                value=[],
            ),
            _field(
                "description",
                dcc.Textarea(id="rl-description", style={**wide, "height": "3em"}),
            ),
            _field(
                "cases (JSON list: when, contribution, detail; the first that holds fires)",
                dcc.Textarea(
                    id="rl-cases",
                    className="code",
                    style={**wide, "height": "9em"},
                    spellCheck=False,
                ),
            ),
            html.Div(id="rl-problems", role="status"),
            html.Div(id="rl-preview", className="muted"),
        ],
        className="panel editor",
    )


def _lifecycle(admin: bool, why: str) -> html.Div:
    return html.Div(
        [
            html.H4("Publish"),
            dcc.Textarea(
                id="rl-note",
                placeholder="note: why (required)",
                maxLength=2000,
                style={"width": "26em", "height": "3em"},
            ),
            *[
                html.Button(label, id=bid, disabled=not admin, title=why)
                for bid, (label, _) in BUTTONS.items()
            ],
            html.Div(id="rl-message", role="status"),
        ],
        className="panel triage",
    )


def layout(**_: Any) -> html.Div:
    c = ctx()
    actor = current_actor()
    admin = actor is not None and actor.is_admin
    why = "" if admin else "changing rules needs the admin role"
    return html.Div(
        [
            html.Div(
                [
                    html.H2("Rules"),
                    range_picker("rl-range", "7 days", RULE_RANGES),
                    html.Span(id="rl-policy", className="muted"),
                ],
                className="toolbar",
            ),
            html.Div(
                f"Read-only: {actor.name if actor else 'you'} is an analyst; {why}."
                if not admin
                else "",
                id="rl-readonly",
                className="muted",
            ),
            html.Div(id="rl-banner"),
            html.Div(id="rl-count", className="muted"),
            dag.AgGrid(
                id="rl-grid",
                columnDefs=COLUMNS,
                rowData=[],
                getRowId="params.data.id",
                dashGridOptions={
                    "tooltipShowDelay": 300,
                    "animateRows": False,
                    "domLayout": "autoHeight",
                },
                defaultColDef={"wrapHeaderText": True, "autoHeaderHeight": True},
                className="ag-theme-quartz",
            ),
            _editor(),
            html.Div(
                [
                    html.Div(
                        [
                            html.H4("Backtest"),
                            html.Button("Backtest on the selected range", id="rl-backtest"),
                            html.Span(
                                "the policy in force vs the same with the edited rule as if "
                                "promoted, on the stored transactions of the range",
                                className="muted",
                            ),
                        ],
                        className="toolbar",
                    ),
                    dcc.Loading(html.Div(id="rl-report"), type="default"),
                ],
                className="panel",
            ),
            _lifecycle(admin, why),
            html.Div(
                [
                    html.H4("Version history"),
                    dag.AgGrid(
                        id="rl-history",
                        columnDefs=HISTORY_COLUMNS,
                        rowData=[],
                        getRowId="params.data.id",
                        dashGridOptions={"animateRows": False, "domLayout": "autoHeight"},
                        className="ag-theme-quartz",
                    ),
                    html.Div(id="rl-diff-title", className="muted"),
                    html.Pre(id="rl-diff", className="diff"),
                ],
                className="panel",
            ),
            dcc.Store(id="rl-version", data=0),
            dcc.Store(id="rl-selected-version", data=None),
            dcc.Interval(id="rl-tick", interval=int(c.settings.dash_refresh_s * 5000)),
        ],
        className="rules-page",
    )


# --- pure helpers ---------------------------------------------------------------------


def _pct(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(float(v) * 100, 2)


def rule_rows(policy: Policy, stats: pd.DataFrame, txns: int) -> list[dict[str, Any]]:
    """One grid row per rule of ``policy`` with its figures from :func:`rs.rule_stats`
    (zeros and blanks for a rule with no hit in the range)."""
    by = {r.code: r for r in stats.itertuples(index=False)}
    rows = []
    for r in policy.rules:
        s = by.get(r.id)
        hits = int(s.hits) if s is not None else 0
        rows.append(
            {
                "id": r.id,
                "name": r.name,
                "status": r.status,
                "effect": r.effect,
                "version": r.version,
                "hits": hits,
                "hit_rate": round(100 * hits / txns, 3) if txns else None,
                "shadow_hits": int(s.shadow_hits) if s is not None else 0,
                "hit_usd": round(float(s.hit_usd), 2) if s is not None else 0.0,
                "judged": int(s.confirmed + s.false_positive) if s is not None else 0,
                "precision_verdicts": _pct(s.precision_verdicts) if s is not None else None,
                "precision_labels": _pct(s.precision_labels) if s is not None else None,
            }
        )
    return rows


def _range_of(label: str) -> tuple[datetime, datetime] | None:
    store = ctx().store
    if label != ALL_TIME:
        return resolve_range(store, label)
    bounds = q.data_bounds(store)
    return None if bounds is None else (bounds[0], bounds[1] + timedelta(milliseconds=1))


def _form(values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(FORM, values, strict=True))


# --- callbacks --------------------------------------------------------------------------

REFRESH_IO = (
    Output("rl-grid", "rowData"),
    Output("rl-banner", "children"),
    Output("rl-count", "children"),
    Output("rl-policy", "children"),
    Input("rl-tick", "n_intervals"),
    Input("rl-version", "data"),
    Input("rl-range", "value"),
)


def refresh(_tick: Any, _version: Any, label: str) -> tuple[Any, ...]:
    """The rules in force with their figures over the range."""
    c = ctx()
    try:
        policy = rw.policy_in_force()
        rng = _range_of(label)
        if rng is None:
            rows = rule_rows(policy, pd.DataFrame(), 0)
            return rows, info_banner("No transactions stored yet."), "", rw.policy_label(policy)
        stats, txns = rs.rule_stats(c.store, *rng), rs.txn_count(c.store, *rng)
    except Exception as e:  # ClickHouse down or a bad stored policy: say so, keep running
        return [], error_banner(c.store.url, e), "", no_update
    count = f"{txns:,} transactions from {rng[0]:%Y-%m-%d %H:%M} to {rng[1]:%Y-%m-%d %H:%M} UTC"
    return rule_rows(policy, stats, txns), None, count, rw.policy_label(policy)


FILL_IO = (
    *[Output(i, "value") for i in FORM_IDS],
    Output("rl-editing", "children"),
    Input("rl-grid", "cellClicked"),
    Input("rl-new", "n_clicks"),
)


def fill(cell: dict[str, Any] | None, _new: Any, trigger: str | None = None) -> tuple[Any, ...]:
    """Load the clicked rule (as stored in force) or a blank new one into the editor."""
    trigger = trigger or callback_context.triggered_id
    if trigger == "rl-new":
        blank = Rule("", "", (), status="draft")
        form = {**rw.rule_to_form(blank), "cases": rw.json_cases(rw.NEW_CASES)}
        return (*[form[f] for f in FORM], "new rule")
    rule = rw.policy_in_force().rule(str((cell or {}).get("rowId") or ""))
    if rule is None:
        return tuple(no_update for _ in range(len(FORM) + 1))
    form = rw.rule_to_form(rule)
    return (*[form[f] for f in FORM], f"editing {rule.id} v{rule.version} ({rule.status})")


VALIDATE_IO = (
    Output("rl-problems", "children"),
    Output("rl-preview", "children"),
    *[Input(i, "value") for i in FORM_IDS],
    Input("rl-version", "data"),
)


def validate(*args: Any) -> tuple[Any, str]:
    """Check the edited rule within the policy in force; preview it on the latest row."""
    form = _form(args[: len(FORM)])
    if not str(form["id"] or "").strip() and not form["cases"]:
        return "", ""
    policy = rw.policy_in_force()
    rule, problems = rw.rule_from_form(form, policy.rule(str(form["id"] or "").strip()))
    if rule is not None:
        problems = rw.check_edit(policy, rule)
    if problems:
        items = [html.Li(line) for line in rw.problem_lines(problems)]
        return html.Div([html.B("Problems"), html.Ul(items)], className="problems"), ""
    try:
        sample = rs.latest_sample(ctx().store)
    except Exception as e:
        return html.Div("Valid.", className="valid"), f"No preview: {type(e).__name__}: {e}"
    return html.Div("Valid.", className="valid"), rw.preview(rule, dict(policy.params), sample)


ACT_IO = (
    Output("rl-message", "children"),
    Output("rl-version", "data"),
    *[Input(b, "n_clicks") for b in BUTTONS],
    *[State(i, "value") for i in FORM_IDS],
    State("rl-note", "value"),
    State("rl-selected-version", "data"),
    State("rl-version", "data"),
)


def act(*args: Any, trigger: str | None = None) -> tuple[str, int]:
    """A lifecycle button: publish the edited rule at its status, or roll back."""
    trigger = trigger or callback_context.triggered_id
    n = len(BUTTONS)
    form = _form(args[n : n + len(FORM)])
    note, selected, version = args[n + len(FORM) :]
    try:
        if trigger == "rl-rollback":
            msg = rw.rollback(selected, note)
        else:
            msg = rw.publish_change(form, BUTTONS[trigger][1], note)
    except PermissionError as e:
        return f"Refused: {e}.", version or 0
    except PolicyError as e:
        return "Refused: " + "; ".join(rw.problem_lines(e.problems)) + ".", version or 0
    except ValueError as e:
        return f"Refused: {e}.", version or 0
    except Exception as e:
        return f"Could not publish: {type(e).__name__}: {e}", version or 0
    return msg, (version or 0) + 1


HISTORY_IO = (
    Output("rl-history", "rowData"),
    Input("rl-version", "data"),
    Input("rl-tick", "n_intervals"),
)


def history(_version: Any, _tick: Any) -> list[dict[str, Any]]:
    """Every stored version, newest first."""
    try:
        versions = store_rules.policy_history(ctx().store)
    except Exception:
        return []
    return [
        {
            "id": str(v.policy.version),
            "version": v.policy.version,
            "created_at": v.policy.created_at,
            "author": v.policy.author,
            "action": v.action,
            "note": v.policy.note,
        }
        for v in reversed(versions)
    ]


SELECT_IO = (
    Output("rl-selected-version", "data"),
    Input("rl-history", "cellClicked"),
)


def select_version(cell: dict[str, Any] | None) -> Any:
    row = (cell or {}).get("rowId")
    return int(row) if row and str(row).isdigit() else no_update


DIFF_IO = (
    Output("rl-diff-title", "children"),
    Output("rl-diff", "children"),
    Input("rl-selected-version", "data"),
    Input("rl-version", "data"),
)


def diff(selected: int | None, _version: Any) -> tuple[str, str]:
    """The selected version's diff from the one before (the latest when none is)."""
    store = ctx().store
    try:
        if selected is None:
            latest = store_rules.policy_in_force(store)
            if latest is None:
                return "No version published yet: the built-in policy v0 is in force.", ""
            selected = latest.version
        v = store_rules.policy_at(store, int(selected))
    except Exception as e:
        return f"Cannot read the history: {type(e).__name__}: {e}", ""
    if v is None:
        return f"No version {selected}.", ""
    title = f"v{v.policy.version} ({v.action} by {v.policy.author}): diff from the version before"
    return title, v.diff or "(no change)"


# --- the backtest report ------------------------------------------------------------

REPORT_RULE_COLUMNS: list[dict[str, Any]] = [
    {"headerName": "rule", "field": "rule", "width": 160},
    {"headerName": "status", "field": "status", "width": 90},
    {"headerName": "effect", "field": "effect", "width": 85},
    {"headerName": "hits", "field": "hits", "type": "numericColumn", "width": 90},
    {"headerName": "live hits", "field": "live_hits", "type": "numericColumn", "width": 95},
    {"headerName": "hit rate %", "field": "hit_rate", "type": "numericColumn", "width": 100},
    {"headerName": "USD", "field": "amount_usd", "type": "numericColumn", "width": 110},
    {"headerName": "precision % (labels)", "field": "precision_labels", "width": 150},
    {"headerName": "recall % (labels)", "field": "recall_labels", "width": 135},
    {"headerName": "precision % (verdicts)", "field": "precision_verdicts", "width": 160},
    {"headerName": "recall % (verdicts)", "field": "recall_verdicts", "width": 145},
    {
        "headerName": "overlaps",
        "field": "overlap",
        "flex": 1,
        "minWidth": 160,
        "tooltipField": "overlap",
    },
]
for _c in REPORT_RULE_COLUMNS:
    _c.setdefault("sortable", True)

POLICY_METRICS = (
    ("flagged", "alerts (review + block)"),
    ("reviews", "reviews"),
    ("blocks", "blocks"),
    ("flagged_usd", "flagged USD"),
    ("blocked_usd", "blocked USD"),
    ("precision_labels", "precision % (labels)"),
    ("recall_labels", "recall % (labels)"),
    ("precision_verdicts", "precision % (verdicts)"),
    ("recall_verdicts", "recall % (verdicts)"),
)


def _num(key: str, v: Any) -> str:
    if v is None:
        return "–"
    if key.startswith(("precision", "recall")):
        return f"{100 * v:.1f}"
    if key.endswith("usd"):
        return f"${v:,.2f}"
    return f"{v:,}"


def _table(header: list[str], rows: list[list[str]], tid: str) -> html.Table:
    return html.Table(
        [
            html.Thead(html.Tr([html.Th(h) for h in header])),
            html.Tbody([html.Tr([html.Td(c) for c in r]) for r in rows]),
        ],
        id=tid,
        className="report",
    )


def report_rule_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidate's rules with their figures and the live policy's hits beside."""
    live = {r["rule"]: r["hits"] for r in rep["live_rules"]}
    out = []
    for r in rep["candidate_rules"]:
        top = sorted(r["overlap"].items(), key=lambda kv: (-kv[1], kv[0]))
        out.append(
            {
                "rule": r["rule"],
                "status": r["status"],
                "effect": r["effect"],
                "hits": r["hits"],
                "live_hits": live.get(r["rule"], 0),
                "hit_rate": round(100 * r["hit_rate"], 3),
                "amount_usd": round(r["amount_usd"], 2),
                **{
                    k: _num(k, r[k])
                    for k in (
                        "precision_labels",
                        "recall_labels",
                        "precision_verdicts",
                        "recall_verdicts",
                    )
                },
                "overlap": ", ".join(f"{o} {n:,}" for o, n in top if n) or "none",
            }
        )
    return out


def report_view(rep: dict[str, Any]) -> html.Div:
    """The report (``BacktestReport.to_dict()``) as tables and charts, all text."""
    decisions = rep["decisions"]
    live, cand = rep["live"], rep["candidate"]
    summary = (
        f"{rep['rows']:,} stored transactions from {rep['start']} to {rep['end']} "
        f"({rep['labelled']:,} labelled, {rep['with_verdict']:,} with a verdict) "
        f"in {rep['seconds']:.2f} s"
    )
    policy_rows = [[label, _num(k, live[k]), _num(k, cand[k])] for k, label in POLICY_METRICS]
    m = rep["changes"]
    change_rows = [
        [f"{d} (live)", *[f"{m[i][j]:,}" for j in range(len(decisions))]]
        for i, d in enumerate(decisions)
    ]
    examples = [html.Li(f"{k}: {', '.join(v)}") for k, v in sorted(rep["examples"].items())]
    return html.Div(
        [
            html.Div(summary, id="rl-report-summary", className="muted"),
            html.Div(
                [
                    html.Div(
                        [
                            html.H5("Whole policy"),
                            _table(
                                ["", f"live v{live['version']}", "candidate"],
                                policy_rows,
                                "rl-report-policy",
                            ),
                            html.H5("Decisions live → candidate"),
                            _table(
                                ["", *[f"→ {d}" for d in decisions]],
                                change_rows,
                                "rl-report-changes",
                            ),
                            html.Ul(examples, id="rl-report-examples", className="muted"),
                        ]
                    ),
                    dcc.Graph(
                        figure=fig.backtest_alerts_per_day(rep["alerts_per_day"]),
                        id="rl-report-days",
                    ),
                    dcc.Graph(figure=fig.decision_changes(m, decisions), id="rl-report-matrix"),
                ],
                className="report-tables",
            ),
            html.H5("Per rule (candidate)"),
            dag.AgGrid(
                id="rl-report-rules",
                columnDefs=REPORT_RULE_COLUMNS,
                rowData=report_rule_rows(rep),
                getRowId="params.data.rule",
                dashGridOptions={
                    "animateRows": False,
                    "domLayout": "autoHeight",
                    "tooltipShowDelay": 300,
                },
                className="ag-theme-quartz",
            ),
            html.Ul([html.Li(n) for n in rep.get("notes", [])], className="muted"),
        ]
    )


BACKTEST_IO = (
    Output("rl-report", "children"),
    Input("rl-backtest", "n_clicks"),
    *[State(i, "value") for i in FORM_IDS],
    State("rl-range", "value"),
)


def backtest(_n: Any, *args: Any) -> Any:
    """Validate the edited rule, backtest the candidate over the range, show the report."""
    form, label = _form(args[: len(FORM)]), args[len(FORM)]
    c = ctx()
    try:
        live = rw.policy_in_force()
        rule, problems = rw.rule_from_form(form, live.rule(str(form["id"] or "").strip()))
        if rule is not None:
            problems = rw.check_edit(live, rule)
        if problems:
            lines = rw.problem_lines(problems)
            return info_banner("Fix the rule before a backtest: " + "; ".join(lines))
        rng = _range_of(label)
        if rng is None:
            return info_banner("No transactions stored yet.")
        report = bt.backtest_store(c.store, rw.backtest_candidate(live, rule), live, *rng)
    except PolicyError as e:
        return info_banner("Cannot backtest: " + "; ".join(rw.problem_lines(e.problems)))
    except Exception as e:
        return error_banner(c.store.url, e)
    return report_view(report.to_dict())
