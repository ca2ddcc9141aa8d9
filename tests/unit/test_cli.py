"""The fraud command: options validated with messages naming the field; files scored."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from clickhouse.store import Store
from dataflows.cli import main
from tests.conftest import txn_bytes


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["settings", "--set", "shards=0"], "shards (FRAUD_SHARDS)"),
        (["settings", "--set", "review_threshold=0.9"], "review_threshold"),
        (["settings", "--set", "nonsense=1"], "--set nonsense: unknown setting"),
        (["settings", "--set", "shards"], "FIELD=VALUE"),
        (["run", "--input", "/no/such/file.jsonl"], "--input /no/such/file.jsonl"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(argv, needle, capsys) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_bad_argument_is_refused_by_the_parser(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--count", "-3"])
    assert e.value.code == 2
    assert "--count must be >= 1" in capsys.readouterr().err


def test_env_settings_are_validated(monkeypatch, capsys) -> None:
    monkeypatch.setenv("FRAUD_HST_TREES", "many")
    assert main(["settings"]) == 2
    assert "hst_trees (FRAUD_HST_TREES) = 'many'" in capsys.readouterr().err


def test_run_scores_a_file_stores_it_and_reports_dead_letters(
    tmp_path: Path, capsys, chdb_url: str
) -> None:
    lines = [txn_bytes(i, txn_id=f"t{i}") for i in range(20)]
    lines.insert(5, b'{"broken')
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    db = f"cli_{uuid.uuid4().hex[:8]}"
    sets = [
        "--set",
        "hst_warmup=0",
        "--set",
        f"clickhouse_url={chdb_url}",
        "--set",
        f"clickhouse_database={db}",
        "--set",
        "clickhouse_ttl_days=3650",
    ]
    assert main(["run", "--input", str(path), *sets]) == 0
    out = capsys.readouterr()
    assert "20 transactions scored" in out.out
    assert "dead letters 1" in out.out
    assert "DEAD-LETTER invalid_json" in out.err
    assert f"database {db}: applied 0001_transactions.sql" in out.err
    store = Store(chdb_url, db)
    assert store.client.query(f"SELECT count() FROM {db}.transactions").result_rows == [(20,)]
    assert main(["migrate", *sets]) == 0
    assert f"database {db}: up to date" in capsys.readouterr().out
    store.client.command(f"DROP DATABASE {db}")


def test_bad_clickhouse_url_is_refused(capsys) -> None:
    assert main(["migrate", "--set", "clickhouse_url=mysql://x"]) == 2
    assert "clickhouse_url (FRAUD_CLICKHOUSE_URL) = 'mysql://x'" in capsys.readouterr().err


def test_generate_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for p in (a, b):
        assert (
            main(["generate", "--count", "500", "--seed", "3", "--to", "file", "--out", str(p)])
            == 0
        )
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes().splitlines()) == 500


def test_partitioned_source_keeps_each_user_in_one_partition() -> None:
    from dataflows.connectors.local import PartitionedSource

    events = [txn_bytes(i, txn_id=f"t{i}", user_id=f"u{i % 7}") for i in range(70)]
    src = PartitionedSource(events, parts=3)
    assert sum(len(p) for p in src.parts) == 70
    owners: dict[str, set[int]] = {}
    for k, part in enumerate(src.parts):
        for e in part:
            owners.setdefault(orjson.loads(e)["user_id"], set()).add(k)
    assert all(len(v) == 1 for v in owners.values())
    assert [orjson.loads(e)["txn_id"] for e in src.parts[0]] == sorted(
        (orjson.loads(e)["txn_id"] for e in src.parts[0]), key=lambda t: int(t[1:])
    )


def test_generate_patterns_choice(tmp_path, capsys) -> None:
    from dataflows.cli.common import pattern_set
    from generators.synth import CLASSIC_PATTERNS, PATTERNS

    assert pattern_set("classic") == CLASSIC_PATTERNS and pattern_set("all") == PATTERNS
    assert pattern_set("card_testing, cnp_no_location") == ("card_testing", "cnp_no_location")
    out = tmp_path / "g.jsonl"
    args = ["generate", "--to", "file", "--out", str(out), "--count", "30000", "--seed", "3"]
    assert main([*args, "--patterns", "card_testing_cashout"]) == 0
    patterns = {
        (orjson.loads(line).get("label") or {}).get("pattern")
        for line in out.read_bytes().splitlines()
    }
    assert "card_testing_cashout" in patterns and "velocity_burst" not in patterns
    assert main(["generate", "--count", "1", "--patterns", "nope"]) == 2
    assert "--patterns: unknown ['nope']" in capsys.readouterr().err
