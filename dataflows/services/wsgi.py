"""WSGI entry of the analyst app for a production server: ``gunicorn
dataflows.services.wsgi:server`` (docker-compose's dashboard service).

``fraud dashboard`` runs Flask's development server, which is for a laptop.  The entry
lives here rather than in ``dash_app`` because it wires the verdict publisher and the
rule policy announcer (Kafka), which ``dash_app`` may not import; without brokers, or with
``FRAUD_DASH_PUBLISH_FEEDBACK=false``, verdicts are only stored.  Settings come from the
``FRAUD_*`` environment; an invalid one stops the worker naming the field.
"""

from __future__ import annotations

import logging

from flask import Flask

from dash_app.app import create_app
from dataflows.connectors.alert_listener import alert_listener
from dataflows.connectors.kafka import feedback_publisher
from dataflows.connectors.rules_feed import policy_announcer
from schemas.settings import load_settings

__all__ = ["create_server", "server"]


def create_server() -> Flask:
    """The Flask app of the dashboard on the configured ClickHouse."""
    s = load_settings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(
        s,
        publish=feedback_publisher(s),
        announce_policy=policy_announcer(s),
        live_alerts=alert_listener(s),
    ).server


server = create_server()
