"""Evaluation on the Fraud Detection Handbook data with the handbook's own protocol.

One pass streams the handbook transactions (in id = time order) through the production
``build_flow`` and keeps every transaction's scores; the test sets of the published
experiments are then cut with the handbook's split rule and scored with its metrics:

* ``get_train_test_set(start, 7, 7, 7)``: test = the 7 days after a 7-day training week
  and a 7-day delay; on each test day D, customers with a fraud on any day from the
  training start to D - 8 are removed ("known compromised").
* AUC ROC and Average Precision: sklearn, transaction level, over the whole test set.
* Card Precision@100: per day, each card's score is its max, label its max; precision of
  the top 100 cards; cards found compromised on an earlier test day are dropped from later
  days; mean over the days.  All three rounded to 3 decimals.

Our detector is label-free here (rules + Half-Space Trees, no feedback), so one pass
serves every protocol: scores do not depend on which week a published model trained on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from schemas.settings import Settings

__all__ = [
    "PROTOCOLS",
    "PUBLISHED",
    "Protocol",
    "card_precision_at_k",
    "handbook_metrics",
    "handbook_test_set",
    "label_free_ceiling",
    "score_stream",
    "tie_broken",
]


@dataclass(frozen=True, slots=True)
class Protocol:
    """A published experiment: which training starts define its test set(s)."""

    key: str
    title: str
    train_starts: tuple[date, ...]


PROTOCOLS = (
    Protocol("ch3", "ch.3 test week 2018-08-08…14", (date(2018, 7, 25),)),
    Protocol(
        "ch5",
        "ch.5 prequential test folds (mean of 4)",
        (date(2018, 8, 15), date(2018, 8, 8), date(2018, 8, 1), date(2018, 7, 25)),
    ),
    Protocol("ch7", "ch.7 unsupervised week 2018-07-25…31", (date(2018, 7, 11),)),
)

PUBLISHED: dict[str, list[tuple[str, float, float, float]]] = {
    "ch3": [
        ("Logistic regression (supervised)", 0.871, 0.606, 0.291),
        ("Random forest (supervised)", 0.867, 0.658, 0.287),
        ("XGBoost (supervised)", 0.862, 0.639, 0.273),
    ],
    "ch5": [("XGBoost (supervised, best row)", 0.869, 0.687, 0.303)],
    "ch7": [
        ("IsolationForest (uses 7-day-delayed terminal-risk labels)", 0.808, 0.164, 0.19),
        ("Autoencoder (same inputs)", 0.836, 0.18, 0.217),
        (
            "River MinMaxScaler \\| HST(seed=42), 15 features, label-free (dataset README)",
            0.746,
            0.091,
            0.16,
        ),
    ],
}
"""Handbook rows (AUC ROC, AP, CP@100) as listed in the dataset README."""

SCORES = {
    "risk": "production risk score, label-free (rules + HST, noisy-OR, weak signals weighed "
    "by how rare their pattern is in recent traffic), ties broken by the row's amount "
    "rarity, then the HST percentile",
    "hst": "Half-Space Trees rolling percentile alone",
    "risk_fb": "the same plus the feedback loop (merchant risk and the online supervised "
    "model): each label is usable only after the 7-day delay (the handbook's), as in "
    "production",
    "learned": "the feedback loop's online supervised model alone (its fraud probability)",
    "profile": "the user's amount z-score alone (label-free: the per-user spend profile "
    "that feeds the amount rule)",
    "rarity": "the amount rarity feature alone (label-free: the share of recent traffic at "
    "least as unusual in amount, for everyone or against the user's profile)",
}

CEILING = "label-free ceiling"
"""Not a detector: the best any label-free score can do on a test set.  Scenarios 1 and
3 change amounts, so an oracle may rank them first; scenario 2 (a compromised terminal)
leaves no trace in the data, so its frauds tie with the legitimate rows."""


def label_free_ceiling(test: pd.DataFrame) -> tuple[float, float, float]:
    """(AUC ROC, AP, CP@100) of the oracle described in :data:`CEILING`."""
    oracle = test.assign(_oracle=test.TX_FRAUD_SCENARIO.isin((1, 3)).astype(float))
    return handbook_metrics(oracle, "_oracle")


def handbook_test_set(df: pd.DataFrame, train_start: date) -> pd.DataFrame:
    """The handbook's test week for ``train_start`` with known-compromised cards removed.

    ``df`` needs TX_TIME_DAYS, CUSTOMER_ID, TX_FRAUD and TX_DATETIME (any extra columns,
    such as scores, are kept).  Mirrors ``get_train_test_set(start, 7, 7, 7)``.
    """
    t0 = pd.Timestamp(train_start)
    train = df[(t0 <= df.TX_DATETIME) & (t0 + pd.Timedelta(days=7) > df.TX_DATETIME)]
    known = set(train.CUSTOMER_ID[train.TX_FRAUD == 1])
    first_day = int(train.TX_TIME_DAYS.min())
    parts = []
    for k in range(7):
        delay_day = df[first_day + 7 + k - 1 == df.TX_TIME_DAYS]
        known |= set(delay_day.CUSTOMER_ID[delay_day.TX_FRAUD == 1])
        day = df[first_day + 14 + k == df.TX_TIME_DAYS]
        parts.append(day[~day.CUSTOMER_ID.isin(known)])
    return pd.concat(parts)


def card_precision_at_k(test: pd.DataFrame, score: str, k: int = 100) -> tuple[float, list[float]]:
    """Mean daily Card Precision@k (handbook definition) and the daily values."""
    detected: set[int] = set()
    daily = []
    for day in sorted(test.TX_TIME_DAYS.unique()):
        d = test[day == test.TX_TIME_DAYS]
        d = d[~d.CUSTOMER_ID.isin(detected)]
        cards = d.groupby("CUSTOMER_ID").agg(s=(score, "max"), y=("TX_FRAUD", "max"))
        top = cards.sort_values("s", ascending=False).head(k)
        hits = top.index[top.y == 1]
        daily.append(len(hits) / k)
        detected |= set(int(c) for c in hits)
    return float(np.mean(daily)), daily


def handbook_metrics(test: pd.DataFrame, score: str) -> tuple[float, float, float]:
    """(AUC ROC, AP, CP@100) rounded to 3 decimals, as the handbook reports them."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = test.TX_FRAUD.to_numpy(), test[score].to_numpy()
    cp, _ = card_precision_at_k(test, score)
    return (
        round(float(roc_auc_score(y, s)), 3),
        round(float(average_precision_score(y, s)), 3),
        round(cp, 3),
    )


def score_stream(
    s: Settings,
    events: Callable[[], Iterable[bytes]],
    total: int,
    progress: bool = True,
    labels: Callable[[], Iterable[bytes]] | None = None,
) -> pd.DataFrame:
    """Run ``events`` through ``build_flow``; one row per scored transaction.

    Columns: TRANSACTION_ID, risk_raw, hst (percentile), flagged, learned, profile
    (amount z-score), rarity (1 - amount rarity) and risk (risk_raw, ties broken by
    rarity, then hst).  Dead letters raise: an
    adapter must produce valid events.
    """
    from bytewax.testing import run_main

    from dataflows.connectors.local import CallbackSink, IterSource
    from dataflows.flow import build_flow
    from generators.stream import Progress

    ids: list[int] = []
    risk: list[float] = []
    hst: list[float] = []
    flagged: list[bool] = []
    learned: list[float] = []
    profile: list[float] = []
    rarity: list[float] = []
    dead: list[Any] = []
    prog = Progress("scored", total=total) if progress else None

    def rows(batch: list[Any]) -> None:
        for r in batch:
            ids.append(int(r.txn.txn_id))
            risk.append(r.risk_score)
            hst.append(r.anomaly_score)
            flagged.append(r.flagged)
            learned.append(r.features.get("learned_p", 0.0))
            profile.append(r.features["amount_z"])
            rarity.append(1.0 - r.features["amount_rarity"])
        if prog is not None:
            prog.update(len(batch))

    def clock() -> datetime:
        return datetime.now(UTC)

    flow = build_flow(
        s,
        IterSource(events),
        CallbackSink(lambda b: None),
        CallbackSink(rows),
        CallbackSink(dead.extend),
        clock=clock,
        labels=None if labels is None else IterSource(labels),
    )
    run_main(flow)
    if prog is not None:
        prog.done()
    if dead:
        raise ValueError(f"{len(dead)} events refused, first: {dead[0].error_message}")
    out = pd.DataFrame(
        {
            "TRANSACTION_ID": ids,
            "risk_raw": risk,
            "hst": hst,
            "flagged": flagged,
            "learned": learned,
            "profile": profile,
            "rarity": rarity,
        }
    )
    out["risk"] = tie_broken(out.risk_raw, out.rarity, out.hst)
    return out


def tie_broken(*keys: pd.Series) -> np.ndarray:
    """A score ordering rows by ``keys[0]``, ties by ``keys[1]``, and so on (the rank,
    scaled to [0, 1]; rows equal on every key stay tied): exact, where adding small
    multiples would let a later key outweigh small differences of an earlier one.

    >>> s = pd.Series
    >>> tie_broken(s([0.5, 0.5, 0.1, 0.5]), s([0.2, 0.1, 0.9, 0.2])).tolist()
    [0.8333333333333334, 0.3333333333333333, 0.0, 0.8333333333333334]
    """
    cols = [k.to_numpy() for k in keys]
    order = np.lexsort(cols[::-1])
    n = len(order)
    if n == 0:
        return np.zeros(0)
    step = np.zeros(n, dtype=bool)  # a new run of equal keys starts here
    step[0] = True
    for c in cols:
        sc = c[order]
        step[1:] |= sc[1:] != sc[:-1]
    run = np.cumsum(step) - 1
    mean = np.bincount(run, weights=np.arange(n, dtype=float)) / np.bincount(run)
    rank = np.empty(n)
    rank[order] = mean[run]  # rows equal on every key tie (their mean rank)
    return rank / max(n - 1, 1)


@dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    curves: dict[str, pd.DataFrame]
    seconds: float
    events: int
    stream: tuple[date, date]


def run_handbook(
    s: Settings,
    root: Path,
    stream_start: date,
    stream_end: date,
    protocols: tuple[Protocol, ...] = PROTOCOLS,
) -> EvalResult:
    """Stream [stream_start, stream_end) once and evaluate every protocol on it."""
    from generators.datasets import handbook_events, handbook_frame, handbook_labels

    t0 = time.perf_counter()
    start = datetime.combine(stream_start, datetime.min.time(), UTC)
    end = datetime.combine(stream_end, datetime.min.time(), UTC)
    df = handbook_frame(root, start, end)
    scored = score_stream(s, lambda: handbook_events(df), len(df))
    df = df.merge(scored, on="TRANSACTION_ID", how="left", validate="one_to_one")
    fb = score_stream(s, lambda: handbook_events(df), len(df), labels=lambda: handbook_labels(df))
    fb = fb.set_index("TRANSACTION_ID")
    df["risk_fb"] = df.TRANSACTION_ID.map(fb.risk)
    df["learned"] = df.TRANSACTION_ID.map(fb.learned)
    rows: list[dict[str, Any]] = []
    curves: dict[str, pd.DataFrame] = {}
    for p in protocols:
        need = max(p.train_starts) + timedelta(days=21)
        if min(p.train_starts) < stream_start or need > stream_end:
            continue
        tests = [handbook_test_set(df, t) for t in p.train_starts]
        n_test = sum(len(t) for t in tests)
        for key in SCORES:
            rows.append(_row(p, key, [handbook_metrics(t, key) for t in tests], n_test))
        # The ceiling's spread is not reported: it is a bound, not a detector.
        rows.append(
            {**_row(p, CEILING, [label_free_ceiling(t) for t in tests], n_test), "sd": None}
        )
        curves[p.key] = tests[-1][["TX_FRAUD", *SCORES]]
    return EvalResult(rows, curves, time.perf_counter() - t0, len(df), (stream_start, stream_end))


def _row(
    p: Protocol, score: str, per_fold: list[tuple[float, float, float]], n_test: int
) -> dict[str, Any]:
    """One table row: the mean of the folds' metrics (and their spread if several)."""
    m = np.mean(np.array(per_fold), axis=0)
    sd = np.std(np.array(per_fold), axis=0) if len(per_fold) > 1 else None
    return {
        "protocol": p.key,
        "title": p.title,
        "score": score,
        "auc": round(float(m[0]), 3),
        "ap": round(float(m[1]), 3),
        "cp100": round(float(m[2]), 3),
        "sd": None if sd is None else tuple(round(float(v), 3) for v in sd),
        "test_rows": n_test,
    }


def markdown_report(
    r: EvalResult, s: Settings, command: str, generator: str | None = None, ulb: str | None = None
) -> str:
    """The comparison table: our label-free scores beside the published rows."""
    lines = [
        "# Detection quality on the Fraud Detection Handbook data",
        "",
        f"Command: `{command}` ({r.seconds:.0f} s on this machine, {r.events:,} events "
        f"streamed {r.stream[0]} … {r.stream[1] - timedelta(days=1)} through `build_flow`).",
        "",
        f"Our settings: model `{s.model_version}`, shards {s.shards}, HST warm-up "
        f"{s.hst_warmup}, calibration window {s.calibration_window}, review ≥ "
        f"{s.review_threshold}, block ≥ {s.block_threshold}; label delay "
        f"{s.label_delay_days:g} days, learner weight {s.learner_weight}. `risk` and `hst` "
        "are label-free; `risk_fb` and `learned` come from one online pass with delayed "
        "labels, no batch training. The same scores serve every protocol.",
        "",
        "Scores: " + "; ".join(f"`{k}` = {v}" for k, v in SCORES.items()) + ".",
        "",
        "| protocol | detector | AUC ROC | AP | CP@100 | test rows |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in PROTOCOLS:
        ours = [x for x in r.rows if x["protocol"] == p.key]
        for x in ours:
            sd = f" (± {x['sd'][0]}/{x['sd'][1]}/{x['sd'][2]})" if x["sd"] else ""
            who = (
                "*" + CEILING + " (oracle)*"
                if x["score"] == CEILING
                else f"**ours: {x['score']}**{sd}"
            )
            lines.append(
                f"| {p.title} | {who} | {x['auc']} | {x['ap']} | "
                f"{x['cp100']} | {x['test_rows']:,} |"
            )
        if ours:
            for name, auc, ap, cp in PUBLISHED[p.key]:
                lines.append(f"| {p.title} | {name} | {auc} | {ap} | {cp} | |")
    lines += [
        "",
        "Published rows: Le Borgne et al., *Reproducible Machine Learning for Credit Card "
        "Fraud Detection – Practical Handbook* (ULB 2022), as listed in "
        "`../shared/data/fraud_handbook_simulated/README.md`. The supervised rows train on "
        "labelled weeks; the ch.7 IsolationForest/autoencoder inputs include terminal fraud "
        "rates from 7-day-delayed labels.",
        "",
        "The handbook's frauds are amount-driven (scenario 1: amount > 220; scenario 3: a "
        "card's amounts × 5) and terminal-driven (scenario 2: compromised terminals). They "
        "have no geographic, velocity or device signal, which is where most of our rules "
        "look; without labels the terminal scenario is invisible to any per-user detector.",
        "",
        f"The *{CEILING}* rows bound what any detector without labels can reach: an oracle "
        "that ranks every scenario-1 and scenario-3 fraud first and cannot tell scenario-2 "
        "frauds (a compromised terminal changes nothing in the data) from legitimate "
        "transactions. The label-free targets of the issue (the default-HST run, 0.746 / "
        "0.091 / 0.16, and IsolationForest) sit above that bound on AUC and CP@100: both "
        "runs read `TERMINAL_ID_RISK_*`, fraud rates computed from 7-day-delayed labels.",
    ]
    if ulb:
        lines += ["", "## ULB credit-card data, day 1 (River's documented HST result)", "", ulb]
    if generator:
        lines += ["", "## On the project's generator (labelled patterns)", "", generator]
    return "\n".join(lines) + "\n"


def ulb_report(path: Path) -> str:
    """River's documented pipeline reproduced inside a bytewax flow, both engines, and a
    variant with a robust scaler."""
    from dataflows.evaluation.ulb import UlbConfig, run_ulb

    rows = [
        "| configuration (in a bytewax flow) | events | frauds | AUC (exact) | AP | "
        "River ROCAUC, first 2,500 |",
        "|---|---:|---:|---:|---:|---:|",
        "| River docs / dataset README: MinMaxScaler \\| HST(seed=42) | 144,786 | 281 | "
        "0.9126 | 0.2185 | 91.15 % |",
    ]
    for cfg in (UlbConfig(engine="river"), UlbConfig(), UlbConfig(n_trees=25, scaler="zsigmoid")):
        m = run_ulb(path, cfg)
        rows.append(
            f"| {cfg.label().replace('|', chr(92) + '|')} | {m['events']:,.0f} | "
            f"{m['frauds']:.0f} | {m['auc']:.4f} | {m['ap']:.4f} | "
            f"{m['river_rocauc_2500']:.2%} |"
        )
    rows += [
        "",
        "The first two rows reproduce River's figures exactly (the wiring: score then "
        "learn, batches, both engines). A robust scaler (standardise, then a logistic "
        "squash) with 25 trees raises AUC by ~0.012 but lowers AP: no configuration "
        "tried beats River's on both (window 1000, 25 or 50 trees, height 6 also tried).",
    ]
    return "\n".join(rows)


def html_report(r: EvalResult, markdown: str) -> str:
    """A self-contained page: the table and ROC / precision-recall curves per protocol."""
    from plotly.subplots import make_subplots
    from sklearn.metrics import precision_recall_curve, roc_curve

    head = "<html><head><meta charset='utf-8'><title>Detection quality</title></head><body>"
    parts = [head, "<pre style='white-space:pre-wrap;font-family:system-ui'>", markdown, "</pre>"]
    for i, (key, test) in enumerate(r.curves.items()):
        fig = make_subplots(rows=1, cols=2, subplot_titles=("ROC", "Precision-recall"))
        for score in SCORES:
            fpr, tpr, _ = roc_curve(test.TX_FRAUD, test[score])
            prec, rec, _ = precision_recall_curve(test.TX_FRAUD, test[score])
            step = max(1, len(fpr) // 2000)
            fig.add_scatter(x=fpr[::step], y=tpr[::step], name=f"{score} ROC", row=1, col=1)
            step = max(1, len(rec) // 2000)
            fig.add_scatter(x=rec[::step], y=prec[::step], name=f"{score} PR", row=1, col=2)
        fig.update_layout(title=f"{key}: last test week", height=420, template="plotly_white")
        fig.update_xaxes(title_text="false positive rate", row=1, col=1)
        fig.update_yaxes(title_text="true positive rate", row=1, col=1)
        fig.update_xaxes(title_text="recall", row=1, col=2)
        fig.update_yaxes(title_text="precision", row=1, col=2)
        # plotly.js from its CDN, once: keeps the committed page small.
        parts.append(fig.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False))
    parts.append("</body></html>")
    return "\n".join(parts)
