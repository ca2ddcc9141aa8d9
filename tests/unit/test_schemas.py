"""Transaction decoding: round trips and every validation error, as a table."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import orjson
import pytest

from schemas.jsonschema import SCHEMA_DIR, all_schemas, render, write_schemas
from schemas.scored import (
    Alert,
    Reason,
    Review,
    ScoredTransaction,
    alert_id_for,
    decode_alert,
    decode_review,
    encode_alert,
    encode_review,
)
from schemas.transaction import DecodeError, Label, Transaction, decode_event, encode_transaction
from tests.conftest import txn_bytes, txn_dict


def test_decode_valid_roundtrip() -> None:
    res = decode_event(txn_bytes(3, device_id="d1", ip="10.0.0.1", channel="ecom"))
    assert isinstance(res, tuple)
    txn, label = res
    assert label is None
    assert txn.txn_id == "t3" and txn.device_id == "d1" and txn.channel == "ecom"
    assert txn.ts == datetime(2026, 3, 2, 12, 3, tzinfo=UTC)
    again = decode_event(encode_transaction(txn, Label(True, "card_testing")))
    assert again == (txn, Label(True, "card_testing"))


def test_offset_timestamps_are_normalised_to_utc() -> None:
    res = decode_event(txn_bytes(ts="2026-03-02T14:00:00+02:00"))
    assert isinstance(res, tuple)
    assert res[0].ts == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert res[0].ts.tzinfo is UTC


def test_unknown_fields_are_tolerated() -> None:
    assert isinstance(decode_event(txn_bytes(extra_field=1)), tuple)


BAD = [
    (None, "null_value", None),
    (b"x" * 20_000, "too_large", None),
    (b"{not json", "invalid_json", None),
    (b"[1, 2]", "not_an_object", None),
    (orjson.dumps(txn_dict(schema_version=3)), "unknown_schema_version", "schema_version"),
    (orjson.dumps(txn_dict(schema_version="1")), "unknown_schema_version", "schema_version"),
    (
        orjson.dumps({k: v for k, v in txn_dict().items() if k != "amount"}),
        "missing_field",
        "amount",
    ),
    (txn_bytes(amount=-5), "out_of_range", "amount"),
    (txn_bytes(amount=0), "out_of_range", "amount"),
    (txn_bytes(amount=2e9), "out_of_range", "amount"),
    (txn_bytes(amount="12.5"), "wrong_type", "amount"),
    (txn_bytes(amount=True), "wrong_type", "amount"),
    (b'{"amount": NaN}', "invalid_json", None),
    (txn_bytes(currency="XYZ"), "invalid_value", "currency"),
    (txn_bytes(currency="usd"), "invalid_value", "currency"),
    (txn_bytes(lat=91.0), "out_of_range", "lat"),
    (txn_bytes(lon=-180.5), "out_of_range", "lon"),
    (txn_bytes(ts="2026-03-02T12:00:00"), "naive_timestamp", "ts"),
    (txn_bytes(ts="yesterday"), "invalid_timestamp", "ts"),
    (txn_bytes(ts=1700000000), "wrong_type", "ts"),
    (txn_bytes(ts="2300-01-01T00:00:00Z"), "out_of_range", "ts"),
    (txn_bytes(ts="9999-12-31T23:00:00-05:00"), "out_of_range", "ts"),
    (txn_bytes(ts="1899-12-31T23:59:59.999Z"), "out_of_range", "ts"),
    (txn_bytes(user_id=""), "out_of_range", "user_id"),
    (txn_bytes(user_id="u" * 65), "out_of_range", "user_id"),
    (txn_bytes(user_id=None), "null_field", "user_id"),
    (txn_bytes(txn_id=17), "wrong_type", "txn_id"),
    (txn_bytes(country="usa"), "invalid_value", "country"),
    (txn_bytes(channel="phone"), "invalid_value", "channel"),
    (txn_bytes(ip="not an ip!"), "invalid_value", "ip"),
    (txn_bytes(label={"is_fraud": "yes"}), "invalid_value", "label"),
]


@pytest.mark.parametrize(("raw", "code", "field"), BAD)
def test_decode_refuses_with_reason(raw: bytes | None, code: str, field: str | None) -> None:
    res = decode_event(raw)
    assert isinstance(res, DecodeError), res
    assert (res.code, res.field) == (code, field)
    assert res.message
    if field:
        assert field in res.message


def _scored(decision: str = "block") -> ScoredTransaction:
    res = decode_event(txn_bytes(7))
    assert isinstance(res, tuple)
    return ScoredTransaction(
        res[0],
        None,
        {"amount_usd": 42.5},
        0.7,
        0.99,
        (Reason("impossible_travel", "5000 km in 10 min", 0.9),),
        0.93,
        decision,
        "v",
        datetime(2026, 3, 2, 13, 0, tzinfo=UTC),
    )


def test_alert_roundtrip_and_stable_id() -> None:
    alert = Alert.from_scored(_scored())
    assert alert.alert_id == alert_id_for("t7") == Alert.from_scored(_scored()).alert_id
    assert alert_id_for("t7") != alert_id_for("t8")
    raw = encode_alert(alert)
    assert decode_alert(raw) == alert
    assert orjson.loads(raw)["reasons"] == [
        {"code": "impossible_travel", "detail": "5000 km in 10 min", "contribution": 0.9}
    ]


def test_alert_json_matches_published_schema_fields() -> None:
    doc = json.loads((SCHEMA_DIR / "alert-v3.json").read_text())
    payload = orjson.loads(encode_alert(Alert.from_scored(_scored())))
    assert set(payload) == set(doc["properties"])
    assert set(doc["required"]) <= set(payload)


def test_decision_roundtrip_matches_its_published_schema() -> None:
    from schemas.scored import DECISION_SPECS, Decision, decode_decision, encode_decision

    d = Decision.from_scored(_scored())
    assert (d.txn_id, d.rules_version, d.schema_version) == ("t7", "v", 1)
    raw = encode_decision(d)
    assert decode_decision(raw) == d
    doc = json.loads((SCHEMA_DIR / "decision-v1.json").read_text())
    assert set(orjson.loads(raw)) == set(doc["properties"]) == {s.name for s in DECISION_SPECS}
    with pytest.raises(ValueError, match="schema_version"):
        decode_decision(raw.replace(b'"schema_version":1', b'"schema_version":2'))


def test_review_roundtrip_and_validation() -> None:
    r = Review(
        "a1",
        "t1",
        "alice",
        "confirmed_fraud",
        "ann",
        "called the customer",
        datetime(2026, 3, 2, tzinfo=UTC),
    )
    assert decode_review(encode_review(r)) == r
    with pytest.raises(ValueError, match="verdict"):
        Review("a1", "t1", "alice", "maybe", "ann", None, datetime(2026, 3, 2, tzinfo=UTC))


def test_review_v2_carries_the_card_and_v1_still_decodes() -> None:
    at = datetime(2026, 3, 2, tzinfo=UTC)
    r = Review("a1", "t1", "alice", "false_positive", "ann", None, at, card_id="c9")
    raw = encode_review(r)
    assert orjson.loads(raw)["schema_version"] == 2 and decode_review(raw) == r
    doc = json.loads((SCHEMA_DIR / "review-v2.json").read_text())
    assert set(orjson.loads(raw)) == set(doc["properties"])
    assert "card_id" not in doc["required"]
    v1 = orjson.loads(raw)
    del v1["card_id"]
    v1["schema_version"] = 1
    old = decode_review(orjson.dumps(v1))
    assert (old.card_id, old.schema_version, old.txn_id) == (None, 1, "t1")
    with pytest.raises(ValueError, match="card_id"):
        Review("a1", "t1", "alice", "false_positive", "ann", None, at, card_id="")


def test_json_schema_files_match_models() -> None:
    assert write_schemas(check=True) == [], "run `fraud schemas` and commit schemas/json"


# The published v1 contracts. Changing a model changes its schema: bump the version
# (a new file, e.g. alert-v2.json) instead of editing these hashes.
CONTRACT_SHA256 = {
    "alert-v1.json": "33d4444d90f6cedb245f46719d46f5a239f73904ff64e4395ccb5561d336de03",
    "alert-v2.json": "b328cedaf73489a5c12883ac07ac6b07b61ccc7399977d0b966103aafe7b3ec9",
    "alert-v3.json": "64b4077b279f94d9bdb2edb2d47a9d1f7ca9d27231cfbab9453be9b6b452d51f",
    "transaction-v1.json": "7c4a39f62eb940056bb815854b568e86b0c136961055f69d39e28c0dd8c887a8",
    "transaction-v2.json": "3030d3e08be23197780566a4cc179e812d95b2ebcbd05e91ba51c1125f89a5b8",
    "review-v1.json": "e6c78df4aec12e6669838bd7706f1025d29ee6b05fa64853034c7905ff166ad5",
    "review-v2.json": "ebd21c2cf4409d38f30b650db68b56b62d780f4d4ba9cb6162769411a5b1a6e1",
    "decision-v1.json": "da9f28851918bfbd9bb6669a9d78c49780f8de30150afbac750477764ca378ab",
}


@pytest.mark.parametrize("name", sorted(CONTRACT_SHA256))
def test_published_contract_unchanged_without_version_bump(name: str) -> None:
    text = render(all_schemas()[name])
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert digest == CONTRACT_SHA256[name], (
        f"{name} changed: a public contract changes only with a schema_version bump"
    )


def test_transaction_is_immutable() -> None:
    res = decode_event(txn_bytes())
    assert isinstance(res, tuple)
    txn: Transaction = res[0]
    with pytest.raises(AttributeError):
        txn.amount = 1.0  # type: ignore[misc]


def test_records_and_datetimes_pickle_compactly_and_round_trip_exactly() -> None:
    """What bytewax sends between processes comes back equal, same types and zones."""
    import pickle
    import pickletools
    from datetime import UTC, datetime, timedelta, timezone

    from schemas.scored import Reason

    res = decode_event(txn_bytes(3, device_id="d1", ip="10.0.0.1", label={"is_fraud": True}))
    assert not isinstance(res, DecodeError)
    txn, label = res
    reason = Reason("velocity", "6 transactions in 1 min", 0.6)
    for obj in (txn, label, reason):
        back = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        assert back == obj and type(back) is type(obj)
        ops = {op.name for op, _, _ in pickletools.genops(pickle.dumps(obj))}
        assert "REDUCE" in ops and "BUILD" not in ops  # a constructor call, no slot state
    for d in (
        datetime(2026, 1, 5, 1, 2, 3, 456789, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 1, 1),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))),
    ):
        back = pickle.loads(pickle.dumps(d))
        assert back == d and back.tzinfo == d.tzinfo and type(back) is datetime
