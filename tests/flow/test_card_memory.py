"""What the flow carries from one transaction to the next (issue 19, findings 1-3).

Hand-built sequences through the real flow, one and two workers, rules only (the anomaly
model is still warming up, so no percentile moves a decision):

1. a card the rules blocked stays compromised: a cash-out hours after card testing is
   blocked, other cards of the user are not touched;
2. the genuine holder back at an established place is not an impossible hop after a
   cloned card's purchase far away (which still is);
3. velocity windows do not depend on arrival order within the lateness bound.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from dataflows.flow import build_flow
from schemas.scored import ScoredTransaction
from schemas.settings import load_settings
from tests.conftest import T0, fixed_clock, txn_bytes

Runner = Callable[[Any], None]
HOUR = 60
LONDON = {"lat": 51.5074, "lon": -0.1278, "country": "GB"}


def _two_workers(flow: Any) -> None:
    cluster_main(flow, [], 0, worker_count_per_proc=2)


@pytest.fixture(params=[run_main, _two_workers], ids=["run_main", "cluster_2_workers"])
def runner(request: pytest.FixtureRequest) -> Runner:
    return request.param


def score(events: list[bytes], runner: Runner, **settings: Any) -> dict[str, ScoredTransaction]:
    rows: list[ScoredTransaction] = []
    flow = build_flow(
        load_settings(shards=4, **settings),
        TestingSource(events, batch_size=5),
        TestingSink([]),
        TestingSink(rows),
        TestingSink([]),
        clock=fixed_clock,
    )
    runner(flow)
    return {r.txn.txn_id: r for r in rows}


def history(days: int = 4) -> list[bytes]:
    """Alice buying at home (New York) twice a day: her home becomes an established place."""
    return [txn_bytes(i * 12 * HOUR, txn_id=f"h{i}") for i in range(days * 2)]


def burst(start: int, n: int = 5) -> list[bytes]:
    """Card testing on card c1: small e-commerce charges 20 s apart from minute ``start``."""
    return [
        txn_bytes(
            start,
            txn_id=f"b{i}",
            ts=(T0 + timedelta(minutes=start, seconds=20 * i)).isoformat().replace("+00:00", "Z"),
            amount=1.5,
            channel="ecom",
            device_id="dx",
            merchant_id=f"web{i}",
        )
        for i in range(n)
    ]


def codes(r: ScoredTransaction) -> set[str]:
    return {x.code for x in r.reasons}


def test_cash_out_hours_after_card_testing_is_blocked(runner: Runner) -> None:
    t = 4 * 24 * HOUR
    # Card-not-present without a location (Transaction v2), as cash-outs often are.
    cash = {"amount": 400.0, "channel": "ecom", "device_id": "dx", "merchant_id": "web9"}
    cash |= {"lat": None, "lon": None, "schema_version": 2}
    events = [
        *history(),
        *burst(t),
        txn_bytes(t + 30 * HOUR, txn_id="cashout", **cash),
        txn_bytes(t + 30 * HOUR + 1, txn_id="other-card", card_id="c2", **cash),
        txn_bytes(t + 31 * HOUR, txn_id="shop-away", lat=40.0, lon=-80.0),  # card-present
        txn_bytes(t + 80 * HOUR, txn_id="after-hold", **cash),
    ]
    rows = score(events, runner)
    assert rows["b2"].decision == "block" and "card_testing" in codes(rows["b2"])
    assert rows["cashout"].decision == "block", rows["cashout"].reasons
    assert "compromised_card" in codes(rows["cashout"])
    assert "compromised_card" not in codes(rows["other-card"])  # the card, not the user
    assert rows["shop-away"].decision == "review" and "compromised_card" in codes(rows["shop-away"])
    assert "compromised_card" not in codes(rows["after-hold"])  # 72 h after the last block


def test_compromised_card_can_be_turned_off(runner: Runner) -> None:
    t = 4 * 24 * HOUR
    events = [*history(), *burst(t), txn_bytes(t + 30 * HOUR, txn_id="cashout", amount=400.0)]
    rows = score(events, runner, compromised_card_hours=0)
    assert "compromised_card" not in codes(rows["cashout"])


def test_holder_back_home_after_a_clone_is_not_impossible_travel(runner: Runner) -> None:
    t = 4 * 24 * HOUR
    events = [
        *history(),
        txn_bytes(t, txn_id="home-before"),
        txn_bytes(t + 30, txn_id="clone", **LONDON),  # 5,570 km in 30 min
        txn_bytes(t + 5 * HOUR, txn_id="home-again", merchant_id="m2"),  # 1,240 km/h from London
    ]
    rows = score(events, runner)
    assert rows["clone"].decision == "block" and "impossible_travel" in codes(rows["clone"])
    back = rows["home-again"]
    assert "impossible_travel" not in codes(back) and back.decision != "block", back.reasons
    assert back.features["known_place"] == 1.0


def test_a_new_place_is_still_an_impossible_hop(runner: Runner) -> None:
    # Without an established place at the destination the hop is judged as before.
    events = [txn_bytes(0, txn_id="a"), txn_bytes(30, txn_id="b", **LONDON)]
    assert "impossible_travel" in codes(score(events, runner)["b"])


def test_card_testing_decisions_do_not_depend_on_arrival_order(runner: Runner) -> None:
    t = 4 * 24 * HOUR
    charges = burst(t, n=6)  # 100 s in all: reversed, each arrives <= 100 s late
    before = history()
    in_order = score([*before, *charges], runner)
    reversed_ = score([*before, *reversed(charges)], runner)
    ids = [f"b{i}" for i in range(6)]
    arrived = ids[::-1]
    after_third = [i for i in ids[2:] if arrived.index(i) >= 2]
    assert after_third == ["b2", "b3"]
    for i in after_third:
        assert reversed_[i].decision == in_order[i].decision == "block", (i, reversed_[i].reasons)
    # Every event arriving after the third is blocked, whatever its place in time.
    assert [reversed_[i].decision for i in arrived[2:]] == ["block"] * 4
