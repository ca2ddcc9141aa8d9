"""Duplicate input returns its first decision and touches no state (end-to-end idempotency).

A client that retries a payment, a producer that retries a send or a replay of the input
sends the same ``txn_id`` again.  Scoring it twice would count it twice in the user's
velocity windows and profile (a retry could then *cause* a velocity block) and answer
differently.  So:

* the score step keeps, per user, the ids of recent transactions with the compact form of
  their decision (:class:`~dataflows.detection.state.UserState` ``seen``: a dict lookup
  per event); a duplicate becomes a :class:`~schemas.scored.Replayed` carrying that
  decision, and neither the user's state nor the anomaly model sees it;
* with the feedback loop, merchant risk and the learner change the decision after the
  score step, so they pass a replay through untouched and :class:`FinalDecisions` (one
  more shard-keyed step at the end) remembers each transaction's *final* decision for the
  replays that follow it; a replay arriving before its first (a retry with a different
  merchant took another route) keeps the score step's decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from schemas.scored import Reason, Replayed, ScoredTransaction
from schemas.transaction import Label, Transaction

__all__ = [
    "FINAL_MEMORY",
    "MAX_SEEN",
    "Compact",
    "FinalDecisions",
    "card_of",
    "compact",
    "on_final",
    "replay_of",
]

MAX_SEEN = 64
"""Transaction ids remembered per user (within the state horizon: 24 h + lateness)."""
FINAL_MEMORY = 4096
"""Final decisions remembered per shard by :class:`FinalDecisions` (feedback flow only):
retries come within seconds, and an older replay falls back to the score step's record."""

Compact = tuple[float, str, float, tuple[Reason, ...], str, datetime, str]
"""(event time ms, decision, risk, reasons, model_version, processed_at, card_id) of a
first decision: references to objects the scored transaction holds anyway, ~100 B each.
The card lets an analyst's verdict on the transaction find its card
(:mod:`dataflows.detection.verdicts`); snapshots from before it hold 6-tuples."""


def compact(ts_ms: float, s: ScoredTransaction) -> Compact:
    return (
        ts_ms,
        s.decision,
        s.risk_score,
        s.reasons,
        s.model_version,
        s.processed_at,
        s.txn.card_id,
    )


def card_of(first: Compact) -> str | None:
    """The card of a remembered transaction (None in a record from an older snapshot)."""
    return first[6] if len(first) > 6 else None


def replay_of(
    txn: Transaction, label: Label | None, ingested_at: datetime | None, first: Compact
) -> Replayed:
    """The duplicate ``txn`` answered with its first decision (no features: not scored)."""
    decision, risk, reasons, version, processed_at = first[1:6]
    return Replayed(
        txn, label, {}, 0.0, 0.0, reasons, risk, decision, version, processed_at, False, ingested_at
    )


@dataclass(slots=True)
class FinalDecisions:
    """A shard's last :data:`FINAL_MEMORY` final decisions, oldest first (dict order)."""

    decisions: dict[str, Compact] = field(default_factory=dict)
    capacity: int = FINAL_MEMORY


def on_final(mem: FinalDecisions, items: Iterable[ScoredTransaction]) -> list[ScoredTransaction]:
    """Remember first decisions; answer replays with the remembered final decision."""
    out: list[ScoredTransaction] = []
    known = mem.decisions
    for x in items:
        t = x.txn
        if type(x) is Replayed:
            first = known.get(t.txn_id)
            out.append(x if first is None else replay_of(t, x.label, x.ingested_at, first))
            continue
        known[t.txn_id] = compact(0.0, x)
        if len(known) > mem.capacity:
            del known[next(iter(known))]
        out.append(x)
    return out
