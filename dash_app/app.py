"""Creates the Dash app (pages live in ``dash_app/pages``); ``fraud dashboard`` serves it.

The app reads ClickHouse only through :mod:`clickhouse.queries`; it works the same
against ``chdb://`` (in the process that owns the directory) and a ClickHouse server.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Callable
from pathlib import Path

import dash
from dash import Dash, dcc, html
from flask import Response, request

from clickhouse.store import Store
from dash_app.context import AppContext, set_context
from dash_app.metrics import metrics_response
from schemas.scored import Review
from schemas.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _check_login(users: dict[str, str]) -> Response | None:
    if request.path in ("/healthz", "/metrics"):  # probes and scrapers carry no credentials
        return None
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Basic "):
        try:
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            user, pw = "", ""
        if user in users and hmac.compare_digest(users[user], pw):
            return None
    return Response("Login required", 401, {"WWW-Authenticate": 'Basic realm="fraud"'})


def create_app(
    s: Settings,
    store: Store | None = None,
    publish: Callable[[list[Review]], None] | None = None,
) -> Dash:
    """The analyst app over ``store`` (default: the configured ClickHouse).

    ``publish`` sends recorded verdicts on to the feedback topic; the caller injects it
    (see ``dataflows.connectors.kafka.feedback_publisher``) so the app needs no broker code.
    """
    set_context(AppContext(s, store or Store.from_settings(s), publish))
    app = Dash(
        __name__,
        use_pages=True,
        pages_folder=str(Path(__file__).parent / "pages"),
        title="Fraud monitor",
        suppress_callback_exceptions=True,
    )
    app.layout = html.Div(
        [
            html.Nav(
                [
                    html.Span("Fraud monitor", className="brand"),
                    *[
                        dcc.Link(p["name"], href=p["relative_path"], className="nav-link")
                        for p in dash.page_registry.values()
                        if not p.get("path_template")
                    ],
                ],
                className="nav",
            ),
            dash.page_container,
        ]
    )
    app.server.add_url_rule("/healthz", "healthz", lambda: "ok")
    app.server.add_url_rule("/metrics", "metrics", metrics_response)
    if s.dash_auth:
        users = dict(u.split(":", 1) for u in s.dash_auth.split(","))
        app.server.before_request(lambda: _check_login(users))
    return app
