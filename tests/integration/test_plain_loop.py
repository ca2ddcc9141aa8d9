"""The bench's plain confluent-kafka loop on the real broker: it reads every message
(malformed ones included) and produces exactly the alerts the flow computes for the same
bytes, each once, with the flow's Kafka encoding."""

from __future__ import annotations

import orjson
import pytest

from dataflows.bench.plain import run_kafka
from dataflows.connectors.kafka import make_producer, produce_all
from schemas.settings import Settings
from tests.integration.conftest import consume_all
from tests.integration.test_kafka import _events, _expected_alert_ids


@pytest.mark.integration
def test_plain_kafka_loop_produces_the_flows_alerts(kafka_settings: Settings) -> None:
    s = kafka_settings
    events = _events(3000)
    assert produce_all(make_producer(s), s.topic_transactions, events) == len(events)
    seen, seconds = run_kafka(s, len(events), "plain-test", timeout_s=60)
    assert seen == len(events) and seconds > 0
    alerts = consume_all(s.brokers, s.topic_alerts, s.partitions)
    ids = [orjson.loads(m.value())["alert_id"] for m in alerts]
    expected = _expected_alert_ids(s, events)
    assert len(expected) > 20
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    assert all(m.key() == orjson.loads(m.value())["user_id"].encode() for m in alerts)
