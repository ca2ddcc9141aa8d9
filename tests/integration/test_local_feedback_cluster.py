"""The ``local`` feedback loop across processes: a 2-process cluster on the real broker.

The merchant aggregators and the trainer run on whichever process bytewax puts their
keys on; the other process learns their totals and models only through the
feedback-state topic.  With a wait, every row's scores must equal one in-process worker's
(the same code path), except the last day's, whose models come after the input ends.

The labels are read before any transaction exists, as in the reference, where they come
in its first batch.  A label is not in event time with the transactions: one read after
its day's totals were published corrects them for later rows only (by design: a row
never waits for labels), so reading them late would change scores by wall clock.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka.admin import AdminClient

from clickhouse.store import Store
from dataflows.connectors.kafka import create_topics, make_producer, produce_all
from dataflows.flow import build_flow
from dataflows.services.cluster import ClusterPlan, Supervisor, free_ports, init_recovery
from schemas.settings import Settings
from tests.chserver import ChServer
from tests.conftest import fixed_clock
from tests.flow.test_local_feedback import LAST_DAY, _stream
from tests.integration.test_restart import _env, _stored

WAIT_S = 30


def _reference(s: Settings, events: list[bytes], labels: list[bytes]) -> dict[str, Any]:
    rows: list[Any] = []
    flow = build_flow(
        s,
        TestingSource(events, batch_size=500),
        TestingSink([]),
        TestingSink(rows),
        TestingSink([]),
        clock=fixed_clock,
        labels=TestingSource(labels, batch_size=1000),
    )
    run_main(flow)
    return {r.txn.txn_id: (r.risk_score, r.model_version, r.features["learned_p"]) for r in rows}


def _await_labels(store: Store, topic: str, offset: int, timeout_s: float = 60.0) -> None:
    sql = (
        f"SELECT count() FROM {store.database}.dead_letters"
        " WHERE source_topic = %(t)s AND source_offset = %(o)s"
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if store.client.query(sql, parameters={"t": topic, "o": offset}).result_rows[0][0]:
                return
        except Exception:  # database not migrated yet by the flow
            store.reset()
        time.sleep(0.2)
    raise AssertionError(f"the flow read no labels from {topic} in {timeout_s:.0f} s")


@pytest.mark.integration
def test_two_processes_score_like_one_worker(
    kafka_settings: Settings, ch_http: ChServer, tmp_path: Path
) -> None:
    s = kafka_settings
    tag = uuid.uuid4().hex[:8]
    state_topic = f"fbs-{tag}"
    local = {
        "label_delay_days": 1.0,
        "feedback_topology": "local",
        "feedback_wait_s": WAIT_S,
        "learner_fit_background": False,
    }
    events, labels = _stream()
    ref = _reference(s.model_copy(update=local), events, labels)

    # A message no flow process wrote (not a pickle of an update) is ignored, not fatal.
    create_topics(s.model_copy(update={"topic_feedback_state": state_topic}), only=[state_topic])
    produce_all(make_producer(s), state_topic, [(b"model", b"not an update")])
    # The labels, then a malformed one: once it is dead-lettered, every label is in.
    produce_all(make_producer(s), s.topic_feedback, [(None, x) for x in [*labels, b"labels end"]])
    recovery = tmp_path / "recovery"
    init_recovery(recovery, 2)
    db = f"lf_{tag}"
    env = {
        **_env(s, ch_http, db, recovery, True),
        "FRAUD_KAFKA_TAIL": "true",
        "FRAUD_TOPIC_FEEDBACK": s.topic_feedback,
        "FRAUD_TOPIC_FEEDBACK_STATE": state_topic,
        "FRAUD_TOPIC_DECISIONS": s.topic_decisions,
        "FRAUD_LABEL_DELAY_DAYS": "1",
        "FRAUD_FEEDBACK_TOPOLOGY": "local",
        "FRAUD_FEEDBACK_WAIT_S": str(WAIT_S),
        "FRAUD_LEARNER_FIT_BACKGROUND": "false",
    }
    store = Store(ch_http.url, db)
    sup = Supervisor(ClusterPlan(2, free_ports(2), recovery, snapshot_s=5), env)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        _await_labels(store, s.topic_feedback, len(labels))
        keyed = [(orjson.loads(e)["user_id"].encode(), e) for e in events]
        produce_all(make_producer(s), s.topic_transactions, keyed)
        deadline = time.monotonic() + 90
        while _stored(store) < len(events) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _stored(store) == len(events), "every transaction scored and stored"
        assert sup.restarts == 0
    finally:
        sup.stop.set()
        runner.join(60)
    sql = f"SELECT txn_id, risk_score, model_version, features['learned_p'] FROM {db}.transactions"
    got = {t: (r, v, f) for t, r, v, f in store.client.query(sql).result_rows}
    store.client.command(f"DROP DATABASE {db}")
    AdminClient({"bootstrap.servers": s.brokers}).delete_topics([state_topic])
    early = [k for k in ref if int(k[1:]) < LAST_DAY]
    assert {got[k][1] for k in early} >= {v for v in (ref[k][1] for k in early) if "gbm-g2" in v}, (
        "boosters published on one process score on both"
    )
    diff = [
        k
        for k in early
        if got[k][1] != ref[k][1]
        or abs(got[k][0] - ref[k][0]) > 1e-9
        or abs(got[k][2] - ref[k][2]) > 1e-9
    ]
    assert not diff, f"{len(diff)} rows differ, e.g. {diff[0]}: {got[diff[0]]} vs {ref[diff[0]]}"
