"""An online supervised model from delayed labels: the second leg of the feedback loop.

Rules and HST know what fraud *looks* like in general; confirmed labels say what it
looks like *here*.  One River logistic regression (behind an online standard scaler),
fed every transaction's features, anomaly percentile and delayed merchant risk, adds its
fraud probability to the risk score.  It is one model, not one per shard: on the
handbook's ch.7 week 16 merchant-sharded models reached AP 0.22, one model 0.49 (it sees
16× the frauds).  River's pipeline costs ~19 µs per event (predict + learn);
:class:`~dataflows.fastlr.FastLogReg` does the same arithmetic on tuples in ~10 µs and
is what runs (a test proves it bitwise-equal to River on a seeded stream).

Labels are delayed (``label_delay_days``): a transaction becomes a training example only
once stream time has passed its event time plus the delay, and it is then learned as
fraud if a confirmed-fraud label for it has arrived by then, otherwise as genuine (the
handbook's delayed-label assumption: after the delay every label is known).  Scoring
always happens before the transaction's own example exists, so the model never sees a
label before its delay has passed (``tests/flow/test_learner.py`` proves it).

A label that arrives more than the delay after its transaction comes too late for this
model (the example was already learned as genuine); the merchant risk still counts it.

Pending examples are kept as small tuples in a heap ordered by event time, one per
transaction of the last ``delay`` days of the shard: ~200 B each.

Once examples have passed their delay they also join a bounded labelled history, from
which a gradient-boosted model is refitted every ``learner_retrain_days`` of event time
and swapped in (:mod:`dataflows.detection.gbm`); from its first fit on, a row's
``learned_p`` is the booster's probability (see :data:`COMBINE`) and its
``model_version`` names the booster generation (``+lr-v3+gbm-g12``).  A fit sees only
examples the online model has already learned, so it never sees a label before its delay
either (``tests/flow/test_learner.py``).
"""

from __future__ import annotations

import heapq
import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from river import compose, linear_model, optim, preprocessing

from dataflows.detection.fastlr import FastLogReg
from dataflows.detection.gbm import MIN_FRAUDS as GBM_MIN_FRAUDS
from dataflows.detection.gbm import Booster, LabelledHistory, fit_arrays, fit_gbm
from dataflows.detection.policy import ActivePolicy
from schemas.scored import Reason, Replayed, ScoredTransaction
from schemas.settings import Settings
from schemas.units import DAY_MS
from schemas.vocab import RULE_CODES

log = logging.getLogger(__name__)

__all__ = [
    "LEARNER_FEATURES",
    "DelayedLearner",
    "finish",
    "learned_reason",
    "learner_input",
    "on_learner_events",
]

LATER_RULES = ("compromised_card", "rare_amount")
"""Rules added after ``lr-v2`` (rules-v2 and rules-v3): left out of the inputs so the
input vector, and with it ``lr-v2`` snapshots and the booster's stored history, stay as
they were; the risk-so-far input carries their evidence."""
RULE_INPUTS = (*(c for c in RULE_CODES if c not in LATER_RULES), "compromised_merchant")
"""Rules whose contribution is a model input (``rule_<code>``, 0 when it did not fire)."""
LEARNER_FEATURES = (
    "amount_usd",
    "log_amount",
    "amount_z",
    "log_cnt_1m",
    "log_cnt_10m",
    "log_cnt_1h",
    "log_cnt_24h",
    "log_sum_24h",
    "small_10m",
    "log_km_prev",
    "log_speed",
    "new_country",
    "new_device",
    "hour_share",
    "log_history",
    "hst_pct",
    "merchant_risk_1d",
    "merchant_risk_7d",
    "merchant_risk_30d",
    "log_merchant_frauds_7d",
    "log_merchant_frauds_30d",
    "risk",
    *(f"rule_{code}" for code in RULE_INPUTS),
    "log_cnt_7d",
    "log_avg_usd_7d",
    "log_cnt_30d",
    "log_avg_usd_30d",
    "amount_vs_7d",
    "amount_vs_30d",
    "log_rarity",
)
"""Inputs of the supervised model, in tuple order.  The ``rule_*`` inputs are each
rule's contribution (0 when it did not fire): the model learns what each rule is worth on
this traffic, which is how verdicts calibrate the rules."""

MIN_EXAMPLES = 2000
"""Examples (of all classes) a shard's model learns before its probability counts."""
LEARNING_RATE = 0.002
"""SGD step.  Handbook ch.7 week, AP by step: 0.1 → 0.22, 0.02 → 0.38, 0.005 → 0.45,
0.002 → 0.49, 0.001 → 0.48 (up-weighting frauds ×5 made it worse: 0.32 at 0.02)."""


def learner_input(
    f: dict[str, float], risk: float = 0.0, reasons: tuple[Reason, ...] = ()
) -> tuple[float, ...]:
    """The model inputs from a scored row's features (user, anomaly and merchant ones)
    and its risk so far (rules + HST + merchant rule: the model learns how far to trust
    them here; ch.7 AP 0.49 → 0.53)."""
    # log1p of non-negative inputs: ``lp(v) if v > 0 else 0.0`` (inlined: per event).
    g, lp = f.get, math.log1p
    z = g("amount_z", 0.0)
    usd, c1, c10, c1h, c24 = (
        g("amount_usd", 0.0),
        g("cnt_1m", 0.0),
        g("cnt_10m", 0.0),
        g("cnt_1h", 0.0),
        g("cnt_24h", 0.0),
    )
    s24, km, kmh, hist = (
        g("sum_24h_usd", 0.0),
        g("km_prev", 0.0),
        g("speed_kmh", 0.0),
        g("history", 0.0),
    )
    f7, f30 = g("merchant_frauds_7d", 0.0), g("merchant_frauds_30d", 0.0)
    return (
        usd,
        lp(usd) if usd > 0 else 0.0,
        max(-5.0, min(z, 10.0)),
        lp(c1) if c1 > 0 else 0.0,
        lp(c10) if c10 > 0 else 0.0,
        lp(c1h) if c1h > 0 else 0.0,
        lp(c24) if c24 > 0 else 0.0,
        lp(s24) if s24 > 0 else 0.0,
        g("small_10m", 0.0),
        lp(km) if km > 0 else 0.0,
        lp(kmh) if kmh > 0 else 0.0,
        g("new_country", 0.0),
        g("new_device", 0.0),
        g("hour_share", 0.0),
        lp(hist) if hist > 0 else 0.0,
        g("hst_pct", 0.0),
        g("merchant_risk_1d", 0.0),
        g("merchant_risk_7d", 0.0),
        g("merchant_risk_30d", 0.0),
        lp(f7) if f7 > 0 else 0.0,
        lp(f30) if f30 > 0 else 0.0,
        risk,
        *_rule_inputs(reasons),
        *_spend_inputs(f, usd),
    )


def _spend_inputs(f: dict[str, float], usd: float) -> tuple[float, ...]:
    """The user's 7/30-day counts and mean amounts (the handbook's customer windows) and
    the amount against each mean, as log ratios (trees split on one input at a time, so
    a ratio is one split where two raw amounts would take many), and the amount's rarity
    in recent traffic."""
    g, lp = f.get, math.log1p
    c7, a7, c30, a30 = (
        g("cnt_7d", 0.0),
        g("avg_usd_7d", 0.0),
        g("cnt_30d", 0.0),
        g("avg_usd_30d", 0.0),
    )
    lu = lp(usd) if usd > 0 else 0.0
    la7, la30 = (lp(a7) if a7 > 0 else 0.0), (lp(a30) if a30 > 0 else 0.0)
    rarity = g("amount_rarity", 1.0)
    return (
        lp(c7) if c7 > 0 else 0.0,
        la7,
        lp(c30) if c30 > 0 else 0.0,
        la30,
        lu - la7 if a7 > 0 else 0.0,
        lu - la30 if a30 > 0 else 0.0,
        -math.log10(rarity) if rarity > 0 else 6.0,
    )


def _rule_inputs(reasons: tuple[Reason, ...]) -> list[float]:
    if not reasons:
        return [0.0] * len(RULE_INPUTS)
    got = {r.code: r.contribution for r in reasons}
    return [got.get(code, 0.0) for code in RULE_INPUTS]


MODEL_TAG = "+lr-v3"
"""Appended to ``model_version`` on every row the learner scores; bump it whenever
:data:`LEARNER_FEATURES` changes (v2: the rule inputs; v3: the 7/30-day spend windows
and the amount's rarity)."""


def current_model(model: Any) -> FastLogReg:
    """The learner's model in the current form.  Snapshots of older versions hold a River
    pipeline (converted: same arithmetic) or another feature list (a fresh model: its
    weights mean nothing for these inputs; logged, the model relearns from new labels)."""
    n = len(LEARNER_FEATURES)
    if isinstance(model, FastLogReg):
        if len(model.weights) == n:
            return model
    elif set(model.steps["LogisticRegression"].weights) == set(LEARNER_FEATURES):
        return FastLogReg.from_river(model, LEARNER_FEATURES, LEARNING_RATE)
    log.warning("supervised model restored with other inputs than %s: starting afresh", MODEL_TAG)
    return FastLogReg(n, LEARNING_RATE)


def river_model() -> Any:
    """The reference: what :class:`~dataflows.fastlr.FastLogReg` reproduces."""
    return compose.Pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(LEARNING_RATE)),
    )


GBM_TAG = "+gbm-g{}"
"""Appended after :data:`MODEL_TAG` on rows scored with a fitted booster: its generation
(the number of fits so far in this learner's life)."""
COMBINE = "gbm"
"""How the two models' probabilities combine once a booster is fitted: ``gbm`` (the
booster's alone; the online model scores until the first fit) or ``mean`` (of both).
Chosen on the validation weeks of :data:`~dataflows.detection.gbm.PARAMS`: booster alone
0.879 / 0.665 / 0.286, mean 0.872 / 0.657 / 0.286, 0.3 online + 0.7 booster 0.875 /
0.665 / 0.286, mean of logits 0.872 / 0.659 / 0.284."""

Step = tuple[float, Any, int, tuple[float, ...]]
"""A scored transaction before the booster's batch call: (online model's probability,
booster in force or None, its generation, inputs)."""


@dataclass(slots=True)
class DelayedLearner:
    """The supervised models and the examples still waiting for their delay.

    Every ``retrain_ms`` of event time (0 = never) a gradient-boosted model is refitted
    from the labelled history (:mod:`dataflows.detection.gbm`) and swapped in.  The fit
    runs synchronously inside the step, at the first event past each boundary: the
    models in force at every event depend on the stream only, so ``fraud eval`` and a
    restore from a snapshot reproduce them exactly.  The flow pauses for the fit (1–4 s
    on the handbook's history).  With ``background`` (``FRAUD_LEARNER_FIT_BACKGROUND``,
    on in production) the dataset is taken at the boundary and fitted in a thread while
    the flow goes on with the booster in force; the new generation is swapped in at the
    first batch after the fit ends.  Which events it scores then depends on wall-clock
    time, so replays are not bitwise (a snapshot taken mid-fit refits after a restore)."""

    delay_ms: float
    model: Any = field(default_factory=lambda: FastLogReg(len(LEARNER_FEATURES), LEARNING_RATE))
    pending: list[tuple[float, str, tuple[float, ...]]] = field(default_factory=list)
    frauds: dict[str, float] = field(default_factory=dict)  # txn_id -> event time
    learned: int = 0
    learned_frauds: int = 0
    now_ms: float = -math.inf
    retrain_ms: float = DAY_MS
    history: LabelledHistory | None = field(default_factory=LabelledHistory)
    gbm: Any = None
    generation: int = 0
    next_fit_ms: float = -math.inf
    background: bool = False
    fit_due: bool = False
    """A background fit was started and has not been swapped in (refitted on restore)."""

    def label(self, txn_id: str, ts_ms: float) -> None:
        """A confirmed fraud; used when its transaction's delay has passed."""
        if txn_id:
            self.frauds[txn_id] = ts_ms

    def score(self, ts_ms: float, txn_id: str, x: tuple[float, ...]) -> float:
        """Fraud probability of ``x`` (0 until :data:`MIN_EXAMPLES`), then queue it."""
        return finish([self.step(ts_ms, txn_id, x)])[0][0]

    def step(self, ts_ms: float, txn_id: str, x: tuple[float, ...]) -> Step:
        """The online model's probability of ``x`` and the booster in force, then queue it.

        Stream time advances to ``ts_ms`` first, so every example whose delay has passed
        by now is learned (and a refit due by now is made) before scoring, and none other.
        The booster's probability is computed by :func:`finish`, once per batch."""
        if self.fit_due:
            self.adopt()
        self.advance(ts_ms)
        p = 0.0
        gbm = self.gbm
        # Once the booster scores alone, the online model only learns (it is the fallback).
        warm = self.learned >= MIN_EXAMPLES and self.learned_frauds
        if warm and (gbm is None or COMBINE != "gbm"):
            p = self.model.predict_proba(x)
        heapq.heappush(self.pending, (ts_ms, txn_id, x))
        return p, gbm, self.generation, x

    def advance(self, ts_ms: float) -> None:
        """Learn every pending example with event time <= stream time - delay; refit the
        booster if stream time has passed a retrain boundary."""
        if ts_ms > self.now_ms:
            self.now_ms = ts_ms
        cutoff = self.now_ms - self.delay_ms
        pending, frauds, learn = self.pending, self.frauds, self.model.learn
        hist = self.history if self.retrain_ms > 0 else None
        while pending and pending[0][0] <= cutoff:
            t, txn_id, x = heapq.heappop(pending)
            y = frauds.pop(txn_id, None) is not None
            self.learned_frauds += y
            learn(x, y)
            self.learned += 1
            if hist is not None:
                hist.add(t, x, y)
        if len(frauds) > 1000 and len(frauds) > len(pending):
            # Labels whose transaction never came here (or came before the label): drop
            # those older than anything still pending.
            oldest = pending[0][0] if pending else cutoff
            for k in [k for k, t in frauds.items() if t < oldest]:
                del frauds[k]
        if hist is not None and self.now_ms >= self.next_fit_ms:
            self.refit()

    def refit(self) -> None:
        """Fit a new booster generation on the history (once :data:`MIN_EXAMPLES` are
        learned and it holds :data:`~dataflows.detection.gbm.MIN_FRAUDS`) and set the next
        boundary."""
        assert self.history is not None
        r = self.retrain_ms
        self.next_fit_ms = (math.floor(self.now_ms / r) + 1) * r
        if self.learned < MIN_EXAMPLES or self.history.n_frauds < GBM_MIN_FRAUDS:
            return
        if self.background:
            if self._in_flight() is None:  # one fit at a time: a boundary passed mid-fit waits
                self._submit()
            return
        self._swap(fit_gbm(self.history, len(LEARNER_FEATURES)))

    def adopt(self) -> None:
        """Swap in a background fit that has ended (a restored learner whose fit was in
        flight at its snapshot starts it again)."""
        fut = self._in_flight()
        if fut is None:
            if self.history is not None and self.background:
                self._submit()
            else:
                self.fit_due = False
            return
        if not fut.done():
            return
        del _FITS[id(self)]
        self.fit_due = False
        try:
            self._swap(fut.result())
        except Exception:  # the booster in force stays; the next boundary tries again
            log.exception("background booster fit failed")

    def _in_flight(self) -> Future[Booster] | None:
        got = _FITS.get(id(self))
        return got[1] if got is not None and got[0] is self else None

    def _submit(self) -> None:
        assert self.history is not None
        data = self.history.dataset(len(LEARNER_FEATURES))  # a copy: the history goes on
        _FITS[id(self)] = (self, fit_pool().submit(fit_arrays, *data))
        self.fit_due = True

    def _swap(self, booster: Booster) -> None:
        self.gbm = booster
        self.generation += 1
        log.info(
            "booster g%d fitted on %d examples (%d frauds) in %.2f s",
            self.generation,
            booster.rows,
            booster.frauds,
            booster.fit_seconds,
        )


_FITS: dict[int, tuple[DelayedLearner, Future[Booster]]] = {}
"""Background fits in flight, by learner: futures are not state, never pickled (the
learner is held too, so its ``id`` cannot be reused by another while its fit runs)."""
_POOL: list[ThreadPoolExecutor] = []


def fit_pool() -> ThreadPoolExecutor:
    """One thread per process fits boosters (a fit uses one core: ``THREADS``)."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(1, thread_name_prefix="booster-fit"))
    return _POOL[0]


def finish(steps: list[Step]) -> list[tuple[float, int]]:
    """(probability, booster generation or 0) of each step: the booster scores its
    rows in one call per booster in force during the batch."""
    out = [(p, 0) for p, _, _, _ in steps]
    groups: dict[int, list[int]] = {}
    for i, (_, gbm, _, _) in enumerate(steps):
        if gbm is not None:
            groups.setdefault(id(gbm), []).append(i)
    for idx in groups.values():
        gbm, gen = steps[idx[0]][1], steps[idx[0]][2]
        probs = gbm.predict([steps[i][3] for i in idx])
        for i, q in zip(idx, probs, strict=True):
            p = steps[i][0]
            out[i] = (q if COMBINE == "gbm" else (p + q) / 2.0, gen)
    return out


def upgrade(learner: DelayedLearner, s: Settings) -> DelayedLearner:
    """The learner in the current form: the online model converted if needed
    (:func:`current_model`), booster fields added to snapshots from before them, and
    the retrain period of the settings in force."""
    learner.model = current_model(learner.model)
    history = getattr(learner, "history", None)
    if history is not None and history.width() not in (None, len(LEARNER_FEATURES)):
        # examples kept with other inputs: the booster starts over from new examples
        learner.history, learner.gbm = None, None
    for name, default in (
        ("history", None),
        ("gbm", None),
        ("generation", 0),
        ("next_fit_ms", -math.inf),
        ("fit_due", False),
    ):
        if not hasattr(learner, name):
            setattr(learner, name, default)
    learner.retrain_ms = s.learner_retrain_days * DAY_MS
    learner.background = s.learner_fit_background
    if learner.retrain_ms > 0 and learner.history is None:
        learner.history = LabelledHistory()  # fills from the next examples learned
    return learner


def learned_reason(p: float, s: Settings) -> Reason | None:
    """The supervised model's contribution: its fraud probability, weighted."""
    c = round(s.learner_weight * p, 4)
    if c <= 0.0:
        return None
    return Reason(
        "learned_pattern", f"model trained on confirmed labels gives {p:.0%} fraud probability", c
    )


def on_learner_events(
    learner: DelayedLearner, items: list[Any], s: Settings, policy: ActivePolicy | None = None
) -> list[ScoredTransaction]:
    """Take labels, score and queue transactions, in arrival order."""
    from dataflows.detection.merchants import MerchantLabel, rescore

    upgrade(learner, s)
    out: list[Any] = []
    steps: list[Step] = []
    where: list[int] = []
    for x in items:
        if isinstance(x, MerchantLabel):
            learner.label(x.txn_id, x.txn_ts_ms)
            continue
        if type(x) is Replayed:  # a duplicate: answered by its first, learned once
            out.append(x)
            continue
        t = x.txn
        x_in = learner_input(x.features, x.risk_score, x.reasons)
        steps.append(learner.step(t.ts.timestamp() * 1000.0, t.txn_id, x_in))
        where.append(len(out))
        out.append(x)
    for i, (p, gen) in zip(where, finish(steps), strict=True):
        extra = learned_reason(p, s)
        tag = MODEL_TAG + GBM_TAG.format(gen) if gen else MODEL_TAG
        out[i] = rescore(out[i], extra, {"learned_p": round(p, 6)}, s, tag, policy)
    return out
