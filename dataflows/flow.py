"""The detection dataflow, built by :func:`build_flow` from injected source and sinks.

::

    input ─▶ parse+validate ─┬─ bad ─▶ dlq_sink (DeadLetter: original bytes + reason)
                             └─ ok ─▶ key by shard = crc32(user_id) % shards
                                      ─▶ score (stateful_batch: per-user state + HST)
                                      ─┬─▶ decision_sink (Decision v1, every event)
                                       ├─▶ row_sink (every ScoredTransaction)
                                       └─▶ alerts (review/block) ─▶ alert_sink (Alert v1)

A duplicate txn_id of a user is answered with its first decision (a ``Replayed``, see
:mod:`dataflows.detection.idempotency`): it reaches the decision sink only.

With a ``labels`` source (the feedback topic), analysts' verdicts also go to the score
step, keyed like their user's transactions, and mark or clear the reviewed card
(:mod:`dataflows.detection.verdicts`); they produce no row.  Merchant risk and the
learner then finish each score either in steps keyed by merchant and by one learner key
(``feedback_topology="funnel"``), or on the scoring worker itself from published totals
and models (``"local"``, :mod:`dataflows.detection.feedback`)::

    score ─┬─▶ rows (finished)                     labels ─┐
           ├─▶ merchant counts by day ─▶ aggregators ◀─────┤
           └─▶ examples by day ─▶ trainer                  └─▶ every shard
                     aggregators, trainer ─▶ view (and feedback-state topic) ─▶ score

Users are grouped into ``shards`` keyed by a stable crc32 (Python's ``hash()`` differs
per process, which would scatter a user's state across a cluster).  A shard owns its
users' state and one anomaly model, so models spread over workers and the per-epoch
snapshot is one pickle per touched shard instead of a deepcopy per user.

Tests use ``TestingSource``/``TestingSink``; production plugs Kafka and ClickHouse.  A
sink may be wrapped in :class:`Encoded` to map domain objects to what it accepts.
"""

from __future__ import annotations

import functools
import pickle
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from dataflows.connectors import metrics
from dataflows.connectors.encoded import Encoded, place
from dataflows.connectors.kafka import (
    alert_message,
    decision_message,
    dlq_encoder,
    kafka_sink,
    kafka_source,
)
from dataflows.connectors.local import CallbackSink, HistorySource, StoppableSource
from dataflows.connectors.routing import Alignment
from dataflows.connectors.rules_feed import policy_feed
from dataflows.detection.feedback import (
    FeedbackSummary,
    FeedbackView,
    MerchantDay,
    MerchantTotals,
    ShardFeedback,
    Trainer,
    finish_scores,
    label_shard,
    merchant_key,
    on_merchant_days,
    on_trainer,
    quiet_grace,
    record,
    totals_waiting,
    trainer_waiting,
)
from dataflows.detection.idempotency import FinalDecisions, on_final
from dataflows.detection.learner import DelayedLearner, on_learner_events
from dataflows.detection.merchants import MerchantLabel, MerchantShard, on_events
from dataflows.detection.policy import ActivePolicy, default_active
from dataflows.detection.scoring import Shard, new_shard, score_batch
from dataflows.detection.verdicts import CardVerdict, apply_verdict, parse_feedback
from schemas.scored import Alert, DeadLetter, Decision, Replayed, ScoredTransaction
from schemas.settings import Settings
from schemas.transaction import DecodeError, Label, Transaction, decode_event
from schemas.units import DAY_MS, utc_now

__all__ = [
    "Encoded",
    "Parsed",
    "StepLogic",
    "build_flow",
    "history_flow",
    "kafka_flow",
    "parse_message",
    "row_part",
    "shard_of",
    "stateful_step",
    "tune_gc",
    "utc_now",
    "verdict_key_of",
]

S = TypeVar("S")
WAKE = timedelta(milliseconds=200)
"""How soon a step holding rows for the feedback loop looks at them again."""
Parsed = tuple[Transaction, Label | None, datetime]
"""A decoded event, its optional label and when it entered the system (ingested_at)."""


GC_THRESHOLDS = (10_000, 20, 20)
"""Cyclic-GC thresholds for a worker process (CPython's default is 700, 10, 10).

Every event allocates a dozen short-lived container objects, so at the default the
young-generation collector runs every ~60 events and the older ones keep rescanning
the users' state: ``fraud bench``'s flow leg ran 19 % faster with these (24.5k -> 29k
events/s, numpy engine); disabling GC entirely gained nothing more.  The flow creates
no reference cycles per event, so memory is unchanged."""


def tune_gc() -> None:
    """Apply :data:`GC_THRESHOLDS` and move everything alive so far (imports, settings)
    out of the collector's sight.  Called by every entry point that runs a flow."""
    import gc

    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def parse_message(
    item: Any, max_bytes: int, now: Callable[[], datetime], max_lead_s: float = 0.0
) -> Parsed | DeadLetter:
    """Decode one input item (raw bytes/str, or a Kafka message with key/value/offset)
    into a parsed event or a dead letter with a reason code: the guarded boundary.

    Nothing escapes it: a failure of the decoder itself (a bug, a library surprise on
    some byte sequence) becomes an ``internal_error`` dead letter carrying the original
    bytes, because one exception here would stop the flow and, with recovery on, stop it
    again on every restart at the same offset.
    """
    try:
        return _parse(item, max_bytes, now, max_lead_s)
    except Exception as e:
        topic, part, offset = _origin(item)
        err = DecodeError("internal_error", f"decoder failed: {_summary(e)}")
        value = getattr(item, "value", item)
        key = getattr(item, "key", None)
        return DeadLetter.of(err, _as_bytes(key), _as_bytes(value), topic, part, offset, now())


def _parse(
    item: Any, max_bytes: int, now: Callable[[], datetime], max_lead_s: float
) -> Parsed | DeadLetter:
    ingested: datetime | None = None
    if isinstance(item, bytes | str) or item is None:
        key, value = None, item
    elif hasattr(item, "err"):  # a consumer error on one message (bytewax KafkaError)
        m = item.msg
        err = DecodeError("consumer_error", f"Kafka consumer error: {item.err}")
        return DeadLetter.of(err, m.key, m.value, *_origin(m), now())
    else:
        key, value = item.key, item.value
        ingested = _broker_time(getattr(item, "timestamp", None))
    res = decode_event(value, max_bytes)
    if isinstance(res, DecodeError):
        return DeadLetter.of(res, _as_bytes(key), _as_bytes(value), *_origin(item), now())
    if max_lead_s > 0 and ingested is not None:
        lead = (res[0].ts - ingested).total_seconds()
        if lead > max_lead_s:
            err = DecodeError(
                "future_timestamp",
                f"ts is {lead:.0f} s after the message's timestamp (at most {max_lead_s:g})",
                "ts",
            )
            return DeadLetter.of(err, _as_bytes(key), _as_bytes(value), *_origin(item), now())
    return (res[0], res[1], ingested or now())


def _origin(item: Any) -> tuple[str, int, int]:
    """(topic, partition, offset) of a Kafka message; ("", -1, -1) for anything else."""
    topic = getattr(item, "topic", None)
    part = getattr(item, "partition", None)
    offset = getattr(item, "offset", None)
    return (
        topic if isinstance(topic, str) else "",
        part if isinstance(part, int) else -1,
        offset if isinstance(offset, int) else -1,
    )


def _as_bytes(v: Any) -> bytes | None:
    """The message bytes as they came; a ``str`` (file input) back to UTF-8, keeping lone
    surrogates (``surrogatepass``) so even an undecodable line is kept, not lost."""
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogatepass")
    return repr(v).encode("utf-8", "backslashreplace")


def _summary(e: BaseException) -> str:
    """``Type: message``, bounded: dead-letter headers are not a place for a novel."""
    return f"{type(e).__name__}: {e}"[:500]


def _broker_time(ts: tuple[int, int] | None) -> datetime | None:
    """The Kafka message timestamp (producer create time or broker log-append time)."""
    if not ts or ts[0] == 0 or ts[1] <= 0:  # 0 = TIMESTAMP_NOT_AVAILABLE
        return None
    return datetime.fromtimestamp(ts[1] / 1000, UTC)


def shard_of(user_id: str, shards: int) -> str:
    """Stable shard key of a user (same in every process and run)."""
    return str(zlib.crc32(user_id.encode()) % shards)


class StepLogic(StatefulBatchLogic[Any, Any, bytes | None], Generic[S]):
    """The one stateful logic of every step: ``fn(state, batch)`` over a picklable state.

    Scoring, merchant risk and the learner differ only in their state and their batch
    function, so they share this: state is restored by unpickling the resume snapshot
    (or built fresh by ``fresh``) and snapshotted as one pickle, only when recovery is on
    (bytewax takes snapshots every epoch even when nothing reads them; a pickle is ~10x
    cheaper than the deepcopy it would do otherwise).
    """

    def __init__(
        self,
        state: S,
        fn: Callable[[S, list[Any]], list[Any]],
        snapshots: bool,
        eof: Callable[[S], list[Any]] | None = None,
        wake: Callable[[S], bool] | None = None,
    ) -> None:
        self.state, self.fn, self.snapshots, self.eof = state, fn, snapshots, eof
        self.wake = wake

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        return self.fn(self.state, values), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        out = self.eof(self.state) if self.eof is not None else []
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """While ``wake(state)`` holds, the state is looked at again soon even when no
        item comes (the ``local`` loop: rows held for their day's totals and models, a
        day a quiet shard holds back, a background fit)."""
        if self.wake is not None and self.wake(self.state):
            return datetime.now(UTC) + WAKE
        return None

    def on_notify(self) -> tuple[list[Any], bool]:
        return self.fn(self.state, []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        if not self.snapshots:
            return None
        metrics.SNAPSHOT_TIME.set_to_current_time()
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def stateful_step(
    step_id: str,
    stream: Stream[tuple[str, Any]],
    fresh: Callable[[], S],
    fn: Callable[[S, list[Any]], list[Any]],
    snapshots: bool,
    eof: Callable[[S], list[Any]] | None = None,
    wake: Callable[[S], bool] | None = None,
) -> Stream[Any]:
    """A keyed ``stateful_batch`` running :class:`StepLogic`, with its key removed
    (``eof(state)``, if given, says what to emit once the input has ended; while
    ``wake(state)`` holds, ``fn(state, [])`` runs again soon even when no item comes)."""

    def builder(resume: bytes | None) -> StepLogic[S]:
        state = pickle.loads(resume) if resume is not None else fresh()
        return StepLogic(state, fn, snapshots, eof, wake)

    return op.key_rm(f"{step_id}_unkey", op.stateful_batch(step_id, stream, builder))


def _emit(step_id: str, stream: Stream[Any], sinks: Any) -> None:
    """Output ``stream`` to one sink or each of several (plain or :class:`Encoded`)."""
    for i, sink in enumerate(sinks if isinstance(sinks, Sequence) else [sinks]):
        step = step_id if i == 0 else f"{step_id}_{i}"
        out = stream
        if isinstance(sink, Encoded):
            out = op.map(f"{step}_encode", stream, sink.encode)
            sink = sink.sink
        op.output(step, out, sink)


def _dead(step_id: str, stream: Stream[DeadLetter], sinks: Any) -> None:
    """Dead letters to their sinks, counted by reason code."""
    _emit(step_id, op.inspect(f"{step_id}_count", stream, metrics.count_dead_letter), sinks)


RowSinks = Sink[Any] | Encoded[ScoredTransaction] | Sequence[Sink[Any] | Encoded[Any]]
DlqSinks = Sink[Any] | Encoded[DeadLetter] | Sequence[Sink[Any] | Encoded[Any]]


def build_flow(
    s: Settings,
    source: Source[Any],
    alert_sink: Sink[Any] | Encoded[Alert],
    row_sink: RowSinks,
    dlq_sink: DlqSinks,
    *,
    clock: Callable[[], datetime] = utc_now,
    flow_id: str = "fraud",
    labels: Source[Any] | None = None,
    decision_sink: Sink[Any] | Encoded[Decision] | None = None,
    align: Alignment | None = None,
    policy: Callable[[], ActivePolicy] | None = None,
    feedback: tuple[FeedbackView, Sink[Any]] | None = None,
) -> Dataflow:
    """The detection dataflow. ``clock`` stamps processed_at/created_at (inject in tests).

    ``policy`` returns the rule policy in force; it is called once per batch by every
    scoring step, so a new policy published while the flow runs applies from the next
    batch on (see :mod:`dataflows.detection.policy`).  Without it the built-in policy
    for ``s`` runs.

    ``row_sink`` may be several sinks (e.g. ClickHouse plus a progress counter); each
    receives every scored transaction.  With a ``labels`` source (confirmed frauds, see
    :mod:`dataflows.detection.merchants`) a merchant-keyed step adds delayed merchant risk
    and the learner to the score; without one the topology is unchanged.

    With ``feedback_topology="local"`` the feedback loop finishes every score on its own
    worker (:mod:`dataflows.detection.feedback`): ``feedback`` is the view the score steps
    read and the sink that publishes into it (between processes, see
    :mod:`dataflows.connectors.feedback_state`); by default a view of this flow only.

    ``align`` keys each event's state by the source partition it was read from, salted so
    the key lands on the worker that read it: nothing crosses workers between reading
    and scoring.  Without it users are grouped in ``shards`` by crc32 (any source).
    """
    flow = Dataflow(flow_id)
    raw = op.input("input", flow, source)
    max_bytes, max_lead = s.max_message_bytes, s.max_event_lead_s

    shards = s.shards

    def parse(items: list[Any]) -> list[tuple[str, Parsed] | DeadLetter]:
        """Parse a batch and key each event by its state key, in one pass."""
        metrics.count_read(items)
        out: list[tuple[str, Parsed] | DeadLetter] = []
        for item in items:
            p = parse_message(item, max_bytes, clock, max_lead)
            if isinstance(p, DeadLetter):
                out.append(p)
                continue
            key = None
            if align is not None:
                key = align.key_of(getattr(item, "topic", ""), getattr(item, "partition", -1))
            out.append((key or shard_of(p[0].user_id, shards), p))
        return out

    parsed = op.flat_map_batch("parse", raw, parse)
    split = op.branch("valid", parsed, lambda x: isinstance(x, tuple))
    _dead("dlq", split.falses, dlq_sink)
    keyed = split.trues
    snapshots = s.recovery_dir is not None

    in_force = policy if policy is not None else functools.partial(default_active, s)
    label_stream = None
    if labels is not None:
        label_stream, verdicts = _feedback_input(flow, labels, clock, dlq_sink)

        def verdict_key(v: CardVerdict) -> str:
            """The state key of the user's transactions (see :func:`verdict_key_of`)."""
            return verdict_key_of(v.user_id, shards, align)

        by_user = op.key_on("verdict_key", verdicts, verdict_key)
        keyed = op.merge("score_in", keyed, by_user)
    hold_ms = s.compromised_card_hours * 3_600_000.0

    local = label_stream is not None and s.feedback_topology == "local"
    if local:
        assert label_stream is not None
        view, publish = feedback or _own_view()
        view.aggregators = shards
        keys = align.keys() if align is not None else [str(i) for i in range(shards)]
        # Labels are few: every shard gets each one, to label its own pending examples.
        everywhere = op.flat_map(
            "labels_everywhere", label_stream, lambda x: [(k, x) for k in keys]
        )
        keyed = op.merge("score_labels_in", keyed, everywhere)

    def score(shard: Shard, batch: list[Any]) -> list[Any]:
        if local:
            return _score_local(shard, batch, s, clock, in_force, view, hold_ms)
        if labels is not None and any(type(x) is CardVerdict for x in batch):
            return _with_verdicts(
                shard, batch, hold_ms, lambda b: score_batch(shard, b, s, clock(), in_force())
            )
        return score_batch(shard, batch, s, clock(), in_force())

    def flush(shard: Shard) -> list[Any]:
        """Rows still waiting for their day's models when the input ends."""
        if not local or getattr(shard, "fb", None) is None:
            return []
        return _score_local(shard, [], s, clock, in_force, view, hold_ms, eof=True)

    outcome = stateful_step(
        "score", keyed, lambda: new_shard(s), score, snapshots, flush, _holding if local else None
    )
    if local:
        summaries = op.branch("fb_summary", outcome, lambda x: isinstance(x, FeedbackSummary))
        outcome = summaries.falses
        _local_feedback(s, summaries.trues, label_stream, len(keys), publish, snapshots)
    # An event whose scoring failed comes back as a dead letter (see score_batch).
    ok = op.branch("scored_ok", outcome, lambda x: isinstance(x, ScoredTransaction))
    _dead("score_dlq", ok.falses, dlq_sink)
    scored: Stream[ScoredTransaction] = ok.trues
    if label_stream is not None and not local:
        scored = _feedback_steps(flow, s, scored, label_stream, in_force)
        keyed_final = op.key_on("final_shard", scored, lambda x: shard_of(x.txn.user_id, shards))
        scored = stateful_step("final", keyed_final, FinalDecisions, on_final, snapshots)
    if decision_sink is not None:
        _emit("decisions_out", op.map("decisions", scored, Decision.from_scored), decision_sink)
    scored = op.filter("first_seen", scored, lambda x: type(x) is not Replayed)
    scored = op.flat_map_batch("count_scored", scored, metrics.count_scored)
    if align is not None:
        row_sink = place(row_sink, row_part(align), align.size)
    _emit("rows", scored, row_sink)
    alerts = op.filter_map("alerts", scored, lambda x: Alert.from_scored(x) if x.flagged else None)
    _emit("alerts_out", alerts, alert_sink)
    return flow


def history_flow(
    s: Settings,
    root: Path,
    workers: int,
    row_sink: RowSinks,
    dlq_sink: DlqSinks,
    progress: Path | None = None,
) -> Dataflow:
    """``fraud backfill``: a stored history (:class:`HistorySource`, ``partitions``
    partitions by user, each in event-time order, counting into ``progress``) scored by
    :func:`build_flow` into ``row_sink``.  With aligned partitions each user's rows are
    read, scored and stored on one worker, on any number of processes; alerts live in
    the rows (flagged)."""
    source = HistorySource(root, s.partitions, progress=progress)
    align = Alignment(source.list_parts(), workers) if s.align_partitions else None
    return build_flow(
        s,
        source,
        CallbackSink(lambda _: None),
        row_sink,
        dlq_sink,
        flow_id="fraud_backfill",
        align=align,
    )


def row_part(align: Alignment) -> Callable[[str], int]:
    """The sorted index of the source partition producers put ``user_id``'s events in
    (keyed by user id, as every producer here does): the row sink partition on the
    worker that reads and scores them (see :meth:`ClickHouseSink.placed`)."""

    def part_of(user_id: str) -> int:
        i = align.index_of_user(user_id)
        return i if i is not None else zlib.adler32(user_id.encode())

    return part_of


def verdict_key_of(user_id: str, shards: int, align: Alignment | None) -> str:
    """The state key ``user_id``'s transactions are scored under: its crc32 shard, or
    aligned, the key of the partition producers put the user's messages in."""
    key = align.key_of_user(user_id) if align is not None else None
    return key or shard_of(user_id, shards)


def _with_verdicts(
    shard: Shard,
    batch: list[Any],
    hold_ms: float,
    score: Callable[[list[Any]], list[ScoredTransaction | DeadLetter]],
) -> list[ScoredTransaction | DeadLetter]:
    """Score ``batch``'s transactions and apply its verdicts, in arrival order (runs of
    transactions are scored together; a verdict gives no output, only a count, and a
    verdict that fails is counted ``failed`` and skipped, like a scoring fault)."""
    out: list[ScoredTransaction | DeadLetter] = []
    run: list[Any] = []
    for x in batch:
        if type(x) is not CardVerdict:
            run.append(x)
            continue
        if run:
            out += score(run)
            run = []
        try:
            outcome = apply_verdict(shard.users, x, hold_ms)
        except Exception:  # a bug must not stop the flow (and again on every restart)
            outcome = "failed"
        metrics.CARD_VERDICTS.labels(outcome).inc()
    if run:
        out += score(run)
    return out


def _holding(shard: Shard) -> bool:
    """Rows held for the feedback loop may wait at most ``feedback_wait_s``: look again."""
    fb = getattr(shard, "fb", None)
    return fb is not None and bool(fb.held)


def _score_local(
    shard: Shard,
    batch: list[Any],
    s: Settings,
    clock: Callable[[], datetime],
    in_force: Callable[[], ActivePolicy],
    view: FeedbackView,
    hold_ms: float,
    eof: bool = False,
) -> list[Any]:
    """Score a shard's batch and finish each score on this worker (``local`` feedback):
    labels go to the shard's pending examples first, verdicts in arrival order."""
    fb = getattr(shard, "fb", None)
    if fb is None:
        fb = shard.fb = ShardFeedback()
    rest = []
    for x in batch:
        if type(x) is MerchantLabel:
            label_shard(fb, x)
        else:
            rest.append(x)
    policy = in_force()
    if any(type(x) is CardVerdict for x in rest):
        rows = _with_verdicts(
            shard, rest, hold_ms, lambda b: score_batch(shard, b, s, clock(), policy)
        )
    else:
        rows = score_batch(shard, rest, s, clock(), policy) if rest else []
    horizon_ms = DAY_MS + s.lateness_s * 1000.0
    users = shard.users

    def remember(row: ScoredTransaction) -> None:
        user = users.get(row.txn.user_id)
        if user is not None:
            record(user, row, horizon_ms)

    return finish_scores(fb, rows, view, s, policy, remember, eof)


def _local_feedback(
    s: Settings,
    summaries: Stream[Any],
    labels: Stream[MerchantLabel],
    n_keys: int,
    publish: Sink[Any],
    snapshots: bool,
) -> None:
    """The slow half of the ``local`` loop: merchant counts and labels to merchant-keyed
    aggregators, day examples to one trainer, what they publish to ``publish``."""
    shards = s.shards
    kind = op.branch("fb_kind", summaries, lambda x: type(x) is MerchantDay)
    days = op.key_on("totals_key", kind.trues, lambda x: x.agg)
    by_merchant = op.key_on("labels_key", labels, lambda x: merchant_key(x.merchant_id, shards))
    both = op.merge("totals_in", days, by_merchant)

    def totals(agg: MerchantTotals, batch: list[Any]) -> list[Any]:
        return on_merchant_days(agg, batch, s)

    def fresh_totals() -> MerchantTotals:
        return MerchantTotals(shards=n_keys)

    published = stateful_step(
        "merchant_totals", both, fresh_totals, totals, snapshots, wake=totals_waiting
    )
    if s.learner_weight > 0:
        delay_ms, retrain_ms = s.label_delay_days * DAY_MS, s.learner_retrain_days * DAY_MS

        def fresh() -> Trainer:
            return Trainer(n_keys, delay_ms, retrain_ms)

        examples = op.key_on("trainer_key", kind.falses, lambda _: "trainer")
        grace, background = quiet_grace(s), s.learner_fit_background

        def train(trainer: Trainer, batch: list[Any]) -> list[Any]:
            return on_trainer(trainer, batch, grace, background)

        models = stateful_step("trainer", examples, fresh, train, snapshots, wake=trainer_waiting)
        published = op.merge("publish_in", published, models)
    op.output("publish", published, publish)


def _own_view() -> tuple[FeedbackView, Sink[Any]]:
    view = FeedbackView()
    return view, CallbackSink(view.apply)


def _feedback_input(
    flow: Dataflow, labels: Source[Any], clock: Callable[[], datetime], dlq_sink: DlqSinks
) -> tuple[Stream[MerchantLabel], Stream[CardVerdict]]:
    """The feedback source decoded once: labels for merchant risk and the learner (as
    before), card verdicts for the score step; malformed messages to the dead letters."""
    raw = op.input("labels", flow, labels)
    decoded = op.flat_map("labels_parse", raw, lambda x: parse_feedback(x, clock))
    valid = op.branch("labels_valid", decoded, lambda x: not isinstance(x, DeadLetter))
    _dead("labels_dlq", valid.falses, dlq_sink)
    kind = op.branch("labels_kind", valid.trues, lambda x: isinstance(x, MerchantLabel))
    return kind.trues, kind.falses


def _feedback_steps(
    flow: Dataflow,
    s: Settings,
    scored: Stream[ScoredTransaction],
    labels: Stream[MerchantLabel],
    in_force: Callable[[], ActivePolicy],
) -> Stream[ScoredTransaction]:
    """Merge confirmed-fraud labels with scored transactions by merchant and rescore;
    then, unless ``learner_weight`` is 0, the supervised learner over the whole stream."""
    both = op.merge("merchant_in", scored, labels)
    shards = s.shards

    def merchant_of(x: Any) -> str:
        mid = x.merchant_id if isinstance(x, MerchantLabel) else x.txn.merchant_id
        return shard_of(mid, shards)

    keyed = op.key_on("merchant_shard", both, merchant_of)
    snapshots = s.recovery_dir is not None

    def merchant_risk(state: MerchantShard, batch: list[Any]) -> list[ScoredTransaction]:
        return on_events(state, batch, s, in_force())

    enriched = stateful_step("merchant", keyed, MerchantShard, merchant_risk, snapshots)
    if s.learner_weight <= 0:
        return enriched
    # One supervised model for the whole stream (see dataflows.detection.learner).
    both = op.merge("learner_in", enriched, labels)
    keyed = op.key_on("learner_key", both, lambda _: "learner")
    delay_ms = s.label_delay_days * DAY_MS
    retrain_ms = s.learner_retrain_days * DAY_MS

    def learn(state: DelayedLearner, batch: list[Any]) -> list[ScoredTransaction]:
        return on_learner_events(state, batch, s, in_force())

    def fresh() -> DelayedLearner:
        return DelayedLearner(delay_ms, retrain_ms=retrain_ms)

    return stateful_step("learner", keyed, fresh, learn, snapshots)


def kafka_flow(
    s: Settings,
    row_sink: RowSinks,
    *,
    tail: bool | None = None,
    clock: Callable[[], datetime] = utc_now,
    stop: Any = None,
    dlq_store: Sink[Any] | Encoded[DeadLetter] | None = None,
    workers: int = 1,
    policy: Callable[[], ActivePolicy] | None = None,
) -> Dataflow:
    """The production flow: ``transactions`` → score → ``fraud-decisions`` /
    ``fraud-alerts`` / DLQ / rows.

    ``policy`` defaults to this process's feed of the rules topic (hot reload, see
    :mod:`dataflows.connectors.rules_feed`), caught up before the flow is built.

    Reads every partition from the recovered position (or the beginning); a consumer
    error on a message becomes a dead letter, not a crash.  With ``stop`` (a
    ``threading.Event``) the inputs end once it is set: the flow flushes and returns.
    ``dlq_store`` also keeps every dead letter whole (ClickHouse ``dead_letters``).
    """
    tail = s.kafka_tail if tail is None else tail
    source = kafka_source(s, s.topic_transactions, tail)
    align = Alignment(source.list_parts(), workers) if s.align_partitions else None
    labels = kafka_source(s, s.topic_feedback, tail) if s.feedback_input else None
    feedback = None
    if labels is not None and s.feedback_topology == "local":
        from dataflows.connectors.feedback_state import FeedbackFollower

        follower = FeedbackFollower(s, FeedbackView()).start()
        feedback = (follower.view, follower.publisher())
    if stop is not None:
        source = StoppableSource(source, stop)
        labels = None if labels is None else StoppableSource(labels, stop)
    return build_flow(
        s,
        source,
        Encoded(kafka_sink(s, s.topic_alerts), alert_message),
        row_sink,
        [Encoded(kafka_sink(s, s.topic_dlq), dlq_encoder(s))]
        + ([dlq_store] if dlq_store is not None else []),
        clock=clock,
        flow_id="fraud_kafka",
        labels=labels,
        align=align,
        decision_sink=Encoded(kafka_sink(s, s.topic_decisions), decision_message),
        policy=policy if policy is not None else policy_feed(s).current_for(s),
        feedback=feedback,
    )
