"""Live push of new alerts to open pages: server-sent events fed from the alerts topic.

The flow writes every alert to ``fraud-alerts``; one listener per app process (injected
by the caller, see ``dataflows.connectors.alert_listener``) hands each to :class:`AlertHub`,
which wakes every open ``/live/alerts`` stream.  The browser's ``EventSource``
(dash-extensions) receives it with no polling and reconnects by itself.

Each message is a *snapshot*: the newest :data:`SHOWN` alerts, not just the new one.  A
Dash prop that changes twice before its callback runs delivers only the last value, so
per-alert messages would lose alerts in a burst; with snapshots the next message carries
whatever a skipped one did.  A stream drains everything pending before it sends, so a
burst costs one message, and a slow client never slows the others.  The queue page
reloads its grid from ClickHouse on a push, at most once per ``PUSH_REFRESH_S``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Response

from schemas.scored import Alert
from schemas.units import format_ts

__all__ = ["AlertHub", "live_item", "sse_stream"]

log = logging.getLogger(__name__)

CLIENT_QUEUE = 256
"""Wake-ups buffered per open stream before the oldest are dropped (each message is a
snapshot, so a dropped wake-up loses nothing)."""
SHOWN = 8
"""Alerts in each snapshot, newest first."""
KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""
STREAM_S = 300.0
"""A stream ends after this long (the browser reconnects at once), so a server thread is
never held forever by a tab left open."""
MAX_STREAMS = 64


def live_item(a: Alert) -> dict[str, Any]:
    """What a page shows of a pushed alert: small, text and numbers only."""
    top = a.reasons[0] if a.reasons else None
    return {
        "kind": "alert",
        "alert_id": a.alert_id,
        "txn_id": a.txn_id,
        "user_id": a.user_id,
        "decision": a.decision,
        "risk": round(a.risk_score, 3),
        "amount": f"{a.amount:,.2f} {a.currency}",
        "reason": top.detail if top is not None else "",
        "code": top.code if top is not None else "",
        "ts": format_ts(a.ts),
        "created_ms": int(a.created_at.timestamp() * 1000),
        "pushed_ms": int(time.time() * 1000),
    }


class AlertHub:
    """Fans alerts out to the open streams of this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: set[queue.Queue[bytes]] = set()
        self.recent: deque[dict[str, Any]] = deque(maxlen=SHOWN)
        self.published = 0

    def publish(self, alert: Alert) -> None:
        item = live_item(alert)
        with self._lock:
            self.recent.append(item)
            self.published += 1
        self._fan_out(b"alerts")

    def publish_change(self, case_ids: list[str], actor: str) -> None:
        """An analyst acted on cases: other open queues reload at once."""
        self._fan_out(b"case")

    def snapshot(self) -> bytes:
        """The ``alerts`` message: the newest alerts, newest first."""
        with self._lock:
            items = list(reversed(self.recent))
        return orjson.dumps({"kind": "alerts", "items": items, "sent_ms": int(time.time() * 1000)})

    def _fan_out(self, data: bytes) -> None:
        with self._lock:
            subs = list(self._subs)
        for q in subs:
            try:
                q.put_nowait(data)
            except queue.Full:  # a slow client drops its oldest push, never blocks us
                try:
                    q.get_nowait()
                    q.put_nowait(data)
                except (queue.Empty, queue.Full):
                    pass

    def subscribe(self) -> queue.Queue[bytes] | None:
        with self._lock:
            if len(self._subs) >= MAX_STREAMS:
                return None
            q: queue.Queue[bytes] = queue.Queue(CLIENT_QUEUE)
            self._subs.add(q)
            return q

    def unsubscribe(self, q: queue.Queue[bytes]) -> None:
        with self._lock:
            self._subs.discard(q)

    @property
    def streams(self) -> int:
        with self._lock:
            return len(self._subs)


def _events(hub: AlertHub, q: queue.Queue[bytes], stream_s: float) -> Iterator[bytes]:
    try:
        yield b"retry: 1000\n: connected\n\n"
        end = time.monotonic() + stream_s
        while (left := end - time.monotonic()) > 0:
            try:
                kinds = {q.get(timeout=min(KEEPALIVE_S, left))}
            except queue.Empty:
                yield b": keepalive\n\n"
                continue
            while True:  # a burst becomes one message
                try:
                    kinds.add(q.get_nowait())
                except queue.Empty:
                    break
            if b"case" in kinds:
                yield b'data: {"kind":"case"}\n\n'
            if b"alerts" in kinds:
                yield b"data: " + hub.snapshot() + b"\n\n"
    finally:
        hub.unsubscribe(q)


def sse_stream(hub: AlertHub, stream_s: float = STREAM_S) -> Response:
    """The ``/live/alerts`` response: ``data:`` lines of JSON (see the module docstring)."""
    q = hub.subscribe()
    if q is None:
        return Response("too many live streams", status=503, headers={"Retry-After": "5"})
    return Response(
        _events(hub, q, stream_s),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
