"""The flow's Prometheus endpoint, scraped while it runs on the real broker: counters
move with the input (read, decisions, dead letters by code), the latency histogram
counts every scored transaction, and the lag falls to zero once everything is read."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import pytest
from bytewax.testing import run_main
from prometheus_client.parser import text_string_to_metric_families

from dataflows.connectors import metrics
from dataflows.connectors.embedded import free_port
from dataflows.connectors.kafka import consumer_config, make_producer, produce_all
from dataflows.connectors.local import CallbackSink
from dataflows.flow import kafka_flow
from schemas.settings import Settings
from tests.integration.test_kafka import MALFORMED, _events


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _get(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.integration
def test_flow_metrics_move_with_the_input(kafka_settings: Settings) -> None:
    s = kafka_settings
    port = free_port()
    metrics.serve_metrics(port, "127.0.0.1")
    before = _scrape(port)
    events = _events(1500)
    produce_all(make_producer(s), s.topic_transactions, events)
    rows: list = []
    watcher = metrics.LagWatcher(consumer_config(s, "lag-test"), every_s=0.2).start()
    try:
        run_main(kafka_flow(s, CallbackSink(rows.extend), tail=False))
        after = _scrape(port)
        read = sum(
            _get(after, "fraud_events_read_total", topic=s.topic_transactions, partition=str(p))
            - _get(before, "fraud_events_read_total", topic=s.topic_transactions, partition=str(p))
            for p in range(s.partitions)
        )
        assert read == len(events)
        decided = Counter(r.decision for r in rows)
        for d in ("approve", "review", "block"):
            delta = _get(after, "fraud_decisions_total", decision=d) - _get(
                before, "fraud_decisions_total", decision=d
            )
            assert delta == decided[d], d
        n_lat = _get(after, "fraud_scoring_latency_seconds_count") - _get(
            before, "fraud_scoring_latency_seconds_count"
        )
        assert n_lat == len(rows)
        dead = sum(
            _get(after, "fraud_dead_letters_total", code=c)
            - _get(before, "fraud_dead_letters_total", code=c)
            for c in {
                "invalid_json",
                "out_of_range",
                "unknown_schema_version",
                "null_value",
                "too_large",
                "wrong_type",
            }
        )
        assert dead == len(MALFORMED)
        deadline = time.monotonic() + 15
        lags: list[float] = []
        while time.monotonic() < deadline:
            m = _scrape(port)
            lags = [
                m.get(
                    (
                        "fraud_consumer_lag_messages",
                        (("partition", str(p)), ("topic", s.topic_transactions)),
                    ),
                    -1.0,
                )
                for p in range(s.partitions)
            ]
            if lags and all(x == 0.0 for x in lags):
                break
            time.sleep(0.2)
        assert lags == [0.0] * s.partitions, "everything read: no lag on any partition"
    finally:
        watcher.stop.set()
