"""Shared vocabularies: the codes every package (flow, store, dashboard, consumers) agrees on.

They live here, below everything else, so the dashboard can name rules and verdicts
without importing the detection code, and a new code is added in exactly one place.
"""

from __future__ import annotations

__all__ = [
    "ALERT_HEADERS",
    "API_ERROR_CODES",
    "DECISIONS",
    "DECISION_HEADERS",
    "DECISION_TIMEOUT",
    "DLQ_CODES",
    "RULE_CODES",
    "VERDICTS",
]

DECISIONS = ("approve", "review", "block")
"""Decisions in increasing severity."""

VERDICTS = ("confirmed_fraud", "false_positive", "escalated")
"""An analyst's verdict on an alert (Review v1)."""

RULE_CODES = (
    "impossible_travel",
    "card_testing",
    "velocity",
    "high_amount",
    "amount_zscore",
    "rare_amount",
    "new_country",
    "new_device",
    "unusual_hour",
    "compromised_card",
    "anomaly",
)
"""Reason codes of the label-free rules and the anomaly model, in display order.  The
feedback loop adds ``compromised_merchant`` and ``learned_pattern``."""

FEEDBACK_CODES = ("compromised_merchant", "learned_pattern")
"""Reason codes that need analyst verdicts or dataset labels."""

DLQ_CODES = (
    "invalid_json",
    "not_an_object",
    "null_value",
    "too_large",
    "unknown_schema_version",
    "missing_field",
    "null_field",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "invalid_timestamp",
    "naive_timestamp",
    "future_timestamp",
    "consumer_error",
    "internal_error",
)
"""Reason codes of the dead-letter topic (header ``error-code``)."""

ALERT_HEADERS = (
    ("content-type", b"application/json"),
    ("schema", b"alert"),
)
"""Kafka headers on every Alert message (``schema-version`` is added from the version)."""

DECISION_HEADERS = (
    ("content-type", b"application/json"),
    ("schema", b"decision"),
)
"""Kafka headers on every Decision message (``schema-version`` is added from the version)."""

API_ERROR_CODES = ("unauthorized", "unsupported_media_type", "too_large", "not_found")
"""Codes of the decision API's own refusals (401, 415, 413, 404); a refused body (422)
carries the dead-letter code of :data:`DLQ_CODES` the flow would have given it."""

DECISION_TIMEOUT = "decision_timeout"
"""Reason code of an API answer given by the fallback policy after the deadline."""
