"""Merchant (terminal) risk from delayed fraud labels: the first leg of the feedback loop.

A compromised terminal turns every card that uses it into fraud; no per-user signal sees
that, but confirmed frauds do, once they are known.  Labels are only usable after
``label_delay_days`` (investigations take time; the handbook uses 7 days), so the risk of
a transaction at time t counts, per merchant, the frauds and transactions whose event
time falls in the ``n`` whole days before ``t - delay`` (n = 1, 7, 30; daily buckets).
A label that arrives early is stored but not counted until its delay has passed, so the
score never sees a label before it would have been available.

State is per merchant, grouped in shards like users (crc32 of merchant_id).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from dataflows.detection.policy import ActivePolicy, compiled_version, decide, default_active
from dataflows.detection.scoring import combine
from schemas.fields import compact_pickle
from schemas.scored import DeadLetter, Reason, Replayed, ScoredTransaction, label_json
from schemas.settings import Settings
from schemas.transaction import DecodeError
from schemas.units import DAY_MS

__all__ = [
    "MerchantLabel",
    "MerchantShard",
    "feedback_letter",
    "label_json",
    "merchant_features",
    "parse_label",
    "rescore",
]

WINDOWS = (1, 7, 30)


@compact_pickle
@dataclass(frozen=True, slots=True)
class MerchantLabel:
    """A confirmed fraud at a merchant: when the transaction happened (event time)."""

    merchant_id: str
    txn_ts_ms: float
    txn_id: str = ""


def parse_label(raw: Any, now: Callable[[], datetime]) -> MerchantLabel | DeadLetter | None:
    """Decode a label event or an analyst verdict (Review v1 from ``fraud-feedback``).

    A ``confirmed_fraud`` verdict labels its transaction for the supervised model
    (merchant unknown: empty ``merchant_id``, which the merchant step skips).  Other
    verdicts return None: the model already treats every transaction nobody labelled
    fraud as genuine once its delay has passed.  Malformed input becomes a dead letter.
    """
    if hasattr(raw, "err"):  # a consumer error on one message (bytewax KafkaError)
        err = DecodeError("consumer_error", f"Kafka consumer error: {raw.err}")
        return feedback_letter(err, raw.msg, raw.msg.value, now)
    value = raw.value if hasattr(raw, "value") else raw
    try:
        d = orjson.loads(value)
        if isinstance(d, dict) and "verdict" in d:
            from schemas.scored import decode_review

            r = decode_review(value)
            if r.verdict != "confirmed_fraud":
                return None
            return MerchantLabel("", r.reviewed_at.timestamp() * 1000.0, r.txn_id)
        ts = datetime.fromisoformat(d["txn_ts"])
        if ts.tzinfo is None:
            raise ValueError("txn_ts has no UTC offset")
        mid = d["merchant_id"]
        if not isinstance(mid, str) or not 0 < len(mid) <= 64:
            raise ValueError(f"merchant_id={mid!r} must be 1-64 characters")
        return MerchantLabel(mid, ts.timestamp() * 1000.0, str(d.get("txn_id", "")))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        err = DecodeError("invalid_label", f"label event refused: {e}")
        return feedback_letter(err, raw, value, now)


def feedback_letter(
    err: DecodeError, raw: Any, value: Any, now: Callable[[], datetime]
) -> DeadLetter:
    """A refused feedback message, with the topic, partition and offset it was read at
    (a Kafka message): analysts can find it, and a replay folds into the same row."""
    part, off = getattr(raw, "partition", None), getattr(raw, "offset", None)
    return DeadLetter.of(
        err,
        getattr(raw, "key", None),
        value.encode() if isinstance(value, str) else value,
        getattr(raw, "topic", None) or "labels",
        -1 if part is None else part,
        -1 if off is None else off,
        now(),
    )


@dataclass(slots=True)
class _Merchant:
    txns: dict[int, int] = field(default_factory=dict)  # event day -> transactions seen
    frauds: dict[int, int] = field(default_factory=dict)  # event day -> confirmed frauds
    # The features of the last window end day: windows close ``delay`` days back, so a
    # merchant's later transactions on the same day read the same counts (until a label
    # or a very late transaction lands inside them, which clears this).
    cached: tuple[int, dict[str, float]] | None = None


@dataclass(slots=True)
class MerchantShard:
    merchants: dict[str, _Merchant] = field(default_factory=dict)


def merchant_features(m: _Merchant, ts_ms: float, delay_days: float) -> dict[str, float]:
    """Delayed-window fraud counts and rates of one merchant for a transaction at ts.

    The returned dict may be shared between transactions: do not mutate it."""
    # The last whole day before t - delay: a label is never used earlier than its delay
    # (day buckets make it up to a day later than an exact window would).
    end_day = math.floor((ts_ms - delay_days * DAY_MS) / DAY_MS) - 1
    cached = getattr(m, "cached", None)  # absent in snapshots from before the cache
    if cached is not None and cached[0] == end_day:
        return cached[1]
    out = window_features(m, end_day)
    m.cached = (end_day, out)
    return out


def window_features(m: _Merchant, end_day: int) -> dict[str, float]:
    """Fraud counts and rates over the windows ending on ``end_day`` (no cache)."""
    out: dict[str, float] = {}
    for n in WINDOWS:
        days = range(end_day - n + 1, end_day + 1)
        txns = sum(m.txns.get(d, 0) for d in days)
        frauds = sum(m.frauds.get(d, 0) for d in days)
        out[f"merchant_frauds_{n}d"] = float(frauds)
        out[f"merchant_risk_{n}d"] = round(frauds / txns, 6) if txns else 0.0
    return out


def merchant_reason(f: dict[str, float], merchant_id: str, s: Settings) -> Reason | None:
    """Compromised-merchant rule: enough confirmed frauds and a high fraud rate."""
    for n in (1, 7, 30):
        frauds, rate = f[f"merchant_frauds_{n}d"], f[f"merchant_risk_{n}d"]
        if frauds >= s.merchant_min_frauds and rate >= s.merchant_min_rate:
            c = round(s.merchant_weight * min(1.0, rate / 0.5), 4)
            return Reason(
                "compromised_merchant",
                f"{merchant_id}: {frauds:.0f} confirmed frauds, {rate:.0%} of its "
                f"transactions {n} d before the {s.label_delay_days:g}-day label delay",
                c,
            )
    return None


def rescore(
    st: ScoredTransaction,
    extra: Reason | None,
    feats: dict[str, float],
    s: Settings,
    version: str = "+merchant-v1",
    policy: ActivePolicy | None = None,
) -> ScoredTransaction:
    """The transaction with extra features and reason, new risk and decision (under
    ``policy``'s thresholds and effects; the built-in policy's if None)."""
    reasons = list(st.reasons)
    if extra is not None:
        reasons.append(extra)
        reasons.sort(key=lambda r: -r.contribution)
    risk = combine(reasons)
    # The constructor, not dataclasses.replace (which re-reads the fields each call).
    return ScoredTransaction(
        st.txn,
        st.label,
        {**st.features, **feats},
        st.anomaly_raw,
        st.anomaly_score,
        tuple(reasons),
        risk,
        decide(risk, reasons, _policy_of(st, s, policy)),
        st.model_version + version,
        st.processed_at,
        st.late,
        st.ingested_at,
        st.policy_version,
        st.shadow,
        st.rule_errors,
    )


def _policy_of(st: ScoredTransaction, s: Settings, current: ActivePolicy | None) -> ActivePolicy:
    """The policy that scored ``st``'s rules if still known, else the one in force."""
    if current is None:
        return default_active(s)
    if current.version == st.policy_version:
        return current
    if st.policy_version == 0:
        return default_active(s)
    return compiled_version(st.policy_version) or current


def on_events(
    shard: MerchantShard, items: list[Any], s: Settings, policy: ActivePolicy | None = None
) -> list[ScoredTransaction]:
    """Apply labels, enrich and rescore transactions, in arrival order."""
    out = []
    horizon = max(WINDOWS) + math.ceil(s.label_delay_days) + 2
    for x in items:
        if isinstance(x, MerchantLabel):
            if not x.merchant_id:  # an analyst verdict: for the supervised model only
                continue
            m = shard.merchants.setdefault(x.merchant_id, _Merchant())
            day = math.floor(x.txn_ts_ms / DAY_MS)
            m.frauds[day] = m.frauds.get(day, 0) + 1
            m.cached = None
            continue
        if type(x) is Replayed:  # a duplicate: answered by its first, counted once
            out.append(x)
            continue
        t = x.txn
        ts_ms = t.ts.timestamp() * 1000.0
        m = shard.merchants.setdefault(t.merchant_id, _Merchant())
        feats = merchant_features(m, ts_ms, s.label_delay_days)
        extra = merchant_reason(feats, t.merchant_id, s)
        out.append(rescore(x, extra, feats, s, policy=policy))
        day = math.floor(ts_ms / DAY_MS)
        m.txns[day] = m.txns.get(day, 0) + 1
        if m.cached is not None and day <= m.cached[0]:  # late: inside the cached windows
            m.cached = None
        if len(m.txns) > horizon:  # drop days no window can reach any more
            for old in sorted(m.txns)[: len(m.txns) - horizon]:
                m.txns.pop(old, None)
                m.frauds.pop(old, None)
            m.cached = None
    return out
