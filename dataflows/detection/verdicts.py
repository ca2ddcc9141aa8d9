"""Analysts' verdicts on the compromised-card state: the feedback loop's per-user leg.

A confirmed-fraud verdict on an alert marks its card compromised (the
``compromised_card`` rule then blocks the card's card-not-present charges and reviews
the rest for ``compromised_card_hours``), even if the rules never blocked it; a
false-positive verdict clears the card, so its genuine holder is no longer blocked or
reviewed because of blocks the analyst judged wrong.

Verdicts (Review v1/v2 from ``fraud-feedback``) are parsed once with the other feedback
(:func:`parse_feedback`) and routed to the score step under the same state key as their
user's transactions (see :func:`dataflows.flow.build_flow`), where
:func:`apply_verdict` folds them into the user's state.  They produce no output row.

The card is the Review's ``card_id`` (v2, filled by the case page), else the card the
user's state remembers for the reviewed ``txn_id`` (its recent transactions, see
:mod:`dataflows.detection.idempotency`).  A verdict whose card cannot be resolved is
ignored and counted (:data:`OUTCOMES`): never a dead letter, never a crash.  One with
its card for a user the state does not know yet (the topics replayed from the start,
verdicts read before the user's transactions) starts the user's state, which is then
not evicted as idle before the verdict's time.

Exact under replays and restarts: a verdict's effect depends on the verdict alone (the
card and ``reviewed_at``, never on when it is applied), and commutes with the rules'
blocks of that card (a false positive records up to when it cleared the card, so a
block replayed after it does not mark the card again).  One user's verdicts come in
the order they were given (the feedback topic is keyed by user).  A v1 verdict (no
``card_id``) replayed before its transaction is resolved only if the transaction is
already in the state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from dataflows.detection.idempotency import card_of
from dataflows.detection.merchants import MerchantLabel, feedback_letter, parse_label
from dataflows.detection.state import UserState
from schemas.fields import compact_pickle
from schemas.scored import DeadLetter, Review, decode_review
from schemas.transaction import DecodeError

__all__ = [
    "CARD_VERDICTS",
    "OUTCOMES",
    "CardVerdict",
    "apply_verdict",
    "parse_feedback",
]

CARD_VERDICTS = ("confirmed_fraud", "false_positive")
"""The verdicts that change a card's state (``escalated`` does not)."""
OUTCOMES = ("marked", "cleared", "unknown_user", "unknown_card")
"""What :func:`apply_verdict` did: the label of ``fraud_card_verdicts`` (the flow adds
``failed`` for a verdict whose application raised)."""


@compact_pickle
@dataclass(frozen=True, slots=True)
class CardVerdict:
    """An analyst's verdict on one transaction's card, as the score step needs it."""

    user_id: str
    txn_id: str
    card_id: str | None
    verdict: str
    reviewed_ms: float


def verdict_of(r: Review) -> CardVerdict | None:
    """The card verdict of a Review (None for one that changes no card)."""
    if r.verdict not in CARD_VERDICTS:
        return None
    return CardVerdict(r.user_id, r.txn_id, r.card_id, r.verdict, r.reviewed_at.timestamp() * 1e3)


def parse_feedback(
    raw: Any, now: Callable[[], datetime]
) -> list[MerchantLabel | CardVerdict | DeadLetter]:
    """Everything one feedback message means, decoded once: a label event gives its
    :class:`MerchantLabel` (see :func:`~dataflows.detection.merchants.parse_label`); a
    Review gives the same label the learner gets today (confirmed fraud only) and a
    :class:`CardVerdict` (confirmed fraud, false positive); malformed input a dead letter."""
    value = getattr(raw, "value", raw) if not hasattr(raw, "err") else None
    review = None
    if value is not None:
        try:
            d = orjson.loads(value)
        except (orjson.JSONDecodeError, TypeError):
            d = None
        if isinstance(d, dict) and "verdict" in d:
            try:
                review = decode_review(value)
            except (KeyError, TypeError, ValueError) as e:
                err = DecodeError("invalid_label", f"label event refused: {e}")
                return [feedback_letter(err, raw, value, now)]
    if review is None:
        label = parse_label(raw, now)
        return [] if label is None else [label]
    out: list[MerchantLabel | CardVerdict | DeadLetter] = []
    if review.verdict == "confirmed_fraud":  # what parse_label gives the learner
        out.append(MerchantLabel("", review.reviewed_at.timestamp() * 1000.0, review.txn_id))
    v = verdict_of(review)
    if v is not None:
        out.append(v)
    return out


def apply_verdict(users: dict[str, UserState], v: CardVerdict, hold_ms: float) -> str:
    """Fold ``v`` into its user's state; returns the outcome (one of :data:`OUTCOMES`).
    A verdict carrying its card for a user without state starts the user's state.

    Confirmed fraud marks the card at risk from ``reviewed_at`` for ``hold_ms``; a false
    positive clears the card's blocks up to ``reviewed_at``."""
    user = users.get(v.user_id)
    if user is None:
        if v.card_id is None:
            return "unknown_user"
        # The verdict came before the user's transactions (a replay from the start of
        # the topics): the state starts with it, as empty as a new user's otherwise.
        user = users[v.user_id] = UserState()
    card = v.card_id
    if card is None:
        first = user.seen.get(v.txn_id)
        card = card_of(first) if first is not None else None
        if card is None:
            return "unknown_card"
    if v.verdict == "confirmed_fraud":
        user.confirm(card, v.reviewed_ms, hold_ms)
        return "marked"
    user.clear(card, v.reviewed_ms)
    return "cleared"
