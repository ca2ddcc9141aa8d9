"""Prometheus metrics of the analyst app, served on its own ``/metrics`` route."""

from __future__ import annotations

from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

__all__ = ["VERDICTS_RECORDED", "VERDICTS_UNPUBLISHED", "metrics_response"]

VERDICTS_RECORDED = Counter(
    "fraud_dashboard_verdicts", "Analyst verdicts recorded in ClickHouse.", ["verdict"]
)
VERDICTS_UNPUBLISHED = Counter(
    "fraud_dashboard_verdicts_unpublished",
    "Verdicts stored but not published to the feedback topic (broker failure).",
)


def metrics_response() -> Response:
    """The process's metrics in the Prometheus text format (the default registry: these
    plus the process and Python collectors)."""
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
