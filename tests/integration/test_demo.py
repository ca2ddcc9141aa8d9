"""The one-command embedded demo, end to end in subprocesses (it owns its chDB directory)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dataflows.connectors.embedded import free_port

ROOT = Path(__file__).parents[2]
NOON = "2026-01-05T12:00:00+00:00"

COUNT = """
import sys
from clickhouse.store import Store
s = Store("chdb://" + sys.argv[1], "fraud")
print(*s.client.query("SELECT count(), uniqExact(txn_id), min(ts), max(ts) "
                      "FROM fraud.transactions").result_rows[0], sep="|")
print(s.client.query("SELECT count() FROM fraud.alerts").result_rows[0][0])
"""


def _stored(path: Path) -> tuple[int, int, str, str, int]:
    out = subprocess.run(
        [sys.executable, "-c", COUNT, str(path)],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    first, alerts = out.strip().splitlines()[-2:]
    n, uniq, lo, hi = first.split("|")
    return int(n), int(uniq), lo, hi, int(alerts)


def _demo(path: Path, seconds: int, *extra: str) -> tuple[str, list[int]]:
    """Run ``fraud demo`` for ``seconds``; poll the dashboard's pages while it runs, and
    ask its decision API for a decision (its answer's status is the last code)."""
    port, api_port = free_port(), free_port()
    proc = subprocess.Popen(
        # 5 % fraud at 300 tx/s on average: traffic follows the hour of day (0.47-1.55x
        # the average in UTC), so 20 s are 2,800-9,300 events; at the demo's 2 % and
        # ~3,000 events a run could end before any fraud incident fired a rule.  The
        # first run starts at noon (NOON): started near midnight, the seed's incidents
        # fell after the run's 2.5 minutes of event time (6 fraud events, none flagged).
        [
            sys.executable,
            "-m",
            "dataflows.cli",
            "demo",
            "--seconds",
            str(seconds),
            "--port",
            str(port),
            "--rate",
            "300",
            "--fraud-rate",
            "0.05",
            "--set",
            f"clickhouse_url=chdb://{path}",
            "--set",
            f"api_port={api_port}",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    codes: list[int] = []
    api: list[dict] = []
    deadline = time.monotonic() + seconds + 60
    while proc.poll() is None and time.monotonic() < deadline:
        for page in ("/", "/alerts", "/_dash-layout"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=5) as r:
                    codes.append(r.status)
            except OSError:
                pass
        if not api:
            api += _decide(api_port)
        time.sleep(1)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out[-3000:]
    assert api and api[0]["txn_id"] == f"demo-curl-{api_port}", api
    return out, codes


def _decide(port: int) -> list[dict]:
    """The README's curl against the demo: a decision from the running flow (or []).
    Event time now: an event older than ``user_ttl_days`` behind the demo's stream would
    find its user's state (and so its first decision) evicted."""
    from datetime import UTC, datetime

    import orjson

    from tests.conftest import txn_bytes

    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/decisions",
        data=txn_bytes(txn_id=f"demo-curl-{port}", user_id="demo-user", ts=now),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            answer = orjson.loads(r.read())
    except OSError:
        return []
    return [answer] if not answer["timed_out"] else []


def _alive(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


@pytest.mark.integration
def test_demo_runs_everything_stops_cleanly_and_continues(tmp_path: Path) -> None:
    data = tmp_path / "chdb"
    out, codes = _demo(data, 20, "--start", NOON)
    assert "from 2026-01-05 12:00 UTC" in out, "the demo starts at --start"
    assert re.search(r"Dashboard: http://127\.0\.0\.1:\d+", out)
    assert 200 in codes and all(c == 200 for c in codes), codes
    broker = re.search(r"embedded broker \(tansu\) on (127\.0\.0\.1:\d+)", out)
    assert broker is not None
    assert not _alive(f"tcp://{broker.group(1)}"), "the broker must not outlive the demo"
    m = re.search(r"stopped: produced ([\d,]+), scored ([\d,]+), flagged ([\d,]+)", out)
    assert m is not None, out[-2000:]
    produced, scored = (int(m.group(i).replace(",", "")) for i in (1, 2))
    assert produced > 500 and scored > 500
    assert "produce->queryable alert p50" in out
    n1, u1, _, hi1, alerts1 = _stored(data)
    assert n1 == u1 and n1 >= scored - 400, "rows of the last unflushed batch at most"
    assert alerts1 > 0

    out, _ = _demo(data, 10)  # running again continues on the stored data
    assert "continuing after" in out
    n2, u2, _, hi2, _ = _stored(data)
    assert n2 > n1 and u2 == n2, "new ids: nothing overwritten"
    assert hi2 > hi1

    out, _ = _demo(data, 8, "--fresh")
    assert "--fresh: deleted" in out
    n3, *_ = _stored(data)
    assert 0 < n3 < n2
