"""The policy in force, compiled: which rules run, in which phase, and how hits decide.

Rules that read only the event's features run in the first pass (before the anomaly
model), so whether they block alone can mark the card compromised before the user's next
event; rules reading ``hst_*`` run once the model has scored the batch.  A rule that
raises on one event (a division by zero, a contribution outside [0, 1]) is skipped for
that event and its id recorded in the row's ``rule_errors``: one bad rule never stops
the flow or hides the other rules' hits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dataflows.detection.rarity import Pattern, PatternRates
from schemas.rules import CompiledRule, Policy, PolicyError, compile_rule, default_policy
from schemas.scored import Reason
from schemas.settings import Settings

__all__ = [
    "ActivePolicy",
    "activate",
    "blocks_alone",
    "calibrate",
    "compiled_version",
    "decide",
    "default_active",
    "run_rules",
]

Fn = tuple[Callable[..., Reason | None], str]


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """A policy compiled for the flow.  ``early``/``late`` are the live rules of each
    phase as (function, id) pairs; ``shadow_*`` the shadow rules; ``forced`` maps the
    ids of live rules whose effect is not ``score`` to that effect."""

    version: int
    review_threshold: float
    block_threshold: float
    early: tuple[Fn, ...]
    late: tuple[Fn, ...]
    shadow_early: tuple[Fn, ...]
    shadow_late: tuple[Fn, ...]
    forced: dict[str, str]
    no_renew: frozenset[str]
    policy: Policy
    calibrated: frozenset[str] = frozenset()
    """Live rules whose hits are weighed by how rare their pattern is in recent traffic."""


_RECENT: dict[int, ActivePolicy] = {}
RECENT_KEPT = 8


def compiled_version(version: int) -> ActivePolicy | None:
    """A recently activated policy by version: the later feedback steps decide a row with
    the policy that scored its rules, even right after a switch (when the merchant step
    on another worker may already run the next version)."""
    return _RECENT.get(version)


def activate(p: Policy) -> ActivePolicy:
    """Compile every live and shadow rule of ``p`` (raises :class:`PolicyError`)."""
    compiled: list[CompiledRule] = []
    problems = []
    for r in p.rules:
        if r.status not in ("live", "shadow"):
            continue
        try:
            compiled.append(compile_rule(r, p.params, Reason))
        except PolicyError as e:
            problems += e.problems
    if problems:
        raise PolicyError(problems)

    def pick(status: str, late: bool) -> tuple[Fn, ...]:
        return tuple(
            (c.fn, c.rule.id) for c in compiled if c.rule.status == status and c.late == late
        )

    live = [c for c in compiled if c.rule.status == "live"]
    active = ActivePolicy(
        p.version,
        p.review_threshold,
        p.block_threshold,
        pick("live", False),
        pick("live", True),
        pick("shadow", False),
        pick("shadow", True),
        {c.rule.id: c.rule.effect for c in live if c.rule.effect != "score"},
        frozenset(c.rule.id for c in live if not c.renews),
        p,
        frozenset(c.rule.id for c in live if c.rule.calibrate),
    )
    if p.version:  # published versions are unique; v0 differs with the settings
        _RECENT[p.version] = active
        while len(_RECENT) > RECENT_KEPT:
            del _RECENT[min(_RECENT)]
    return active


@lru_cache(maxsize=8)
def default_active(s: Settings) -> ActivePolicy:
    """The built-in policy (version 0) for these settings, compiled once."""
    return activate(default_policy(s))


def run_rules(
    rules: Sequence[Fn],
    f: Any,
    t: Any,
    raw: float,
    pct: float,
    out: list[Reason],
    errors: list[str] | None,
) -> None:
    """Append every hit of ``rules`` to ``out``, in rule order; a rule that raises is
    skipped and its id appended to ``errors``."""
    for fn, rid in rules:
        try:
            r = fn(f, t, raw, pct)
        except Exception:
            if errors is not None:
                errors.append(rid)
            continue
        if r is not None:
            out.append(r)


def calibrate(
    reasons: list[Reason], p: ActivePolicy, rates: PatternRates, share: float
) -> tuple[list[Reason], Pattern, float]:
    """Weigh the hits of ``p``'s calibrated rules by how often they fire *together* in
    recent traffic (:meth:`PatternRates.weight`); the detail of each weighed hit says by
    how much and why.  Returns the weighed reasons, the event's pattern (for the caller
    to count once the event is through: :meth:`PatternRates.count`) and the weight."""
    cal_ids = p.calibrated
    if not reasons or not cal_ids:  # most events: no hit, nothing to weigh
        return reasons, (), 1.0
    pattern = tuple(sorted(r.code for r in reasons if r.code in cal_ids))
    w, rate = rates.weight(pattern, share)
    if w >= 1.0:
        return reasons, pattern, 1.0
    note = f" (weight {w:.2f}: {' + '.join(pattern)} on {rate:.1%} of recent traffic)"
    weighed = [
        Reason(r.code, r.detail + note, round(r.contribution * w, 4)) if r.code in cal_ids else r
        for r in reasons
    ]
    return weighed, pattern, w


def blocks_alone(reasons: list[Reason], p: ActivePolicy) -> bool:
    """Do the first-pass hits block?  That evidence compromises the card.  Hits of rules
    that read ``card_compromised`` are left out, so one false block cannot renew itself
    on every later charge; a live ``block``-effect hit blocks whatever its strength.
    Calibrated hits count with their first-pass weight (see :func:`calibrate`)."""
    keep = 1.0
    for r in reasons:
        if r.code in p.no_renew:
            continue
        if p.forced and p.forced.get(r.code) == "block":
            return True
        keep *= 1.0 - r.contribution
    return round(1.0 - keep, 6) >= p.block_threshold


def decide(risk: float, reasons: Sequence[Reason], p: ActivePolicy) -> str:
    """The decision: the thresholds, then the live rules' effects (``block`` and
    ``review`` raise it; ``exempt`` turns a threshold review into an approval)."""
    d = (
        "block"
        if risk >= p.block_threshold
        else "review"
        if risk >= p.review_threshold
        else "approve"
    )
    if not p.forced or d == "block":
        return d
    effects = {p.forced.get(r.code) for r in reasons}
    if "block" in effects:
        return "block"
    if "review" in effects:
        return "review"
    if d == "review" and "exempt" in effects:
        return "approve"
    return d
