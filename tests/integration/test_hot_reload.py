"""Hot reload of the rule policy on the real broker.

The feed (dataflows/connectors/rules_feed.py) catches up with the rules topic before a
flow starts, ignores what is not a newer valid policy, adopts ClickHouse's version when
the topic is behind.  A running flow switches to a newly announced policy within 5 s on
every worker: 2 workers in one process, and 2 bytewax processes under the supervisor,
each partition scored on the worker that reads it (``align_partitions``), so the rows of
partition p say what worker p's policy was.  The announced policy adds a live rule that
forces review on every event, which makes the switch visible in every row's decision
beside its ``policy_version``.  A cluster restarted from recovery after a policy change
scores with the new version from its first row.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.testing import cluster_main
from confluent_kafka.admin import AdminClient

from clickhouse.rules import publish_policy
from clickhouse.store import Store, migrate
from dataflows.connectors import metrics, rules_feed
from dataflows.connectors.kafka import create_topics, make_producer
from dataflows.connectors.local import CallbackSink
from dataflows.connectors.routing import partition_owner
from dataflows.connectors.rules_feed import PolicyFeed, announce_policy
from dataflows.flow import kafka_flow
from dataflows.services.cluster import ClusterPlan, Supervisor, free_ports, init_recovery
from schemas.rules import Case, Policy, Rule, default_policy, encode_policy, policy_to_dict
from schemas.settings import Settings
from tests.chserver import ChServer
from tests.conftest import txn_dict
from tests.integration.conftest import consume_all
from tests.integration.test_restart import _env

SWITCH_S = 5.0


def _forcing(s: Settings, version: int, effect: str) -> Policy:
    """The built-in rules plus one live rule forcing ``effect`` on every event."""
    rule = Rule(
        f"{effect}_all",
        f"{effect} everything",
        (Case("True", "0.0", "every charge: ${amount_usd:.2f}"),),
        when="amount_usd >= 0",
        effect=effect,
    )
    return replace(default_policy(s).with_rule(rule), version=version, author="t", note=effect)


def _produce_raw(s: Settings, *values: bytes | None) -> None:
    p = make_producer(s)
    for v in values:
        p.produce(s.topic_rules, key=rules_feed.KEY, value=v)
    assert p.flush(10) == 0


def _wait(cond: Any, timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout_s, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.05)
    return time.monotonic() - t0


@pytest.fixture
def rules_settings(kafka_settings: Settings) -> Iterator[Settings]:
    """The test's topics plus its own rules topic; feeds it started are stopped after."""
    s = kafka_settings.model_copy(update={"topic_rules": f"rules-{uuid.uuid4().hex[:8]}"})
    create_topics(s, only=[s.topic_rules])
    yield s
    feed = rules_feed._feeds.pop((s.brokers, s.topic_rules), None)
    if feed is not None:
        feed.stop()
    for fut in (
        AdminClient({"bootstrap.servers": s.brokers}).delete_topics([s.topic_rules]).values()
    ):
        try:
            fut.result()
        except Exception as e:  # cleanup must not hide the test's own result
            print(f"topic cleanup: {e}")


@pytest.mark.integration
def test_feed_catches_up_and_ignores_bad_and_stale_messages(rules_settings: Settings) -> None:
    s = rules_settings
    broken = policy_to_dict(_forcing(s, 5, "review"))
    broken["rules"][-1]["when"] = "no_such_feature > 1"
    announce_policy(s, _forcing(s, 2, "review"))
    _produce_raw(
        s, b"{not json", orjson.dumps(broken), None, encode_policy(_forcing(s, 1, "block"))
    )
    rejected = metrics.POLICY_REJECTED.labels("invalid")._value.get()

    feed = PolicyFeed(s).start()
    try:
        assert feed.current().version == 2, "caught up before start returns"
        assert "review_all" in feed.current().forced
        assert feed.rejected == 4, "garbage, uncompilable, tombstone, older version"
        assert metrics.POLICY_REJECTED.labels("invalid")._value.get() == rejected + 3
        assert metrics.POLICY_VERSION._value.get() == 2
        announce_policy(s, _forcing(s, 3, "block"))
        took = _wait(lambda: feed.current().version == 3, SWITCH_S, "v3 applied")
        print(f"feed applied v3 {took:.2f} s after the announcement was acknowledged")
        assert feed.current().forced == {"block_all": "block"}
        other = s.model_copy(update={"review_threshold": 0.4})
        assert feed.current_for(other)() is feed.current(), "a published policy wins"
    finally:
        feed.stop()
    fresh = rules_settings.model_copy(update={"topic_rules": f"rules-{uuid.uuid4().hex[:8]}"})
    empty = PolicyFeed(fresh).start()
    try:
        assert empty.current().version == 0, "an empty topic: the built-in"
        other = fresh.model_copy(update={"review_threshold": 0.4})
        assert empty.current_for(other)().review_threshold == 0.4, "that flow's built-in"
    finally:
        empty.stop()


@pytest.mark.integration
def test_feed_adopts_clickhouse_when_the_topic_is_behind(
    rules_settings: Settings, chdb_url: str
) -> None:
    s = rules_settings
    store = Store(chdb_url, f"hr_{uuid.uuid4().hex[:8]}")
    migrate(store, 3650)
    announce_policy(s, publish_policy(store, _forcing(s, 0, "review"), "ana", "first"))
    publish_policy(store, _forcing(s, 0, "block"), "ana", "stored, never announced")
    feed = PolicyFeed(s, store).start()
    try:
        assert feed.current().version == 2, "ClickHouse is the source of truth"
        versions = [
            orjson.loads(m.value())["version"] for m in consume_all(s.brokers, s.topic_rules, 1)
        ]
        assert versions == [1, 2], "republished so every other process gets it too"
    finally:
        feed.stop()
        store.client.command(f"DROP DATABASE {store.database}")


class Traffic(threading.Thread):
    """Valid transactions to each partition (txn_id ``p{partition}-{n}``), ~``rate`` per
    second per partition, in event-time order, until stopped."""

    def __init__(self, s: Settings, partitions: int, rate: float = 100.0) -> None:
        super().__init__(daemon=True, name="traffic")
        self.s, self.partitions, self.rate = s, partitions, rate
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        producer = make_producer(self.s)
        n = 0
        while not self.stop.is_set():
            for p in range(self.partitions):
                user = f"p{p}u{n % 25}"
                value = orjson.dumps(
                    txn_dict(n, txn_id=f"p{p}-{n}", user_id=user, card_id=f"c{user}")
                )
                producer.produce(
                    self.s.topic_transactions, value=value, key=user.encode(), partition=p
                )
            n += 1
            self.sent = n
            producer.poll(0)
            time.sleep(1.0 / self.rate)
        producer.flush(10)


Row = tuple[int, str, datetime]
"""(policy_version, decision, processed_at) of a scored transaction."""


def _switch(rows: list[Row], at: datetime, new: int) -> float:
    """Seconds from ``at`` to the first row of version ``new``; checks the switch is
    clean: no older row scored after the first new one, and every new row forced."""
    old = [r for r in rows if r[0] != new]
    fresh = [r for r in rows if r[0] == new]
    assert fresh, "switched"
    first = min(r[2] for r in fresh)
    assert all(r[2] <= first for r in old), "no older version after the switch"
    assert {r[1] for r in fresh} <= {"review", "block"}, "the forced review applies"
    return (first - at).total_seconds()


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [2], indirect=True)
def test_two_workers_switch_within_5s(rules_settings: Settings) -> None:
    s = rules_settings.model_copy(
        update={"align_partitions": True, "feedback_input": False, "kafka_tail": True}
    )
    owners = {partition_owner(p, s.topic_transactions, 2, 2) for p in range(2)}
    assert owners == {0, 1}, "each worker reads (and scores) one partition"
    rows: list[Any] = []
    stop = threading.Event()
    traffic = Traffic(s, 2)
    announced: list[datetime] = []

    def by_partition(version: int) -> set[str]:
        return {r.txn.txn_id[:2] for r in list(rows) if r.policy_version == version}

    def drive() -> None:
        try:
            traffic.start()
            _wait(lambda: by_partition(0) == {"p0", "p1"}, 30, "both workers score")
            announce_policy(s, _forcing(s, 1, "review"))
            announced.append(datetime.now(UTC))
            _wait(lambda: by_partition(1) == {"p0", "p1"}, 10, "both workers switch")
            time.sleep(0.5)
        finally:
            traffic.stop.set()
            stop.set()

    threading.Thread(target=drive, daemon=True).start()
    cluster_main(
        kafka_flow(s, CallbackSink(rows.extend), stop=stop, workers=2),
        [],
        0,
        worker_count_per_proc=2,
    )
    assert announced, "announced"
    for p in ("p0", "p1"):
        mine = [
            (r.policy_version, r.decision, r.processed_at)
            for r in rows
            if r.txn.txn_id.startswith(p)
        ]
        took = _switch(mine, announced[0], 1)
        print(f"partition {p}: switched {took:.2f} s after the announcement")
        assert took <= SWITCH_S


def _scored(store: Store) -> list[tuple[str, int, str, datetime]]:
    try:
        rows = store.client.query(
            f"SELECT txn_id, policy_version, decision, processed_at FROM {store.database}"
            ".transactions"
        ).result_rows
    except Exception:  # not migrated yet by the flow
        store.reset()
        return []
    return [(t, v, d, at.replace(tzinfo=UTC)) for t, v, d, at in rows]


def _rows_of(rows: list[Any], p: str) -> list[Row]:
    return [(v, d, at) for t, v, d, at in rows if t.startswith(p)]


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [2], indirect=True)
def test_two_processes_switch_and_restart_with_the_version_in_force(
    rules_settings: Settings, ch_http: ChServer, tmp_path: Path
) -> None:
    s = rules_settings
    recovery = tmp_path / "recovery"
    init_recovery(recovery, 2)
    db = f"hp_{uuid.uuid4().hex[:8]}"
    env = {
        **_env(s, ch_http, db, recovery, True),
        "FRAUD_PARTITIONS": "2",
        "FRAUD_KAFKA_TAIL": "true",
        "FRAUD_ALIGN_PARTITIONS": "true",
        "FRAUD_FEEDBACK_INPUT": "false",
        "FRAUD_TOPIC_RULES": s.topic_rules,
        "FRAUD_TOPIC_DECISIONS": s.topic_decisions,
        "FRAUD_TOPIC_FEEDBACK": s.topic_feedback,
    }
    store = Store(ch_http.url, db)
    traffic = Traffic(s, 2, rate=50)
    traffic.start()

    def seen(version: int, after: datetime | None = None) -> set[str]:
        return {
            t[:2]
            for t, v, _, at in _scored(store)
            if v == version and (after is None or at > after)
        }

    sup = Supervisor(ClusterPlan(2, free_ports(2), recovery, snapshot_s=1), env)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        _wait(lambda: seen(0) == {"p0", "p1"}, 60, "both processes score")
        v1 = publish_policy(store, _forcing(s, 0, "review"), "ana", "review all")
        announce_policy(s, v1)
        at = datetime.now(UTC)
        _wait(lambda: seen(1) == {"p0", "p1"}, 15, "both processes switch")
        time.sleep(1.5)  # a snapshot after the switch
        rows = _scored(store)
        for p in ("p0", "p1"):
            took = _switch(_rows_of(rows, p), at, 1)
            print(f"process of {p}: switched {took:.2f} s after the announcement")
            assert took <= SWITCH_S
    finally:
        sup.stop.set()
        runner.join(60)
    assert not runner.is_alive()

    # changed while the cluster is down, in ClickHouse only: the topic is behind
    publish_policy(store, _forcing(s, 0, "block"), "bob", "block all")
    restarted = datetime.now(UTC)
    sup = Supervisor(ClusterPlan(2, free_ports(2), recovery, snapshot_s=1), env)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        _wait(lambda: seen(2, restarted) == {"p0", "p1"}, 60, "restarted cluster scores")
        time.sleep(1.0)
    finally:
        sup.stop.set()
        runner.join(60)
        traffic.stop.set()
    after = [r for r in _scored(store) if r[3] > restarted]
    assert {t[:2] for t, *_ in after} == {"p0", "p1"}
    assert {(v, d) for _, v, d, _ in after} == {(2, "block")}, "never a stale version"
    versions = [
        orjson.loads(m.value())["version"] for m in consume_all(s.brokers, s.topic_rules, 1)
    ]
    assert versions[0] == 1 and set(versions[1:]) == {2}, "v2 republished from ClickHouse"
    store.client.command(f"DROP DATABASE {db}")
