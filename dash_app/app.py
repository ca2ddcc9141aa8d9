"""Creates the Dash app (pages live in ``dash_app/pages``); ``fraud dashboard`` serves it.

The app reads ClickHouse only through :mod:`clickhouse.queries`; it works the same
against ``chdb://`` (in the process that owns the directory) and a ClickHouse server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import dash
from dash import Dash, dcc, html

from clickhouse.store import Store
from dash_app import auth
from dash_app.auth import LOCAL, current_actor
from dash_app.context import AppContext, set_context
from dash_app.live import AlertHub, sse_stream
from dash_app.metrics import metrics_response
from schemas.rules import Policy
from schemas.scored import Alert, Review
from schemas.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _layout() -> html.Div:
    """Navigation (with who is signed in) and the page; built per page load."""
    actor = current_actor()
    who = (
        html.Span(
            [
                f"{actor.name} ({actor.role})",
                html.A("sign out", href="/logout") if actor != LOCAL else None,
            ],
            className="who",
        )
        if actor is not None
        else None
    )
    return html.Div(
        [
            html.Nav(
                [
                    html.Span("Fraud monitor", className="brand"),
                    *[
                        dcc.Link(p["name"], href=p["relative_path"], className="nav-link")
                        for p in dash.page_registry.values()
                        if not p.get("path_template")
                    ],
                    who,
                ],
                className="nav",
            ),
            dash.page_container,
        ]
    )


def create_app(
    s: Settings,
    store: Store | None = None,
    publish: Callable[[list[Review]], None] | None = None,
    *,
    announce_policy: Callable[[Policy], None] | None = None,
    live_alerts: Callable[[Callable[[Alert], None]], Callable[[], None]] | None = None,
) -> Dash:
    """The analyst app over ``store`` (default: the configured ClickHouse).

    ``publish`` sends recorded verdicts on to the feedback topic; the caller injects it
    (see ``dataflows.connectors.kafka.feedback_publisher``) so the app needs no broker code.
    ``announce_policy`` likewise sends a published rule policy to the running flows (see
    ``dataflows.connectors.rules_feed.policy_announcer``).  ``live_alerts(on_alert)``
    starts following the alerts topic (see ``dataflows.connectors.alert_listener``):
    new alerts are pushed to open pages over ``/live/alerts`` instead of polled.
    """
    hub = AlertHub() if live_alerts is not None else None
    store = store or Store.from_settings(s)
    set_context(AppContext(s, store, publish, announce_policy, hub))
    app = Dash(
        __name__,
        use_pages=True,
        pages_folder=str(Path(__file__).parent / "pages"),
        title="Fraud monitor",
        suppress_callback_exceptions=True,
    )
    app.layout = _layout
    app.server.add_url_rule("/healthz", "healthz", lambda: "ok")
    app.server.add_url_rule("/metrics", "metrics", metrics_response)
    if hub is not None and live_alerts is not None:
        app.server.add_url_rule("/live/alerts", "live_alerts", lambda: sse_stream(hub))
        app.server.extensions["fraud_live_stop"] = live_alerts(hub.publish)
    auth.install(app.server, s.dash_secret_key)
    return app
