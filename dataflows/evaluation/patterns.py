"""Detection quality on labelled streams: recall per fraud pattern, false-positive share.

Two recalls per pattern, because a fraud team asks both questions:

* transaction recall: the share of the pattern's transactions flagged;
* incident recall: the share of attacks with at least one transaction flagged.  A burst
  (card testing, velocity) is only observable after a few events, so its first ones
  cannot be caught; the incident is, and blocking then stops the rest.

An incident is a run of same-pattern fraudulent transactions of one user with gaps of at
most :data:`INCIDENT_GAP_MS`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.scored import ScoredTransaction

__all__ = ["PatternStats", "format_report", "pattern_report"]

INCIDENT_GAP_MS = 6 * 3_600_000


@dataclass(frozen=True)
class PatternStats:
    pattern: str
    transactions: int
    flagged: int
    incidents: int
    incidents_caught: int

    @property
    def txn_recall(self) -> float:
        return self.flagged / self.transactions if self.transactions else 0.0

    @property
    def incident_recall(self) -> float:
        return self.incidents_caught / self.incidents if self.incidents else 0.0


def pattern_report(rows: Iterable[ScoredTransaction]) -> dict[str, PatternStats]:
    """Per-pattern stats; the key ``legit`` holds legitimate traffic (flagged = FP)."""
    txns: dict[str, int] = defaultdict(int)
    flagged: dict[str, int] = defaultdict(int)
    runs: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
    for r in rows:
        lab = r.label
        p = (lab.pattern or "fraud") if lab is not None and lab.is_fraud else "legit"
        txns[p] += 1
        flagged[p] += r.flagged
        if p != "legit":
            runs[(p, r.txn.user_id)].append((r.txn.ts.timestamp() * 1000.0, r.flagged))
    incidents: dict[str, int] = defaultdict(int)
    caught: dict[str, int] = defaultdict(int)
    for (p, _), evs in runs.items():
        evs.sort()
        last, hit = None, False
        for ts, fl in evs:
            if last is not None and ts - last > INCIDENT_GAP_MS:
                incidents[p] += 1
                caught[p] += hit
                hit = False
            hit = hit or fl
            last = ts
        incidents[p] += 1
        caught[p] += hit
    return {
        p: PatternStats(p, txns[p], flagged[p], incidents.get(p, 0), caught.get(p, 0))
        for p in sorted(txns)
    }


def format_report(stats: dict[str, PatternStats]) -> str:
    """Markdown table of :func:`pattern_report`."""
    lines = [
        "| pattern | transactions | flagged | txn recall | incidents | incident recall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p, s in stats.items():
        if p == "legit":
            continue
        lines.append(
            f"| {p} | {s.transactions:,} | {s.flagged:,} | {s.txn_recall:.3f} | "
            f"{s.incidents:,} | {s.incident_recall:.3f} |"
        )
    if "legit" in stats:
        s = stats["legit"]
        lines.append(
            f"| legitimate (false-positive share) | {s.transactions:,} | {s.flagged:,} | "
            f"{s.txn_recall:.4f} | | |"
        )
    return "\n".join(lines)
