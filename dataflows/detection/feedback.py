"""The feedback loop on every worker: merchant risk and the learner without a funnel.

The ``funnel`` topology re-keys every scored transaction by merchant, carries it through
one learner key and re-keys it by user for the final decision: three exchanges per event,
and one worker does the learner's work for all of them.  In the ``local`` topology each
score step finishes its own scores against a :class:`FeedbackView` (merchant day totals
and the learner's models, by the last day they know), and only day-sized summaries
travel:

* each shard counts its merchants' transactions per event day and, once the day has
  closed, sends the counts to merchant-keyed **aggregators** (one bundle per aggregator
  key, empty or not: it also says the shard is done with the day; a late transaction
  after that is sent alone).  An aggregator also counts fraud labels, and publishes a
  day's totals once every shard has sent it;
* each shard keeps its own examples until their label delay has passed (fraud labels are
  broadcast to every shard: they are few), then sends, per event day, every fraud and at
  most :data:`~dataflows.detection.gbm.GENUINE_PER_DAY` genuine examples (a bottom-k
  sample by a hash of the transaction id: the same whatever the arrival order) with how
  many it saw, to one **trainer**, which learns each day once every shard has sent it,
  refits the booster at each retrain boundary and publishes one model update per day.

Bytewax has no cycles, so what the aggregators and the trainer publish reaches the score
steps outside the dataflow: through the view, which every worker of a process shares,
and between processes through the feedback-state topic
(:mod:`dataflows.connectors.feedback_state`).  A row reads the totals and the models of
the last whole day before ``t - label_delay_days`` (never a later model: no label is used
before its delay).  With ``feedback_wait_s`` it waits for them (in order, in its shard),
so what it reads depends on event time only: the same on one worker or many, in any
batch size.  Without a wait (production) it reads what is published, which in real time
is the same thing: a day's summaries are published seconds after the day closes, a label
delay before any row needs them.  Labels are the exception to "event time only": they
arrive when analysts and chargebacks send them, and one that comes after its day's totals
were published corrects them for later rows only (no row waits for labels).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import threading
import time
import uuid
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataflows.detection.fastlr import FastLogReg
from dataflows.detection.gbm import GENUINE_PER_DAY, HISTORY_DAYS, Booster, fit_arrays
from dataflows.detection.gbm import MIN_FRAUDS as GBM_MIN_FRAUDS
from dataflows.detection.idempotency import FINAL_MEMORY, Compact, compact, replay_of
from dataflows.detection.learner import (
    COMBINE,
    GBM_TAG,
    LEARNER_FEATURES,
    LEARNING_RATE,
    MIN_EXAMPLES,
    MODEL_TAG,
    fit_pool,
    learned_reason,
    learner_input,
)
from dataflows.detection.merchants import (
    WINDOWS,
    MerchantLabel,
    _Merchant,
    merchant_features,
    merchant_reason,
    rescore,
)
from dataflows.detection.policy import ActivePolicy
from schemas.fields import compact_pickle
from schemas.scored import Replayed, ScoredTransaction
from schemas.settings import Settings
from schemas.units import DAY_MS

log = logging.getLogger(__name__)

__all__ = [
    "DayExamples",
    "FeedbackSummary",
    "FeedbackView",
    "MerchantDay",
    "MerchantTotal",
    "MerchantTotals",
    "ModelUpdate",
    "ShardFeedback",
    "TotalsThrough",
    "Trainer",
    "Update",
    "finish_scores",
    "fitting",
    "label_shard",
    "merchant_key",
    "on_merchant_days",
    "on_trainer",
    "quiet_grace",
    "record",
    "totals_waiting",
    "trainer_waiting",
]


@compact_pickle
@dataclass(frozen=True, slots=True)
class MerchantDay:
    """A shard's transactions per merchant on an event day, for one aggregator key (sent
    for every key and day, empty or not: it also says the shard is done with the day)."""

    shard: str
    agg: str
    day: int
    counts: tuple[tuple[str, int], ...]


@compact_pickle
@dataclass(frozen=True, slots=True)
class TotalsThrough:
    """An aggregator key has published the totals of every day up to ``day``."""

    agg: str
    day: int


@compact_pickle
@dataclass(frozen=True, slots=True)
class MerchantTotal:
    """All transactions and confirmed frauds of a merchant on a day (replaces the last)."""

    merchant_id: str
    day: int
    txns: int
    frauds: int


@compact_pickle
@dataclass(frozen=True, slots=True)
class DayExamples:
    """One shard's labelled examples of one event day, sent once the day's label delay
    has passed: every fraud, a sample of genuine ones (with their sampling priority) and
    how many genuine it saw."""

    shard: str
    day: int
    frauds: tuple[tuple[float, ...], ...]
    genuine: tuple[tuple[int, tuple[float, ...]], ...]
    seen: int


@compact_pickle
@dataclass(frozen=True, slots=True)
class ModelUpdate:
    """The learner's models in force: the online model (a copy) until a booster is
    fitted, then the booster and its generation."""

    online: FastLogReg | None
    booster: Booster | None
    generation: int
    through: float = -math.inf
    """The last event day whose examples the models have learned (every day before the
    one a transaction's label delay reaches into): rows wait for it (see
    :func:`finish_scores`)."""


Update = MerchantTotal | ModelUpdate | TotalsThrough
NO_MODEL = ModelUpdate(None, None, 0)
VIEW_DAYS = 64
"""Days of merchant totals a view keeps (windows reach 30 days + the label delay back)."""
MODELS_KEPT = 32
"""Models a view keeps by day: rows of a backlog this many days old still get theirs."""
QUIET_DAYS = 2
"""A shard this many days behind the newest is treated as quiet by the trainer (a day is
complete once every shard has sent it, or any shard a day this much later)."""
QUIET_GRACE_S = 10.0
"""How long (wall clock; at most ``feedback_wait_s`` when rows wait) a shard
:data:`QUIET_DAYS` behind is still waited for before it counts as quiet.  Partitions read
unevenly (a backlog, a busy worker) put a shard days behind for a moment; counting it
quiet then would publish a day without its counts: its fraud rates too high (every label,
part of the transactions) until they come, and, with a wait, scores that depend on the
wall clock.  A shard with no traffic at all costs this much once per day."""
WALK_DAYS = 64
"""When stream time jumps (a gap in the data, or an event stamped far ahead), only the
last this many days of the jump are closed one by one; before them only days that hold
data are sent and learned (the others count as quiet).  One event can then cost no more
than this many days of work, however far ahead it is stamped."""
FeedbackSummary = (MerchantDay, DayExamples)
"""What a score step sends on in the ``local`` loop besides its rows."""


class FeedbackView:
    """What the score steps of one process read: merchant day totals and the models in
    force.  Written by the publication sink (and the feedback-state topic's reader),
    read under one lock per batch."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.merchants: dict[str, _Merchant] = {}
        self.model = NO_MODEL
        self.models: dict[float, ModelUpdate] = {}
        """Recent models by the last day they know (a row takes the newest it may use)."""
        self.totals_through: dict[str, int] = {}
        """Per aggregator key, the last day whose merchant totals are all published."""
        self.merchants_through: float = -math.inf
        """The last day whose totals every aggregator key has published (diagnostics: a
        row reads totals of days at least a label delay older than itself)."""
        self.aggregators = 0
        """How many aggregator keys publish (set by the flow)."""

    def model_for(self, need: float) -> ModelUpdate:
        """The newest model that knows no day after ``need`` (none for a row older than
        every model kept: a backlog more than :data:`MODELS_KEPT` days old)."""
        best = None
        for through, m in self.models.items():
            if through <= need and (best is None or through > best.through):
                best = m
        if best is not None:
            return best
        return NO_MODEL

    def apply(self, updates: Iterable[Update]) -> None:
        with self.lock:
            for u in updates:
                if type(u) is MerchantTotal:
                    m = self.merchants.get(u.merchant_id)
                    if m is None:
                        m = self.merchants[u.merchant_id] = _Merchant()
                    m.txns[u.day] = u.txns
                    if u.frauds:
                        m.frauds[u.day] = u.frauds
                    m.cached = None
                    if len(m.txns) > VIEW_DAYS:  # older than any window reaches
                        for old in sorted(m.txns)[: len(m.txns) - VIEW_DAYS]:
                            m.txns.pop(old, None)
                            m.frauds.pop(old, None)
                elif type(u) is TotalsThrough:
                    tt = self.totals_through
                    tt[u.agg] = max(u.day, tt.get(u.agg, u.day))
                    if len(tt) >= self.aggregators:
                        self.merchants_through = float(min(tt.values()))
                elif type(u) is ModelUpdate and (u.generation, u.through) >= (
                    self.model.generation,
                    self.model.through,
                ):
                    self.model = u
                    self.models[u.through] = u
                    if len(self.models) > MODELS_KEPT:
                        del self.models[min(self.models)]


_AHEAD: weakref.WeakKeyDictionary[Any, dict[int, float]] = weakref.WeakKeyDictionary()
"""Per aggregator or trainer: when (monotonic) each newest day was first sent.  Not in
snapshots: after a restore the grace starts again."""
_clock = time.monotonic


def quiet_grace(s: Settings) -> float:
    """How long a shard days behind is waited for (see :data:`QUIET_GRACE_S`)."""
    return min(s.feedback_wait_s, QUIET_GRACE_S) if s.feedback_wait_s > 0 else QUIET_GRACE_S


def _quiet_through(state: Any, latest: int, grace_s: float) -> int | None:
    """The last day a quiet shard no longer holds back: :data:`QUIET_DAYS` before the
    newest day sent or, with a grace, before the newest day sent at least ``grace_s``
    ago (None: none yet)."""
    if grace_s <= 0:
        return latest - QUIET_DAYS
    now = _clock()
    seen = _AHEAD.get(state)
    if seen is None:
        seen = _AHEAD[state] = {}
    seen.setdefault(latest, now)
    old = [d for d, at in seen.items() if now - at >= grace_s]
    if not old:
        return None
    top = max(old)
    for d in [d for d in seen if d < top]:
        del seen[d]
    return top - QUIET_DAYS


def _newest_whole(days: Iterable[int], low: float, whole: Callable[[int], bool]) -> int | None:
    """The newest of ``days`` after ``low`` that every shard has sent (only days that
    hold data are looked at: an event stamped far ahead costs no walk)."""
    return max((d for d in days if d > low and whole(d)), default=None)


# --- Score step side ----------------------------------------------------------------


def _priority(txn_id: str) -> int:
    """A genuine example's sampling priority: the same on every worker and replay, and
    unrelated to the id's structure (crc32 is linear: over sequential ids its smallest
    values pick a patterned subset)."""
    return int.from_bytes(hashlib.blake2b(txn_id.encode(), digest_size=4).digest(), "little")


@dataclass(slots=True)
class _DaySample:
    frauds: list[tuple[float, ...]] = field(default_factory=list)
    heap: list[tuple[int, str, tuple[float, ...]]] = field(default_factory=list)  # max-heap
    seen: int = 0

    def offer(self, prio: int, txn_id: str, x: tuple[float, ...], k: int) -> None:
        """Keep the ``k`` genuine examples of lowest priority (bottom-k sampling)."""
        self.seen += 1
        item = (-prio, txn_id, x)
        if len(self.heap) < k:
            heapq.heappush(self.heap, item)
        elif item > self.heap[0]:
            heapq.heapreplace(self.heap, item)


@dataclass(slots=True)
class ShardFeedback:
    """A shard's side of the loop: its examples waiting for their label delay, the fraud
    labels (all of them: broadcast), and its merchant counts of days not yet sent."""

    pending: list[tuple[float, str, tuple[float, ...]]] = field(default_factory=list)
    labels: dict[str, float] = field(default_factory=dict)
    samples: dict[int, _DaySample] = field(default_factory=dict)
    next_day: int | None = None
    """The first event day whose examples this shard has not sent yet."""
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    counted_through: int | None = None
    """Days up to this one have had their merchant counts sent."""
    now_ms: float = -math.inf
    held: deque[list[Any]] = field(default_factory=deque)
    """Rows waiting for their day's totals or models, oldest first: [row, learner input,
    day needed, since when (monotonic), what it waits for]."""
    finals: dict[str, Compact] = field(default_factory=dict)
    """The last final decisions, oldest first: what replays are answered with."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    """Names the shard to the trainer, which counts the shards that have sent a day."""


def label_shard(fb: ShardFeedback, x: MerchantLabel) -> None:
    if x.txn_id:
        fb.labels[x.txn_id] = x.txn_ts_ms


def finish_scores(
    fb: ShardFeedback,
    rows: list[Any],
    view: FeedbackView,
    s: Settings,
    policy: ActivePolicy | None,
    remember: Callable[[ScoredTransaction], None],
    eof: bool = False,
) -> list[Any]:
    """Add merchant risk and the learner to a shard's scored rows, queue their examples,
    and append the summaries due (merchant counts of closed days, examples past their
    delay).  ``remember(row)`` records each final decision in the user's state; the
    shard also keeps the last :data:`FINAL_MEMORY` final decisions, which answer replays
    (a replay leaves after its first: rows leave in order), like the funnel's last step.

    A row reads what is known of the last whole day before ``t - label_delay_days``: it
    waits (in the shard, in order) until every aggregator has published that day's
    merchant totals, then (its learner inputs made, its example queued) until the
    learner's models of that day are published; for at most ``feedback_wait_s`` of wall
    clock in all (and never past the end of the input).  With a wait, what a row reads
    depends on event time only, not on batches or workers."""
    delay_ms = s.label_delay_days * DAY_MS
    held = fb.held
    for r in rows:
        if type(r) is not ScoredTransaction:  # a dead letter or a replay: kept in order
            held.append([r, None, 0, 0.0, _DONE])
            continue
        ts_ms = r.txn.ts.timestamp() * 1000.0
        _count(fb, r.txn.merchant_id, ts_ms)
        if ts_ms > fb.now_ms:
            fb.now_ms = ts_ms
        need = math.floor((ts_ms - delay_ms) / DAY_MS) - 1
        held.append([r, None, need, time.monotonic(), _TOTALS])
    out, oldest = _release(fb, view, s, policy, remember, eof)
    finals = fb.finals
    for i, r in enumerate(out):
        if type(r) is ScoredTransaction:
            finals[r.txn.txn_id] = compact(0.0, r)
            if len(finals) > FINAL_MEMORY:
                del finals[next(iter(finals))]
        elif type(r) is Replayed:
            first = finals.get(r.txn.txn_id)
            if first is not None:
                out[i] = replay_of(r.txn, r.label, r.ingested_at, first)
    out += _merchant_days_due(fb, s)
    if s.learner_weight > 0:
        out += _examples_due(fb, s, oldest)
    return out


_DONE, _TOTALS, _MODELS = 0, 1, 2
"""What a held row waits for: nothing (in order behind others), merchant totals, models."""


def _release(
    fb: ShardFeedback,
    view: FeedbackView,
    s: Settings,
    policy: ActivePolicy | None,
    remember: Callable[[ScoredTransaction], None],
    eof: bool,
) -> tuple[list[Any], float]:
    """Move held rows on as what they wait for is published (or they waited long
    enough), and emit them oldest first: a row never overtakes an older one of its
    shard.  Also returns the event time of the oldest row still without its learner
    inputs (its example is not queued yet, so its day must not be sent)."""
    held, learn = fb.held, s.learner_weight > 0
    wait = s.feedback_wait_s
    since = time.monotonic() - wait
    out: list[Any] = []
    steps: list[tuple[int, tuple[float, ...], ModelUpdate]] = []
    oldest = math.inf
    with view.lock:
        totals, models = view.merchants_through, view.model.through
        for h in held:
            if h[4] != _TOTALS:
                continue
            r, _, need, at, _ = h
            if not (eof or need <= totals or wait <= 0 or at <= since):
                oldest = min(oldest, r.txn.ts.timestamp() * 1000.0)
                continue
            t = r.txn
            ts_ms = t.ts.timestamp() * 1000.0
            m = view.merchants.get(t.merchant_id)
            feats = merchant_features(m, ts_ms, s.label_delay_days) if m else _NO_MERCHANT
            h[0] = r = rescore(r, merchant_reason(feats, t.merchant_id, s), feats, s, policy=policy)
            if learn:
                h[1] = x = learner_input(r.features, r.risk_score, r.reasons)
                heapq.heappush(fb.pending, (ts_ms, t.txn_id, x))
                h[4] = _MODELS
            else:
                remember(r)
                h[4] = _DONE
        while held:
            r, x, need, at, stage = held[0]
            if stage == _TOTALS:
                break
            if stage == _MODELS:
                if not (eof or need <= models or wait <= 0 or at <= since):
                    break
                steps.append((len(out), x, view.model_for(need)))
            held.popleft()
            out.append(r)
    groups: dict[int, list[int]] = {}
    for k, (_, _, model) in enumerate(steps):
        groups.setdefault(id(model), []).append(k)
    for ks in groups.values():
        model = steps[ks[0]][2]
        probs, gen = _predict(model, [steps[k][1] for k in ks])
        tag = MODEL_TAG + GBM_TAG.format(gen) if gen else MODEL_TAG
        for k, p in zip(ks, probs, strict=True):
            i = steps[k][0]
            extra = learned_reason(p, s)
            out[i] = r = rescore(out[i], extra, {"learned_p": round(p, 6)}, s, tag, policy)
            remember(r)
    return out, oldest


_NO_MERCHANT = {
    **{f"merchant_frauds_{n}d": 0.0 for n in WINDOWS},
    **{f"merchant_risk_{n}d": 0.0 for n in WINDOWS},
}


def _predict(model: ModelUpdate, xs: list[tuple[float, ...]]) -> tuple[list[float], int]:
    if model.booster is not None:
        q = model.booster.predict(xs)
        if COMBINE == "gbm":
            return q, model.generation
        online = model.online
        ps = [online.predict_proba(x) if online else 0.0 for x in xs]
        return [(p + b) / 2.0 for p, b in zip(ps, q, strict=True)], model.generation
    if model.online is None:
        return [0.0] * len(xs), 0
    return [model.online.predict_proba(x) for x in xs], 0


def _count(fb: ShardFeedback, merchant_id: str, ts_ms: float) -> None:
    day = math.floor(ts_ms / DAY_MS)
    counts = fb.counts.get(day)
    if counts is None:
        counts = fb.counts[day] = {}
    counts[merchant_id] = counts.get(merchant_id, 0) + 1


def _merchant_days_due(fb: ShardFeedback, s: Settings) -> list[MerchantDay]:
    """Per aggregator key, the counts of each day closed by now (the newest event minus
    the allowed lateness) and of late transactions on days already sent."""
    if fb.now_ms == -math.inf or (not fb.counts and fb.counted_through is None):
        return []  # no transaction yet (a shard that got only labels so far)
    closed = math.floor((fb.now_ms - s.lateness_s * 1000.0) / DAY_MS) - 1
    first = min(fb.counts) if fb.counted_through is None else fb.counted_through + 1
    walk = range(max(first, closed + 1 - WALK_DAYS), closed + 1)
    days = sorted({*walk, *(d for d in fb.counts if d <= closed)})
    out: list[MerchantDay] = []
    keys = [str(i) for i in range(s.shards)]
    for day in days:
        by_key: dict[str, list[tuple[str, int]]] = {}
        for mid, n in sorted(fb.counts.pop(day, {}).items()):
            by_key.setdefault(merchant_key(mid, s.shards), []).append((mid, n))
        fresh = fb.counted_through is None or day > fb.counted_through
        for k in keys if fresh else sorted(by_key):
            out.append(MerchantDay(fb.id, k, day, tuple(by_key.get(k, ()))))
        if fresh:
            fb.counted_through = day
    return out


def merchant_key(merchant_id: str, shards: int) -> str:
    """The aggregator key of a merchant (crc32, like users' shards)."""
    return str(zlib.crc32(merchant_id.encode()) % shards)


def _examples_due(fb: ShardFeedback, s: Settings, oldest: float) -> list[DayExamples]:
    """Label every example whose delay has passed; send each day once it is over (and
    every day in between, empty or not, so the trainer knows this shard is done), but
    none from the day of ``oldest`` on (a row of it has no example yet)."""
    cutoff = min(fb.now_ms - s.label_delay_days * DAY_MS, oldest - 1.0)
    pending, labels = fb.pending, fb.labels
    while pending and pending[0][0] <= cutoff:
        ts, txn_id, x = heapq.heappop(pending)
        day = math.floor(ts / DAY_MS)
        if fb.next_day is None:
            fb.next_day = day
        sample = fb.samples.get(max(day, fb.next_day))  # a late one joins the open day
        if sample is None:
            sample = fb.samples[max(day, fb.next_day)] = _DaySample()
        if labels.pop(txn_id, None) is not None:
            sample.frauds.append(x)
        else:
            sample.offer(_priority(txn_id), txn_id, x, GENUINE_PER_DAY)
    if len(labels) > 1000 and len(labels) > len(pending):
        oldest = pending[0][0] if pending else cutoff
        for k in [k for k, t in labels.items() if t < oldest]:
            del labels[k]
    out: list[DayExamples] = []
    if fb.next_day is None or cutoff == -math.inf:
        return out
    done = math.floor(cutoff / DAY_MS) - 1  # the last day whose examples are all labelled
    if done - fb.next_day >= WALK_DAYS:  # a jump: skip the days without examples
        held = sorted(d for d in fb.samples if d <= done - WALK_DAYS)
        fb.next_day = done + 1 - WALK_DAYS
        for d in held:
            smp = fb.samples.pop(d)
            genuine = tuple((-p, x) for p, _, x in sorted(smp.heap, reverse=True))
            out.append(DayExamples(fb.id, d, tuple(smp.frauds), genuine, smp.seen))
    while fb.next_day <= done:
        d = fb.next_day
        smp = fb.samples.pop(d, None) or _DaySample()
        genuine = tuple((-p, x) for p, _, x in sorted(smp.heap, reverse=True))
        out.append(DayExamples(fb.id, d, tuple(smp.frauds), genuine, smp.seen))
        fb.next_day = d + 1
    return out


# --- Aggregator -------------------------------------------------------------------------


@dataclass(slots=True, weakref_slot=True, eq=False)
class MerchantTotals:
    """An aggregator key's merchants: every shard's counts and every fraud label, and
    which days every shard has sent."""

    key: str = ""
    shards: int = 1
    merchants: dict[str, _Merchant] = field(default_factory=dict)
    sent: dict[int, set[str]] = field(default_factory=dict)
    """Day -> shards that have sent it (until the day is complete)."""
    complete: int | None = None
    latest: int | None = None


_ANNOUNCED: weakref.WeakSet[Any] = weakref.WeakSet()
"""States that have published everything they hold to this process's view: a state
restored from a snapshot is a new object, so it publishes all it holds once (the view is
not part of any snapshot)."""


def on_merchant_days(agg: MerchantTotals, items: list[Any], s: Settings) -> list[Any]:
    """Add counts and labels; publish the totals of days that became complete (every
    shard sent them, or one sent a day :data:`QUIET_DAYS` later), the totals a late count
    or a label changed on a complete day, and how far the complete days reach."""
    changed: dict[tuple[str, int], None] = {}
    announce = agg not in _ANNOUNCED
    if announce:
        _ANNOUNCED.add(agg)
        changed.update({(mid, d): None for mid, m in agg.merchants.items() for d in m.txns})
    horizon = max(WINDOWS) + math.ceil(s.label_delay_days) + 2
    before = agg.complete
    touched: dict[tuple[str, int], None] = {}
    for x in items:
        if type(x) is MerchantLabel:
            if not x.merchant_id:  # an analyst verdict: for the learner only
                continue
            day = math.floor(x.txn_ts_ms / DAY_MS)
            m = _merchant(agg, x.merchant_id)
            m.frauds[day] = m.frauds.get(day, 0) + 1
            m.txns.setdefault(day, 0)
            touched[(x.merchant_id, day)] = None
            continue
        agg.key = x.agg
        for mid, n in x.counts:
            m = _merchant(agg, mid)
            m.txns[x.day] = m.txns.get(x.day, 0) + n
            touched[(mid, x.day)] = None
        if agg.complete is None or x.day > agg.complete:
            agg.sent.setdefault(x.day, set()).add(x.shard)
            agg.latest = x.day if agg.latest is None else max(agg.latest, x.day)
    _advance_totals(agg, quiet_grace(s))
    done = -math.inf if agg.complete is None else agg.complete
    newly = -math.inf if before is None else before
    for mid, day in touched:
        if day <= done:
            changed[(mid, day)] = None
    if agg.complete is not None and agg.complete != before:
        for mid, m in agg.merchants.items():
            for day in m.txns:
                if newly < day <= done:
                    changed[(mid, day)] = None
    out: list[Any] = []
    for mid, day in changed:
        m = agg.merchants[mid]
        if day in m.txns:
            out.append(MerchantTotal(mid, day, m.txns[day], m.frauds.get(day, 0)))
    for m in agg.merchants.values():
        if len(m.txns) > horizon:
            for old in sorted(m.txns)[: len(m.txns) - horizon]:
                m.txns.pop(old, None)
                m.frauds.pop(old, None)
    if agg.complete is not None and (announce or agg.complete != before):
        out.append(TotalsThrough(agg.key, agg.complete))
    return out


def _merchant(agg: MerchantTotals, mid: str) -> _Merchant:
    m = agg.merchants.get(mid)
    if m is None:
        m = agg.merchants[mid] = _Merchant()
    return m


def _advance_totals(agg: MerchantTotals, grace_s: float) -> None:
    if agg.latest is None:
        return
    quiet = _quiet_through(agg, agg.latest, grace_s)
    low = -math.inf if quiet is None else quiet
    done = _newest_whole(agg.sent, low, lambda d: len(agg.sent[d]) >= agg.shards)
    if done is None:
        done = quiet
    if done is None:
        return
    if agg.complete is None or done > agg.complete:
        agg.complete = done
        for d in [d for d in agg.sent if d <= done]:
            del agg.sent[d]


# --- Trainer ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Day:
    frauds: np.ndarray
    genuine: np.ndarray
    prio: np.ndarray
    seen: int
    shards: set[str]


@dataclass(slots=True, weakref_slot=True, eq=False)
class Trainer:
    """The learner's models and labelled history, fed by the shards' day examples.

    ``shards`` is how many shards send days: a day is complete once all of them have
    sent it (or any has sent one :data:`QUIET_DAYS` later, for a shard gone quiet)."""

    shards: int
    delay_ms: float
    retrain_ms: float = DAY_MS
    online: FastLogReg = field(
        default_factory=lambda: FastLogReg(len(LEARNER_FEATURES), LEARNING_RATE)
    )
    learned: int = 0
    learned_frauds: int = 0
    days: dict[int, _Day] = field(default_factory=dict)
    complete: int | None = None
    """The last event day known complete."""
    latest: int | None = None
    booster: Booster | None = None
    generation: int = 0
    next_fit_ms: float = -math.inf
    fitted_at: int = -1
    """``learned`` at the last fit: with nothing learned since, a refit is skipped (it
    would fit the same examples again: after a jump, once per walked day)."""

    def add(self, ex: DayExamples) -> None:
        """Keep a shard's day (learned once the day is complete: :meth:`advance`)."""
        w = len(LEARNER_FEATURES)
        f = np.array(ex.frauds, dtype=np.float32).reshape(len(ex.frauds), w)
        g = np.array([x for _, x in ex.genuine], dtype=np.float32).reshape(len(ex.genuine), w)
        p = np.array([q for q, _ in ex.genuine], dtype=np.uint32)
        d = self.days.get(ex.day)
        if d is None:
            self.days[ex.day] = _Day(f, g, p, ex.seen, {ex.shard})
        else:
            g, p = np.concatenate([d.genuine, g]), np.concatenate([d.prio, p])
            if len(p) > GENUINE_PER_DAY:  # bottom-k of the union: order-independent
                keep = np.lexsort((np.arange(len(p)), p))[:GENUINE_PER_DAY]
                g, p = g[keep], p[keep]
            d.frauds = np.concatenate([d.frauds, f])
            d.genuine, d.prio, d.seen = g, p, d.seen + ex.seen
            d.shards.add(ex.shard)
        self.latest = ex.day if self.latest is None else max(self.latest, ex.day)
        for old in [k for k in self.days if k <= self.latest - HISTORY_DAYS]:
            del self.days[old]

    def advance(self, grace_s: float = 0.0, background: bool = False) -> list[ModelUpdate]:
        """Learn each day that is now complete, in day order, refit where a boundary has
        passed, and return the models in force after each day (one per day: which model
        a row gets never depends on how the days arrived in batches).  ``grace_s``: see
        :data:`QUIET_GRACE_S`; ``background``: fit in the fit thread (the booster comes
        with a later update, see :meth:`adopt`)."""
        if self.latest is None:
            return []
        quiet = _quiet_through(self, self.latest, grace_s)
        low = -math.inf if quiet is None else quiet
        done = _newest_whole(self.days, low, self._whole)
        if done is None:
            done = quiet
        if done is None:
            return []
        first = min(self.days) if self.complete is None else self.complete + 1
        walk = max(first, done + 1 - WALK_DAYS)  # a jump: skip the days without data
        days = [*sorted(d for d in self.days if first <= d < walk), *range(walk, done + 1)]
        out = []
        for day in days:
            self._learn(day)
            self.complete = day
            self._maybe_fit(day, background)
            out.append(self.update())
        return out

    def _whole(self, day: int) -> bool:
        return len(self.days[day].shards) >= self.shards

    def _learn(self, day: int) -> None:
        """The online model learns a complete day, frauds then genuine, each in a fixed
        order (sorted rows), so its weights do not depend on arrival order."""
        d = self.days.get(day)
        if d is None:
            return
        learn = self.online.learn
        for rows, y in ((d.frauds, True), (d.genuine, False)):
            if not len(rows):
                continue
            for i in np.lexsort(rows.T[::-1]):
                learn(tuple(rows[i].tolist()), y)
            self.learned += len(rows)
            self.learned_frauds += len(rows) if y else 0

    def _maybe_fit(self, done: int, background: bool) -> None:
        # Stream time when that day's last example passed its delay.
        now = (done + 1) * DAY_MS + self.delay_ms
        if self.retrain_ms <= 0 or now < self.next_fit_ms:
            return
        self.next_fit_ms = (math.floor(now / self.retrain_ms) + 1) * self.retrain_ms
        if self.learned < MIN_EXAMPLES or self._frauds(done) < GBM_MIN_FRAUDS:
            return
        if self.learned == self.fitted_at:
            return
        self.fitted_at = self.learned
        if not background:
            self._swap(fit_arrays(*self.dataset(done)), done)
        elif fitting(self):  # one fit at a time: the next boundary fits what came since
            self.fitted_at = -1
        else:
            _TRAINER_FITS[id(self)] = (
                self,
                fit_pool().submit(fit_arrays, *self.dataset(done)),
                done,
            )

    def adopt(self) -> bool:
        """Swap in a background fit that has ended (True: the models changed)."""
        got = _TRAINER_FITS.get(id(self))
        if got is None or got[0] is not self or not got[1].done():
            return False
        del _TRAINER_FITS[id(self)]
        try:
            self._swap(got[1].result(), got[2])
        except Exception:  # the booster in force stays; the next boundary fits again
            log.exception("background booster fit failed")
            self.fitted_at = -1
            return False
        return True

    def _swap(self, b: Booster, through: int) -> None:
        self.booster = b
        self.generation += 1
        log.info(
            "booster g%d fitted on %d examples (%d frauds) through day %d in %.2f s",
            self.generation,
            b.rows,
            b.frauds,
            through,
            b.fit_seconds,
        )

    def _frauds(self, through: int) -> int:
        return sum(len(d.frauds) for k, d in self.days.items() if k <= through)

    def dataset(self, through: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, y, weight) of the days up to ``through``, oldest first (like
        :meth:`~dataflows.detection.gbm.LabelledHistory.dataset`)."""
        xs, ys, ws = [], [], []
        for k in sorted(self.days):
            if k > through:
                break
            d = self.days[k]
            xs += [d.frauds, d.genuine]
            ys += [np.ones(len(d.frauds)), np.zeros(len(d.genuine))]
            n = len(d.genuine)
            ws += [np.ones(len(d.frauds)), np.full(n, d.seen / n if n else 0.0)]
        w = len(LEARNER_FEATURES)
        if not xs:
            return np.zeros((0, w), np.float32), np.zeros(0), np.zeros(0)
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)

    def update(self) -> ModelUpdate:
        """The models to publish: the booster once fitted, before that the online model
        (a copy) once warm, and the last day they know."""
        through = -math.inf if self.complete is None else float(self.complete)
        if self.booster is not None:
            online = self.online_copy() if COMBINE != "gbm" else None
            return ModelUpdate(online, self.booster, self.generation, through)
        if self.learned >= MIN_EXAMPLES and self.learned_frauds:
            return ModelUpdate(self.online_copy(), None, 0, through)
        return ModelUpdate(None, None, 0, through)

    def online_copy(self) -> FastLogReg:
        copy = FastLogReg.__new__(FastLogReg)
        copy.__setstate__(self.online.__getstate__())
        return copy


_TRAINER_FITS: dict[int, tuple[Trainer, Future[Booster], int]] = {}
"""Background fits in flight, by trainer (with the day they learned through): futures are
not state, never pickled; a fit in flight at a snapshot is not resumed after a restore
(the next boundary fits again)."""


def fitting(trainer: Trainer) -> bool:
    """Whether a background fit of ``trainer`` is in flight (its step wakes to adopt it)."""
    got = _TRAINER_FITS.get(id(trainer))
    return got is not None and got[0] is trainer


def totals_waiting(agg: MerchantTotals) -> bool:
    """An aggregator waits on a day some shard has not sent (it may count as quiet after
    :data:`QUIET_GRACE_S`): its step looks again soon even when no item comes."""
    return bool(agg.sent)


def trainer_waiting(trainer: Trainer) -> bool:
    """The trainer waits on a day some shard has not sent, or on a background fit."""
    done, latest = trainer.complete, trainer.latest
    return fitting(trainer) or (latest is not None and (done is None or latest > done))


def on_trainer(
    trainer: Trainer, items: list[DayExamples], grace_s: float = 0.0, background: bool = False
) -> list[ModelUpdate]:
    """Learn the days sent, refit when due; publish the models in force whenever the
    days they know move on or a background fit ends (and once after a restore).

    With ``background`` (``learner_fit_background``) a fit runs in the fit thread: the
    trainer's worker, which also scores its share of the stream, does not pause for it
    (up to seconds on a long history)."""
    adopted = trainer.adopt()
    for ex in items:
        trainer.add(ex)
    out = trainer.advance(grace_s, background)
    if adopted and not out:
        out.append(trainer.update())
    if trainer not in _ANNOUNCED:
        _ANNOUNCED.add(trainer)
        if not out:
            out.append(trainer.update())
    return out


def record(user_seen: Any, row: ScoredTransaction, horizon_ms: float) -> None:
    """Remember ``row``'s final decision for replays of its transaction."""
    user_seen.remember(row.txn.txn_id, compact(row.txn.ts.timestamp() * 1000.0, row), horizon_ms)
