"""Backtest a candidate rule policy through the stateful flow.

The stored-rows backtest (:mod:`clickhouse.backtest`) re-runs rules over the features
the live policy's flow computed; a candidate whose blocks would change the state
(``card_compromised`` after a block, established places) needs the flow itself.  Here
the same events go through ``build_flow`` twice, once per policy (its live and shadow
rules, thresholds and effects exactly as production runs them), and the scored rows
feed the same report builder (:func:`clickhouse.backtest.build_report`).

Events come from a JSONL file of Transaction JSON, a Parquet file or Hive-partitioned
folder as ``fraud generate --to parquet`` writes it, or the Fraud Detection Handbook
data (``../shared/data``).  Labels come with the events where the dataset has them;
there are no analyst verdicts here, and no feedback stream (merchant risk, learner).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from clickhouse.backtest import BacktestReport, PolicyRun, Rows, build_report
from dataflows.detection.policy import activate
from schemas.rules import Policy
from schemas.scored import ScoredTransaction
from schemas.settings import Settings
from schemas.vocab import DECISIONS

__all__ = [
    "FLOW_NOTES",
    "backtest_flow",
    "file_events",
    "flow_runs",
    "handbook_stream",
    "score_events",
]

FLOW_NOTES = (
    "Scored through the stateful flow once per policy: state-changing effects are exact.",
    "No analyst verdicts and no feedback stream (merchant risk, learner) in a flow backtest.",
)
_INDEX = {d: i for i, d in enumerate(DECISIONS)}


def score_events(
    s: Settings, events: Sequence[bytes], policy: Policy
) -> tuple[list[ScoredTransaction], int]:
    """Every event through ``build_flow`` under ``policy``: the scored rows (first
    scoring of each txn_id) and the number of dead letters."""
    from bytewax.testing import TestingSink, TestingSource, run_main

    from dataflows.flow import build_flow

    active = activate(policy)
    rows: list[ScoredTransaction] = []
    dead: list[Any] = []
    flow = build_flow(
        s,
        TestingSource(events, batch_size=1000),
        TestingSink([]),
        TestingSink(rows),
        TestingSink(dead),
        policy=lambda: active,
    )
    run_main(flow)
    return rows, len(dead)


def _run(policy: Policy, scored: dict[str, ScoredTransaction], ids: list[str]) -> PolicyRun:
    """A :class:`PolicyRun` from one flow run's rows, in ``ids`` order: the decision
    the flow made, the live rules' hits from the reasons and the shadow rules' from the
    shadow reasons."""
    n = len(ids)
    hits = {r.id: np.zeros(n, dtype=bool) for r in policy.rules if r.status in ("live", "shadow")}
    live = {r.id for r in policy.rules if r.status == "live"}
    decision = np.zeros(n, dtype=np.int8)
    risk = np.zeros(n)
    for i, tid in enumerate(ids):
        x = scored[tid]
        decision[i] = _INDEX[x.decision]
        risk[i] = x.risk_score
        for r in x.reasons:
            if r.code in live:
                hits[r.code][i] = True
        for r in x.shadow:
            if r.code in hits and r.code not in live:
                hits[r.code][i] = True
    return PolicyRun(policy, hits, decision, risk)


def _rows(scored: dict[str, ScoredTransaction], ids: list[str]) -> Rows:
    xs = [scored[t] for t in ids]
    return Rows(
        np.array(ids, dtype=object),
        np.array([round(x.txn.ts.timestamp() * 1000) for x in xs], dtype=np.int64),
        np.array([x.features.get("amount_usd", 0.0) for x in xs], dtype=np.float64),
        np.array([-1 if x.label is None else int(x.label.is_fraud) for x in xs], dtype=np.int8),
        np.full(len(xs), -1, dtype=np.int8),
    )


def flow_runs(
    s: Settings,
    events: Iterable[bytes],
    candidate: Policy,
    live: Policy,
    say: Callable[[str], None] | None = None,
) -> tuple[Rows, PolicyRun, PolicyRun]:
    """Score ``events`` under each policy; the rows both runs scored, in event-time
    order, and each policy's run over them."""
    evs = events if isinstance(events, list) else list(events)
    for p in (live, candidate):  # refuse a bad policy before a long run
        activate(p)
    out: list[dict[str, ScoredTransaction]] = []
    for name, p in (("live", live), ("candidate", candidate)):
        t0 = time.perf_counter()
        rows, dead = score_events(s, evs, p)
        if say is not None:
            say(
                f"{name} policy v{p.version}: {len(rows):,} events scored in "
                f"{time.perf_counter() - t0:.1f}s" + (f", {dead:,} refused" if dead else "")
            )
        seen: dict[str, ScoredTransaction] = {}
        for r in rows:
            seen.setdefault(r.txn.txn_id, r)
        out.append(seen)
    a, b = out
    ids = sorted((t for t in a if t in b), key=lambda t: (a[t].txn.ts, t))
    return _rows(a, ids), _run(live, a, ids), _run(candidate, b, ids)


def backtest_flow(
    settings: Settings,
    events: Iterable[bytes],
    candidate: Policy,
    live: Policy,
    say: Callable[[str], None] | None = None,
) -> BacktestReport:
    """What ``candidate`` would change against ``live`` on ``events`` (Transaction JSON
    bytes), through the stateful flow; ``say`` receives progress lines."""
    t0 = time.perf_counter()
    rows, a, b = flow_runs(settings, events, candidate, live, say)
    return build_report(
        rows,
        a,
        b,
        source="flow",
        start=None,
        end=None,
        seconds=time.perf_counter() - t0,
        notes=FLOW_NOTES,
    )


# --- inputs ---------------------------------------------------------------------------


def file_events(path: Path) -> Iterator[bytes]:
    """Transaction JSON events of a JSONL file, a Parquet file or a Hive-partitioned
    Parquet folder (``fraud generate --to parquet``), in file order."""
    from dataflows.connectors.local import history_files, jsonl_lines, parquet_events

    if path.is_file() and path.suffix != ".parquet":
        yield from jsonl_lines(path)
        return
    import pyarrow.parquet as pq

    for f in history_files(path):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=10_000):
            yield from parquet_events(batch)


def handbook_stream(root: Path, start: date | None, end: date | None) -> Iterator[bytes]:
    """The Fraud Detection Handbook transactions of ``[start, end)`` as events, with
    their labels (see :mod:`generators.datasets`)."""
    from generators.datasets import handbook_events, handbook_frame

    def at(d: date | None) -> datetime | None:
        return None if d is None else datetime.combine(d, datetime.min.time(), UTC)

    return handbook_events(handbook_frame(root, at(start), at(end)))
