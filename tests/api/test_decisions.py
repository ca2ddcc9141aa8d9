"""POST /v1/decisions answered by the running flow; retries, refusals, deadline, replicas."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from schemas.scored import DECISIONS
from tests.api.conftest import API_KEY, Service, serve
from tests.conftest import txn_bytes, txn_dict
from tests.integration.conftest import consume_all

pytestmark = pytest.mark.integration
DECISION_FIELDS = (
    "txn_id",
    "user_id",
    "decision",
    "risk_score",
    "reasons",
    "model_version",
    "rules_version",
    "processed_at",
    "schema_version",
)


def post(c: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    return c.post(
        "/v1/decisions", content=body, headers={"content-type": "application/json", **headers}
    )


def decision_of(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return {k: r.json()[k] for k in DECISION_FIELDS}


def stored(service: Service, txn_id: str, timeout_s: float = 15.0) -> httpx.Response:
    with service.client() as c:
        end = time.monotonic() + timeout_s
        while True:
            r = c.get(f"/v1/decisions/{txn_id}")
            if r.status_code == 200 or time.monotonic() > end:
                return r
            time.sleep(0.1)


def test_the_flow_answers_with_decision_reasons_and_versions(service: Service) -> None:
    with service.client() as c:
        r = post(c, txn_bytes(1, txn_id="api-1", user_id="ann", amount=4500.0))
    body = r.json()
    assert r.status_code == 200 and body["timed_out"] is False
    assert body["txn_id"] == "api-1" and body["user_id"] == "ann"
    assert body["decision"] in DECISIONS and 0 < body["risk_score"] <= 1
    assert "high_amount" in {x["code"] for x in body["reasons"]}
    assert body["model_version"].startswith("rules-v3+hst-") and body["rules_version"] == "rules-v3"
    assert 0 < body["latency_ms"] < 5000
    # The same decision is stored and served to a client that could not wait.
    got = stored(service, "api-1")
    assert got.status_code == 200 and got.json() == decision_of(r)


def test_a_retry_gets_the_same_decision_and_is_counted_once(service: Service) -> None:
    first = txn_bytes(10, txn_id="retry-1", user_id="bob")
    with service.client() as c:
        answers = [decision_of(post(c, first)) for _ in range(4)]
        nxt = decision_of(post(c, txn_bytes(10, txn_id="retry-2", user_id="bob")))
    assert answers[1:] == answers[:1] * 3
    assert nxt["txn_id"] == "retry-2"
    assert stored(service, "retry-2").status_code == 200
    # The user's windows saw retry-1 once: the next one counts 2 events in a minute.
    rows = service.store.client.query(
        f"SELECT txn_id, features['cnt_1m'] FROM {service.s.clickhouse_database}.transactions"
        " FINAL WHERE user_id = 'bob' ORDER BY txn_id"
    ).result_rows
    assert rows == [("retry-1", 1.0), ("retry-2", 2.0)]


BAD = [
    ({}, b"{}", "application/json", 401, "unauthorized", None),
    (
        {"X-API-Key": "wrong-key-0123456789"},
        txn_bytes(),
        "application/json",
        401,
        "unauthorized",
        None,
    ),
    (
        {"X-API-Key": API_KEY},
        txn_bytes(txn_id="ref-1"),
        "text/plain",
        415,
        "unsupported_media_type",
        None,
    ),
    ({"X-API-Key": API_KEY}, b"x" * 20_000, "application/json", 413, "too_large", None),
    (
        {"X-API-Key": API_KEY},
        txn_bytes(txn_id="ref-2", amount=-5),
        "application/json",
        422,
        "out_of_range",
        "amount",
    ),
    ({"X-API-Key": API_KEY}, b"{not json", "application/json", 422, "invalid_json", None),
    (
        {"X-API-Key": API_KEY},
        txn_bytes(txn_id="ref-3", schema_version=9),
        "application/json",
        422,
        "unknown_schema_version",
        "schema_version",
    ),
    (
        {"X-API-Key": API_KEY},
        orjson.dumps({k: v for k, v in txn_dict(txn_id="ref-4").items() if k != "user_id"}),
        "application/json",
        422,
        "missing_field",
        "user_id",
    ),
]


def test_refusals_carry_the_dead_letter_codes_and_never_reach_the_broker(
    service: Service,
) -> None:
    with httpx.Client(base_url=service.url) as c:
        for headers, body, ctype, status, code, field in BAD:
            r = c.post("/v1/decisions", content=body, headers={**headers, "content-type": ctype})
            assert (r.status_code, r.json()["code"], r.json()["field"]) == (status, code, field)
        assert c.get("/v1/decisions/api-1").status_code == 401
    with service.client() as c:
        assert c.get("/v1/decisions/never-seen").status_code == 404
        decision_of(post(c, txn_bytes(20, txn_id="after-refusals", user_id="cat")))
    sent = consume_all(service.s.brokers, service.s.topic_transactions, service.s.partitions)
    ids = {orjson.loads(m.value())["txn_id"] for m in sent}
    assert "after-refusals" in ids and not ids & {"t0", "ref-1", "ref-2", "ref-3", "ref-4"}


def test_past_the_deadline_the_fallback_answers_and_the_flow_still_scores(
    service: Service,
) -> None:
    s = service.s.model_copy(update={"decision_deadline_ms": 1, "decision_fallback": "approve"})
    url, server = serve(s)
    try:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}) as c:
            r = post(c, txn_bytes(30, txn_id="slow-1", user_id="dan", amount=9000.0))
    finally:
        server.should_exit = True
    body = r.json()
    assert r.status_code == 200 and body["timed_out"] is True
    assert body["decision"] == "approve"
    assert [x["code"] for x in body["reasons"]] == ["decision_timeout"]
    later = stored(service, "slow-1")
    assert later.status_code == 200 and later.json()["model_version"].startswith("rules-v3")
    assert "high_amount" in {x["code"] for x in later.json()["reasons"]}


def test_replicas_side_by_side_each_get_their_own_answers(service: Service) -> None:
    url2, server = serve(service.s)

    async def burst() -> list[tuple[str, str]]:
        headers = {"X-API-Key": API_KEY, "content-type": "application/json"}
        async with (
            httpx.AsyncClient(base_url=service.url, headers=headers, timeout=10) as a,
            httpx.AsyncClient(base_url=url2, headers=headers, timeout=10) as b,
        ):
            calls = [(c, f"rep-{i}") for i in range(30) for c in [(a, b)[i % 2]]]
            rs = await asyncio.gather(
                *(
                    c.post("/v1/decisions", content=txn_bytes(i, txn_id=t, user_id=f"u{i % 7}"))
                    for i, (c, t) in enumerate(calls)
                )
            )
            return [(t, r.json()["txn_id"]) for (_, t), r in zip(calls, rs, strict=True)]

    try:
        pairs = asyncio.run(burst())
    finally:
        server.should_exit = True
    assert all(sent == got for sent, got in pairs) and len(pairs) == 30


def test_health_readiness_metrics_and_docs(service: Service) -> None:
    with httpx.Client(base_url=service.url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["broker"] == "ok"
        metrics = c.get("/metrics").text
        assert 'fraud_api_requests_total{endpoint="post_decision",status="200"}' in metrics
        assert "fraud_api_decision_seconds_bucket" in metrics
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
    assert {"Transaction", "Decision", "DecisionAnswer", "Error"} <= set(
        spec["components"]["schemas"]
    )
