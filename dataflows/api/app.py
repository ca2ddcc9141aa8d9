"""The decision API: ``POST /v1/decisions`` answers a card authorisation while it waits.

The answer comes from the flow itself (same state, rules and model as the stream): the
request's body is validated with the flow's own decoder, produced to ``transactions``
(key user_id) and answered with the decision the flow publishes for its txn_id (see
:mod:`dataflows.api.replies`).  Past ``decision_deadline_ms`` the configured fallback
answers (``timed_out: true``, reason ``decision_timeout``); the flow still scores the
transaction and ``GET /v1/decisions/{txn_id}`` returns it from ClickHouse later.  A retry
with the same txn_id gets the same decision: the flow answers duplicates with their
first decision without counting them again.

Refusals never reach the broker: 401 without a valid key (``X-API-Key``; keys are kept as
SHA-256 digests and compared in constant time, never logged), 415 unless JSON, 413 over
``max_message_bytes``, 422 with the dead-letter reason code and field the flow would give.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from dataflows.api.replies import Replies
from dataflows.connectors.kafka import make_producer, tcp_reachable
from schemas.fields import json_schema_for
from schemas.jsonschema import all_schemas
from schemas.scored import DECISION_SPECS, DECISION_VERSION, Decision, Reason
from schemas.settings import Settings
from schemas.transaction import DecodeError, decode_event
from schemas.vocab import DECISION_TIMEOUT

__all__ = [
    "create_app",
    "key_digests",
    "key_matches",
    "openapi_components",
    "start_server",
    "stop_server",
]

log = logging.getLogger(__name__)

READY_GRACE_S = 1.0
"""Not ready when a request timed out this long ago and no decision at all was read
since: a live flow answers the timed-out transaction itself soon after."""


# --- auth: pure functions ---------------------------------------------------------------


def key_digests(api_keys: str) -> tuple[bytes, ...]:
    """SHA-256 digests of the configured keys (raw, or ``sha256:<hex>`` already hashed):
    the raw keys are not kept past start-up.

    >>> key_digests("sha256:" + "00" * 32) == (bytes(32),)
    True
    """
    out = []
    for k in filter(None, api_keys.split(",")):
        if k.startswith("sha256:"):
            out.append(bytes.fromhex(k.removeprefix("sha256:")))
        else:
            out.append(hashlib.sha256(k.encode()).digest())
    return tuple(out)


def key_matches(given: str | None, digests: tuple[bytes, ...]) -> bool:
    """Whether ``given`` is one of the keys; every digest is compared (constant time, no
    early exit), so timing says nothing about which key or how much of it matched."""
    if not digests:
        return True  # no keys configured: authentication off (local demo)
    if not given:
        return False
    d = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    ok = False
    for k in digests:
        ok |= hmac.compare_digest(d, k)
    return ok


# --- contract: one definition reused from the schema specs ------------------------------


def _component(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("$schema", "$id")}


ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "Dead-letter reason code, or the API's own."},
        "message": {"type": "string"},
        "field": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
}


def openapi_components() -> dict[str, Any]:
    """Transaction v2 (request), Decision v1 (stored answer), the live answer and errors,
    all generated from the same specs as the Kafka JSON and the ClickHouse columns."""
    decision = _component(json_schema_for("Decision", DECISION_VERSION, DECISION_SPECS))
    answer = {
        "allOf": [
            {"$ref": "#/components/schemas/Decision"},
            {
                "type": "object",
                "required": ["timed_out", "latency_ms"],
                "properties": {
                    "timed_out": {
                        "type": "boolean",
                        "description": "The flow did not answer within the deadline: "
                        "the fallback policy decided (reason decision_timeout).",
                    },
                    "latency_ms": {"type": "number", "description": "Server-side latency."},
                },
            },
        ]
    }
    return {
        "Transaction": _component(all_schemas()["transaction-v2.json"]),
        "Decision": decision,
        "DecisionAnswer": answer,
        "Error": ERROR_SCHEMA,
    }


def _ref(name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


AUTH_RESPONSES = {"401": _ref("Error", "Missing or invalid API key.")}


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "field": field}, status_code=status)


def fallback(s: Settings, txn_id: str, user_id: str, now: datetime) -> Decision:
    """The configured policy's answer when the flow did not answer in time."""
    detail = f"no decision within {s.decision_deadline_ms} ms: {s.decision_fallback} by policy"
    return Decision(
        txn_id,
        user_id,
        s.decision_fallback,
        0.0,
        (Reason(DECISION_TIMEOUT, detail, 0.0),),
        "fallback",
        "fallback",
        now,
    )


class _Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps may live
    in one process: tests, the demo beside the flow's metrics)."""

    def __init__(self, replies: Replies) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "fraud_api_requests",
            "Requests by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "fraud_api_decision_seconds",
            "POST /v1/decisions server-side latency by outcome (decided, timed_out).",
            ["outcome"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.5, 1.0, 5.0),
            registry=r,
        )
        Gauge("fraud_api_waiting", "Requests waiting for a decision.", registry=r).set_function(
            lambda: replies.waiting
        )
        Gauge(
            "fraud_api_decisions_read", "Decisions read from the topic (all txn_ids).", registry=r
        ).set_function(lambda: replies.decisions_read)


def create_app(
    s: Settings,
    *,
    store: Callable[[], Any] | None = None,
    replies: Replies | None = None,
) -> FastAPI:
    """The application.  ``store`` returns a :class:`clickhouse.store.Store` (built lazily
    on first GET: the service starts without ClickHouse)."""
    digests = key_digests(s.api_keys)
    replies = replies or Replies(s)
    producer = make_producer(s)
    metrics = _Metrics(replies)
    state: dict[str, Any] = {"timed_out_at": None, "store": None}
    deadline_s = s.decision_deadline_ms / 1000.0
    max_bytes = s.max_message_bytes

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        replies.start()
        stop = asyncio.Event()
        poller = asyncio.create_task(_poll_producer(producer, stop))
        try:
            yield
        finally:
            stop.set()
            await poller
            producer.flush(5.0)
            replies.stop()

    app = FastAPI(
        title="fraudflow decision API",
        version="1",
        summary="Card authorisations decided in-line by the fraud detection flow.",
        lifespan=lifespan,
    )

    def _store() -> Any:
        if state["store"] is None:
            if store is None:
                from clickhouse.store import Store

                state["store"] = Store.from_settings(s)
            else:
                state["store"] = store()
        return state["store"]

    def authorised(request: Request) -> bool:
        return key_matches(request.headers.get("x-api-key"), digests)

    @app.post(
        "/v1/decisions",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Transaction"}}
                },
            }
        },
        responses={
            "200": _ref("DecisionAnswer", "The flow's decision (or the fallback, timed_out)."),
            **AUTH_RESPONSES,
            "413": _ref("Error", "Body larger than max_message_bytes."),
            "415": _ref("Error", "Content type is not application/json."),
            "422": _ref("Error", "Refused by the Transaction decoder (dead-letter code)."),
            "503": _ref("Error", "The producer queue is full."),
        },
    )
    async def post_decision(request: Request) -> Response:
        """Decide a transaction (Transaction v1 or v2 JSON) within the deadline."""
        t0 = time.perf_counter()
        refused = await _refusal(request, authorised, max_bytes)
        if isinstance(refused, Response):
            metrics.requests.labels("post_decision", str(refused.status_code)).inc()
            return refused
        body = refused
        res = decode_event(body, max_bytes)
        if isinstance(res, DecodeError):
            metrics.requests.labels("post_decision", "422").inc()
            return error(422, res.code, res.message, res.field)
        txn = res[0]
        fut, first = replies.wait(txn.txn_id)
        try:
            if first:
                try:
                    producer.produce(s.topic_transactions, key=txn.user_id.encode(), value=body)
                except BufferError:
                    metrics.requests.labels("post_decision", "503").inc()
                    return error(503, "overloaded", "producer queue full; retry")
            left = deadline_s - (time.perf_counter() - t0)
            try:
                decision = await asyncio.wait_for(fut, max(left, 0.0))
                timed_out = False
            except (TimeoutError, ValueError, KeyError):
                decision = fallback(s, txn.txn_id, txn.user_id, datetime.now(UTC))
                timed_out = True
                state["timed_out_at"] = time.monotonic()
        finally:
            replies.forget(txn.txn_id, fut)
        took = time.perf_counter() - t0
        metrics.latency.labels("timed_out" if timed_out else "decided").observe(took)
        metrics.requests.labels("post_decision", "200").inc()
        return JSONResponse(
            {**decision.to_json_dict(), "timed_out": timed_out, "latency_ms": took * 1000.0}
        )

    @app.get(
        "/v1/decisions/{txn_id}",
        responses={
            "200": _ref("Decision", "The stored decision (Decision v1)."),
            **AUTH_RESPONSES,
            "404": _ref("Error", "No decision stored for this txn_id."),
        },
    )
    def get_decision(txn_id: str, request: Request) -> Response:
        """The stored decision of a transaction, for clients that could not wait."""
        from clickhouse.queries import decision_by_txn

        if not authorised(request):
            metrics.requests.labels("get_decision", "401").inc()
            return error(401, "unauthorized", "missing or invalid X-API-Key")
        found = decision_by_txn(_store(), txn_id) if 0 < len(txn_id) <= 64 else None
        status = "200" if found is not None else "404"
        metrics.requests.labels("get_decision", status).inc()
        if found is None:
            return error(404, "not_found", "no decision stored for this txn_id", "txn_id")
        return JSONResponse(found.to_json_dict())

    @app.get("/healthz", responses={"200": {"description": "The process serves."}})
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        responses={"503": {"description": "Broker unreachable or the flow not answering."}},
    )
    def readyz() -> Response:
        """Ready: the broker answers, the decisions topic is assigned, and the flow is not
        silent while requests time out (an idle system stays ready: no evidence of a
        dead flow is not evidence of one)."""
        why = tcp_reachable(s.brokers.split(","), 1.0)
        last, timed_out = replies.last_decision_at, state["timed_out_at"]
        now = time.monotonic()
        silent = (
            timed_out is not None
            and (last is None or last < timed_out)
            and now - timed_out > READY_GRACE_S
        )
        body = {
            "broker": "ok" if why is None else why,
            "decisions_assigned": replies.assigned.is_set(),
            "last_decision_age_s": None if last is None else round(now - last, 3),
            "flow": "silent while requests time out" if silent else "ok",
        }
        ready = why is None and replies.assigned.is_set() and not silent
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        responses={
            "200": {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(openapi_components())
            doc["components"]["securitySchemes"] = {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            }
            for path in ("/v1/decisions", "/v1/decisions/{txn_id}"):
                for op in doc["paths"][path].values():
                    op["security"] = [{"apiKey": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


async def _refusal(
    request: Request, authorised: Callable[[Request], bool], max_bytes: int
) -> Response | bytes:
    """401 / 415 / 413 before anything is decoded; else the body (read up to the limit)."""
    if not authorised(request):
        return error(401, "unauthorized", "missing or invalid X-API-Key")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return error(415, "unsupported_media_type", f"expected application/json, got {ctype!r}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return error(413, "too_large", f"body is {declared} bytes, limit {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return error(413, "too_large", f"body exceeds the limit of {max_bytes} bytes")
    return bytes(body)


async def _poll_producer(producer: Any, stop: asyncio.Event) -> None:
    """Serve the producer's delivery callbacks (and its logging hooks) off the request path."""
    while not stop.is_set():
        await asyncio.to_thread(producer.poll, 0.1)


def stop_server(server: Any, timeout_s: float = 10.0) -> None:
    """Stop a server of :func:`start_server` and wait for its shutdown (the replies
    consumer closes in it): a process that exits while a librdkafka client is still
    closing in another thread can die of SIGSEGV in interpreter shutdown."""
    server.should_exit = True
    thread = getattr(server, "thread", None)
    if thread is not None:
        thread.join(timeout_s)


def start_server(app: FastAPI, host: str, port: int, timeout_s: float = 20.0) -> Any:
    """Serve ``app`` with uvicorn in a daemon thread (demo, tests, bench); returns the
    ``uvicorn.Server`` once it accepts connections (stop it with :func:`stop_server`)."""
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True, name="decision-api")
    server.thread = thread  # type: ignore[attr-defined]
    thread.start()
    end = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            raise RuntimeError(f"decision API did not start on {host}:{port}")
        time.sleep(0.02)
    return server
