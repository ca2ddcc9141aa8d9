"""Smoke test of ``fraud bench --quick``: the table is produced (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


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
