"""The stored-rows backtest on hand-made rows, exact figures computed by hand.

Eight transactions over three days, written twice (a crash and replay: the duplicates
are really there, unmerged) with labels, verdicts in both trails (alert_reviews and
case_actions), a stored feedback reason and stored rule reasons that must be ignored
(the rules are re-run over the stored features).

live (v3): velocity cnt_1m > 3 → 0.6; big amount_usd > 1000 → 0.5; review 0.5 block 0.8.
candidate (v4): velocity unchanged; big > 800 → 0.6, > 500 → 0.5; foreign_ecom (review
effect, 0.1) card-not-present outside the US; trusted (exempt) history >= 100 at a known
place; night (shadow, 0.2) hour_local < 5; a draft rule reading an unstored feature
(not run, so not refused); review threshold 0.55.

| txn | day | usd  | cnt | ch/ctry  | hist kp hour | label | verdict      | live      | cand      |
| r1  | 0   | 50   | 1   | pos US   | 10  0  12    | 0     | -            | A 0       | A 0       |
| r2  | 0   | 2000 | 1   | pos US   | 10  0  3     | 1     | fraud        | R 0.5     | R 0.6     |
| r3  | 0   | 700  | 5   | ecom FR  | 10  0  14    | 1     | fraud→fp(ca) | R 0.6     | B 0.82    |
| r4  | 1   | 900  | 1   | pos US   | 200 1  10    | 0     | fp           | A 0       | A (exempt)|
| r5  | 1   | 30   | 1   | ecom DE  | 5   0  2     | -     | fp→fraud     | A 0       | R (forced)|
| r6  | 1   | 1500 | 4   | pos US   | 300 1  9     | 1     | fraud (ca)   | B 0.8     | B 0.84    |
| r7  | 2   | 100  | 1   | pos US   | 10  0  12    | 0     | -            | R 0.5 (fb)| A 0.5     |
| r8  | 2   | 20   | 4   | pos US   | 10  0  4     | 0     | fp→escalated | R 0.6     | R 0.6     |
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from clickhouse.backtest import backtest_store
from clickhouse.queries import save_case_actions
from clickhouse.rules import policy_in_force
from clickhouse.store import Store
from clickhouse.tables import ALERTS, TRANSACTIONS, alert_row, txn_row
from schemas.cases import CaseAction
from schemas.rules import Case, Policy, PolicyError, Rule, default_policy, encode_policy
from schemas.scored import Alert, Reason, Review, ScoredTransaction, alert_id_for
from schemas.settings import load_settings
from schemas.transaction import Label, Transaction
from tests.conftest import T0

DAY = timedelta(days=1)

# txn, day, usd, cnt_1m, channel, country, history, known_place, hour, label, decision,
# stored reasons
ROWS = [
    ("r1", 0, 50.0, 1, "pos", "US", 10, 0, 12, 0, "approve", (("velocity", 0.9),)),
    ("r2", 0, 2000.0, 1, "pos", "US", 10, 0, 3, 1, "review", (("big", 0.5),)),
    ("r3", 0, 700.0, 5, "ecom", "FR", 10, 0, 14, 1, "review", (("velocity", 0.6),)),
    ("r4", 1, 900.0, 1, "pos", "US", 200, 1, 10, 0, "approve", ()),
    ("r5", 1, 30.0, 1, "ecom", "DE", 5, 0, 2, None, "approve", ()),
    ("r6", 1, 1500.0, 4, "pos", "US", 300, 1, 9, 1, "block", (("velocity", 0.6),)),
    ("r7", 2, 100.0, 1, "pos", "US", 10, 0, 12, 0, "review", (("compromised_merchant", 0.5),)),
    ("r8", 2, 20.0, 4, "pos", "US", 10, 0, 4, 0, "review", (("velocity", 0.6),)),
]


def rule(rid: str, when: str, *cases: tuple[str, str], **kw: str) -> Rule:
    return Rule(rid, rid, tuple(Case(w, c, rid) for w, c in cases), when, **kw)


LIVE = Policy(
    3,
    (
        rule("velocity", "cnt_1m > 3", ("True", "0.6")),
        rule("big", "amount_usd > 1000", ("True", "0.5")),
    ),
    0.5,
    0.8,
)
CANDIDATE = Policy(
    4,
    (
        rule("velocity", "cnt_1m > 3", ("True", "0.6")),
        rule("big", "amount_usd > 500", ("amount_usd > 800", "0.6"), ("True", "0.5")),
        rule(
            "foreign_ecom",
            "not card_present and country not in ('US',)",
            ("True", "0.1"),
            effect="review",
        ),
        rule("trusted", "history >= 100 and known_place", ("True", "0.0"), effect="exempt"),
        rule("night", "hour_local < 5", ("True", "0.2"), status="shadow"),
        rule("fx", "not fx_known", ("True", "0.3"), status="draft"),
    ),
    0.55,
    0.8,
)


def _scored(replay: bool) -> list[ScoredTransaction]:
    out = []
    for tid, day, usd, cnt, ch, ctry, hist, kp, hour, lab, dec, reasons in ROWS:
        ts = T0 + day * DAY + timedelta(minutes=int(tid[1:]))
        txn = Transaction(tid, ts, "u1", "c1", "m1", "retail", usd, "USD", 1.0, 2.0, ctry, ch)
        feats = {
            "amount_usd": usd,
            "cnt_1m": float(cnt),
            "history": float(hist),
            "known_place": float(kp),
            "hour_local": float(hour),
        }
        out.append(
            ScoredTransaction(
                txn,
                None if lab is None else Label(bool(lab)),
                feats,
                0.1,
                0.2,
                tuple(Reason(c, c, w) for c, w in reasons),
                0.5,
                dec,
                "test",
                ts + timedelta(seconds=1, hours=5 if replay else 0),
            )
        )
    return out


def _verdicts(store: Store) -> None:
    """alert_reviews: r2 fraud; r3 fraud then (case_actions, later) fp; r4 fp; r5 fp then
    fraud; r8 fp then escalated (no verdict).  case_actions only: r6 fraud."""
    t = T0 + timedelta(days=5)

    def rv(tid: str, verdict: str, minutes: int) -> Review:
        return Review(
            alert_id_for(tid), tid, "u1", verdict, "ana", None, t + timedelta(minutes=minutes)
        )

    store.save_reviews(
        [
            rv("r2", "confirmed_fraud", 0),
            rv("r3", "confirmed_fraud", 0),
            rv("r4", "false_positive", 0),
            rv("r5", "false_positive", 0),
            rv("r5", "confirmed_fraud", 1),
            rv("r8", "false_positive", 0),
            rv("r8", "escalated", 1),
        ]
    )

    def act(tids: list[str], verdict: str, minutes: int) -> CaseAction:
        ids = tuple(alert_id_for(x) for x in tids)
        at = t + timedelta(minutes=minutes)
        return CaseAction(
            uuid.uuid4().hex, "case1", "u1", 1, "verdict", "ana", at, ids, "", verdict
        )

    save_case_actions(store, [act(["r6"], "confirmed_fraud", 0), act(["r3"], "false_positive", 2)])


@pytest.fixture
def loaded(store: Store) -> Store:
    for replay in (False, True):
        rows = _scored(replay)
        store.insert(TRANSACTIONS, [txn_row(s) for s in rows])
        store.insert(ALERTS, [alert_row(Alert.from_scored(s)) for s in rows if s.flagged])
    ((n,),) = store.client.query(f"SELECT count() FROM {store.database}.transactions").result_rows
    assert n == 2 * len(ROWS), "the duplicates must really be there, unmerged"
    _verdicts(store)
    return store


def test_whole_range_exact(loaded: Store) -> None:
    r = backtest_store(loaded, CANDIDATE, LIVE)
    assert (r.rows, r.labelled, r.with_verdict, r.source) == (8, 7, 5, "store")
    assert r.changes == [[2, 1, 0], [1, 2, 1], [0, 0, 1]]
    assert r.examples == {
        "approve->review": ["r5"],
        "review->approve": ["r7"],
        "review->block": ["r3"],
    }
    live, cand = r.live, r.candidate
    assert (live.version, live.flagged, live.reviews, live.blocks) == (3, 5, 4, 1)
    assert (live.flagged_usd, live.blocked_usd) == (4320.0, 1500.0)
    assert (live.precision_labels, live.recall_labels) == (0.6, 1.0)
    assert (live.precision_verdicts, live.recall_verdicts) == pytest.approx((2 / 3, 2 / 3))
    assert (cand.version, cand.flagged, cand.reviews, cand.blocks) == (4, 5, 3, 2)
    assert (cand.flagged_usd, cand.blocked_usd) == (4250.0, 2200.0)
    assert (cand.precision_labels, cand.recall_labels) == (0.75, 1.0)
    assert (cand.precision_verdicts, cand.recall_verdicts) == (0.75, 1.0)
    assert r.alerts_per_day == [("2026-03-02", 2, 2), ("2026-03-03", 1, 2), ("2026-03-04", 2, 1)]
    last = T0 + 2 * DAY + timedelta(minutes=8, milliseconds=1)
    assert (r.start, r.end) == ((T0 + timedelta(minutes=1)).isoformat(), last.isoformat())


def test_rule_stats_exact(loaded: Store) -> None:
    r = backtest_store(loaded, CANDIDATE, LIVE)
    got = {
        s.rule: (
            s.status,
            s.hits,
            s.hit_rate,
            s.amount_usd,
            s.precision_labels,
            s.recall_labels,
            s.precision_verdicts,
            s.recall_verdicts,
        )
        for s in r.candidate_rules
    }
    third = pytest.approx(1 / 3)
    assert got == {
        "velocity": (
            "live",
            3,
            0.375,
            2220.0,
            pytest.approx(2 / 3),
            pytest.approx(2 / 3),
            0.5,
            third,
        ),
        "big": ("live", 4, 0.5, 5100.0, 0.75, 1.0, 0.5, pytest.approx(2 / 3)),
        "foreign_ecom": ("live", 2, 0.25, 730.0, 1.0, third, 0.5, third),
        "trusted": ("live", 2, 0.25, 2400.0, 0.5, third, 0.5, third),
        "night": ("shadow", 3, 0.375, 2050.0, 0.5, third, 1.0, pytest.approx(2 / 3)),
    }, "draft rules are not run"
    overlap = {s.rule: s.overlap for s in r.candidate_rules}
    assert overlap["velocity"] == {"big": 2, "foreign_ecom": 1, "trusted": 1, "night": 1}
    assert overlap["big"] == {"velocity": 2, "foreign_ecom": 1, "trusted": 2, "night": 1}
    assert overlap["foreign_ecom"]["night"] == 1 and overlap["trusted"]["night"] == 0
    live = {s.rule: (s.hits, s.amount_usd, s.precision_verdicts, s.overlap) for s in r.live_rules}
    assert live == {
        "velocity": (3, 2220.0, 0.5, {"big": 1}),
        "big": (2, 3500.0, 1.0, {"velocity": 1}),
    }


def test_time_range_is_half_open(loaded: Store) -> None:
    r = backtest_store(loaded, CANDIDATE, LIVE, T0 + DAY, T0 + 2 * DAY)
    assert r.rows == 3
    assert r.changes == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert r.examples == {"approve->review": ["r5"]}
    assert r.alerts_per_day == [("2026-03-03", 1, 2)]
    assert (r.start, r.end) == ((T0 + DAY).isoformat(), (T0 + 2 * DAY).isoformat())
    empty = backtest_store(loaded, CANDIDATE, LIVE, T0 - 2 * DAY, T0 - DAY)
    assert (empty.rows, empty.changes, empty.alerts_per_day) == (0, [[0] * 3] * 3, [])
    assert empty.live.precision_labels is None and empty.candidate_rules[0].hit_rate == 0.0


def test_report_is_plain_json(loaded: Store) -> None:
    d = backtest_store(loaded, CANDIDATE, LIVE).to_dict()
    assert orjson.loads(orjson.dumps(d)) == d
    assert d["decisions"] == ["approve", "review", "block"]
    assert d["alerts_per_day"][0] == ["2026-03-02", 2, 2]
    assert d["candidate_rules"][0]["rule"] == "velocity" and d["seconds"] > 0


def test_unstored_feature_is_refused_naming_rule_and_feature(store: Store) -> None:
    bad = CANDIDATE.with_rule(rule("fx", "not fx_known", ("True", "0.3"), status="shadow"))
    with pytest.raises(PolicyError) as e:
        backtest_store(store, bad, LIVE)
    assert "'fx'" in str(e.value) and "fx_known" in str(e.value)
    assert "through the flow" in str(e.value)


def test_naive_or_reversed_range_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        backtest_store(store, CANDIDATE, LIVE, T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="not after start"):
        backtest_store(store, CANDIDATE, LIVE, T0, T0)


# --- the command ------------------------------------------------------------------------


def fraud_rules(*argv: str) -> int:
    """``fraud rules ARGV`` with the backtest subcommand registered as ``fraud`` does
    (exit status 2 for bad input, as ``dataflows.cli.main``)."""
    import argparse

    from dataflows.cli.rules_backtest import register_backtest
    from schemas.errors import ConfigError

    ap = argparse.ArgumentParser(prog="fraud")
    rules = ap.add_subparsers(dest="cmd").add_parser("rules")
    register_backtest(rules.add_subparsers(dest="action"))
    try:
        args = ap.parse_args(["rules", *argv])
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return args.fn(args)
    except (ConfigError, ValueError) as e:
        print(f"fraud rules: error: {e}")
        return 2


@pytest.fixture
def cli(loaded: Store, tmp_path: Path) -> tuple[Store, Path, list[str]]:
    from clickhouse.rules import publish_policy

    publish_policy(loaded, LIVE, "ana", "the live rules")  # in force: version 1
    cand = tmp_path / "cand.json"
    cand.write_bytes(encode_policy(CANDIDATE))
    conn = [
        "--set",
        f"clickhouse_url={loaded.url}",
        "--set",
        f"clickhouse_database={loaded.database}",
    ]
    return loaded, cand, conn


def test_cli_prints_tables_and_writes_the_json(
    cli: tuple[Store, Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, cand, conn = cli
    out = tmp_path / "out" / "report.json"
    argv = ["backtest", str(cand), "--from", "2026-03-02", "--to", "2026-03-05", "--json", str(out)]
    assert fraud_rules(*argv, *conn) == 0
    text = capsys.readouterr().out
    assert "candidate v4 vs live v1 over 8 stored transactions" in text
    assert re.search(r"\nreview +1 +2 +1\n", text), text  # live review → A, R, B
    assert "e.g. approve->review: r5" in text
    assert re.search(r"\n2026-03-03 +1 +2 +\+1\n", text)
    assert re.search(r"\nnight +shadow +score +3 +37.500% +\$2,050 ", text)
    got = orjson.loads(out.read_bytes())
    live = policy_in_force(store)
    assert live is not None and live.version == 1
    want = backtest_store(store, CANDIDATE, live, T0 - timedelta(hours=12), T0 + 2.5 * DAY)
    got.pop("seconds")
    w = want.to_dict()
    w.pop("seconds")
    assert got == w
    assert fraud_rules("backtest", str(cand), *conn) == 0, "default: last 7 days stored"
    assert "over 8 stored transactions" in capsys.readouterr().out


def test_cli_refuses_bad_arguments_naming_them(
    cli: tuple[Store, Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, cand, conn = cli
    bad = tmp_path / "bad.json"
    bad.write_bytes(encode_policy(CANDIDATE.with_rule(rule("oops", "cnt_1m >", ("True", "0.1")))))
    unstored = tmp_path / "unstored.json"
    unstored.write_bytes(
        encode_policy(CANDIDATE.with_rule(rule("fx", "not fx_known", ("True", "0.3"))))
    )
    cases = {
        "--to 2026-03-02 must be after --from": ["--from", "2026-03-03", "--to", "2026-03-02"],
        "--against 9: no stored policy": ["--against", "9"],
        "argument --from": ["--from", "yesterday"],
        "argument --against": ["--against", "-1"],
        "--from/--to: a --file is backtested whole": ["--file", str(cand), "--from", "2026-03-02"],
        "--file /nope: no such file": ["--file", "/nope"],
        "not allowed with argument": ["--file", str(cand), "--handbook"],
        "--data /nope: no fraud_handbook": ["--handbook", "--data", "/nope"],
    }
    for msg, extra in cases.items():
        assert fraud_rules("backtest", str(cand), *extra, *conn) == 2, extra
        cap = capsys.readouterr()
        assert msg in cap.out + cap.err, (msg, cap)
    assert fraud_rules("backtest", "/nope.json", *conn) == 2
    assert "CANDIDATE /nope.json: no such file" in capsys.readouterr().out
    assert fraud_rules("backtest", str(bad), *conn) == 2
    assert "rule 'oops' when" in capsys.readouterr().out
    assert fraud_rules("backtest", str(unstored), *conn) == 2
    assert "rule 'fx' feature fx_known" in capsys.readouterr().out


def test_cli_through_the_flow_from_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from generators.stream import event_stream
    from generators.synth import GeneratorConfig

    events = tmp_path / "ev.jsonl"
    events.write_bytes(
        b"\n".join(v for _, v in event_stream(GeneratorConfig(seed=1, users=50), 400))
    )
    cand = tmp_path / "cand.json"
    cand.write_bytes(
        encode_policy(replace(default_policy(load_settings()), version=7, review_threshold=0.3))
    )
    out = tmp_path / "r.json"
    assert (
        fraud_rules(
            "backtest", str(cand), "--against", "0", "--file", str(events), "--json", str(out)
        )
        == 0
    )
    assert "candidate v7 vs live v0 over 400 events through the flow" in capsys.readouterr().out
    d = orjson.loads(out.read_bytes())
    assert d["source"] == "flow" and d["rows"] == 400 and d["candidate"]["version"] == 7


def test_the_bench_leg_backtests_every_row_it_filled(chdb_url: str) -> None:
    from dataflows.bench.store import backtest_leg

    filled, took = backtest_leg(chdb_url, 3000, repeat=1)  # asserts 3000 rows backtested
    assert filled > 0 and took > 0
