"""Outputs of scoring: ScoredTransaction (every event), Alert v1 (public), Review, DeadLetter.

Alert v1 is the contract for downstream services on topic ``fraud-alerts``; its JSON
Schema is generated from :data:`ALERT_SPECS` into ``schemas/json/alert-v2.json`` and a
test fails if the model changes without a version bump.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from schemas.fields import MAX_ID_LEN, FieldSpec, compact_pickle, location_required_v1
from schemas.transaction import (
    CHANNELS,
    DecodeError,
    Label,
    Transaction,
)
from schemas.units import format_ts
from schemas.vocab import DECISIONS, VERDICTS

__all__ = [
    "ALERT_SPECS",
    "ALERT_V1_SPECS",
    "ALERT_V2_SPECS",
    "ALERT_VERSION",
    "DEAD_LETTER_SPECS",
    "DECISIONS",
    "DECISION_SPECS",
    "DECISION_VERSION",
    "REVIEW_SPECS",
    "REVIEW_V1_SPECS",
    "REVIEW_VERSION",
    "SCORED_SPECS",
    "VERDICTS",
    "Alert",
    "DeadLetter",
    "Decision",
    "Reason",
    "Replayed",
    "Review",
    "ScoredTransaction",
    "alert_id_for",
    "decode_alert",
    "decode_decision",
    "decode_review",
    "encode_alert",
    "encode_decision",
    "encode_review",
    "label_json",
    "payload_sha256",
    "rules_version_of",
]

ALERT_VERSION = 3
"""Alert v3: v2 plus ``policy_version``, the rule policy that raised it.  v2 (``lat``/
``lon`` may be null) and v1 stay published in ``schemas/json``; this code reads all
three."""
REVIEW_VERSION = 2
"""Review v2: v1 plus the optional ``card_id`` of the reviewed transaction, so a verdict
marks (or clears) that card in the flow's state.  v1 stays published; this code reads both."""
_ALERT_NS = uuid.UUID("6f1c1b8e-5d4a-4c1e-9a51-2f3b9f0e7a11")
"""Namespace of alert ids: uuid5(namespace, txn_id) is stable across replays."""


@compact_pickle
@dataclass(frozen=True, slots=True)
class Reason:
    """One explainable rule hit. ``contribution`` in [0, 1] is its share of the risk."""

    code: str
    detail: str
    contribution: float


REASONS_CH_TYPE = "Array(Tuple(code String, detail String, contribution Float64))"

SCORED_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("amount_usd", "float", "Float64", "Amount converted to USD (reference rates)."),
    FieldSpec("features", "features", "Map(String, Float64)", "Feature values used to score."),
    FieldSpec("anomaly_raw", "float", "Float64", "Raw Half-Space Trees score (higher = rarer)."),
    FieldSpec("anomaly_score", "float", "Float64", "Raw score's rolling percentile in [0, 1]."),
    FieldSpec("reasons", "reasons", REASONS_CH_TYPE, "Rule hits, largest contribution first."),
    FieldSpec("risk_score", "float", "Float64", "Combined risk in [0, 1]."),
    FieldSpec(
        "decision",
        "enum",
        "LowCardinality(String)",
        "Decision.",
        choices=DECISIONS,
    ),
    FieldSpec("model_version", "str", "LowCardinality(String)", "Rules and model configuration."),
    FieldSpec("processed_at", "ts", "DateTime64(3, 'UTC')", "When the flow scored it."),
    FieldSpec("late", "bool", "Bool", "Arrived after the lateness bound: scored, not learned."),
    FieldSpec(
        "ingested_at",
        "ts",
        "Nullable(DateTime64(3, 'UTC'))",
        "Kafka timestamp or source read time; processed_at - ingested_at is scoring latency.",
        required=False,
    ),
    FieldSpec(
        "policy_version", "int", "UInt32", "Rule policy version that scored it (0: built-in)."
    ),
    FieldSpec(
        "shadow_reasons", "reasons", REASONS_CH_TYPE, "Hits of shadow rules (decide nothing)."
    ),
    FieldSpec("rule_errors", "strings", "Array(String)", "Ids of rules that failed on this event."),
)
"""Columns a scored transaction adds to Transaction v1 and its label (table ``transactions``)."""


@compact_pickle
@dataclass(slots=True)
class ScoredTransaction:
    """A transaction with its features, scores and decision (one per input event).

    A value (derive changes with ``dataclasses.replace``); not ``frozen`` only because
    frozen construction is slower on this per-event path."""

    txn: Transaction
    label: Label | None
    features: dict[str, float]
    anomaly_raw: float
    anomaly_score: float
    reasons: tuple[Reason, ...]
    risk_score: float
    decision: str
    model_version: str
    processed_at: datetime
    late: bool = False
    ingested_at: datetime | None = None
    """When the event entered the system: its Kafka timestamp, or when the source read it."""
    policy_version: int = field(default=0, repr=False)
    """The rule policy that scored it (0: the built-in one).  Like the two fields below,
    left out of the repr, which the frozen-score digest hashes: the policy version is
    bookkeeping, not a score."""
    shadow: tuple[Reason, ...] = field(default=(), repr=False)
    """Hits of the policy's shadow rules: what they would have done, deciding nothing."""
    rule_errors: tuple[str, ...] = field(default=(), repr=False)
    """Ids of rules that failed on this event (skipped for it)."""

    @property
    def flagged(self) -> bool:
        return self.decision != "approve"


@compact_pickle
@dataclass(slots=True)
class Replayed(ScoredTransaction):
    """A duplicate input (a txn_id already scored for its user): it carries the first
    decision, risk and reasons and touched no state.  It reaches the decisions topic
    (a retried request gets its answer) but not the rows or alerts, which already hold the
    first; its features and anomaly scores are empty."""


def alert_id_for(txn_id: str) -> str:
    """Deterministic alert id: the same transaction always yields the same alert id."""
    return str(uuid.uuid5(_ALERT_NS, txn_id))


ALERT_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("alert_id", "id", "String", "uuid5 of txn_id: stable across replays; dedupe on it."),
    FieldSpec("txn_id", "id", "String", "The flagged transaction."),
    FieldSpec("user_id", "id", "String", "Account holder (also the Kafka message key)."),
    FieldSpec("card_id", "id", "String", "Card used."),
    FieldSpec("merchant_id", "id", "String", "Merchant or terminal."),
    FieldSpec("ts", "ts", "DateTime64(3, 'UTC')", "Event time of the transaction."),
    FieldSpec("amount", "float", "Float64", "Amount in `currency`."),
    FieldSpec("currency", "currency", "LowCardinality(String)", "ISO 4217 code."),
    FieldSpec("country", "country", "LowCardinality(String)", "ISO 3166-1 alpha-2 code."),
    FieldSpec("channel", "enum", "LowCardinality(String)", "Channel.", choices=CHANNELS),
    FieldSpec(
        "lat",
        "lat",
        "Nullable(Float64)",
        "Latitude; null if unknown.",
        False,
        minimum=-90,
        maximum=90,
    ),
    FieldSpec(
        "lon",
        "lon",
        "Nullable(Float64)",
        "Longitude; null if unknown.",
        False,
        minimum=-180,
        maximum=180,
    ),
    FieldSpec("risk_score", "float", "Float64", "Combined risk in [0, 1].", minimum=0, maximum=1),
    FieldSpec(
        "decision",
        "enum",
        "LowCardinality(String)",
        "review or block (approved transactions raise no alert).",
        choices=("review", "block"),
    ),
    FieldSpec(
        "reasons",
        "reasons",
        REASONS_CH_TYPE,
        "Rule hits and the anomaly model, largest contribution first.",
    ),
    FieldSpec(
        "anomaly_score",
        "float",
        "Float64",
        "Half-Space Trees score calibrated to its rolling percentile in [0, 1].",
        minimum=0,
        maximum=1,
    ),
    FieldSpec("features", "features", "Map(String, Float64)", "Feature values used to score."),
    FieldSpec("model_version", "str", "LowCardinality(String)", "Rules and model configuration."),
    FieldSpec("created_at", "ts", "DateTime64(3, 'UTC')", "When the alert was raised."),
    FieldSpec(
        "policy_version",
        "int",
        "UInt32",
        "Version of the rule policy that raised it (0: the built-in policy).",
        minimum=0,
    ),
    FieldSpec(
        "schema_version", "int", "UInt8", "Contract version.", extra_json={"const": ALERT_VERSION}
    ),
)

ALERT_V2_SPECS = tuple(
    replace(f, extra_json={"const": 2}) if f.name == "schema_version" else f
    for f in ALERT_SPECS
    if f.name != "policy_version"
)
"""Alert v2 as published (no ``policy_version``): its schema file stays for consumers."""

ALERT_V1_SPECS = location_required_v1(ALERT_V2_SPECS, "Contract version.")
"""Alert v1 as published (location required): its schema file stays for consumers."""


@dataclass(frozen=True, slots=True)
class Alert:
    """Alert v1 (see :data:`ALERT_SPECS` for field meanings)."""

    alert_id: str
    txn_id: str
    user_id: str
    card_id: str
    merchant_id: str
    ts: datetime
    amount: float
    currency: str
    country: str
    channel: str
    lat: float | None
    lon: float | None
    risk_score: float
    decision: str
    reasons: tuple[Reason, ...]
    anomaly_score: float
    features: dict[str, float]
    model_version: str
    created_at: datetime
    policy_version: int = 0
    schema_version: int = ALERT_VERSION

    @classmethod
    def from_scored(cls, s: ScoredTransaction) -> Alert:
        t = s.txn
        return cls(
            alert_id_for(t.txn_id),
            t.txn_id,
            t.user_id,
            t.card_id,
            t.merchant_id,
            t.ts,
            t.amount,
            t.currency,
            t.country,
            t.channel,
            t.lat,
            t.lon,
            s.risk_score,
            s.decision,
            s.reasons,
            s.anomaly_score,
            s.features,
            s.model_version,
            s.processed_at,
            s.policy_version,
        )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "txn_id": self.txn_id,
            "user_id": self.user_id,
            "card_id": self.card_id,
            "merchant_id": self.merchant_id,
            "ts": format_ts(self.ts),
            "amount": self.amount,
            "currency": self.currency,
            "country": self.country,
            "channel": self.channel,
            "lat": self.lat,
            "lon": self.lon,
            "risk_score": self.risk_score,
            "decision": self.decision,
            "reasons": [
                {"code": r.code, "detail": r.detail, "contribution": r.contribution}
                for r in self.reasons
            ],
            "anomaly_score": self.anomaly_score,
            "features": self.features,
            "model_version": self.model_version,
            "created_at": format_ts(self.created_at),
            "policy_version": self.policy_version,
            "schema_version": self.schema_version,
        }


def encode_alert(alert: Alert) -> bytes:
    return orjson.dumps(alert.to_json_dict())


def decode_alert(raw: bytes) -> Alert:
    """Parse Alert v1–v3 JSON (for consumers and tests); raises ValueError on a bad message."""
    d = orjson.loads(raw)
    if d.get("schema_version") not in (1, 2, ALERT_VERSION):
        raise ValueError(f"unsupported alert schema_version {d.get('schema_version')!r}")
    reasons = tuple(Reason(r["code"], r["detail"], float(r["contribution"])) for r in d["reasons"])
    return Alert(
        **{
            **d,
            "ts": datetime.fromisoformat(d["ts"]),
            "created_at": datetime.fromisoformat(d["created_at"]),
            "reasons": reasons,
        }
    )


DECISION_VERSION = 1

DECISION_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("txn_id", "id", "String", "The scored transaction (correlate requests on it)."),
    FieldSpec("user_id", "id", "String", "Account holder (also the Kafka message key)."),
    FieldSpec("decision", "enum", "LowCardinality(String)", "Decision.", choices=DECISIONS),
    FieldSpec("risk_score", "float", "Float64", "Combined risk in [0, 1].", minimum=0, maximum=1),
    FieldSpec(
        "reasons",
        "reasons",
        REASONS_CH_TYPE,
        "Rule hits and the anomaly model, largest contribution first.",
    ),
    FieldSpec(
        "model_version",
        "str",
        "LowCardinality(String)",
        "Rules, anomaly model and feedback-loop configuration that decided.",
        max_len=256,
    ),
    FieldSpec("rules_version", "str", "LowCardinality(String)", "Version of the rule set."),
    FieldSpec("processed_at", "ts", "DateTime64(3, 'UTC')", "When the flow decided."),
    FieldSpec(
        "schema_version",
        "int",
        "UInt8",
        "Contract version.",
        extra_json={"const": DECISION_VERSION},
    ),
)
"""Decision v1: one per scored transaction on topic ``fraud-decisions`` and the body of
the decision API's answers (which add ``timed_out`` and ``latency_ms``)."""


def rules_version_of(model_version: str) -> str:
    """The rule-set part of a model version (its first ``+``-separated component).

    >>> rules_version_of("rules-v1+hst-t25h6w250s42+merchant-v1")
    'rules-v1'
    """
    return model_version.split("+", 1)[0]


@dataclass(frozen=True, slots=True)
class Decision:
    """Decision v1 (see :data:`DECISION_SPECS`): what a payment path needs to act on."""

    txn_id: str
    user_id: str
    decision: str
    risk_score: float
    reasons: tuple[Reason, ...]
    model_version: str
    rules_version: str
    processed_at: datetime
    schema_version: int = DECISION_VERSION

    @classmethod
    def from_scored(cls, s: ScoredTransaction) -> Decision:
        return cls(
            s.txn.txn_id,
            s.txn.user_id,
            s.decision,
            s.risk_score,
            s.reasons,
            s.model_version,
            rules_version_of(s.model_version),
            s.processed_at,
        )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "txn_id": self.txn_id,
            "user_id": self.user_id,
            "decision": self.decision,
            "risk_score": self.risk_score,
            "reasons": [
                {"code": r.code, "detail": r.detail, "contribution": r.contribution}
                for r in self.reasons
            ],
            "model_version": self.model_version,
            "rules_version": self.rules_version,
            "processed_at": format_ts(self.processed_at),
            "schema_version": self.schema_version,
        }


def encode_decision(d: Decision) -> bytes:
    return orjson.dumps(d.to_json_dict())


def decode_decision(raw: bytes | str) -> Decision:
    """Parse Decision v1 JSON; raises ValueError (or KeyError) on a bad message.
    Unknown extra properties are ignored (tolerant reader)."""
    d = orjson.loads(raw)
    if d.get("schema_version") != DECISION_VERSION:
        raise ValueError(f"unsupported decision schema_version {d.get('schema_version')!r}")
    reasons = tuple(Reason(r["code"], r["detail"], float(r["contribution"])) for r in d["reasons"])
    return Decision(
        d["txn_id"],
        d["user_id"],
        d["decision"],
        float(d["risk_score"]),
        reasons,
        d["model_version"],
        d["rules_version"],
        datetime.fromisoformat(d["processed_at"]),
    )


REVIEW_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("alert_id", "id", "String", "The reviewed alert."),
    FieldSpec("txn_id", "id", "String", "Its transaction."),
    FieldSpec("user_id", "id", "String", "Account holder (the Kafka key)."),
    FieldSpec(
        "card_id",
        "id",
        "Nullable(String)",
        "The transaction's card; v2, optional (the flow then looks it up by txn_id).",
        required=False,
    ),
    FieldSpec("verdict", "enum", "LowCardinality(String)", "Analyst verdict.", choices=VERDICTS),
    FieldSpec("assignee", "str", "LowCardinality(String)", "Analyst who owns the alert."),
    FieldSpec("note", "str", "Nullable(String)", "Free text.", required=False, max_len=2000),
    FieldSpec("reviewed_at", "ts", "DateTime64(3, 'UTC')", "When the verdict was given."),
    FieldSpec(
        "schema_version", "int", "UInt8", "Contract version.", extra_json={"const": REVIEW_VERSION}
    ),
)
REVIEW_V1_SPECS = tuple(
    replace(s, extra_json={"const": 1}) if s.name == "schema_version" else s
    for s in REVIEW_SPECS
    if s.name != "card_id"
)
"""Review v1 (no ``card_id``): the published ``review-v1.json``."""


@dataclass(frozen=True, slots=True)
class Review:
    """An analyst verdict on an alert (topic ``fraud-feedback``, table ``alert_reviews``)."""

    alert_id: str
    txn_id: str
    user_id: str
    verdict: str
    assignee: str
    note: str | None
    reviewed_at: datetime
    schema_version: int = REVIEW_VERSION
    card_id: str | None = None
    """Last, with a default: v1 code building a Review positionally keeps working."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r} not one of {VERDICTS}")
        if self.card_id is not None and (
            not isinstance(self.card_id, str) or not 0 < len(self.card_id) <= MAX_ID_LEN
        ):
            raise ValueError(f"card_id={self.card_id!r} must be 1-{MAX_ID_LEN} characters or null")
        if not self.assignee or len(self.assignee) > 64:
            raise ValueError("assignee must be 1-64 characters")
        if self.reviewed_at.tzinfo is None:
            raise ValueError("reviewed_at must be timezone-aware")


def encode_review(r: Review) -> bytes:
    return orjson.dumps(
        {
            "alert_id": r.alert_id,
            "txn_id": r.txn_id,
            "user_id": r.user_id,
            **({"card_id": r.card_id} if r.card_id is not None else {}),
            "verdict": r.verdict,
            "assignee": r.assignee,
            "note": r.note,
            "reviewed_at": format_ts(r.reviewed_at),
            "schema_version": r.schema_version,
        }
    )


def decode_review(raw: bytes) -> Review:
    """Parse Review v1 or v2 JSON; raises ValueError (or KeyError, TypeError)."""
    d = orjson.loads(raw)
    if d.get("schema_version") not in (1, REVIEW_VERSION):
        raise ValueError(f"unsupported review schema_version {d.get('schema_version')!r}")
    return Review(**{**d, "reviewed_at": datetime.fromisoformat(d["reviewed_at"])})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused message: original key/value bytes untouched, the reason and its origin."""

    key: bytes | None
    value: bytes | None
    error_code: str
    error_message: str
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: datetime

    @classmethod
    def of(
        cls,
        err: DecodeError,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        now: datetime,
    ) -> DeadLetter:
        return cls(key, value, err.code, err.message, topic, partition, offset, now)


DEAD_LETTER_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("payload_sha256", "str", "String", "SHA-256 of the original value (hex)."),
    FieldSpec("source_topic", "str", "LowCardinality(String)", "Topic it was read from."),
    FieldSpec("source_partition", "int", "Int32", "Partition (-1 if not from Kafka)."),
    FieldSpec("source_offset", "int", "Int64", "Offset (-1 if not from Kafka)."),
    FieldSpec("error_code", "str", "LowCardinality(String)", "Reason code (schemas.vocab)."),
    FieldSpec("error_message", "str", "String", "What was wrong, for a person."),
    FieldSpec("key", "str", "Nullable(String)", "Original key bytes.", False),
    FieldSpec("value", "str", "Nullable(String)", "Original value bytes, whole.", False),
    FieldSpec("value_size", "int", "UInt64", "Length of the original value in bytes."),
    FieldSpec("failed_at", "ts", "DateTime64(3, 'UTC')", "When it was refused."),
)
"""The ``dead_letters`` table: every refused message with its whole payload, so one too
large for a Kafka record is kept intact (the DLQ record then points here)."""


def payload_sha256(value: bytes | None) -> str:
    """Hex SHA-256 of a dead letter's value: the pointer from a truncated DLQ record.

    >>> payload_sha256(b"abc")[:16]
    'ba7816bf8f01cfea'
    """
    import hashlib

    return hashlib.sha256(value or b"").hexdigest()


def label_json(merchant_id: str, txn_ts: datetime, txn_id: str) -> bytes:
    """A confirmed-fraud label event (the dataset adapters' form of the ``labels`` input).

    >>> from datetime import UTC
    >>> label_json("t7", datetime(2018, 4, 1, 12, 0, tzinfo=UTC), "42")
    b'{"merchant_id":"t7","txn_ts":"2018-04-01T12:00:00.000Z","txn_id":"42"}'
    """
    return orjson.dumps({"merchant_id": merchant_id, "txn_ts": format_ts(txn_ts), "txn_id": txn_id})
