"""Crash and restart with bytewax recovery: no input lost, alert ids unique after dedup.

The production entry point runs as a subprocess with a recovery directory; it is killed
part-way (SIGTERM, then SIGKILL in the second case), more input arrives, and it restarts
on the same directory.  At-least-once: consumers may see an alert twice (the epoch after
the last snapshot is replayed) but never a different alert for the same transaction, and
de-duplicated by alert_id the alerts equal exactly what one uninterrupted run raises.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from clickhouse.store import Store
from dataflows.connectors.kafka import make_producer, produce_all
from schemas.scored import decode_alert
from schemas.settings import Settings, settings_env
from tests.chserver import ChServer
from tests.integration.conftest import consume_all
from tests.integration.test_kafka import MALFORMED, _events, _expected_alert_ids

ROOT = Path(__file__).parents[2]


def _env(s: Settings, ch: ChServer, db: str, recovery: Path, variable: bool) -> dict[str, str]:
    """The flow's environment; ``variable`` also sets FRAUD_RECOVERY_DIR (without it the
    flow must take its recovery from bytewax's -r alone)."""
    env = {
        **os.environ,
        **settings_env(
            {
                "brokers": s.brokers,
                "topic_transactions": s.topic_transactions,
                "topic_alerts": s.topic_alerts,
                "topic_dlq": s.topic_dlq,
                "partitions": 1,
                "hst_warmup": 0,
                "shards": 4,
                "clickhouse_url": ch.url,
                "clickhouse_database": db,
                "clickhouse_batch_rows": 200,
                "recovery_dir": recovery,
            }
        ),
    }
    if not variable:
        del env["FRAUD_RECOVERY_DIR"]
    return env


def init_recovery(tmp_path: Path) -> Path:
    """A fresh bytewax recovery directory with one partition."""
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(recovery), "1"],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return recovery


def _flow(env: dict[str, str], recovery: Path, tail: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bytewax.run",
            "dataflows.main:get_flow()",
            "-r",
            str(recovery),
            "-s",
            "1",
            "-b",
            "0",
        ],
        cwd=ROOT,
        env={**env, "FRAUD_KAFKA_TAIL": str(tail).lower()},
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _stored(store: Store) -> int:
    try:
        return store.client.query(f"SELECT count() FROM {store.database}.transactions").result_rows[
            0
        ][0]
    except Exception:  # database not migrated yet by the flow
        store.reset()
        return 0


@pytest.mark.integration
@pytest.mark.parametrize(
    ("sig", "variable"),
    [(signal.SIGTERM, True), (signal.SIGKILL, True), (signal.SIGKILL, False)],
    ids=["sigterm", "sigkill", "sigkill-only-bytewax-r"],
)
def test_restart_loses_no_input_and_replays_harmlessly(
    kafka_settings: Settings,
    ch_http: ChServer,
    tmp_path: Path,
    sig: signal.Signals,
    variable: bool,
) -> None:
    s = kafka_settings
    events = _events(4000)
    first, second = events[:2000], events[2000:]
    recovery = init_recovery(tmp_path)
    db = f"rs_{uuid.uuid4().hex[:8]}"
    env = _env(s, ch_http, db, recovery, variable)
    store = Store(ch_http.url, db)
    produce_all(make_producer(s), s.topic_transactions, first)

    proc = _flow(env, recovery, tail=True)
    deadline = time.monotonic() + 90
    while _stored(store) < 1000 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.2)
    time.sleep(1.5)  # at least one snapshot after rows were written
    os.killpg(proc.pid, sig)
    proc.wait(30)
    partial = _stored(store)
    assert 0 < partial < len(first), "stopped part-way, after storing some rows"

    produce_all(make_producer(s), s.topic_transactions, second)
    again = _flow(env, recovery, tail=False)  # resumes from the snapshot, stops at the end
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0, err[-3000:]

    good = len(events) - len(MALFORMED)
    ((rows, uniq),) = store.client.query(
        f"SELECT count(), uniqExact(txn_id) FROM {db}.transactions"
    ).result_rows
    assert uniq == good, "every valid input transaction is stored: none lost"
    assert rows >= uniq
    alerts = consume_all(s.brokers, s.topic_alerts, 1)
    ids = [decode_alert(m.value()).alert_id for m in alerts]
    assert set(ids) == _expected_alert_ids(s, events), "dedup by alert_id = one clean run"
    by_id: dict[str, bytes] = {}
    for m in alerts:  # a replayed alert is the same alert (same transaction and decision)
        a = decode_alert(m.value())
        prev = by_id.setdefault(a.alert_id, a.txn_id.encode() + a.decision.encode())
        assert prev == a.txn_id.encode() + a.decision.encode()
    dlq = consume_all(s.brokers, s.topic_dlq, 1)
    assert len({dict(m.headers())["source-offset"] for m in dlq}) == len(MALFORMED)
    ((q_uniq,),) = store.client.query(
        f"SELECT uniqExact(txn_id) FROM {db}.transactions FINAL"
    ).result_rows
    assert q_uniq == good
    store.client.command(f"DROP DATABASE {db}")
