"""Explainable rules: each is a pure function of the features returning a Reason or None.

A rule's ``contribution`` is its own probability-like strength in [0, 1]; the risk score
combines all contributions as a noisy-OR (see :mod:`dataflows.detection.scoring`).  Strengths are
named constants so a reviewer can see why one hit blocks and another only reviews:
impossible travel and card testing are near-certain compromise on their own; the
account-takeover signals (new country, new device, unusual hour, amount spike) are weak
alone and add up when they co-occur.  A card the rules blocked stays compromised for a
while (see :func:`~dataflows.detection.state.settle`): its card-not-present charges are
blocked, anything else on it is reviewed, except at one of the user's established
places, where it is most likely the holder and only adds to other evidence.
"""

from __future__ import annotations

from collections.abc import Callable

from dataflows.detection.state import Features
from schemas.scored import Reason
from schemas.settings import Settings
from schemas.vocab import RULE_CODES

__all__ = ["RULES", "RULE_CODES", "blocks_alone", "evaluate_rules"]

IMPOSSIBLE_TRAVEL = 0.9
CARD_TESTING = 0.85
VELOCITY_1M = 0.6
VELOCITY_10M = 0.55
VELOCITY_1H = 0.45
HIGH_AMOUNT_BASE, HIGH_AMOUNT_MAX = 0.3, 0.5
ZSCORE_BASE, ZSCORE_SLOPE, ZSCORE_MAX = 0.35, 0.15, 0.7
NEW_COUNTRY = 0.3
NEW_DEVICE = 0.25
UNUSUAL_HOUR = 0.25
COMPROMISED_CARD_CNP = 0.85
"""Blocks alone: card-not-present is how a tested or cloned card is cashed out."""
COMPROMISED_CARD = 0.55
"""Reviews alone: a card-present purchase may be the genuine holder's."""
COMPROMISED_CARD_HOME = 0.3
"""At an established place the holder is the likely payer: adds up, decides nothing
alone (the genuine holders of blocked cards were 1.6 % of legitimate traffic reviewed
or blocked in ``tests/flow/test_detection.py`` otherwise)."""


def impossible_travel(f: Features, s: Settings) -> Reason | None:
    # A hop back to an established place is the holder coming home, not a clone.
    if f.km_prev >= s.travel_min_km and f.speed_kmh > s.travel_kmh and not f.known_place:
        return Reason(
            "impossible_travel",
            f"{f.km_prev:.0f} km in {f.dt_prev_s / 60:.1f} min ({f.speed_kmh:.0f} km/h)",
            IMPOSSIBLE_TRAVEL,
        )
    return None


def card_testing(f: Features, s: Settings) -> Reason | None:
    if f.small_10m >= s.card_testing_count and f.amount_usd < s.card_testing_usd:
        return Reason(
            "card_testing",
            f"{f.small_10m} charges under ${s.card_testing_usd:g} in 10 min",
            CARD_TESTING,
        )
    return None


def velocity(f: Features, s: Settings) -> Reason | None:
    if f.cnt_1m > s.velocity_1m:
        return Reason("velocity", f"{f.cnt_1m} transactions in 1 min", VELOCITY_1M)
    if f.cnt_10m > s.velocity_10m:
        return Reason("velocity", f"{f.cnt_10m} transactions in 10 min", VELOCITY_10M)
    if f.cnt_1h > s.velocity_1h:
        return Reason("velocity", f"{f.cnt_1h} transactions in 1 h", VELOCITY_1H)
    return None


def high_amount(f: Features, s: Settings) -> Reason | None:
    if f.amount_usd > s.high_amount_usd:
        excess = min(1.0, f.amount_usd / s.high_amount_usd - 1.0)
        c = HIGH_AMOUNT_BASE + (HIGH_AMOUNT_MAX - HIGH_AMOUNT_BASE) * excess
        return Reason("high_amount", f"${f.amount_usd:,.2f} over ${s.high_amount_usd:,.0f}", c)
    return None


def amount_spike(f: Features, s: Settings) -> Reason | None:
    if f.history >= s.min_history and f.amount_z > s.zscore_threshold:
        c = min(ZSCORE_MAX, ZSCORE_BASE + ZSCORE_SLOPE * (f.amount_z - s.zscore_threshold))
        return Reason("amount_zscore", f"amount z-score {f.amount_z:.1f} vs profile", c)
    return None


def new_country(f: Features, s: Settings) -> Reason | None:
    if f.new_country and f.history >= s.min_history:
        return Reason("new_country", "first transaction in this country", NEW_COUNTRY)
    return None


def new_device(f: Features, s: Settings) -> Reason | None:
    if f.new_device and f.history >= s.min_history:
        return Reason("new_device", "unseen device", NEW_DEVICE)
    return None


def unusual_hour(f: Features, s: Settings) -> Reason | None:
    if f.history >= s.unusual_hour_history and f.hour_share < s.unusual_hour_share:
        return Reason(
            "unusual_hour",
            f"local hour {f.hour_local:02d}h is {f.hour_share:.1%} of the user's activity",
            UNUSUAL_HOUR,
        )
    return None


def compromised_card(f: Features, s: Settings) -> Reason | None:
    if not f.card_compromised:
        return None
    if f.known_place:
        return Reason(
            "compromised_card",
            f"card blocked in the last {s.compromised_card_hours:g} h; at a usual place",
            COMPROMISED_CARD_HOME,
        )
    if not f.card_present and f.amount_usd > s.compromised_card_usd:
        return Reason(
            "compromised_card",
            f"card blocked in the last {s.compromised_card_hours:g} h; "
            f"card-not-present ${f.amount_usd:,.2f}",
            COMPROMISED_CARD_CNP,
        )
    return Reason(
        "compromised_card",
        f"card blocked in the last {s.compromised_card_hours:g} h",
        COMPROMISED_CARD,
    )


RULES: tuple[Callable[[Features, Settings], Reason | None], ...] = (
    impossible_travel,
    card_testing,
    velocity,
    high_amount,
    amount_spike,
    new_country,
    new_device,
    unusual_hour,
    compromised_card,
)


def blocks_alone(reasons: list[Reason], s: Settings) -> bool:
    """Do the rules, without ``compromised_card``, block?  That evidence compromises the
    card (the anomaly percentile is known only once the batch is scored, and batching
    must not change a decision; leaving ``compromised_card`` out keeps one false block
    from renewing itself on every later charge)."""
    keep = 1.0
    for r in reasons:
        if r.code != "compromised_card":
            keep *= 1.0 - r.contribution
    return round(1.0 - keep, 6) >= s.block_threshold


def evaluate_rules(f: Features, s: Settings) -> list[Reason]:
    """Every rule that fires on ``f``, in rule order."""
    out = []
    for rule in RULES:
        r = rule(f, s)
        if r is not None:
            out.append(r)
    return out
