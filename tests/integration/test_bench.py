"""Smoke test of ``fraud bench --quick``: the table is produced (no speed is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def table(text: str) -> dict[str, tuple[str, str]]:
    """The bench table's rows: leg -> (figure, notes)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def numbers(figure: str) -> list[float]:
    """Every number of a figure; none may be missing or nan."""
    assert "nan" not in figure.lower(), figure
    found = [float(x.replace(",", "")) for x in NUMBER.findall(figure)]
    assert found, figure
    return found


@pytest.mark.integration
def test_bench_quick_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    cmd = [sys.executable, "-m", "dataflows.cli", "bench", "--quick", "--out", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    text = out.read_text()
    for leg in (
        "1. River HST",
        "2. flow, memory",
        "2 processes",
        "64 shards, 2 processes",
        "3. broker → flow",
        "produce→alert latency",
        "4. memory",
        "1. numpy HST (bitwise-equal)",
        "recovery on",
        "HST + feature scaling + calibration",
    ):
        assert leg in text, leg
    assert "cores" in text and "bytewax 0.21.1" in text
    rows = table(text)
    # the reference leg: the plain loop from memory (both engines) with the flow's ratio
    for leg in (
        "2. plain loop (no framework), memory → null sinks, 1 process, River",
        "2. plain loop, numpy",
    ):
        figure, notes = rows[leg]
        assert numbers(figure)[0] > 0
        assert numbers(notes.split("× the loop")[0])[-1] > 0
    # scale-out end to end (--quick: the numpy engine) and the plain Kafka loop
    where = "12 partitions aligned, feedback loop on"
    legs = ["3. plain confluent-kafka loop (no framework), broker → alerts topic, numpy"]
    for topology in ("funnel", "local"):
        legs += [
            f"3. broker → flow → alerts topic + chDB, {where} ({topology}), numpy, 1 process",
            f"3. same ({topology}), numpy, 2 processes",
        ]
        assert "goal ≥ 30,000 events/s" in rows[f"3. same ({topology}), numpy, 2 processes"][1]
    for leg in legs:
        figure, notes = rows[leg]
        assert figure.endswith("events/s") and numbers(figure)[0] > 0, leg
    # the local feedback loop re-keys no scored transaction: far fewer pickles
    funnel, local = (
        numbers(rows[f"3. same ({k}), numpy, 2 processes"][1].split("goal")[1])[-1]
        for k in ("funnel", "local")
    )
    assert local < funnel / 2, (local, funnel)
    # ... and its rows are written on the process that scored them (writer per worker)
    assert local < 0.5, local
    # produce→alert latency on a 2-process cluster (12 aligned partitions) too
    figure, notes = rows[
        "3. produce→alert latency at 500 events/s, numpy,"
        " 2 processes (12 aligned partitions, local loop)"
    ]
    assert len(numbers(figure)) == 6 and "goal p99 ≤ 50 ms" in notes, (figure, notes)
    # ... and the broker's own floor under it, with no flow
    floor = next(v for k, v in rows.items() if k.startswith("3. broker alone at 500 events/s"))
    p50, p95, p99 = (numbers(floor[0])[i] for i in (1, 3, 5))
    assert 0 < p50 <= p95 <= p99, floor
    # pickles per event: events cross processes unaligned, none do aligned
    for engine in ("River", "numpy"):
        unaligned, aligned = numbers(rows[f"2. items pickled per event, 2 processes, {engine}"][0])
        assert unaligned > 0.1 and aligned == 0.0, engine
    # the flow from memory with the feedback loop on, 1 → 2 processes, in both modes
    for mode in ("production", "event time"):
        leg = f"2. numpy, partition-aligned, feedback loop on (local, {mode}), 1 → 2 processes"
        figure, notes = rows[leg]
        one, two = numbers(figure)
        assert one > 0 and two > 0 and "goal ≥ 1.8 ×" in notes, (figure, notes)
        # every fraud of the stream is a label; summaries and state updates are pickled
        labels, pickled = numbers(notes.split("fraud labels")[0])[-1], notes.split("pickled")[1]
        assert labels > 0 and 0 < numbers(pickled)[1] < 1, notes
