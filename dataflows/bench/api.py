"""Decision API under open-loop load: ``fraud bench-api``.

Starts, on this machine, the embedded broker (unless ``FRAUD_BROKERS`` is set), the
production flow (``python -m bytewax.run``) and ``fraud serve`` as separate processes,
then sends ``POST /v1/decisions`` at a fixed arrival rate: request *i* leaves at
``t0 + i / rate`` whether or not earlier ones were answered (open loop, so queueing shows
in the latency instead of silently lowering the rate).  Reports client-side p50 / p95 /
p99 / max, the server-side p99 and the share of timed-out (fallback) answers per rate,
and the highest rate of the ladder held with p99 <= 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from dataflows.connectors.embedded import EmbeddedBroker, free_port
from dataflows.connectors.kafka import create_topics
from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.settings import Settings, settings_env

__all__ = ["ApiLeg", "measure_api"]

ROOT = Path(__file__).resolve().parents[2]
KEY = "bench-key-0123456789abcdef"


@dataclass(frozen=True)
class ApiLeg:
    rate: float
    sent: int
    ok: int
    timed_out: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    server_p99_ms: float


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _bodies(seed: int) -> Iterator[bytes]:
    cfg = GeneratorConfig(seed=seed, users=5000, fraud_rate=0.02, id_prefix=f"api{seed}-")
    for _, v in event_stream(cfg):
        yield v


async def _leg(url: str, rate: float, seconds: float, bodies: Iterator[bytes]) -> ApiLeg:
    n = int(rate * seconds)
    lat: list[float] = []
    server: list[float] = []
    timed_out = ok = 0
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:

        async def one(body: bytes) -> None:
            nonlocal timed_out, ok
            t = time.perf_counter()
            r = await client.post("/v1/decisions", content=body, headers=headers)
            lat.append((time.perf_counter() - t) * 1000.0)
            if r.status_code == 200:
                ok += 1
                d = r.json()
                server.append(float(d.get("latency_ms", float("nan"))))
                timed_out += bool(d.get("timed_out"))

        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(next(bodies))))
        await asyncio.gather(*tasks, return_exceptions=True)
    return ApiLeg(
        rate,
        n,
        ok,
        timed_out,
        _pct(lat, 0.5),
        _pct(lat, 0.95),
        _pct(lat, 0.99),
        max(lat) if lat else float("nan"),
        _pct(server, 0.99),
    )


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not start within {timeout_s:g} s")


def measure_api(
    base: Settings,
    rates: tuple[float, ...] = (200.0, 500.0),
    seconds: float = 10.0,
    ladder: tuple[float, ...] = (100.0, 200.0, 300.0, 400.0, 500.0, 700.0, 1000.0),
    say: Callable[[str], None] = print,
) -> tuple[list[ApiLeg], float | None]:
    """Legs at ``rates``, then the ``ladder`` until p99 exceeds 100 ms; returns the legs and
    the highest ladder rate held (None if none)."""
    broker = None if base.brokers else EmbeddedBroker().start()
    tag = uuid.uuid4().hex[:6]
    port = free_port()
    s = base.model_copy(
        update={
            "brokers": base.brokers or broker.bootstrap,  # type: ignore[union-attr]
            "topic_transactions": f"api-tx-{tag}",
            "topic_alerts": f"api-alerts-{tag}",
            "topic_dlq": f"api-dlq-{tag}",
            "topic_feedback": f"api-fb-{tag}",
            "topic_decisions": f"api-dec-{tag}",
            "partitions": 1,
            "kafka_tail": True,
            "feedback_input": False,
            "api_keys": KEY,
            "api_host": "127.0.0.1",
            "api_port": port,
            "clickhouse_url": f"chdb://{tempfile.mkdtemp(prefix='bench-api-')}",
        }
    )
    create_topics(s)
    env = {**os.environ, **settings_env(s.model_dump())}
    quiet = {"cwd": ROOT, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    flow = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "dataflows.main:get_flow()"], **quiet
    )  # type: ignore[call-overload]
    api = subprocess.Popen([sys.executable, "-m", "dataflows.cli", "serve"], **quiet)  # type: ignore[call-overload]
    url = f"http://127.0.0.1:{port}"
    legs: list[ApiLeg] = []
    held: float | None = None
    try:
        _wait_ready(url)
        bodies = _bodies(seed=21)
        say("warm-up: 5 s at 100 requests/s")
        asyncio.run(_leg(url, 100.0, 5.0, bodies))
        # The ladder first, slowest rate first: an overloaded leg leaves a backlog that
        # would spoil the next one, so each leg also starts after a pause.
        for rate in ladder:
            time.sleep(3.0)
            say(f"ladder: {rate:g} requests/s")
            leg = asyncio.run(_leg(url, rate, seconds, bodies))
            legs.append(leg)
            if not leg.p99_ms <= 100.0 or leg.ok < leg.sent:
                break
            held = rate
        for rate in rates:
            if any(x.rate == rate for x in legs):
                continue
            time.sleep(3.0)
            say(f"{rate:g} requests/s for {seconds:g} s")
            legs.append(asyncio.run(_leg(url, rate, seconds, bodies)))
        legs.sort(key=lambda x: x.rate)
    finally:
        for p in (api, flow):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
            if p.poll() is None:
                p.kill()
        if broker is not None:
            broker.stop()
    return legs, held


def format_legs(legs: list[ApiLeg], held: float | None) -> str:
    lines = [
        "| rate (req/s) | sent | answered | timed out | p50 | p95 | p99 | max | server p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in legs:
        share = x.timed_out / x.ok if x.ok else float("nan")
        lines.append(
            f"| {x.rate:g} | {x.sent:,} | {x.ok:,} | {share:.1%} | {x.p50_ms:.1f} ms | "
            f"{x.p95_ms:.1f} ms | {x.p99_ms:.1f} ms | {x.max_ms:.1f} ms "
            f"| {x.server_p99_ms:.1f} ms |"
        )
    lines.append(
        f"\nHighest rate held with p99 <= 100 ms: {held:g} requests/s"
        if held
        else "\nNo rate of the ladder held p99 <= 100 ms"
    )
    return "\n".join(lines)
