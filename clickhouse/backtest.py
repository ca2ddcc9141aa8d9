"""Backtest a candidate rule policy against stored transactions, vectorised.

Each stored row keeps the features the flow computed for it, so a rule written in the
policy language can be re-run over a million rows at once: one ClickHouse query reads
the columns the two policies need (de-duplicated by ``txn_id`` with ``FINAL``: replays
write the same transaction again), :func:`schemas.rules.compile_columns` evaluates every
live and shadow rule over them, and the noisy-OR, thresholds and effects are applied as
``dataflows.detection.policy.decide`` applies them (re-implemented here over arrays:
this package may not import the flow; a test checks both agree).

The report (:class:`BacktestReport`) is built by one pure function over arrays,
:func:`build_report`, which the flow backtest (``dataflows.evaluation.backtest``) feeds
too: per rule hits, hit rate, USD, precision/recall against dataset labels and analyst
verdicts, overlaps; per policy flagged/reviews/blocks and alerts per day; the decision
changes live → candidate with examples.

Limitations, by construction:

* Stored rows keep the state the *live* policy produced at the time: ``card_compromised``
  and ``known_place`` follow from which earlier events blocked.  A candidate whose hits
  would block other events (and so compromise the card for the user's next ones) is
  exact only through the flow backtest, which re-runs the state.
* Stored features are rounded (amounts and z-scores to 4 decimals, distances and speeds
  to 3), so a hit exactly at a threshold may differ from the flow's in the last digit.
* The feedback reasons (``compromised_merchant``, ``learned_pattern``) are not rules:
  their stored contributions count in both policies' risk unchanged.
* Only ``live`` and ``shadow`` rules are evaluated, as in the flow; rules reading a
  feature rows do not keep (``FEATURES[name].column == ""``) are refused.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from clickhouse.store import Store
from schemas.rules import FEATURES, Policy, PolicyError, Problem, Rule, compile_columns
from schemas.vocab import DECISIONS, FEEDBACK_CODES

__all__ = [
    "LATEST_VERDICTS",
    "BacktestReport",
    "PolicyRun",
    "PolicyStats",
    "Rows",
    "RuleStats",
    "backtest_store",
    "build_report",
    "decide_columns",
    "evaluate_policy",
    "features_read",
    "load_rows",
    "noisy_or",
]

RUNS = ("live", "shadow")
"""Statuses the flow runs (and so a backtest evaluates)."""
EXAMPLES = 10
"""Example txn_ids kept per changed decision cell."""
DAY_MS = 86_400_000
_TS = "DateTime64(3, 'UTC')"


# --- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rows:
    """The backtested transactions, one per txn_id, as columns of equal length.

    ``label`` is the dataset's ``is_fraud`` and ``verdict`` the latest analyst verdict:
    1 fraud (confirmed_fraud), 0 genuine (false_positive), -1 unknown."""

    txn_id: np.ndarray
    ts_ms: np.ndarray
    amount_usd: np.ndarray
    label: np.ndarray
    verdict: np.ndarray

    def __len__(self) -> int:
        return len(self.txn_id)


@dataclass(frozen=True, slots=True)
class PolicyRun:
    """One policy's outcome over :class:`Rows`: each evaluated rule's hit mask (live and
    shadow rules) and each row's decision (index into ``DECISIONS``)."""

    policy: Policy
    hits: dict[str, np.ndarray]
    decision: np.ndarray
    risk: np.ndarray | None = None


# --- the report -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleStats:
    """What one rule did over the rows.  Precision/recall are None where no row is
    labelled (precision: no labelled hit; recall: no labelled fraud)."""

    rule: str
    status: str
    effect: str
    hits: int
    hit_rate: float
    amount_usd: float
    precision_labels: float | None
    recall_labels: float | None
    precision_verdicts: float | None
    recall_verdicts: float | None
    overlap: dict[str, int]


@dataclass(frozen=True, slots=True)
class PolicyStats:
    """A whole policy's decisions: flagged = review + block."""

    version: int
    flagged: int
    reviews: int
    blocks: int
    flagged_usd: float
    blocked_usd: float
    precision_labels: float | None
    recall_labels: float | None
    precision_verdicts: float | None
    recall_verdicts: float | None


@dataclass(frozen=True, slots=True)
class BacktestReport:
    """What the candidate would change against the live policy (see the module doc).

    ``changes[i][j]`` counts rows the live policy decided ``DECISIONS[i]`` and the
    candidate ``DECISIONS[j]``; ``examples["approve->review"]`` lists up to 10 of their
    txn_ids (the earliest in event time).  ``alerts_per_day`` is (UTC day, live flagged,
    candidate flagged) for every day with rows."""

    source: str
    rows: int
    start: str | None
    end: str | None
    seconds: float
    labelled: int
    with_verdict: int
    candidate_rules: list[RuleStats]
    live_rules: list[RuleStats]
    live: PolicyStats
    candidate: PolicyStats
    alerts_per_day: list[tuple[str, int, int]]
    changes: list[list[int]]
    examples: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (lists, dicts, str, int, float, None)."""

        return {
            "source": self.source,
            "rows": self.rows,
            "start": self.start,
            "end": self.end,
            "seconds": self.seconds,
            "labelled": self.labelled,
            "with_verdict": self.with_verdict,
            "decisions": list(DECISIONS),
            "candidate_rules": [asdict(r) for r in self.candidate_rules],
            "live_rules": [asdict(r) for r in self.live_rules],
            "live": asdict(self.live),
            "candidate": asdict(self.candidate),
            "alerts_per_day": [[d, a, b] for d, a, b in self.alerts_per_day],
            "changes": [list(r) for r in self.changes],
            "examples": {k: list(v) for k, v in self.examples.items()},
            "notes": list(self.notes),
        }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _pr(mask: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None]:
    """Precision and recall of ``mask`` against ``truth`` (1 / 0 / -1 unknown), over
    the rows whose truth is known."""
    pos = truth == 1
    tp = int(np.count_nonzero(mask & pos))
    judged = int(np.count_nonzero(mask & (truth >= 0)))
    return _ratio(tp, judged), _ratio(tp, int(np.count_nonzero(pos)))


def _usd(rows: Rows) -> np.ndarray:
    """Amounts in 1/10000 USD (rows keep 4 decimals): integer sums are exact whatever
    the order rows were read in, so both backtest paths report the same figures."""
    return np.rint(rows.amount_usd * 1e4).astype(np.int64)


def _rule_stats(run: PolicyRun, rows: Rows, usd: np.ndarray) -> list[RuleStats]:
    n = len(rows)
    ids = list(run.hits)
    if ids:
        h = np.stack([run.hits[i] for i in ids]).astype(np.float64)
        common = (h @ h.T).round().astype(np.int64)  # exact: counts < 2**53
    out = []
    for k, rid in enumerate(ids):
        m = run.hits[rid]
        r = run.policy.rule(rid)
        assert r is not None
        pl, rl = _pr(m, rows.label)
        pv, rv = _pr(m, rows.verdict)
        hits = int(common[k, k])
        out.append(
            RuleStats(
                rid,
                r.status,
                r.effect,
                hits,
                hits / n if n else 0.0,
                int(usd[m].sum()) / 1e4,
                pl,
                rl,
                pv,
                rv,
                {o: int(common[k, j]) for j, o in enumerate(ids) if j != k},
            )
        )
    return out


def _policy_stats(run: PolicyRun, rows: Rows, usd: np.ndarray) -> PolicyStats:
    d = run.decision
    flagged, blocked = d > 0, d == 2
    pl, rl = _pr(flagged, rows.label)
    pv, rv = _pr(flagged, rows.verdict)
    return PolicyStats(
        run.policy.version,
        int(np.count_nonzero(flagged)),
        int(np.count_nonzero(d == 1)),
        int(np.count_nonzero(blocked)),
        int(usd[flagged].sum()) / 1e4,
        int(usd[blocked].sum()) / 1e4,
        pl,
        rl,
        pv,
        rv,
    )


def _per_day(rows: Rows, live: PolicyRun, cand: PolicyRun) -> list[tuple[str, int, int]]:
    if not len(rows):
        return []
    day = rows.ts_ms // DAY_MS
    first = int(day.min())
    idx = (day - first).astype(np.int64)
    size = int(idx.max()) + 1
    total = np.bincount(idx, minlength=size)
    a = np.bincount(idx, weights=live.decision > 0, minlength=size)
    b = np.bincount(idx, weights=cand.decision > 0, minlength=size)
    out = []
    for k in np.flatnonzero(total):
        d = datetime.fromtimestamp((first + int(k)) * DAY_MS / 1000, UTC).date().isoformat()
        out.append((d, int(a[k]), int(b[k])))
    return out


def _examples(rows: Rows, sel: np.ndarray, k: int = EXAMPLES) -> list[str]:
    """The ``k`` earliest selected rows' txn_ids (ties by txn_id): deterministic
    whatever order the rows were read in."""
    idx = np.flatnonzero(sel)
    if len(idx) > k:
        cut = np.partition(rows.ts_ms[idx], k - 1)[k - 1]
        idx = idx[rows.ts_ms[idx] <= cut]
    order = sorted(idx.tolist(), key=lambda i: (int(rows.ts_ms[i]), str(rows.txn_id[i])))
    return [str(rows.txn_id[i]) for i in order[:k]]


def build_report(
    rows: Rows,
    live: PolicyRun,
    candidate: PolicyRun,
    *,
    source: str,
    start: datetime | None,
    end: datetime | None,
    seconds: float,
    notes: Sequence[str] = (),
) -> BacktestReport:
    """The report of ``candidate`` against ``live`` over ``rows`` (pure, arrays only)."""
    a, b = live.decision, candidate.decision
    usd = _usd(rows)
    changes = np.bincount(a.astype(np.int64) * 3 + b, minlength=9).reshape(3, 3)
    examples = {
        f"{DECISIONS[i]}->{DECISIONS[j]}": _examples(rows, (a == i) & (b == j))
        for i in range(3)
        for j in range(3)
        if i != j and changes[i, j]
    }
    if start is None and len(rows):
        start = datetime.fromtimestamp(int(rows.ts_ms.min()) / 1000, UTC)
    if end is None and len(rows):
        end = datetime.fromtimestamp((int(rows.ts_ms.max()) + 1) / 1000, UTC)
    return BacktestReport(
        source,
        len(rows),
        None if start is None else start.isoformat(),
        None if end is None else end.isoformat(),
        seconds,
        int(np.count_nonzero(rows.label >= 0)),
        int(np.count_nonzero(rows.verdict >= 0)),
        _rule_stats(candidate, rows, usd),
        _rule_stats(live, rows, usd),
        _policy_stats(live, rows, usd),
        _policy_stats(candidate, rows, usd),
        _per_day(rows, live, candidate),
        changes.tolist(),
        examples,
        list(notes),
    )


# --- evaluating a policy over columns -------------------------------------------------


def noisy_or(contributions: Sequence[np.ndarray], n: int) -> np.ndarray:
    """``round(1 - Π(1 - c), 6)`` per row, multiplied in the flow's order (largest
    contribution first) so every product is bitwise the flow's; rows within 1e-6 of a
    rounding boundary that numpy and Python could round apart use Python's ``round``.

    Only rows with two or more non-zero contributions need the sort (absent hits are 0
    and multiplying by 1.0 is exact): the rest take ``1 - c`` of their one hit."""
    keep = np.ones(n)
    if contributions:
        many = np.zeros(n, dtype=np.int16)
        total = np.zeros(n)
        for c in contributions:
            many += c != 0.0
            total += c
        keep = 1.0 - total  # exact where at most one is non-zero
        multi = np.flatnonzero(many >= 2)
        if len(multi):
            sub = np.sort(np.stack([c[multi] for c in contributions], axis=1), axis=1)
            k = np.ones(len(multi))
            for j in range(sub.shape[1] - 1, -1, -1):
                k = k * (1.0 - sub[:, j])
            keep[multi] = k
    x = 1.0 - keep
    risk = np.round(x, 6)
    y = x * 1e6
    for i in np.flatnonzero(np.abs(y - np.floor(y) - 0.5) < 1e-3):
        risk[i] = round(float(x[i]), 6)  # near a half-way point: as Python rounds
    return risk


def decide_columns(
    risk: np.ndarray,
    review_threshold: float,
    block_threshold: float,
    forced: Mapping[str, np.ndarray],
) -> np.ndarray:
    """Decisions (0 approve, 1 review, 2 block) as ``dataflows.detection.policy.decide``
    makes them: thresholds, then a live ``block``/``review`` hit raises the decision and
    an ``exempt`` hit turns a threshold review into an approval.  ``forced`` maps each
    effect to the rows some live rule with that effect hit."""
    d = np.where(risk >= block_threshold, 2, np.where(risk >= review_threshold, 1, 0))
    d = d.astype(np.int8)
    none = np.zeros(len(risk), dtype=bool)
    blk, rev, ex = (forced.get(e, none) for e in ("block", "review", "exempt"))
    out = np.where(blk, 2, np.where(rev, np.maximum(d, 1), np.where((d == 1) & ex, 0, d)))
    return np.where(d == 2, 2, out).astype(np.int8)


Cache = dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]]


CAL_WEIGHT = "cal_weight"
"""The stored weight of a row's calibrated hits (:mod:`dataflows.detection.rarity`).  A
candidate changing which calibrated rules fire is weighed with the live pattern's weight
(a backtest through the flow recomputes it)."""


def weighed(contrib: np.ndarray, hit: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``round(c * w, 4)`` on the hit rows, with Python's rounding (numpy's ``round``
    differs in the last bit on some ties): the flow's arithmetic exactly."""
    out = np.zeros_like(contrib)
    idx = np.flatnonzero(hit)
    prod = (contrib[idx] * np.broadcast_to(w, contrib.shape)[idx]).tolist()
    out[idx] = [round(v, 4) for v in prod]
    return out


def evaluate_policy(
    policy: Policy,
    cols: Mapping[str, np.ndarray],
    feedback: Sequence[np.ndarray],
    n: int,
    cache: Cache | None = None,
) -> PolicyRun:
    """Run every live and shadow rule of ``policy`` over ``cols`` (``n`` rows); the risk
    is the noisy-OR of the live hits and the ``feedback`` contributions as stored.
    ``cache`` shares the columns of a rule both policies hold unchanged."""
    hits: dict[str, np.ndarray] = {}
    live: list[np.ndarray] = []
    forced: dict[str, np.ndarray] = {}
    params = tuple(sorted(policy.params.items()))
    for r in policy.rules:
        if r.status not in RUNS:
            continue
        key = (r.when, r.cases, params)
        got = None if cache is None else cache.get(key)
        if got is None:
            got = compile_columns(r, policy.params).fn(cols, n)
            if cache is not None:
                cache[key] = got
        hit, contrib = got
        hits[r.id] = hit
        if r.status == "live":
            if r.calibrate:  # weighed as the flow weighed this row's calibrated hits
                contrib = weighed(contrib, hit, cols[CAL_WEIGHT])
            live.append(contrib)
            if r.effect != "score":
                forced[r.effect] = forced.get(r.effect, np.zeros(n, dtype=bool)) | hit
    risk = noisy_or([*live, *feedback], n)
    decision = decide_columns(risk, policy.review_threshold, policy.block_threshold, forced)
    return PolicyRun(policy, hits, decision, risk)


def _names(text: str) -> set[str]:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return set()  # compile_columns reports it with its position
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def features_read(rule: Rule) -> set[str]:
    """The features ``rule``'s guard and cases read (its detail text is not evaluated),
    and a calibrated rule the stored weight of its hits."""
    texts = [rule.when, *(t for c in rule.cases for t in (c.when, c.contribution))]
    read = set().union(*(_names(t) for t in texts)) & FEATURES.keys()
    return read | {CAL_WEIGHT} if rule.calibrate else read


def _needed(policies: Sequence[Policy]) -> list[str]:
    """Features the evaluated rules read; refuses a rule reading one rows do not keep."""
    need: set[str] = set()
    probs = []
    for p in policies:
        for r in p.rules:
            if r.status not in RUNS:
                continue
            names = features_read(r) - set(p.params)
            for name in sorted(names):
                if not FEATURES[name].column:
                    probs.append(
                        Problem(
                            r.id,
                            f"feature {name}",
                            0,
                            "stored rows do not keep it: backtest this rule through the "
                            "flow (a --file of events or --handbook)",
                        )
                    )
            need |= names
    if probs:
        raise PolicyError(probs)
    return sorted(need)


# --- reading the store ----------------------------------------------------------------

LATEST_VERDICTS = """
SELECT txn_id, argMax(verdict, at) AS verdict FROM (
    SELECT txn_id, verdict, reviewed_at AS at FROM {db}.alert_reviews FINAL
    UNION ALL
    SELECT a.txn_id AS txn_id, c.verdict AS verdict, c.at AS at
    FROM (SELECT arrayJoin(alert_ids) AS alert_id, verdict, at
          FROM {db}.case_actions FINAL WHERE action = 'verdict') AS c
    INNER JOIN (SELECT DISTINCT alert_id, txn_id FROM {db}.alerts) AS a
            ON a.alert_id = c.alert_id
) GROUP BY txn_id
"""
"""The latest verdict per transaction, from both trails (the workbench writes both; a
review from the feedback topic lands in ``alert_reviews`` only)."""


def _sql(db: str, features: Sequence[str], start: datetime | None, end: datetime | None) -> str:
    """The one query: stored rows (FINAL: one per txn_id), the features' SQL, the
    feedback reasons' contributions and the latest verdict.

    The verdict is looked up with ``IN`` two small sets rather than joined, which keeps
    the million-row side streaming; FINAL does not merge across partitions (a replay has
    the same ``ts``, so the same month)."""
    feats = "".join(f",\n       {FEATURES[n].column} AS f_{n}" for n in features)
    fb = "".join(
        f",\n       arraySum(x -> if(x.code = '{c}', x.contribution, 0.), reasons) AS fb_{c}"
        for c in FEEDBACK_CODES
    )
    where = []
    if start is not None:
        where.append(f"ts >= {{start:{_TS}}}")
    if end is not None:
        where.append(f"ts < {{end:{_TS}}}")
    cond = f"\n    WHERE {' AND '.join(where)}" if where else ""
    verdicts = LATEST_VERDICTS.replace("{db}", db)

    def having(v: str) -> str:
        return f"txn_id IN (SELECT txn_id FROM ({verdicts}) WHERE verdict = '{v}')"

    return f"""SELECT txn_id, toUnixTimestamp64Milli(ts) AS ts_ms, amount_usd,
       ifNull(toInt8(is_fraud), toInt8(-1)) AS label,
       toInt8(multiIf({having("confirmed_fraud")}, 1,
                      {having("false_positive")}, 0, -1)) AS verdict{fb}{feats}
FROM {db}.transactions FINAL{cond}
SETTINGS do_not_merge_across_partitions_select_final = 1"""


def _np(col: Any, kind: str) -> np.ndarray:
    """An Arrow column as numpy of the feature's type (bools stored as 0/1 floats)."""
    import pyarrow as pa

    if kind == "str":
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    a = col.to_numpy()
    if kind == "bool":
        return a != 0
    return a.astype(np.int64 if kind == "int" else np.float64, copy=False)


def load_rows(
    store: Store, features: Sequence[str], start: datetime | None, end: datetime | None
) -> tuple[Rows, dict[str, np.ndarray], list[np.ndarray]]:
    """The stored rows of ``[start, end)``: their :class:`Rows`, the feature columns by
    name and the feedback reasons' contributions (one array per code)."""
    params = {k: v.astimezone(UTC) for k, v in (("start", start), ("end", end)) if v is not None}
    table = store.client.query_arrow(_sql(store.database, features, start, end), params)
    col = {name: table.column(name) for name in table.column_names}
    rows = Rows(
        _np(col["txn_id"], "str"),
        _np(col["ts_ms"], "int"),
        _np(col["amount_usd"], "float"),
        col["label"].to_numpy().astype(np.int8),
        col["verdict"].to_numpy().astype(np.int8),
    )
    feats = {n: _np(col[f"f_{n}"], FEATURES[n].type) for n in features}
    feedback = [_np(col[f"fb_{c}"], "float") for c in FEEDBACK_CODES]
    return rows, feats, feedback


STORE_NOTES = (
    "Stored rows keep the state the live policy produced (e.g. card_compromised after a "
    "block): a candidate that blocks other events is exact only through the flow backtest.",
    "compromised_merchant and learned_pattern are not rules: their stored contributions "
    "count in both policies.",
)


def backtest_store(
    store: Store,
    candidate: Policy,
    live: Policy,
    start: datetime | None = None,
    end: datetime | None = None,
) -> BacktestReport:
    """Evaluate ``candidate`` and ``live`` over the stored transactions of
    ``[start, end)`` (all stored when None) and report what the candidate changes.

    Raises :class:`PolicyError` (a ValueError) naming the rule and feature when a rule
    reads a feature rows do not keep, or a rule does not compile."""
    t0 = time.perf_counter()
    for name, ts in (("start", start), ("end", end)):
        if ts is not None and ts.tzinfo is None:
            raise ValueError(f"{name} {ts!r} must be timezone-aware")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end {end.isoformat()} is not after start {start.isoformat()}")
    need = _needed([live, candidate])
    rows, cols, feedback = load_rows(store, need, start, end)
    n = len(rows)
    cache: Cache = {}
    live_run = evaluate_policy(live, cols, feedback, n, cache)
    cand_run = evaluate_policy(candidate, cols, feedback, n, cache)
    return build_report(
        rows,
        live_run,
        cand_run,
        source="store",
        start=start,
        end=end,
        seconds=time.perf_counter() - t0,
        notes=STORE_NOTES,
    )
