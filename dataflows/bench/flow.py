"""``fraud bench``: reproducible throughput, latency, memory and cost-breakdown figures.

Every leg runs in the same invocation so ratios hold on a noisy machine; the result is
printed as Markdown and written to ``docs/benchmarks.md`` with the machine facts and the
exact command.  ``--quick`` shrinks every leg (CI smoke test: the table is produced; no
speed is asserted anywhere).

Legs: (1) River HST alone at the configured size; (2) ``build_flow`` from memory to null
sinks with 1 worker, 2 worker threads and 2 processes (with items pickled per event), on 1
and 2 processes with the feedback loop on, and the same detection in a plain loop
(:mod:`dataflows.bench.plain`, the framework's cost);
(3) end to end through the embedded broker and the chDB sink, sustained, on 1 worker and
on 1 and 2 processes over 12 aligned partitions with the feedback loop, the plain
confluent-kafka loop, plus produce->alert latency at a fixed offered load; (4) memory per
tracked user and snapshot size; (5) per-stage cost from a profile.
"""

from __future__ import annotations

import cProfile
import gc
import json
import math
import os
import pickle
import platform
import pstats
import random
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from schemas.settings import Settings

__all__ = ["BenchConfig", "run_bench"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    flow_events: int = 200_000
    e2e_events: int = 500_000
    latency_rate: float = 2000.0
    latency_seconds: float = 20.0
    users_memory: tuple[int, ...] = (100_000, 1_000_000)
    profile_events: int = 30_000
    latency_engines: tuple[str, ...] = ("river", "numpy")
    recovery_events: int = 600_000
    """Long enough for several 10 s snapshots: a short run hid a cost that grew with
    every snapshot (see ``ShardModel.__getstate__``)."""
    scale_events: int = 300_000
    """Events of the scale-out end-to-end legs (1 and 2 processes, and the plain loop)."""
    scale_engines: tuple[str, ...] = ("river", "numpy")
    feedback_events: int = 200_000
    """Events of the from-memory feedback legs: about 3 days of the generator's traffic."""
    feedback_repeats: int = 3

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            10_000,
            10_000,
            500.0,
            3.0,
            (10_000,),
            3_000,
            ("numpy",),
            10_000,
            5_000,
            ("numpy",),
            20_000,
            1,
        )


def _events(n: int, users: int = 20_000, seed: int = 11) -> list[bytes]:
    from generators.stream import event_stream
    from generators.synth import GeneratorConfig

    cfg = GeneratorConfig(seed=seed, users=users, fraud_rate=0.01)
    return [v for _, v in event_stream(cfg, n)]


# --- leg 1: the model alone --------------------------------------------------------


MODEL_BATCH = 64
"""Events per model call for the numpy engine alone: about one shard's share of a
1,000-event source batch over 16 shards."""


def hst_ceiling(s: Settings, n: int) -> float:
    """The shard model (HST + calibration) alone on realistic scaled features.

    River is fed one event at a time (its API); numpy gets :data:`MODEL_BATCH` at once."""
    from dataflows.detection.anomaly import scale_features
    from dataflows.detection.scoring import new_shard
    from dataflows.detection.state import UserState, observe
    from schemas.transaction import decode_event

    xs = []
    users: dict[str, UserState] = {}
    for raw in _events(min(n, 50_000)):
        txn, _ = decode_event(raw, 16_384)  # type: ignore[misc]
        st = users.setdefault(txn.user_id, UserState())
        xs.append(scale_features(observe(st, txn, lateness_ms=3e5, small_usd=5.0)))
    model = new_shard(s).model
    step = 1 if s.hst_engine == "river" else MODEL_BATCH
    batches = [xs[i : i + step] for i in range(0, len(xs), step)]
    t0, done, i = time.perf_counter(), 0, 0
    while done < n:
        done += len(model.score_learn_many(batches[i % len(batches)]))
        i += 1
    return done / (time.perf_counter() - t0)


# --- leg 2: the flow from memory ---------------------------------------------------


def _null_flow(s: Settings, events: list[bytes], parts: int = 1, aligned: bool = False) -> Any:
    """The flow over ``parts`` in-memory partitions; ``aligned`` keys state by partition on
    the worker reading it (one worker per partition here)."""
    from dataflows.connectors.local import CallbackSink, PartitionedSource
    from dataflows.connectors.routing import Alignment
    from dataflows.flow import build_flow

    def null(_: list[Any]) -> None:
        return None

    return build_flow(
        s,
        PartitionedSource(events, parts),
        CallbackSink(null),
        CallbackSink(null),
        CallbackSink(null),
        align=Alignment([str(i) for i in range(parts)], parts) if aligned else None,
    )


def flow_rate(s: Settings, events: list[bytes], workers: int) -> float:
    """Events/s of the flow from memory; with ``s.recovery_dir`` set, recovery is on
    (a fresh recovery DB, snapshots every ``epoch_interval_s``)."""
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.testing import cluster_main, run_main

    kw: dict[str, Any] = {}
    if s.recovery_dir is not None:
        init_db_dir(s.recovery_dir, 1)
        kw = {
            "epoch_interval": timedelta(seconds=s.epoch_interval_s),
            "recovery_config": RecoveryConfig(str(s.recovery_dir)),
        }
    flow = _null_flow(s, events, parts=workers)
    t0 = time.perf_counter()
    if workers == 1:
        run_main(flow, **kw)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers, **kw)
    return len(events) / (time.perf_counter() - t0)


PICKLES_ENV = "FRAUD_BENCH_PICKLES"
"""Set in a bench child process: the file prefix its pickle count is written to."""


def count_pickles() -> list[int]:
    """Count ``pickle.dumps`` calls in this process from now on (``[count]``).

    bytewax 0.21 pickles every item that crosses processes through ``pickle.dumps``,
    twice (once to size it, once to write it), and nothing else when recovery is off:
    a 2-process run counts 0 when no item crosses (pinned by the bench's aligned rows)."""
    counter = [0]
    dumps = pickle.dumps

    def counting(*args: Any, **kw: Any) -> bytes:
        counter[0] += 1
        return dumps(*args, **kw)

    pickle.dumps = counting
    return counter


PROC_SCRIPT = """
import os, sys, time, pickle
counter = None
if os.environ.get("FRAUD_BENCH_PICKLES"):
    from dataflows.bench.flow import count_pickles
    counter = count_pickles()
from bytewax.testing import cluster_main
from dataflows.bench.flow import _null_flow
from dataflows.flow import tune_gc
tune_gc()
from schemas.settings import load_settings
events = pickle.load(open(sys.argv[1], "rb"))
addresses = sys.argv[2].split(",")
proc = int(sys.argv[3])
flow = _null_flow(load_settings(hst_engine=sys.argv[4], shards=int(sys.argv[5])), events,
                  parts=len(addresses), aligned=sys.argv[6] == "1")
cluster_main(flow, addresses, proc)
if counter is not None:
    open(os.environ["FRAUD_BENCH_PICKLES"] + f".{proc}", "w").write(str(counter[0]))
"""


class ClusterFailed(RuntimeError):
    """A bench cluster process exited non-zero."""


def wait_all(ps: list[subprocess.Popen[bytes]], timeout_s: float) -> list[int]:
    """Exit codes of ``ps``; past ``timeout_s`` in all, the ones still running are
    killed and the bench stops (a hung cluster must not hang CI)."""
    deadline = time.monotonic() + timeout_s
    try:
        return [p.wait(max(0.1, deadline - time.monotonic())) for p in ps]
    except subprocess.TimeoutExpired:
        for p in ps:
            if p.poll() is None:
                p.kill()
                p.wait()
        raise RuntimeError(
            f"bench cluster of {len(ps)} processes still running after {timeout_s:.0f} s: killed"
        ) from None


R = TypeVar("R")


def retried(run: Callable[[], R], tries: int = 2) -> R:
    """``run()``, started again once if a cluster process failed: on a shared machine a
    free port picked for a process can be taken before it binds it, and its peers then
    panic (``Send thread panic``); a second failure is raised."""
    for attempt in range(tries):
        try:
            return run()
        except ClusterFailed as e:
            if attempt == tries - 1:
                raise
            print(f"bench: {e}; starting the cluster again", file=sys.stderr)
    raise AssertionError("unreachable")


def run_processes(
    script: str,
    procs: int,
    env_of: Callable[[int, Path], dict[str, str]],
    timeout_s: float,
    what: str,
    args: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Run ``script`` as ``procs`` bytewax processes of one worker each on localhost and
    return the JSON each wrote: a process gets ``*args``, the ``;``-separated cluster
    addresses, its index and the file to write, in a temporary directory (also passed
    to ``env_of(index, directory)`` for its environment).  A non-zero exit raises
    :class:`ClusterFailed`."""
    from dataflows.connectors.embedded import free_port

    addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(procs))
    with tempfile.TemporaryDirectory(prefix="bench-procs-") as tmp:
        d = Path(tmp)
        ps = [
            subprocess.Popen(
                [sys.executable, "-c", script, *args, addrs, str(i), str(d / f"out{i}.json")],
                cwd=ROOT,
                env=env_of(i, d),
            )
            for i in range(procs)
        ]
        codes = wait_all(ps, timeout_s=timeout_s)
        if any(codes):
            raise ClusterFailed(f"{what} on {procs} processes: exit codes {codes}")
        return [json.loads((d / f"out{i}.json").read_text()) for i in range(procs)]


@dataclass(frozen=True, slots=True)
class ProcRun:
    """A multi-process flow leg: events/s (start-up excluded) and items pickled per
    event (``pickle.dumps`` calls summed over the processes, over the timed run)."""

    rate: float
    pickles: float


def flow_rate_processes(
    events: list[bytes], procs: int, engine: str = "river", shards: int = 16, aligned: bool = False
) -> ProcRun:
    """``procs`` bytewax processes (one worker each) on localhost, timed from outside."""
    from dataflows.connectors.embedded import free_port

    def timed(evs: list[bytes], tmp: Path) -> tuple[float, int]:
        with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
            pickle.dump(evs, f)
        addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(procs))
        prefix = str(tmp / f"pickles-{len(evs)}")
        env = {**os.environ, PICKLES_ENV: prefix}
        t0 = time.perf_counter()
        cmd = [sys.executable, "-c", PROC_SCRIPT, f.name, addresses]
        flag = "1" if aligned else "0"
        ps = [
            subprocess.Popen([*cmd, str(i), engine, str(shards), flag], cwd=ROOT, env=env)
            for i in range(procs)
        ]
        codes = wait_all(ps, timeout_s=120.0 + len(evs) / 500)
        dt = time.perf_counter() - t0
        os.unlink(f.name)
        if any(codes):
            raise ClusterFailed(f"{procs} processes exited with {codes}")
        return dt, sum(int(Path(f"{prefix}.{i}").read_text()) for i in range(procs))

    # Start-up (imports, joining the cluster) is timed on a 1,000-event run and removed;
    # both runs count their pickles (the same small overhead in each).
    small = 1000
    with tempfile.TemporaryDirectory(prefix="bench-pickles-") as tmp:
        full, pickles = retried(lambda: timed(events, Path(tmp)))
        dt = full - retried(lambda: timed(events[:small], Path(tmp)))[0]
    # A short run (--quick) can time within start-up noise: no figure rather than a wrong one.
    rate = (len(events) - small) / dt if dt > 0.5 else float("nan")
    return ProcRun(rate, pickles / len(events))


MANY_SHARDS = 64
"""The shard count of the multi-process comparison (see the bench row)."""


FB_DELAY_DAYS = 1.0
"""The label delay of the from-memory feedback legs: their ~3-day stream then holds two
days on which the learner trains, publishes and predicts (with the production 7 days it
would only queue examples)."""


def _labels(events: list[bytes]) -> list[bytes]:
    """A confirmed-fraud label per event the generator marked as fraud (in event order)."""
    import orjson

    from dataflows.detection.merchants import label_json

    out = []
    for e in events:
        d = orjson.loads(e)
        if (d.get("label") or {}).get("is_fraud"):
            out.append(label_json(d["merchant_id"], datetime.fromisoformat(d["ts"]), d["txn_id"]))
    return out


def feedback_flow(
    s: Settings, events: list[bytes], labels: list[bytes], workers: int
) -> tuple[Any, list[float]]:
    """The flow from memory with the ``local`` feedback loop, as ``kafka_flow`` builds it:
    ``SCALE_PARTITIONS`` aligned partitions, the labels as a one-partition input, this
    process's view followed on the feedback-state topic of ``s.brokers``, null sinks but
    a counter of rows (``[rows, time the input was first read, time of the last row,
    rows a fitted booster scored]``)."""
    from dataflows.connectors.feedback_state import FeedbackFollower
    from dataflows.connectors.local import CallbackSink, PartitionedSource, StoppableSource
    from dataflows.connectors.routing import Alignment
    from dataflows.detection.feedback import FeedbackView
    from dataflows.flow import build_flow

    follower = FeedbackFollower(s, FeedbackView()).start()
    seen = [0.0, 0.0, 0.0, 0.0]

    class FirstRead:
        """Never set: notes when the input is first read (rows may then be held)."""

        def is_set(self) -> bool:
            seen[1] = seen[1] or time.time()
            return False

    def count(batch: list[Any]) -> None:
        seen[0] += len(batch)
        seen[2] = time.time()
        seen[3] += sum(1 for r in batch if "+gbm-g" in r.model_version)

    def null(_: list[Any]) -> None:
        return None

    parts = [str(i) for i in range(SCALE_PARTITIONS)]
    flow = build_flow(
        s,
        StoppableSource(PartitionedSource(events, SCALE_PARTITIONS), FirstRead()),
        CallbackSink(null),
        CallbackSink(count),
        CallbackSink(null),
        labels=PartitionedSource(labels, 1),
        align=Alignment(parts, workers),
        feedback=(follower.view, follower.publisher()),
    )
    return flow, seen


FB_SCRIPT = """
import json, os, sys, time, pickle
from dataflows.bench.flow import count_pickles, feedback_flow
from dataflows.flow import tune_gc
from bytewax.testing import cluster_main
from schemas.settings import load_settings
tune_gc()
events, labels = pickle.load(open(sys.argv[1], "rb"))
addresses = [a for a in sys.argv[2].split(";") if a]
proc = int(sys.argv[3])
flow, seen = feedback_flow(load_settings(), events, labels, max(1, len(addresses)))
counter = count_pickles()
c0 = os.times()
cluster_main(flow, addresses if len(addresses) > 1 else [], proc)
c1 = os.times()
cpu = c1.user + c1.system - c0.user - c0.system
out = {"rows": seen[0], "first": seen[1], "last": seen[2], "learned": seen[3], "cpu": cpu}
json.dump({**out, "pickles": counter[0]}, open(sys.argv[4], "w"))
"""


@dataclass(frozen=True, slots=True)
class FeedbackRun:
    """A from-memory feedback leg: events/s from the input's first read to the last row
    scored (in any process: start-up and joining the cluster excluded), items pickled per
    event, the share of rows a fitted booster scored, and the cores the processes kept
    busy (CPU seconds of every thread over that time: a fit in a background thread can
    use a core the scoring left idle)."""

    rate: float
    pickles: float
    learned: float
    cores: float


def feedback_rate_processes(
    s: Settings, events: list[bytes], labels: list[bytes], procs: int
) -> FeedbackRun:
    """``procs`` processes of one worker each running :func:`feedback_flow` (``s`` names
    a broker and a fresh feedback-state topic)."""
    from schemas.settings import settings_env

    env = {**os.environ, **settings_env(s.model_dump())}
    with tempfile.TemporaryDirectory(prefix="bench-fb-") as tmp:
        data = Path(tmp) / "input.pkl"
        data.write_bytes(pickle.dumps((events, labels)))
        outs = run_processes(
            FB_SCRIPT,
            procs,
            lambda _i, _d: env,
            120.0 + len(events) / 500,
            "feedback loop",
            (str(data),),
        )
    rows = sum(o["rows"] for o in outs)
    if rows != len(events):
        raise RuntimeError(f"feedback leg on {procs} processes scored {rows} of {len(events)}")
    dt = max(o["last"] for o in outs) - min(o["first"] for o in outs if o["rows"])
    rate = len(events) / dt if dt > 0 else float("nan")
    learned = sum(o["learned"] for o in outs) / rows
    cores = sum(o["cpu"] for o in outs) / dt if dt > 0 else float("nan")
    return FeedbackRun(rate, sum(o["pickles"] for o in outs) / rows, learned, cores)


FEEDBACK_MODES = {
    "production": {"feedback_wait_s": 0.0, "learner_fit_background": True},
    "event time": {"feedback_wait_s": 30.0, "learner_fit_background": False},
}
"""The from-memory feedback legs' settings: ``production`` as ``.env.example`` runs it
(rows never wait for models, the booster fits in a background thread); ``event time`` as
evaluations run it (rows wait for their day's totals and models, fits in line), so 1 and 2
processes do the same work and give the same scores."""


def feedback_memory_rows(
    s: Settings,
    events: list[bytes],
    engines: tuple[str, ...] = ("river", "numpy"),
    repeats: int = 3,
) -> list[tuple[str, str, str]]:
    """The flow from memory on 1 and 2 processes with the ``local`` feedback loop on, for
    each engine and each of :data:`FEEDBACK_MODES`: an embedded broker for the
    feedback-state topic only, a fresh topic per run; each figure the faster of
    ``repeats`` runs (on this shared machine one run's 2-to-1 ratio moved between 1.75 and
    2.21 × on the same code)."""
    import uuid

    from dataflows.connectors.embedded import EmbeddedBroker
    from dataflows.connectors.kafka import create_topics

    labels = _labels(events)
    out = []
    base = s.model_copy(
        update={
            "feedback_input": True,
            "feedback_topology": "local",
            "align_partitions": True,
            "label_delay_days": FB_DELAY_DAYS,
        }
    )
    with EmbeddedBroker() as broker:

        def once(st: Settings, procs: int) -> FeedbackRun:
            topic = f"b-fbs-{uuid.uuid4().hex[:8]}"
            st = st.model_copy(update={"brokers": broker.bootstrap, "topic_feedback_state": topic})
            create_topics(st, only=[topic])
            return retried(lambda: feedback_rate_processes(st, events, labels, procs))

        def run(st: Settings, procs: int) -> FeedbackRun:
            runs = [once(st, procs) for _ in range(repeats)]
            return max(runs, key=lambda r: r.rate if math.isfinite(r.rate) else 0.0)

        for mode, settings in FEEDBACK_MODES.items():
            for engine in engines:
                st = base.model_copy(update={**settings, "hst_engine": engine})
                name = "River" if engine == "river" else engine
                one, two = run(st, 1), run(st, 2)
                ratio = two.rate / one.rate
                out.append(
                    (
                        f"2. {name}, partition-aligned, feedback loop on (local, {mode}), "
                        "1 → 2 processes",
                        f"{one.rate:,.0f} → {two.rate:,.0f} events/s",
                        f"{ratio:.2f} × (goal ≥ 1.8 ×: {_met(ratio >= 1.8)}); "
                        f"{SCALE_PARTITIONS} partitions, {len(labels):,} fraud labels, label "
                        f"delay {FB_DELAY_DAYS:g} day; rows scored by a fitted booster "
                        f"{one.learned:.0%} / {two.learned:.0%}; cores busy {one.cores:.2f} / "
                        f"{two.cores:.2f}; items pickled/event "
                        f"{one.pickles:.2f} / {two.pickles:.2f} (day summaries to the "
                        "aggregators and the trainer, feedback-state updates; no event "
                        "crosses processes)",
                    )
                )
    return out


# --- leg 3: end to end -------------------------------------------------------------


def end_to_end(s: Settings, n: int) -> float:
    """Produce ``n`` events to the embedded broker, then time the flow consuming them
    with alerts to Kafka and rows to chDB (sustained events/s)."""
    import uuid

    from bytewax.testing import run_main

    from clickhouse.store import Store, migrate
    from dataflows.connectors.chsink import clickhouse_sink
    from dataflows.connectors.embedded import EmbeddedBroker
    from dataflows.connectors.kafka import create_topics, make_producer, produce_all
    from dataflows.connectors.local import CallbackSink
    from dataflows.flow import kafka_flow

    events = _events(n)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    with EmbeddedBroker() as broker:
        tag = uuid.uuid4().hex[:6]
        s2 = s.model_copy(
            update={
                "brokers": broker.bootstrap,
                "topic_transactions": f"b-tx-{tag}",
                "topic_alerts": f"b-al-{tag}",
                "topic_dlq": f"b-dlq-{tag}",
                "topic_feedback": f"b-fb-{tag}",
                "topic_decisions": f"b-dec-{tag}",
                "partitions": 1,
                "kafka_tail": False,
                "clickhouse_url": f"chdb://{tmp}",
                "clickhouse_batch_rows": 5000,
            }
        )
        create_topics(s2)
        produce_all(make_producer(s2), s2.topic_transactions, [(None, e) for e in events])
        migrate(Store.from_settings(s2), s2.clickhouse_ttl_days)
        count = [0]
        flow = kafka_flow(
            s2,
            [clickhouse_sink(s2), CallbackSink(lambda b: count.__setitem__(0, count[0] + len(b)))],
        )
        t0 = time.perf_counter()
        run_main(flow)
        elapsed = time.perf_counter() - t0
    if count[0] != n:
        raise RuntimeError(f"end to end scored {count[0]} of {n} events")
    return n / elapsed


SCALE_PARTITIONS = 12
"""Partitions of the scale-out legs' topic: the default, even over 1, 2, 3, 4, 6 processes."""

E2E_SCRIPT = """
import json, os, sys, time
counter = [0]
if os.environ.get("FRAUD_BENCH_PICKLES"):
    from dataflows.bench.flow import count_pickles
    counter = count_pickles()
from dataflows.flow import tune_gc
tune_gc()
from bytewax.testing import cluster_main
from clickhouse.store import Store, migrate
from dataflows.connectors.chsink import clickhouse_sink
from dataflows.connectors.local import CallbackSink
from dataflows.flow import kafka_flow
from schemas.settings import load_settings
s = load_settings()
addresses = [a for a in sys.argv[1].split(";") if a]
proc = int(sys.argv[2])
migrate(Store.from_settings(s), s.clickhouse_ttl_days)
seen = [0, 0.0]
def count(batch):
    seen[0] += len(batch)
    seen[1] = time.time()
flow = kafka_flow(s, [clickhouse_sink(s), CallbackSink(count)], workers=max(1, len(addresses)))
ready = time.time()
cluster_main(flow, addresses if len(addresses) > 1 else [], proc)
out = {"rows": seen[0], "ready": ready, "last": seen[1], "pickles": counter[0]}
json.dump(out, open(sys.argv[3], "w"))
"""


@contextmanager
def scale_broker(s: Settings, n: int, partitions: int = SCALE_PARTITIONS) -> Iterator[Settings]:
    """An embedded broker with ``n`` generated events produced (keyed by user, so a
    user's events share a partition, in order) to a fresh ``partitions``-partition topic;
    yields settings pointing at it, read from the beginning and not tailed."""
    import uuid

    from dataflows.connectors.embedded import EmbeddedBroker
    from dataflows.connectors.kafka import create_topics, make_producer, produce_all

    with EmbeddedBroker() as broker:
        tag = uuid.uuid4().hex[:6]
        topics = ("transactions", "alerts", "dlq", "feedback", "decisions", "rules")
        s2 = s.model_copy(
            update={
                "brokers": broker.bootstrap,
                **{f"topic_{t}": f"s-{t[:3]}-{tag}" for t in topics},
                "partitions": partitions,
                "kafka_tail": False,
                "clickhouse_batch_rows": 5000,
            }
        )
        create_topics(s2)
        produce_all(make_producer(s2), s2.topic_transactions, _keyed_events(n))
        yield s2


def _keyed_events(n: int) -> list[tuple[bytes, bytes]]:
    """(user key, event) pairs of :func:`_events`' stream."""
    from generators.stream import event_stream
    from generators.synth import GeneratorConfig

    return list(event_stream(GeneratorConfig(seed=11, users=20_000, fraud_rate=0.01), n))


def end_to_end_processes(s: Settings, n: int, procs: int) -> ProcRun:
    """The production flow (``kafka_flow``: alerts, decisions, dead letters to Kafka,
    rows to chDB, labels input as ``s`` says) on ``procs`` bytewax processes of one
    worker each over the topic of :func:`scale_broker`; events/s from the moment every
    process is up (flow built, about to join the cluster) to the last of the ``n``
    events scored (a counter sink per process; one chDB directory per process, as chDB
    allows one process per directory), and items pickled per event as in
    :func:`flow_rate_processes`."""
    from schemas.settings import settings_env

    base = {**os.environ, **settings_env(s.model_dump()), PICKLES_ENV: "1"}

    def env_of(i: int, tmp: Path) -> dict[str, str]:
        return {**base, "FRAUD_CLICKHOUSE_URL": f"chdb://{tmp}/ch{i}"}

    outs = run_processes(E2E_SCRIPT, procs, env_of, 120.0 + n / 200, "end to end")
    rows = sum(o["rows"] for o in outs)
    if rows != n:
        raise RuntimeError(f"end to end on {procs} processes scored {rows} of {n} events")
    rate = n / (max(o["last"] for o in outs) - max(o["ready"] for o in outs))
    return ProcRun(rate, sum(o["pickles"] for o in outs) / n)


FRAMEWORK_GOAL = 1.5
"""The flow's per-event cost from memory on 1 process, at most this × the plain loop's."""


def framework_goal(ratio: float) -> str:
    """The framework-cost ratio against :data:`FRAMEWORK_GOAL`.

    >>> framework_goal(1.2)
    'goal ≤ 1.5 ×: met'
    """
    verdict = "met" if ratio <= FRAMEWORK_GOAL else "not met"
    return f"goal ≤ {FRAMEWORK_GOAL:g} ×: {verdict}"


def goal(value: float, target: float, unit: str = "events/s") -> str:
    """``goal ≥ target unit: met`` or ``not met``, for a figure beside its goal.

    >>> goal(16_000, 15_000)
    'goal ≥ 15,000 events/s: met'
    """
    verdict = "met" if value >= target else "not met"
    return f"goal ≥ {target:,.0f} {unit}: {verdict}"


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


SCALE_GOALS = {"river": 15_000.0, "numpy": 30_000.0}
"""End to end on 2 processes, feedback loop on (issue 15's goals on this 2-core machine)."""


def scale_out_rows(s: Settings, cfg: BenchConfig) -> list[tuple[str, str, str]]:
    """The production flow end to end on 1 and 2 processes over a 12-partition topic
    (aligned, feedback loop on: a labels topic with no labels, so the merchant and
    learner steps run) for each engine, and the plain confluent-kafka loop over the same
    topic: the single-process ceiling of the same detection in Python."""
    from dataflows.bench.plain import run_kafka

    n, out = cfg.scale_events, []
    base = s.model_copy(update={"align_partitions": True, "feedback_input": True})
    where = f"{SCALE_PARTITIONS} partitions aligned, feedback loop on"
    with scale_broker(base, n) as sb:
        for engine in cfg.scale_engines:
            name = "River" if engine == "river" else engine
            rates = {}
            for topology in TOPOLOGIES:
                st = sb.model_copy(update={"hst_engine": engine, "feedback_topology": topology})
                one = retried(lambda st=st: end_to_end_processes(st, n, 1))  # type: ignore[misc]
                two = retried(lambda st=st: end_to_end_processes(st, n, 2))  # type: ignore[misc]
                rates[topology] = one.rate
                out += [
                    (
                        f"3. broker → flow → alerts topic + chDB, {where} ({topology}), "
                        f"{name}, 1 process",
                        f"{one.rate:,.0f} events/s",
                        f"{n:,} events pre-produced; timed from every process up to the last "
                        f"event scored; {one.pickles:.2f} items pickled/event",
                    ),
                    (
                        f"3. same ({topology}), {name}, 2 processes",
                        f"{two.rate:,.0f} events/s",
                        f"{two.rate / one.rate:.2f} × 1 process; "
                        f"{goal(two.rate, SCALE_GOALS[engine])}; {two.pickles:.2f} items "
                        "pickled/event (every exchange that crosses processes, detection and "
                        "feedback steps alike)",
                    ),
                ]
            seen, secs = run_kafka(
                sb.model_copy(update={"hst_engine": engine}), n, f"bench-plain-{engine}"
            )
            if seen != n:
                raise RuntimeError(f"plain loop read {seen} of {n} events")
            plain = n / secs
            out.append(
                (
                    f"3. plain confluent-kafka loop (no framework), broker → alerts topic, {name}",
                    f"{plain:,.0f} events/s",
                    "1 process, same topic, rows to a null sink (no decisions topic, no chDB, "
                    "no feedback steps); the flow end to end on 1 process is "
                    + ", ".join(f"{rates[k] / plain:.2f} × ({k})" for k in TOPOLOGIES)
                    + " this",
                )
            )
    return out


TOPOLOGIES = ("funnel", "local")
"""Feedback-loop topologies measured end to end (see :mod:`dataflows.detection.feedback`)."""


# --- leg 4: memory -----------------------------------------------------------------


def memory_per_user(s: Settings, users: int) -> tuple[float, float]:
    """(RSS bytes per tracked user, snapshot bytes per user), 5 events each.

    Run it in a fresh process (:func:`memory_leg` does): RSS growth is then the state."""
    from dataflows.detection.scoring import new_shard
    from dataflows.detection.state import UserState, observe
    from schemas.transaction import Transaction

    gc.collect()
    shards = [new_shard(s) for _ in range(s.shards)]
    empty = _rss_bytes()
    base = datetime(2026, 1, 5, tzinfo=UTC)
    rnd = random.Random(1)
    for k in range(5):
        for u in range(users):
            uid = f"u{u}"
            users_of = shards[zlib.crc32(uid.encode()) % s.shards].users
            st = users_of.get(uid)
            if st is None:
                st = users_of[uid] = UserState()
            t = Transaction(
                f"x{k}-{u}",
                base + timedelta(hours=k * 3, seconds=u % 3600),
                uid,
                "c",
                "m",
                "grocery",
                rnd.uniform(5, 200),
                "USD",
                40.7,
                -74.0,
                "US",
                "pos",
            )
            observe(st, t, lateness_ms=3e5, small_usd=5.0)
    gc.collect()
    used = _rss_bytes() - empty
    snap = sum(len(pickle.dumps(sh, protocol=pickle.HIGHEST_PROTOCOL)) for sh in shards)
    return used / users, snap / users


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_leg(users: int) -> tuple[float, float]:
    """:func:`memory_per_user` in a fresh interpreter (default settings)."""
    code = (
        "import sys; from dataflows.bench.flow import memory_per_user; "
        "from dataflows.flow import tune_gc; tune_gc(); "
        "from schemas.settings import load_settings; "
        "print(*memory_per_user(load_settings(), int(sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(users)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


# --- leg 5: where the time goes ----------------------------------------------------

STAGES: dict[str, tuple[str, ...]] = {
    "parse + validate (msgspec, schema)": ("parse_message",),
    "state + features": ("observe",),
    "rules (policy as data, incl. the anomaly ramp)": ("run_rules",),
    "HST + feature scaling + calibration": ("score_learn_many", "scale_features"),
    "risk + decision": ("combine", "decide"),
    "alert build + serialisation": ("from_scored", "encode_alert"),
}


def stage_costs(s: Settings, n: int) -> tuple[float, dict[str, float]]:
    """µs per event: total, and the cumulative time of each stage's functions."""
    from bytewax.testing import run_main

    events = _events(n)
    flow = _null_flow(s, events)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run_main(flow)
    prof.disable()
    total = (time.perf_counter() - t0) / n * 1e6
    st = pstats.Stats(prof)
    out: dict[str, float] = {}
    for stage, names in STAGES.items():
        cum = 0.0
        for (_file, _line, fn), (_cc, _nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
            if fn in names:
                cum += ct
        out[stage] = cum / n * 1e6
    return total, out


# --- the report --------------------------------------------------------------------


def machine_facts() -> list[str]:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    names = ("bytewax", "river", "confluent-kafka", "clickhouse-connect", "chdb", "orjson")
    pkgs = ", ".join(f"{p} {metadata.version(p)}" for p in names)
    return [
        f"- machine: {os.cpu_count()} cores, {mem_gb:.0f} GB RAM, {platform.platform()}",
        f"- Python {platform.python_version()}; {pkgs}",
    ]


def run_bench(s: Settings, cfg: BenchConfig, command: str, say: Callable[[str], None]) -> str:
    """Run every leg and return the Markdown report."""
    from dataflows.bench.plain import BATCH as PLAIN_BATCH
    from dataflows.bench.plain import run_memory

    rows: list[tuple[str, str, str]] = []
    river, fast = (s.model_copy(update={"hst_engine": e}) for e in ("river", "numpy"))
    size = f"{s.hst_trees} trees, height {s.hst_height}, window {s.hst_window}"
    say("1/5 the model alone (River, numpy)")
    hst = hst_ceiling(river, cfg.flow_events)
    hst_np = hst_ceiling(fast, cfg.flow_events)
    rows += [
        ("1. River HST score+learn alone", f"{hst:,.0f} events/s", f"{size}, + calibration"),
        (
            "1. numpy HST (bitwise-equal) alone",
            f"{hst_np:,.0f} events/s",
            f"batches of {MODEL_BATCH}; {hst_np / hst:.1f} × River",
        ),
    ]
    say("2/5 flow from memory (engines, workers, processes, recovery)")
    events = _events(cfg.flow_events)
    one = flow_rate(river, events, 1)
    one_np = flow_rate(fast, events, 1)
    two = flow_rate(river, events, 2)
    run2 = flow_rate_processes(events, 2, "river")
    run2_np = flow_rate_processes(events, 2, "numpy")
    procs, procs_np = run2.rate, run2_np.rate
    many = river.model_copy(update={"shards": MANY_SHARDS})
    one_many = flow_rate(many, events, 1)
    procs_many = flow_rate_processes(events, 2, "river", MANY_SHARDS).rate
    al_one = flow_rate_processes(events, 1, "river", aligned=True).rate
    al_run2 = flow_rate_processes(events, 2, "river", aligned=True)
    al_one_np = flow_rate_processes(events, 1, "numpy", aligned=True).rate
    al_run2_np = flow_rate_processes(events, 2, "numpy", aligned=True)
    al_two, al_two_np = al_run2.rate, al_run2_np.rate
    plain = len(events) / run_memory(river, events)
    plain_np = len(events) / run_memory(fast, events)
    long = _events(cfg.recovery_events)
    base_one, base_np = flow_rate(river, long, 1), flow_rate(fast, long, 1)
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as rec:
        on = {"recovery_dir": Path(rec)}
        rec_one = flow_rate(river.model_copy(update=on), long, 1)
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as rec:
        rec_np = flow_rate(fast.model_copy(update={"recovery_dir": Path(rec)}), long, 1)
    say("2/5 flow from memory with the feedback loop, 1 and 2 processes")
    feedback_rows = feedback_memory_rows(
        s, _events(cfg.feedback_events), cfg.scale_engines, cfg.feedback_repeats
    )
    epoch = f"snapshots every {s.epoch_interval_s:g} s"
    rows += [
        (
            "2. flow, memory → null sinks, 1 worker, River",
            f"{one:,.0f} events/s",
            f"{one / hst:.2f} × the River HST ceiling",
        ),
        ("2. same, numpy HST", f"{one_np:,.0f} events/s", f"{one_np / one:.2f} × River"),
        ("2. same, River, 2 worker threads", f"{two:,.0f} events/s", f"{two / one:.2f} × 1 worker"),
        (
            "2. same, River, 2 processes (start-up excluded)",
            f"{procs:,.0f} events/s",
            f"{procs / one:.2f} × 1 worker",
        ),
        (
            "2. same, numpy, 2 processes (start-up excluded)",
            f"{procs_np:,.0f} events/s",
            f"{procs_np / one_np:.2f} × 1 worker",
        ),
        (
            f"2. River, {MANY_SHARDS} shards, 1 worker",
            f"{one_many:,.0f} events/s",
            f"{one_many / one:.2f} × {s.shards} shards",
        ),
        (
            f"2. River, {MANY_SHARDS} shards, 2 processes",
            f"{procs_many:,.0f} events/s",
            f"{procs_many / one_many:.2f} × 1 worker; bytewax hashes shard keys to workers "
            "and few keys split unevenly (16 keys: 10 / 6 over 2 workers), more even out",
        ),
        (
            "2. River, partition-aligned, 1 → 2 processes",
            f"{al_one:,.0f} → {al_two:,.0f} events/s",
            f"{al_two / al_one:.2f} × (state keyed by partition on its reading worker: "
            "nothing crosses processes before scoring)",
        ),
        (
            "2. numpy, partition-aligned, 1 → 2 processes",
            f"{al_one_np:,.0f} → {al_two_np:,.0f} events/s",
            f"{al_two_np / al_one_np:.2f} ×",
        ),
        (
            "2. plain loop (no framework), memory → null sinks, 1 process, River",
            f"{plain:,.0f} events/s",
            f"the flow, 1 worker, costs {plain / one:.2f} × the loop per event "
            f"({framework_goal(plain / one)}); the flow's parse, shard grouping and "
            f"score_batch in a for loop, batches of {PLAIN_BATCH:,}",
        ),
        (
            "2. plain loop, numpy",
            f"{plain_np:,.0f} events/s",
            f"the flow costs {plain_np / one_np:.2f} × the loop per event "
            f"({framework_goal(plain_np / one_np)})",
        ),
        (
            "2. items pickled per event, 2 processes, River",
            f"{run2.pickles:.2f} unaligned → {al_run2.pickles:.2f} aligned",
            "pickle.dumps calls in both processes ÷ events (target ≈ 0 aligned); bytewax "
            f"pickles a crossing item twice (size, write): {run2.pickles / 2:.0%} of events "
            "crossed unaligned",
        ),
        (
            "2. items pickled per event, 2 processes, numpy",
            f"{run2_np.pickles:.2f} unaligned → {al_run2_np.pickles:.2f} aligned",
            f"{run2_np.pickles / 2:.0%} of events crossed unaligned",
        ),
        (
            "2. River, 1 worker, recovery on",
            f"{rec_one:,.0f} events/s",
            f"{1 - rec_one / base_one:.0%} cost vs {base_one:,.0f} without; "
            f"{cfg.recovery_events:,} events, {epoch}",
        ),
        (
            "2. numpy, 1 worker, recovery on",
            f"{rec_np:,.0f} events/s",
            f"{1 - rec_np / base_np:.0%} cost vs {base_np:,.0f} without; "
            f"{cfg.recovery_events:,} events, {epoch}",
        ),
    ]
    rows += feedback_rows
    say(f"3/5 end to end through the embedded broker and chDB ({cfg.e2e_events:,} events)")
    no_fb = fast.model_copy(update={"feedback_input": False})
    for label, st in (("River", river), ("numpy", fast), ("numpy, no feedback loop", no_fb)):
        e2e = end_to_end(st, cfg.e2e_events)
        loop = (
            (
                "feedback loop on (merchant + learner steps; no verdicts in this stream: "
                "the learner queues and learns, never predicts)"
            )
            if st.feedback_input
            else "detection only (no labels input)"
        )
        rows.append(
            (
                f"3. broker → flow → alerts topic + chDB, sustained, {label}",
                f"{e2e:,.0f} events/s",
                f"{cfg.e2e_events:,} events pre-produced, 1 worker; {loop}",
            )
        )
    say(f"3/5 scale-out end to end, 1 and 2 processes ({cfg.scale_events:,} events)")
    rows += scale_out_rows(s, cfg)
    say(f"3/5 produce→alert latency at {cfg.latency_rate:g} events/s")
    from dataflows.bench.latency import measure_broker, measure_latency

    for label, st in (("River", river), ("numpy", fast)):
        if st.hst_engine not in cfg.latency_engines:
            continue
        for procs in (1, 2):
            # the cluster runs as in production: the local feedback loop
            topo = {"feedback_topology": "local"} if procs > 1 else {}
            lat = measure_latency(
                st.model_copy(update={"brokers": "", **topo}),
                cfg.latency_rate,
                cfg.latency_seconds,
                procs,
            )
            where = "" if procs == 1 else ", 2 processes (12 aligned partitions, local loop)"
            p99 = f"p99 {lat['p99_ms']:.0f} ms"
            rows.append(
                (
                    f"3. produce→alert latency at {cfg.latency_rate:g} events/s, {label}{where}",
                    f"p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms, {p99}",
                    f"{lat['alerts']:.0f} alerts, {cfg.latency_seconds:g} s"
                    + ("" if procs == 1 else f"; goal p99 ≤ 50 ms: {_met(lat['p99_ms'] <= 50)}"),
                )
            )
    floor = measure_broker(
        s.model_copy(update={"brokers": ""}), cfg.latency_rate, cfg.latency_seconds
    )
    rows.append(
        (
            f"3. broker alone at {cfg.latency_rate:g} events/s, 12 partitions "
            "(3 producers: events, decisions, alerts; 1 consumer; no flow)",
            f"p50 {floor['p50_ms']:.0f} ms, p95 {floor['p95_ms']:.0f} ms, "
            f"p99 {floor['p99_ms']:.0f} ms",
            "the floor under the 2-process produce→alert figure on this broker",
        )
    )
    say("4/5 memory per tracked user")
    for users in cfg.users_memory:
        rss, snap = memory_leg(users)
        rows.append(
            (
                f"4. memory with {users:,} users' state",
                f"{rss:,.0f} B/user RSS",
                f"snapshot {snap:,.0f} B/user (pickle, all shards)",
            )
        )
    say("5/5 per-stage cost (cProfile)")
    total, stages = stage_costs(s, cfg.profile_events)
    lines = [
        "# Benchmarks",
        "",
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        *machine_facts(),
        "",
        "| leg | figure | notes |",
        "|---|---:|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += [
        "",
        f"Per-stage cost under cProfile ({s.hst_engine} HST, "
        f"{cfg.profile_events:,} events, "
        f"{total:.1f} µs/event in total with profiling overhead):",
        "",
        "| stage | µs/event | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v:.1f} | {v / total:.0%} |" for k, v in stages.items()]
    rest = total - sum(stages.values())
    lines += [f"| bytewax operators, batching, sinks, other | {rest:.1f} | {rest / total:.0%} |"]
    return "\n".join(lines) + "\n"
