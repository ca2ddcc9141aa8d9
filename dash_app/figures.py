"""Every figure of the app: pure functions from query DataFrames to plotly figures.

No I/O here, so each is unit-tested on known frames.  Maps use ``scattergeo`` (no tiles,
no tokens, works offline).  Plotly renders text as HTML-like markup, so every data value
put into hover text goes through :func:`~dash_app.encode.plotly_text`.
"""

from __future__ import annotations

import itertools

import pandas as pd
import plotly.graph_objects as go

from dash_app.encode import plotly_text as esc

__all__ = [
    "DECISION_COLORS",
    "GEO_CONFIG",
    "alerts_map",
    "backtest_alerts_per_day",
    "decision_changes",
    "empty",
    "risk_histogram",
    "rule_bars",
    "user_map",
    "user_timeline",
    "volume_series",
]

GEO_CONFIG = {"topojsonURL": "/assets/topojson/", "displaylogo": False}
"""dcc.Graph config for maps: plotly fetches its world topojson from the app's own assets
(vendored in dash_app/assets/topojson) instead of cdn.plot.ly, so maps work offline."""

DECISION_COLORS = {"approve": "#7f9cb5", "review": "#f0a030", "block": "#d62728"}
_LAYOUT = {
    "margin": {"l": 50, "r": 20, "t": 60, "b": 40},
    "template": "plotly_white",
    "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
}


def empty(message: str, title: str = "") -> go.Figure:
    """A blank figure that says why it is blank (no data yet, ClickHouse down...)."""
    fig = go.Figure(layout={**_LAYOUT, "title": title})
    fig.add_annotation(
        text=message,
        showarrow=False,
        font={"size": 14, "color": "#666"},
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def volume_series(df: pd.DataFrame, bucket_s: int) -> go.Figure:
    """Stacked transactions per bucket by decision (from the per-minute rollup)."""
    title = f"Transactions per {_bucket_label(bucket_s)} by decision"
    if df.empty:
        return empty("No transactions in this range yet", title)
    fig = go.Figure(layout={**_LAYOUT, "title": title, "barmode": "stack"})
    for d, color in DECISION_COLORS.items():
        part = df[df.decision == d]
        if not part.empty:
            fig.add_bar(x=part.bucket, y=part.txns, name=d, marker_color=color)
    fig.update_yaxes(title="transactions")
    return fig


def _bucket_label(bucket_s: int) -> str:
    m = bucket_s // 60
    return f"{m} min" if m < 60 else f"{m // 60} h"


def risk_histogram(df: pd.DataFrame) -> go.Figure:
    """Risk score distribution by decision, log count axis (approvals dwarf the rest)."""
    title = "Risk score distribution"
    if df.empty:
        return empty("No transactions in this range yet", title)
    fig = go.Figure(layout={**_LAYOUT, "title": title, "barmode": "stack"})
    for d, color in DECISION_COLORS.items():
        part = df[df.decision == d]
        if not part.empty:
            fig.add_bar(
                x=part.low, y=part.txns, name=d, marker_color=color, offset=0, width=_bin_width(df)
            )
    fig.update_xaxes(title="risk score", range=[0, 1], dtick=0.1, tickformat=".1f")
    fig.update_yaxes(title="transactions (log)", type="log")
    return fig


def _bin_width(df: pd.DataFrame) -> float:
    lows = sorted(set(df.low))
    gaps = [b - a for a, b in itertools.pairwise(lows) if b > a]
    return min(gaps) if gaps else 0.05


def rule_bars(df: pd.DataFrame) -> go.Figure:
    """Hits per reason code, split into hits on flagged and on approved transactions."""
    title = "Rule hits"
    if df.empty:
        return empty("No rule has fired in this range", title)
    d = df.sort_values("hits")
    fig = go.Figure(layout={**_LAYOUT, "title": title, "barmode": "stack"})
    fig.add_bar(
        y=d.code,
        x=d.flagged_hits,
        orientation="h",
        name="on flagged",
        marker_color=DECISION_COLORS["block"],
    )
    fig.add_bar(
        y=d.code,
        x=d.hits - d.flagged_hits,
        orientation="h",
        name="on approved",
        marker_color=DECISION_COLORS["approve"],
    )
    fig.update_xaxes(title="hits")
    return fig


SINGLE_PLACE_SCALE = 6
"""Zoom of a map whose points are all at one place (fitting the bounds of a single point
would zoom in without limit)."""


def _geo(fig: go.Figure, df: pd.DataFrame | None = None) -> go.Figure:
    fig.update_geos(
        projection_type="natural earth",
        showcountries=True,
        showland=True,
        landcolor="#f3f3f3",
        countrycolor="#bbb",
        fitbounds="locations",
    )
    if df is not None and len(df[["lat", "lon"]].drop_duplicates()) == 1:
        fig.update_geos(
            fitbounds=False,
            center={"lat": float(df.lat.iloc[0]), "lon": float(df.lon.iloc[0])},
            projection_scale=SINGLE_PLACE_SCALE,
        )
    return fig


def located(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a location: card-not-present traffic may have none (null lat/lon), and a
    map must skip it, not draw it at (0, 0) or break a travel line there."""
    if df.empty or "lat" not in df:
        return df
    return df[df.lat.notna() & df.lon.notna()]


def alerts_map(df: pd.DataFrame) -> go.Figure:
    """Where recent alerts happened, coloured by decision, hover shows user and reasons."""
    title = "Recent alerts"
    df = located(df)
    if df.empty:
        return empty("No located alerts in this range", title)
    fig = go.Figure(layout={**_LAYOUT, "title": title})
    for d in ("review", "block"):
        part = df[df.decision == d]
        if part.empty:
            continue
        fig.add_scattergeo(
            lat=part.lat,
            lon=part.lon,
            mode="markers",
            name=d,
            marker={"color": DECISION_COLORS[d], "size": 7, "opacity": 0.8},
            text=[
                f"{esc(u)} · ${a:,.2f}<br>{esc(r)}"
                for u, a, r in zip(part.user_id, part.amount_usd, part.rules, strict=True)
            ],
            hoverinfo="text",
        )
    return _geo(fig, df)


def user_timeline(df: pd.DataFrame) -> go.Figure:
    """A user's transactions over time (amount in USD), coloured by decision."""
    title = "Transactions"
    if df.empty:
        return empty("No transactions for this user", title)
    fig = go.Figure(layout={**_LAYOUT, "title": title})
    for d, color in DECISION_COLORS.items():
        part = df[df.decision == d]
        if part.empty:
            continue
        fig.add_scatter(
            x=part.ts,
            y=part.amount_usd,
            mode="markers",
            name=d,
            marker={"color": color, "size": 9 if d != "approve" else 6},
            text=[
                f"{esc(m)} ({esc(c)}) {esc(ch)}<br>risk {r:.2f} {esc(ru)}"
                for m, c, ch, r, ru in zip(
                    part.merchant_category,
                    part.country,
                    part.channel,
                    part.risk_score,
                    part.rules,
                    strict=True,
                )
            ],
            hovertemplate="%{x}<br>$%{y:,.2f}<br>%{text}<extra></extra>",
        )
    fig.update_yaxes(title="amount (USD, log)", type="log")
    return fig


def user_map(df: pd.DataFrame) -> go.Figure:
    """A user's locations with travel lines between consecutive transactions."""
    title = "Locations and travel"
    df = located(df)
    if df.empty:
        return empty("No locations for this user", title)
    fig = go.Figure(layout={**_LAYOUT, "title": title})
    fig.add_scattergeo(
        lat=df.lat,
        lon=df.lon,
        mode="lines",
        name="travel",
        line={"width": 1, "color": "#999"},
        hoverinfo="skip",
    )
    for d, color in DECISION_COLORS.items():
        part = df[df.decision == d]
        if not part.empty:
            fig.add_scattergeo(
                lat=part.lat,
                lon=part.lon,
                mode="markers",
                name=d,
                marker={"color": color, "size": 8},
                text=[
                    f"{t:%Y-%m-%d %H:%M} · ${a:,.2f} {esc(c)}"
                    for t, a, c in zip(part.ts, part.amount_usd, part.country, strict=True)
                ],
                hoverinfo="text",
            )
    return _geo(fig, df)


# --- rules backtest --------------------------------------------------------------------


def backtest_alerts_per_day(days: list[list]) -> go.Figure:
    """Alerts per day (the analysts' workload) under the live and the candidate policy,
    from a backtest report's ``alerts_per_day`` ([day, live, candidate] rows)."""
    title = "Alerts per day: live vs candidate"
    if not days:
        return empty("No stored transactions in this range", title)
    x = [d[0] for d in days]
    fig = go.Figure(layout={**_LAYOUT, "title": title, "barmode": "group"})
    fig.add_bar(x=x, y=[d[1] for d in days], name="live", marker_color="#7f9cb5")
    fig.add_bar(x=x, y=[d[2] for d in days], name="candidate", marker_color="#f0a030")
    fig.update_xaxes(type="category", title="day (UTC)")
    fig.update_yaxes(title="alerts (review + block)")
    return fig


def decision_changes(changes: list[list[int]], decisions: list[str]) -> go.Figure:
    """The live → candidate decision matrix as a heatmap; the diagonal (unchanged) is
    left blank so the changes are what stands out."""
    title = "Decisions that would change (live → candidate)"
    n = len(decisions)
    z = [[None if i == j else changes[i][j] for j in range(n)] for i in range(n)]
    text = [[f"{changes[i][j]:,}" for j in range(n)] for i in range(n)]
    top = max([v for row in z for v in row if v is not None] + [1])
    fig = go.Figure(layout={**_LAYOUT, "title": title})
    fig.add_heatmap(
        z=z,
        zmin=0,
        zmax=top,
        x=[f"→ {d}" for d in decisions],
        y=[f"{d} (live)" for d in decisions],
        text=text,
        texttemplate="%{text}",
        colorscale="Oranges",
        showscale=False,
        hovertemplate="%{y} %{x}: %{text}<extra></extra>",
    )
    fig.update_yaxes(autorange="reversed")
    return fig
