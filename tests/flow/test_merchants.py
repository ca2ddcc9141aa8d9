"""The feedback loop's first leg: merchant risk from fraud labels, only after the delay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from dataflows.detection.merchants import _Merchant, label_json, merchant_features, parse_label
from dataflows.detection.verdicts import parse_feedback
from dataflows.flow import build_flow
from schemas.settings import Settings
from tests.conftest import T0, fixed_clock, txn_bytes

MIN = 60  # txn_bytes(n) puts the event n minutes after T0
DAY = 24 * 60


def _two_workers(flow: Any) -> None:
    cluster_main(flow, [], 0, worker_count_per_proc=2)


def _run(s: Settings, events: list[bytes], labels: list[bytes], runner: Any) -> tuple[list, list]:
    rows: list = []
    dlq: list = []
    flow = build_flow(
        s,
        TestingSource(events, batch_size=1),
        TestingSink([]),
        TestingSink(rows),
        TestingSink(dlq),
        clock=fixed_clock,
        labels=TestingSource(labels),
    )
    runner(flow)
    return sorted(rows, key=lambda r: r.txn.txn_id), dlq


@pytest.mark.parametrize("runner", [run_main, _two_workers], ids=["run_main", "cluster_2w"])
def test_labels_count_only_after_the_delay(settings: Settings, runner: Any) -> None:
    """Two confirmed frauds at m9 on day 0; other customers use m9 on days 6 and 8.
    With a 7-day delay the day-6 purchase must not see them, the day-8 one must."""

    def at(n: int, tid: str, user: str) -> bytes:
        return txn_bytes(n, txn_id=tid, user_id=user, merchant_id="m9", card_id=f"c-{user}")

    # Labels arrive on their own input; in life they come days later.  The 100 unrelated
    # purchases before "d" make sure the two label events have been read by then.
    filler = [txn_bytes(7 * DAY + i, txn_id=f"f{i:03d}", user_id=f"x{i}") for i in range(100)]
    events = [
        at(0, "a", "u1"),
        at(60, "b", "u2"),
        at(6 * DAY, "c", "u3"),
        *filler,
        at(8 * DAY, "d", "u4"),
        txn_bytes(8 * DAY, txn_id="e", user_id="u5"),
    ]
    labels = [label_json("m9", T0, "a"), label_json("m9", T0 + timedelta(hours=1), "b")]
    rows, dlq = _run(settings, events, labels, runner)
    assert dlq == []
    by = {r.txn.txn_id: r for r in rows}
    codes = {k: [x.code for x in r.reasons] for k, r in by.items()}
    assert "compromised_merchant" not in codes["c"], "a label must not be seen before its delay"
    assert by["c"].features["merchant_frauds_7d"] == 0.0
    assert "compromised_merchant" in codes["d"]
    assert by["d"].features["merchant_frauds_7d"] == 2.0
    assert by["d"].features["merchant_risk_7d"] == 1.0
    assert by["d"].decision == "block" and by["d"].risk_score >= 0.9
    assert "compromised_merchant" not in codes["e"], "other merchants are unaffected"
    assert all(r.model_version.endswith("+merchant-v1+lr-v3") for r in rows)


def test_bad_label_goes_to_the_dead_letter_queue(settings: Settings) -> None:
    rows, dlq = _run(settings, [txn_bytes(0)], [b'{"merchant_id": "m1"}', b"nope"], run_main)
    assert len(rows) == 1
    assert sorted(d.error_code for d in dlq) == ["invalid_label", "invalid_label"]
    assert "txn_ts" in "".join(d.error_message for d in dlq)


def test_a_refused_feedback_message_names_where_it_was_read() -> None:
    """Topic, partition and offset of the Kafka message (partition 0 and offset 0 too),
    for a label, a review and a consumer error alike."""
    msg = KafkaSourceMessage(b"k", b"nope", topic="fraud-feedback", partition=0, offset=0)
    review = KafkaSourceMessage(None, b'{"verdict": 1}', topic="fb", partition=2, offset=7)
    error = KafkaError("boom", KafkaSourceMessage(None, None, topic="fb", partition=0, offset=3))
    got = [
        parse_label(msg, fixed_clock),
        *parse_feedback(review, fixed_clock),
        parse_label(error, fixed_clock),
    ]
    where = [(d.source_topic, d.source_partition, d.source_offset) for d in got]
    assert where == [("fraud-feedback", 0, 0), ("fb", 2, 7), ("fb", 0, 3)]
    assert [d.error_code for d in got] == ["invalid_label", "invalid_label", "consumer_error"]
    assert got[0].key == b"k"


def test_without_labels_the_flow_is_unchanged(settings: Settings) -> None:
    rows: list = []
    run_main(
        build_flow(
            settings,
            TestingSource([txn_bytes(0)]),
            TestingSink([]),
            TestingSink(rows),
            TestingSink([]),
            clock=fixed_clock,
        )
    )
    assert not rows[0].model_version.endswith("+merchant-v1")
    assert "merchant_risk_7d" not in rows[0].features


def test_merchant_windows_end_at_the_delay() -> None:
    m = _Merchant(txns={0: 4, 5: 2, 9: 10}, frauds={0: 2, 5: 1, 9: 9})
    day = 86_400_000.0
    f = merchant_features(m, 13.5 * day, delay_days=7)  # t - delay = day 6.5: up to day 5
    assert (f["merchant_frauds_1d"], f["merchant_risk_1d"]) == (1.0, 0.5)
    assert (f["merchant_frauds_7d"], f["merchant_risk_7d"]) == (3.0, 0.5)
    assert f["merchant_frauds_30d"] == 3.0, "day 9 is still inside the delay"


def test_cached_merchant_windows_equal_a_fresh_count(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels, late and out-of-order transactions over 40 days: every row's merchant
    features equal the windows counted afresh from the merchant's state at that moment."""
    import random

    import dataflows.detection.merchants as mm
    from dataflows.detection.merchants import DAY_MS, MerchantLabel, MerchantShard, on_events
    from schemas.scored import ScoredTransaction
    from schemas.transaction import Transaction

    checked = [0]
    cached_fn = mm.merchant_features

    def checking(m: _Merchant, ts_ms: float, delay_days: float) -> dict[str, float]:
        got = cached_fn(m, ts_ms, delay_days)
        end_day = int((ts_ms - delay_days * DAY_MS) // DAY_MS) - 1
        assert got == mm.window_features(m, end_day)
        checked[0] += 1
        return got

    monkeypatch.setattr(mm, "merchant_features", checking)
    rnd = random.Random(4)
    shard, base = MerchantShard(), T0.timestamp() * 1000.0
    clock = 0.0
    for _ in range(3000):
        clock += rnd.uniform(0, 0.03) * DAY_MS
        mid = f"m{rnd.randint(0, 4)}"
        if rnd.random() < 0.15:  # a confirmed fraud of some earlier transaction
            item: Any = MerchantLabel(mid, base + clock - rnd.uniform(0, 20) * DAY_MS)
        else:  # now, or up to 15 days late
            late = rnd.uniform(0, 15) * DAY_MS if rnd.random() < 0.1 else 0.0
            ts = T0 + timedelta(milliseconds=clock - late)
            txn = Transaction("t", ts, "u", "c", mid, "grocery", 10.0, "USD", 0.0, 0.0, "US", "pos")
            item = ScoredTransaction(txn, None, {}, 0.0, 0.0, (), 0.0, "approve", "v", T0)
        out = on_events(shard, [item], settings)
        assert len(out) == (0 if isinstance(item, MerchantLabel) else 1)
    assert checked[0] > 2000
