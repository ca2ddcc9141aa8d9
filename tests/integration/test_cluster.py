"""A 2-process bytewax cluster under the supervisor (``fraud cluster``): one process is
SIGKILLed part-way, the supervisor restarts the whole cluster from its snapshots, and
nothing is lost; de-duplicated by alert_id, the alerts equal one uninterrupted run's."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from clickhouse.store import Store
from dataflows.connectors.kafka import make_producer, produce_all
from dataflows.services.cluster import ClusterPlan, Supervisor, free_ports, init_recovery
from schemas.scored import decode_alert
from schemas.settings import Settings
from tests.chserver import ChServer
from tests.integration.conftest import consume_all
from tests.integration.test_kafka import MALFORMED, _events, _expected_alert_ids
from tests.integration.test_restart import _env, _stored


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [2], indirect=True)
def test_supervisor_restarts_the_whole_cluster_and_loses_nothing(
    kafka_settings: Settings, ch_http: ChServer, tmp_path: Path
) -> None:
    s = kafka_settings
    events = _events(4000)
    first, second = events[:2000], events[2000:]
    recovery = tmp_path / "recovery"
    init_recovery(recovery, 2)
    db = f"cl_{uuid.uuid4().hex[:8]}"
    env = {
        **_env(s, ch_http, db, recovery, True),
        "FRAUD_PARTITIONS": "2",
        "FRAUD_KAFKA_TAIL": "true",
    }
    store = Store(ch_http.url, db)
    produce_all(make_producer(s), s.topic_transactions, first)

    plan = ClusterPlan(2, free_ports(2), recovery, snapshot_s=1)
    sup = Supervisor(plan, env, max_backoff_s=2.0)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while _stored(store) < 800 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _stored(store) >= 800, "the cluster scores"
        time.sleep(1.5)  # a snapshot after rows were written
        victim = sup.procs[1]
        os.killpg(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while sup.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sup.restarts == 1, "the supervisor restarted the cluster"
        produce_all(make_producer(s), s.topic_transactions, second)

        good = len(events) - len(MALFORMED)
        uniq = 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ((uniq,),) = store.client.query(
                f"SELECT uniqExact(txn_id) FROM {db}.transactions"
            ).result_rows
            if uniq >= good:
                break
            time.sleep(0.5)
        assert uniq == good, "every valid transaction stored, none lost"
        assert all(p.poll() is None for p in sup.procs), "the restarted cluster keeps running"
    finally:
        sup.stop.set()
        runner.join(60)
    alerts = consume_all(s.brokers, s.topic_alerts, 2)
    ids = {decode_alert(m.value()).alert_id for m in alerts}
    assert ids == _expected_alert_ids(s, events), "dedup by alert_id = one clean run"
    dlq = consume_all(s.brokers, s.topic_dlq, 2)
    assert len(
        {(dict(m.headers())["source-partition"], dict(m.headers())["source-offset"]) for m in dlq}
    ) == len(MALFORMED)
    store.client.command(f"DROP DATABASE {db}")
