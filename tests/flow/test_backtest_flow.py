"""The flow backtest on a small generated stream, and its agreement with the stored-rows
backtest where the state does not change (candidate = live plus a shadow rule and a
lower review threshold): the same decisions row by row, the same report."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from clickhouse.backtest import backtest_store, evaluate_policy, features_read, load_rows
from clickhouse.store import Store, migrate
from clickhouse.tables import TRANSACTIONS, txn_row
from dataflows.evaluation.backtest import backtest_flow, file_events, flow_runs, score_events
from generators.stream import event_stream, write_parquet
from generators.synth import PATTERNS, GeneratorConfig
from schemas.rules import Case, Rule, default_policy
from schemas.settings import Settings

CFG = GeneratorConfig(seed=3, users=300, fraud_rate=0.05, patterns=PATTERNS)
COUNT = 8000
SHADOW = Rule(
    "big_ecom",
    "Big e-commerce",
    (Case("True", "0.4", "${amount_usd:.0f} online"),),
    "not card_present and amount_usd > 300",
    status="shadow",
)


@pytest.fixture(scope="module")
def events() -> list[bytes]:
    return [v for _, v in event_stream(CFG, COUNT)]


def test_a_shadow_rule_changes_no_decision_and_counts_its_hits(
    settings: Settings, events: list[bytes]
) -> None:
    live = default_policy(settings)
    cand = live.with_rule(SHADOW)
    said: list[str] = []
    r = backtest_flow(settings, events, cand, live, said.append)
    assert r.rows == COUNT and r.source == "flow"
    assert len(said) == 2 and said[0].startswith("live policy v0: 8,000 events scored")
    diag = [r.changes[i][i] for i in range(3)]
    assert sum(diag) == COUNT and r.examples == {}
    assert r.live == r.candidate
    stats = {s.rule: s for s in r.candidate_rules}
    rows = [orjson.loads(e) for e in events]
    # ground truth of the shadow rule straight from the events (USD amounts here)
    want = [
        x for x in rows if x["channel"] == "ecom" and x["amount"] > 300 and x["currency"] == "USD"
    ]
    assert stats["big_ecom"].status == "shadow"
    assert stats["big_ecom"].hits >= len(want) > 0
    assert r.labelled == COUNT and r.with_verdict == 0
    assert r.live.recall_labels is not None and r.live.precision_verdicts is None
    assert sum(a for _, a, _ in r.alerts_per_day) == r.live.flagged


def test_flow_and_store_paths_agree_where_state_is_unchanged(
    settings: Settings, events: list[bytes], chdb_url: str
) -> None:
    live = default_policy(settings)
    # a shadow rule and a lower review threshold: what blocks (and so the state, see
    # blocks_alone) is the live policy's, only reviews change
    cand = replace(live.with_rule(SHADOW), review_threshold=0.4)
    rows, a, b = flow_runs(settings, events, cand, live)
    store = Store(chdb_url, f"test_{uuid.uuid4().hex[:10]}")
    migrate(store, 3650)
    try:
        scored, dead = score_events(settings, events, live)
        assert dead == 0
        store.insert(TRANSACTIONS, [txn_row(x) for x in scored])
        store.insert(TRANSACTIONS, [txn_row(x) for x in scored[: COUNT // 2]])  # a replay
        need = sorted(set().union(*(features_read(r) for r in cand.rules)))
        srows, cols, fb = load_rows(store, need, None, None)
        assert len(srows) == COUNT
        at = {t: i for i, t in enumerate(srows.txn_id)}
        idx = np.array([at[t] for t in rows.txn_id])
        sa = evaluate_policy(live, cols, fb, len(srows))
        sb = evaluate_policy(cand, cols, fb, len(srows))
        assert np.array_equal(sa.decision[idx], a.decision)
        assert np.array_equal(sb.decision[idx], b.decision)
        for run, srun in ((a, sa), (b, sb)):
            for rid, hit in run.hits.items():
                assert np.array_equal(srun.hits[rid][idx], hit), rid
        assert (b.decision != a.decision).any(), "the candidate must change something"
        flow_report = backtest_flow(settings, events, cand, live).to_dict()
        store_report = backtest_store(store, cand, live).to_dict()
        for d in (flow_report, store_report):
            for k in ("source", "seconds", "notes"):
                d.pop(k)
        for k in flow_report:
            assert flow_report[k] == store_report[k], k
    finally:
        store.client.command(f"DROP DATABASE IF EXISTS {store.database}")


def test_file_inputs_jsonl_and_parquet(tmp_path: Path, events: list[bytes]) -> None:
    jsonl = tmp_path / "ev.jsonl"
    jsonl.write_bytes(b"\n".join(events[:500]) + b"\n\n")
    got = [orjson.loads(e)["txn_id"] for e in file_events(jsonl)]
    assert got == [orjson.loads(e)["txn_id"] for e in events[:500]]
    pq = tmp_path / "ev.parquet"
    write_parquet(CFG, 500, pq)
    parts = tmp_path / "hive"
    write_parquet(CFG, 500, parts, partitioned=True)
    one = [orjson.loads(e) for e in file_events(pq)]
    assert [x["txn_id"] for x in one] == got
    assert [orjson.loads(e)["txn_id"] for e in file_events(parts)] == got
    assert {"label", "amount", "ts"} <= one[0].keys()
