"""Score one transaction: features → rules + anomaly → risk score → decision.

The risk score is a noisy-OR of every contribution, ``1 - Π(1 - c_i)``: independent
pieces of evidence add up, no single weak signal can reach a high score, and the result
stays in [0, 1] whatever the number of hits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dataflows.detection.anomaly import FEATURE_NAMES, ShardModel, scale_features
from dataflows.detection.idempotency import compact, replay_of
from dataflows.detection.policy import (
    ActivePolicy,
    blocks_alone,
    calibrate,
    decide,
    default_active,
    run_rules,
)
from dataflows.detection.rarity import Calibrator
from dataflows.detection.state import Features, UserState, observe, settle
from schemas.scored import DeadLetter, Reason, ScoredTransaction
from schemas.settings import Settings
from schemas.transaction import DecodeError, Label, Transaction, encode_transaction
from schemas.units import DAY_MS

__all__ = [
    "Shard",
    "combine",
    "internal_error",
    "new_shard",
    "score_batch",
]


def combine(reasons: list[Reason]) -> float:
    """Noisy-OR of the contributions, in [0, 1]: the chance that at least one signal is
    right if each were an independent witness, so weak signals add up but never pass 1.

    >>> combine([Reason("a", "", 0.5), Reason("b", "", 0.5)])
    0.75
    >>> combine([Reason("impossible_travel", "", 0.9), Reason("new_device", "", 0.25)])
    0.925
    >>> combine([])
    0.0
    """
    keep = 1.0
    for r in reasons:
        keep *= 1.0 - r.contribution
    return round(1.0 - keep, 6)


HOUR_MS = 3_600_000


@dataclass(slots=True)
class Shard:
    """Everything one shard owns: its users' state and its anomaly model."""

    users: dict[str, UserState]
    model: ShardModel
    max_ts: float = 0.0
    next_evict: float = 0.0
    cal: Calibrator | None = None
    """Recent traffic's amounts and signal patterns' rates (made on first use: a
    snapshot from before calibration restores without it)."""
    fb: Any = None
    """The shard's side of the ``local`` feedback loop (:mod:`dataflows.detection.feedback`),
    made on first use."""


def new_shard(s: Settings) -> Shard:
    """A fresh shard with a seeded model (every shard the same seed: reproducible)."""
    model = ShardModel(
        s.hst_trees,
        s.hst_height,
        s.hst_window,
        s.hst_seed,
        s.hst_warmup,
        s.calibration_window,
        s.hst_engine,
        FEATURE_NAMES,
    )
    return Shard({}, model)


def score_batch(
    shard: Shard,
    items: Sequence[tuple[Transaction, Label | None, datetime | None]],
    s: Settings,
    now: datetime,
    policy: ActivePolicy | None = None,
) -> list[ScoredTransaction | DeadLetter]:
    """Score one shard's events in order with ``policy`` (the built-in one if None);
    the same result as scoring each alone.

    User state is updated event by event (it never reads the model), then the model
    scores and learns the whole batch at once, which is what lets the numpy engine walk
    its trees for many events in one go.  The rules run in the first pass: whether they
    block alone is folded into the user's state (compromised cards, established places)
    before the user's next event, whatever the batch size.

    Faults are isolated per event: an exception while computing one event's features,
    a non-finite model input, or a failure while assembling its score turns that event
    into an ``internal_error`` dead letter (the flow goes on).  Its user's state is put
    back as it was before the event (a 0.25 µs copy per event), so a deterministic bug
    cannot corrupt the state or become a crash loop on restart.  If the model itself
    fails on a batch, every event of the batch is dead-lettered and their users restored.

    A txn_id the user already has (see :mod:`dataflows.detection.idempotency`) is
    answered with its first decision as a ``Replayed`` and touches nothing; a duplicate
    within the batch is resolved once its first is scored.
    """
    p = default_active(s) if policy is None else policy
    early, late = p.early, p.late
    cal = getattr(shard, "cal", None)
    if cal is None:
        cal = shard.cal = Calibrator(s.rarity_half_life)
    cal_before = cal.copy()
    share, min_history = s.calibration_share, s.min_history
    lateness_ms, small = s.lateness_s * 1000.0, s.card_testing_usd
    hold_ms = s.compromised_card_hours * float(HOUR_MS)
    users = shard.users
    feats: list[Features] = []
    hits: list[list[Reason]] = []
    errs: list[list[str]] = []
    rows: list[dict[str, float]] = []
    kept: list[int] = []
    saved: list[tuple[str, tuple | None]] = []
    out: list[ScoredTransaction | DeadLetter | None] = [None] * len(items)
    in_batch: dict[str, int] = {}
    dups: list[tuple[int, int]] = []
    for i, (txn, label, ing) in enumerate(items):
        user = users.get(txn.user_id)
        if user is None:
            user = users[txn.user_id] = UserState()
            before = None
        else:
            first = user.seen.get(txn.txn_id)
            if first is not None:
                out[i] = replay_of(txn, label, ing, first)
                continue
            before = user.checkpoint()
        j = in_batch.setdefault(txn.txn_id, i)
        if j != i and items[j][0].user_id == txn.user_id:
            _restore_user(users, txn.user_id, before)
            dups.append((i, j))
            continue
        try:
            f = observe(user, txn, lateness_ms=lateness_ms, small_usd=small, compromised_ms=hold_ms)
            profiled = f.history >= min_history
            f.amount_rarity = cal.rarity(f.amount_usd, f.amount_z, profiled)
            reasons: list[Reason] = []
            errors: list[str] = []
            run_rules(early, f, txn, 0.0, 0.0, reasons, errors)
            first, pattern, _ = calibrate(reasons, p, cal.first, share)
            settle(user, txn, f, bool(first) and blocks_alone(first, p), hold_ms)
            x = scale_features(f)
            if not math.isfinite(sum(x.values())):  # NaN/inf propagate; inputs in [0, 1]
                raise ValueError(f"non-finite model input {x}")
            cal.learn(f.amount_usd, f.amount_z, profiled)  # the event is through: count it
            cal.first.count(pattern)
        except Exception as e:
            _restore_user(users, txn.user_id, before)
            out[i] = internal_error(items[i], e, now)
            continue
        saved.append((txn.user_id, before))
        feats.append(f)
        hits.append(reasons)
        errs.append(errors)
        rows.append(x)
        kept.append(i)
        _maybe_evict(shard, user.last_ts, s)
    try:
        scores = shard.model.score_learn_many(rows)
    except Exception as e:
        for uid, before in reversed(saved):
            _restore_user(users, uid, before)
        shard.cal = cal_before
        return [
            x if x is not None else internal_error(it, e, now)
            for x, it in zip(out, items, strict=True)
        ]
    version = s.model_version  # a property that formats a string: once per batch
    horizon_ms = DAY_MS + lateness_ms
    for i, f, reasons, errors, (raw, pct) in zip(kept, feats, hits, errs, scores, strict=True):
        txn, label, ing = items[i]
        try:
            run_rules(late, f, txn, raw, pct, reasons, errors)
            reasons, pattern, f.cal_weight = calibrate(reasons, p, cal.full, share)
            out[i] = row = _assemble(txn, label, ing, f, reasons, errors, raw, pct, p, now, version)
            cal.full.count(pattern)
        except Exception as e:
            out[i] = internal_error(items[i], e, now)
            continue
        user = users.get(txn.user_id)
        if user is not None:
            user.remember(txn.txn_id, compact(txn.ts.timestamp() * 1000.0, row), horizon_ms)
    for i, j in dups:
        first = out[j]
        txn, label, ing = items[i]
        if isinstance(first, ScoredTransaction):
            out[i] = replay_of(txn, label, ing, compact(0.0, first))
        else:
            out[i] = internal_error(items[i], ValueError("duplicate of an event that failed"), now)
    return out  # type: ignore[return-value]


def internal_error(
    item: tuple[Transaction, Label | None, datetime | None], e: BaseException, now: datetime
) -> DeadLetter:
    """An event the flow could not score: its JSON (re-encoded: the original bytes are
    not kept past parsing) and the exception, for the dead-letter topic."""
    txn, label, _ = item
    err = DecodeError("internal_error", f"scoring failed: {type(e).__name__}: {e}"[:500])
    return DeadLetter.of(err, txn.user_id.encode(), encode_transaction(txn, label), "", -1, -1, now)


def _restore_user(users: dict[str, UserState], uid: str, before: tuple | None) -> None:
    if before is None:
        users.pop(uid, None)
    else:
        users.setdefault(uid, UserState()).restore(before)


def _assemble(
    txn: Transaction,
    label: Label | None,
    ingested_at: datetime | None,
    f: Features,
    reasons: list[Reason],
    errors: list[str],
    raw: float,
    pct: float,
    p: ActivePolicy,
    now: datetime,
    version: str,
) -> ScoredTransaction:
    shadow: list[Reason] = []
    if p.shadow_early or p.shadow_late:
        run_rules(p.shadow_early, f, txn, raw, pct, shadow, errors)
        run_rules(p.shadow_late, f, txn, raw, pct, shadow, errors)
    reasons.sort(key=lambda r: -r.contribution)
    risk = combine(reasons)
    features = f.as_dict()
    features["hst_raw"] = round(raw, 6)
    features["hst_pct"] = round(pct, 6)
    return ScoredTransaction(
        txn,
        label,
        features,
        raw,
        pct,
        tuple(reasons),
        risk,
        decide(risk, reasons, p),
        version,
        now,
        f.late,
        ingested_at,
        p.version,
        tuple(shadow),
        tuple(errors),
    )


def _maybe_evict(shard: Shard, ts_ms: float, s: Settings) -> None:
    """Drop users idle for ``user_ttl_days`` of event time; scans at most once an hour."""
    if ts_ms > shard.max_ts:
        shard.max_ts = ts_ms
    if shard.max_ts < shard.next_evict:
        return
    shard.next_evict = shard.max_ts + HOUR_MS
    cutoff = shard.max_ts - s.user_ttl_days * float(DAY_MS)
    idle = [
        u for u, st in shard.users.items() if st.last_ts < cutoff and st.last_mark_ms() < cutoff
    ]
    for u in idle:
        del shard.users[u]
