"""Per-event fault isolation: a bug on one event dead-letters that event and nothing else.

A deterministic exception in the scoring step used to stop the flow and, with recovery,
stop it again at the same offset on every restart.  These tests inject faults into the
real scoring path (by patching the functions it calls for one poisoned transaction) and
check: the flow finishes, the poisoned event is a dead letter with ``internal_error``,
every other event is scored exactly as in a run without the poison, and the poisoned
user's state is as if the event had never arrived.
"""

from __future__ import annotations

from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

import dataflows.detection.scoring as scoring
from dataflows.flow import build_flow
from schemas.scored import DeadLetter, ScoredTransaction
from schemas.settings import Settings
from tests.conftest import fixed_clock, txn_bytes

POISON = "u1-3"


def _events() -> list[bytes]:
    out = []
    for i in range(8):
        for user, base in (("u1", 20.0), ("u2", 40.0)):
            out.append(txn_bytes(i * 60, txn_id=f"{user}-{i}", user_id=user, amount=base + i))
    return out


def _run(s: Settings, events: list[bytes]) -> tuple[list[ScoredTransaction], list[DeadLetter]]:
    rows: list[ScoredTransaction] = []
    dlq: list[DeadLetter] = []
    flow = build_flow(
        s, TestingSource(events, batch_size=5), TestingSink([]), TestingSink(rows),
        TestingSink(dlq), clock=fixed_clock,
    )  # fmt: skip
    run_main(flow)
    return rows, dlq


def _comparable(rows: list[ScoredTransaction]) -> dict[str, tuple[Any, ...]]:
    return {r.txn.txn_id: (r.risk_score, r.decision, r.reasons, r.features) for r in rows}


def _expected(settings: Settings) -> dict[str, tuple[Any, ...]]:
    clean = [e for e in _events() if f'"{POISON}"'.encode() not in e]
    return _comparable(_run(settings, clean)[0])


@pytest.mark.parametrize("where", ["observe_after_update", "rules", "model"])
def test_a_fault_on_one_event_dead_letters_it_and_spares_the_rest(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    expected = _expected(settings)
    if where == "observe_after_update":
        real = scoring.observe

        def observe(user: Any, txn: Any, **kw: Any) -> Any:
            f = real(user, txn, **kw)  # the state is updated, then the bug strikes
            if txn.txn_id == POISON:
                raise ZeroDivisionError("injected")
            return f

        monkeypatch.setattr(scoring, "observe", observe)
    elif where == "rules":
        real_rules = scoring.run_rules

        def rules(fns: Any, f: Any, *rest: Any) -> Any:
            if f.amount_usd == 23.0:  # u1-3: a bug in the rule runner, not in one rule
                raise KeyError("injected")
            return real_rules(fns, f, *rest)

        monkeypatch.setattr(scoring, "run_rules", rules)
    else:
        real_scale = scoring.scale_features

        def scale(f: Any) -> Any:
            x = real_scale(f)
            if f.amount_usd == 23.0 and f.history == 3:
                x["amount"] = float("nan")  # a non-finite model input
            return x

        monkeypatch.setattr(scoring, "scale_features", scale)

    rows, dlq = _run(settings, _events())
    got = _comparable(rows)
    dead = {d.error_code for d in dlq}
    assert dead == {"internal_error"}
    poisoned = {POISON}
    assert {orjson_id(d) for d in dlq} == poisoned
    assert all("injected" in d.error_message or "non-finite" in d.error_message for d in dlq)
    assert set(got) | poisoned == set(expected) | poisoned
    if where == "rules":
        return  # the state did learn u1-3 (rules run after the update): see score_batch
    # Every other event scores as if the poisoned one had never arrived: its user's
    # state was restored, and the model never learned it.
    assert got == expected


def orjson_id(d: DeadLetter) -> str:
    import orjson

    assert d.value is not None
    return orjson.loads(d.value)["txn_id"]


def test_a_model_failure_dead_letters_its_batch_and_restores_the_users(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the model itself raises, the whole batch is dead-lettered (nothing is lost)
    and the flow carries on with the next batch from untouched state."""
    calls = {"n": 0}
    real = scoring.ShardModel.score_learn_many

    def flaky(self: Any, rows: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected model failure")
        return real(self, rows)

    monkeypatch.setattr(scoring.ShardModel, "score_learn_many", flaky)
    rows, dlq = _run(settings, _events())
    assert len(rows) + len(dlq) == len(_events())
    assert dlq and all(d.error_code == "internal_error" for d in dlq)
    assert all("injected model failure" in d.error_message for d in dlq)


def test_a_transaction_without_location_is_scored_and_keeps_the_last_place(
    settings: Settings,
) -> None:
    """Transaction v2: lat/lon absent or null is scored (no geography invented); the last
    known place stays for the next card-present event; v1 still requires a location."""
    import orjson

    from tests.conftest import txn_dict

    def ev(n: int, **over: Any) -> bytes:
        d = txn_dict(n, user_id="nomad", **over)
        return orjson.dumps({k: v for k, v in d.items() if v != "DROP"})

    events = [
        ev(0, txn_id="home", lat=48.85, lon=2.35),
        ev(60, txn_id="web", channel="ecom", lat="DROP", lon="DROP", schema_version=2),
        ev(120, txn_id="null-pos", channel="pos", lat=None, lon=None, schema_version=2),
        ev(180, txn_id="far", lat=40.71, lon=-74.0),
        ev(240, txn_id="v1-no-place", channel="ecom", lat="DROP", lon="DROP"),
    ]
    rows, dlq = _run(settings, events)
    by_id = {r.txn.txn_id: r for r in rows}
    assert set(by_id) == {"home", "web", "null-pos", "far"}
    assert by_id["web"].txn.lat is None and by_id["web"].features["km_prev"] == 0.0
    assert by_id["null-pos"].features["speed_kmh"] == 0.0
    # The hop home -> far is measured from home, the last place actually seen.
    assert by_id["far"].features["km_prev"] > 5000
    assert "impossible_travel" in {r.code for r in by_id["far"].reasons}
    assert [(d.error_code, d.error_message) for d in dlq] == [
        ("missing_field", "required field 'lat' is missing")
    ]
