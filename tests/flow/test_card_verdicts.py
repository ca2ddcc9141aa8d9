"""Analysts' verdicts on the compromised-card state (issue 19), through the real flow.

A confirmed-fraud verdict marks the reviewed transaction's card compromised, a
false-positive verdict clears it; both reach the score step keyed like the user's
transactions (crc32 shards, or aligned to the source partition) and survive a restart.

Each scenario runs in three executions over one recovery directory, so the order of the
two inputs is fixed (transactions; then the verdict alone; then the next charge) and
the state crosses a recovery snapshot between each: ``TestingSource.EOF`` ends an
execution and the next resumes after it.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from prometheus_client import REGISTRY

from dataflows.connectors.local import LocalMessage
from dataflows.connectors.routing import Alignment
from dataflows.detection.state import UserState
from dataflows.flow import build_flow, verdict_key_of
from schemas.scored import DeadLetter, Review, ScoredTransaction, encode_review
from schemas.settings import load_settings
from tests.conftest import T0, fixed_clock, txn_bytes
from tests.flow.test_card_memory import HOUR, burst, codes, history

EOF = TestingSource.EOF
T = 4 * 24 * HOUR  # minutes: after four days of history at home
CNP = {"amount": 30.0, "channel": "ecom", "device_id": "dx", "lat": None, "lon": None}
CNP |= {"schema_version": 2}  # card-not-present, no location; above compromised_card_usd
Runner = Callable[..., None]


def _two_workers(flow: Any, **kw: Any) -> None:
    cluster_main(flow, [], 0, worker_count_per_proc=2, **kw)


@pytest.fixture(params=[run_main, _two_workers], ids=["run_main", "cluster_2_workers"])
def runner(request: pytest.FixtureRequest) -> Runner:
    return request.param


def review(txn_id: str, verdict: str, minute: int, card_id: str | None = None, **kw: Any) -> bytes:
    at = T0 + timedelta(minutes=minute)
    user = kw.get("user_id", "alice")
    return encode_review(Review(f"a-{txn_id}", txn_id, user, verdict, "ana", None, at, 2, card_id))


def verdicts(outcome: str) -> float:
    return REGISTRY.get_sample_value("fraud_card_verdicts_total", {"outcome": outcome}) or 0.0


def run_steps(
    tmp: Path,
    before: list[Any],
    labels: list[bytes],
    after: list[Any],
    runner: Runner = run_main,
    align: Alignment | None = None,
) -> tuple[dict[str, ScoredTransaction], list[DeadLetter]]:
    """Execution 1 scores ``before``; 2 applies ``labels`` alone; 3 scores ``after``."""
    rec = tmp / "recovery"
    rec.mkdir(parents=True)
    init_db_dir(rec, 1)
    s = load_settings(shards=4, recovery_dir=rec)
    events = [*before, EOF(), EOF(), *after]
    feedback = [EOF(), *labels, EOF()]
    rows: list[ScoredTransaction] = []
    dead: list[DeadLetter] = []
    for _ in range(3):
        flow = build_flow(
            s,
            TestingSource(events, batch_size=5),
            TestingSink([]),
            TestingSink(rows),
            TestingSink(dead),
            clock=fixed_clock,
            labels=TestingSource(feedback, batch_size=2),
            align=align,
        )
        runner(flow, epoch_interval=timedelta(seconds=0), recovery_config=RecoveryConfig(str(rec)))
    return {r.txn.txn_id: r for r in rows}, dead


def test_a_false_positive_clears_a_card_the_rules_blocked(tmp_path: Path, runner: Runner) -> None:
    charge = txn_bytes(T + 30 * HOUR, txn_id="next", **CNP)
    blocked, _ = run_steps(tmp_path / "a", [*history(), *burst(T)], [], [charge], runner)
    assert blocked["b2"].decision == "block" and "card_testing" in codes(blocked["b2"])
    assert blocked["next"].decision == "block" and "compromised_card" in codes(blocked["next"])
    # The analyst judges the burst's alerts false positives (a v1 verdict: no card_id,
    # the card is the one the state remembers for b2), an hour after it.
    fp = [review(f"b{i}", "false_positive", T + 60) for i in range(2, 5)]
    cleared_before = verdicts("cleared")
    rows, dead = run_steps(tmp_path / "b", [*history(), *burst(T)], fp, [charge], runner)
    assert verdicts("cleared") - cleared_before == 3
    assert rows["next"].decision == "approve", rows["next"].reasons
    assert "compromised_card" not in codes(rows["next"]) and not dead


def test_a_confirmed_fraud_marks_a_card_the_rules_let_through(
    tmp_path: Path, runner: Runner
) -> None:
    first = txn_bytes(T, txn_id="stolen", **CNP)
    later = [txn_bytes(T + 2 * HOUR, txn_id="next", **CNP)]
    later.append(txn_bytes(T + 2 * HOUR + 1, txn_id="other-card", card_id="c2", **CNP))
    plain, _ = run_steps(tmp_path / "a", [*history(), first], [], later, runner)
    assert plain["stolen"].decision == plain["next"].decision == "approve"
    # Resolved from the state (v1, no card) and from the verdict's card_id (v2).
    for name, card in (("lookup", None), ("card_id", "c1")):
        cf = [review("stolen", "confirmed_fraud", T + 60, card)]
        rows, _ = run_steps(tmp_path / name, [*history(), first], cf, later, runner)
        assert rows["next"].decision == "block", (name, rows["next"].reasons)
        assert "compromised_card" in codes(rows["next"])
        assert "compromised_card" not in codes(rows["other-card"])  # the card, not the user


def test_confirmed_fraud_after_a_false_positive_marks_again(tmp_path: Path) -> None:
    charge = txn_bytes(T + 30 * HOUR, txn_id="next", **CNP)
    labels = [review("b2", "false_positive", T + 60), review("b2", "confirmed_fraud", T + 61)]
    rows, _ = run_steps(tmp_path, [*history(), *burst(T)], labels, [charge])
    assert rows["next"].decision == "block" and "compromised_card" in codes(rows["next"])


def test_a_verdict_that_cannot_be_resolved_is_counted_and_ignored(tmp_path: Path) -> None:
    first = txn_bytes(T, txn_id="g1", **CNP)
    labels = [
        review("never-seen", "confirmed_fraud", T + 60),  # no card_id, unknown txn
        review("g1", "confirmed_fraud", T + 60, user_id="bob"),  # no state for bob
        review("g1", "escalated", T + 60),  # changes no card: not even counted
    ]
    card, user = verdicts("unknown_card"), verdicts("unknown_user")
    rows, dead = run_steps(
        tmp_path, [*history(), first], labels, [txn_bytes(T + 120, txn_id="next", **CNP)]
    )
    assert (verdicts("unknown_card") - card, verdicts("unknown_user") - user) == (1, 1)
    assert rows["next"].decision == "approve" and not dead


def _located(events: list[bytes], parts: int) -> list[Any]:
    """Events as read from a source partitioned by user like the Kafka producers do."""
    import orjson

    out: list[Any] = []
    for i, e in enumerate(events):
        uid = orjson.loads(e)["user_id"].encode()
        out.append(LocalMessage(uid, e, "", zlib.crc32(uid) % parts, i))
    return out


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_aligned_keying_brings_the_verdict_to_the_users_state(tmp_path: Path, user: str) -> None:
    parts = 3
    align = Alignment([str(p) for p in range(parts)], 1)
    ev = [txn_bytes(i * 12 * HOUR, txn_id=f"h{i}", user_id=user) for i in range(8)]
    ev.append(txn_bytes(T, txn_id="stolen", user_id=user, **CNP))
    later = [txn_bytes(T + 2 * HOUR, txn_id="next", user_id=user, **CNP)]
    cf = [review("stolen", "confirmed_fraud", T + 60, user_id=user)]
    key = verdict_key_of(user, 4, align)
    assert (
        key == align.key_of("", zlib.crc32(user.encode()) % parts) != verdict_key_of(user, 4, None)
    )
    marked = verdicts("marked")
    rows, _ = run_steps(tmp_path, _located(ev, parts), cf, _located(later, parts), align=align)
    assert verdicts("marked") - marked == 1
    assert rows["next"].decision == "block" and "compromised_card" in codes(rows["next"])


def test_a_cleared_card_is_not_marked_again_by_a_block_replayed_after_the_verdict() -> None:
    hold = 72 * 3_600_000.0
    st = UserState()
    st.last_ts = 1_000_000.0
    st.compromise("c1", 900_000.0, hold)
    st.clear("c1", 950_000.0)
    assert not st.is_compromised("c1", 960_000.0, hold)
    st.compromise("c1", 900_000.0, hold)  # the same block, processed again (a replay)
    assert not st.is_compromised("c1", 960_000.0, hold)
    st.compromise("c1", 990_000.0, hold)  # a block after the verdict still counts
    assert st.is_compromised("c1", 995_000.0, hold)
    # Either order of verdict and block gives the same state.
    other = UserState()
    other.last_ts = 1_000_000.0
    other.clear("c1", 950_000.0)
    for ts in (900_000.0, 990_000.0):
        other.compromise("c1", ts, hold)
    assert other.compromised == st.compromised and other.cleared == st.cleared


def test_state_snapshots_from_before_verdicts_still_load() -> None:
    st = UserState()
    st.compromise("c1", 5.0, 10.0)
    old = st.__getstate__()[:11]  # the 11-field form pickled before ``cleared``
    back = UserState.__new__(UserState)
    back.__setstate__(old)
    assert back.compromised == st.compromised and back.cleared == ()
    assert pickle.loads(pickle.dumps(back)) == back


def test_a_verdict_that_fails_is_counted_and_the_flow_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataflows.flow

    def broken(*_: Any) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr(dataflows.flow, "apply_verdict", broken)
    failed = verdicts("failed")
    rows, dead = run_steps(
        tmp_path,
        [*history(), txn_bytes(T, txn_id="g1", **CNP)],
        [review("g1", "confirmed_fraud", T + 60)],
        [txn_bytes(T + 120, txn_id="next", **CNP)],
    )
    assert verdicts("failed") - failed == 1
    assert rows["next"].decision == "approve" and not dead


def test_a_verdict_read_before_the_users_transactions_still_marks_the_card(
    tmp_path: Path,
) -> None:
    """Both topics replayed from the start: the few verdicts are read first.  A verdict
    with its card starts the user's state, which outlives the eviction scans that other
    users' traffic runs meanwhile (carol shares alice's shard), 40 days of it."""
    assert verdict_key_of("carol", 4, None) == verdict_key_of("alice", 4, None)
    carol = [
        txn_bytes(-40 * 24 * HOUR + i * 6 * HOUR, txn_id=f"carol{i}", user_id="carol")
        for i in range(4 * 40)
    ]
    alice = [*history(), txn_bytes(T, txn_id="stolen", **CNP)]
    labels = [
        review("stolen", "confirmed_fraud", T + 60, "c1"),
        review("stolen", "confirmed_fraud", T + 60, user_id="dave"),  # no card: unknown
    ]
    unknown = verdicts("unknown_user")
    rows, _ = run_steps(
        tmp_path, [], labels, [*carol, *alice, txn_bytes(T + 2 * HOUR, txn_id="next", **CNP)]
    )
    assert verdicts("unknown_user") - unknown == 1
    assert rows["stolen"].decision == "approve"  # before the verdict's time
    assert rows["next"].decision == "block" and "compromised_card" in codes(rows["next"])
