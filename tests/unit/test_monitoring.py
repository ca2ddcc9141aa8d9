"""The monitoring stack cannot run here (no Docker): check that what Grafana queries and
Prometheus scrapes exists in the code and in docker-compose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import dash_app.metrics  # noqa: F401  (registers the dashboard's metrics)
import dataflows.connectors.metrics  # noqa: F401  (registers the flow's metrics)

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docs" / "monitoring"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _exported() -> set[str]:
    """Every sample name the code exports (``_total``, ``_bucket``... included)."""
    return {s.name for metric in REGISTRY.collect() for s in metric.samples} | {
        f"{m.name}{suffix}"
        for m in REGISTRY.collect()
        for suffix in ("_total", "_bucket", "_count", "_sum", "")
    }


def _queried() -> set[str]:
    doc = json.loads((MONITORING / "grafana" / "dashboards" / "fraudflow.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    return {name for e in exprs for name in re.findall(r"\bfraud_[a-z0-9_]+", e)}


def test_every_metric_the_dashboard_queries_exists_in_the_code() -> None:
    queried = _queried()
    assert len(queried) >= 10
    assert queried <= _exported(), sorted(queried - _exported())


def test_every_metric_of_the_issue_is_on_the_dashboard() -> None:
    wanted = {
        "fraud_events_read_total",
        "fraud_dead_letters_total",
        "fraud_decisions_total",
        "fraud_scoring_latency_seconds_bucket",
        "fraud_consumer_lag_messages",
        "fraud_clickhouse_queue_batches",
        "fraud_clickhouse_insert_seconds_bucket",
        "fraud_clickhouse_insert_retries_total",
        "fraud_recovery_snapshot_timestamp_seconds",
    }
    assert wanted <= _queried()


def test_prometheus_scrapes_the_services_compose_runs() -> None:
    cfg = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = {
        t for job in cfg["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    services = COMPOSE["services"]
    port = services["dataflow"]["environment"]["FRAUD_METRICS_PORT"]
    assert f"dataflow:{port}" in targets
    assert "dashboard:8050" in targets
    for svc in ("prometheus", "grafana"):
        for volume in services[svc]["volumes"]:
            src = volume.split(":", 1)[0]
            assert (ROOT / src).exists(), f"{svc} mounts {src}, which does not exist"
