"""``fraud rules`` on chDB and the real broker: a bad policy file is refused naming the
rule, field and column (exit 2, nothing stored); publish stores the next version,
announces it on the rules topic and prints the diff; list, show, export and rollback
read the same versions back."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from dataflows.cli import main
from dataflows.connectors.embedded import EmbeddedBroker
from schemas.rules import decode_policy
from tests.integration.conftest import consume_all

REVIEW_ALL = {
    "id": "review_all",
    "name": "Review all",
    "effect": "review",
    "when": "amount_usd >= 0",
    "cases": [{"contribution": "0.0", "detail": "every charge: ${amount_usd:.2f}"}],
}


@pytest.fixture
def sets(chdb_url: str, broker: EmbeddedBroker) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    out = []
    for kv in (
        f"clickhouse_url={chdb_url}",
        f"clickhouse_database=rc_{tag}",
        f"brokers={broker.bootstrap}",
        f"topic_rules=rules-{tag}",
    ):
        out += ["--set", kv]
    return out


def _export(tmp_path: Path, sets: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    out = tmp_path / "policy.json"
    assert main(["rules", "export", "--out", str(out), *sets]) == 0
    capsys.readouterr()
    return orjson.loads(out.read_bytes())


@pytest.mark.integration
def test_validate_refuses_naming_rule_field_and_column(
    tmp_path: Path, sets: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    d = _export(tmp_path, sets, capsys)
    assert d["version"] == 0 and len(d["rules"]) >= 8, "nothing stored: the built-in"
    d["rules"][0]["when"] = "km_prev >= travel_min_km and speeed > 3"
    d["rules"][1]["cases"][0]["contribution"] = "1.5"
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps(d))
    assert main(["rules", "validate", str(bad), *sets]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert "rule 'impossible_travel' when col 30: unknown feature" in err[0]
    assert "speeed" in err[0]
    assert "rule 'card_testing' cases[0].contribution col 1" in err[1]
    assert main(["rules", "publish", str(bad), "--author", "ana", "--note", "x", *sets]) == 2
    capsys.readouterr()
    assert main(["rules", "list", *sets]) == 0
    assert "no policy published" in capsys.readouterr().out, "a refused policy stores nothing"
    bad.write_text("{not json")
    assert main(["rules", "validate", str(bad), *sets]) == 2
    assert "json: not JSON" in capsys.readouterr().err
    assert main(["rules", "validate", str(tmp_path / "missing.json"), *sets]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


@pytest.mark.integration
def test_publish_announces_and_list_show_export_rollback_read_it_back(
    tmp_path: Path, sets: list[str], capsys: pytest.CaptureFixture[str], broker: EmbeddedBroker
) -> None:
    d = _export(tmp_path, sets, capsys)
    d["rules"].append(REVIEW_ALL)
    new = tmp_path / "new.json"
    new.write_bytes(orjson.dumps(d))
    assert main(["rules", "validate", str(new), *sets]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["rules", "publish", str(new), "--author", "ana", "--note", "   ", *sets]) == 2
    assert "note: a note saying why is required" in capsys.readouterr().err

    assert main(["rules", "publish", str(new), "--author", "ana", "--note", "all", *sets]) == 0
    out = capsys.readouterr().out
    assert "published version 1" in out
    assert "--- v0\n+++ v1" in out, "the first version's diff is against the built-in"
    assert '+      "id": "review_all",' in out
    assert '"id": "velocity"' not in out, "unchanged rules are not in the diff"
    topic = next(kv.split("=", 1)[1] for kv in sets if kv.startswith("topic_rules="))
    (msg,) = consume_all(broker.bootstrap, topic, 1)
    assert msg.key() == b"policy"
    announced = decode_policy(msg.value())
    assert (announced.version, announced.author, announced.note) == (1, "ana", "all")

    assert main(["rules", "list", *sets]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:3] == ["1*", rows[1].split()[1], "ana"]
    assert rows[1].split()[3:5] == ["publish", str(len(d["rules"]))]
    assert rows[1].endswith("all")

    assert main(["rules", "show", *sets]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("policy v1 (published ")
    assert "review_all  [live, review]  Review all\n  when amount_usd >= 0" in shown
    assert main(["rules", "show", "--version", "1", "--json", *sets]) == 0
    assert decode_policy(capsys.readouterr().out) == announced

    assert main(["rules", "rollback", "0", "--author", "bob", "--note", "too many", *sets]) == 0
    out = capsys.readouterr().out
    assert "published version 2" in out
    assert '-      "id": "review_all",' in out
    assert main(["rules", "export", "--version", "2", *sets]) == 0
    v2 = decode_policy(capsys.readouterr().out)
    assert v2.rule("review_all") is None and v2.note == "rollback to v0 (built-in): too many"
    assert [decode_policy(m.value()).version for m in consume_all(broker.bootstrap, topic, 1)] == [
        1,
        2,
    ]
    assert main(["rules", "rollback", "7", "--author", "bob", "--note", "x", *sets]) == 2
    assert "version: no stored policy version 7" in capsys.readouterr().err
    assert main(["rules", "show", "--version", "7", *sets]) == 2
