"""One running system per module: tansu, the Kafka flow in a thread, ClickHouse over
HTTP (tests/chserver.py) and the decision API on uvicorn on a free port."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from bytewax.testing import run_main

from clickhouse.store import Store, migrate
from dataflows.api.app import create_app, start_server
from dataflows.connectors.chsink import clickhouse_sink
from dataflows.connectors.embedded import EmbeddedBroker, free_port
from dataflows.connectors.kafka import create_topics
from dataflows.flow import kafka_flow
from schemas.settings import Settings, load_settings
from tests.chserver import ChServer

API_KEY = "test-key-0123456789abcdef"


@dataclass
class Service:
    s: Settings
    url: str
    store: Store

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {} if key is None else {"X-API-Key": key}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)


@pytest.fixture(scope="session")
def api_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


def serve(s: Settings) -> tuple[str, Any]:
    port = free_port()
    server = start_server(create_app(s), "127.0.0.1", port)
    return f"http://127.0.0.1:{port}", server


@pytest.fixture(scope="module")
def service(api_broker: EmbeddedBroker, ch_http: ChServer) -> Iterator[Service]:
    """The flow and the API on topics and a database of this module's own."""
    tag = uuid.uuid4().hex[:8]
    s = load_settings(
        brokers=api_broker.bootstrap,
        partitions=2,
        hst_warmup=0,
        shards=4,
        topic_transactions=f"tx-{tag}",
        topic_alerts=f"alerts-{tag}",
        topic_dlq=f"dlq-{tag}",
        topic_feedback=f"fb-{tag}",
        topic_decisions=f"dec-{tag}",
        kafka_tail=True,
        clickhouse_url=ch_http.url,
        clickhouse_database=f"api_{tag}",
        clickhouse_batch_seconds=0.1,
        api_keys=API_KEY,
        decision_deadline_ms=5000,  # the flow's answer, not the fallback (2-core CI)
    )
    create_topics(s)
    store = Store.from_settings(s)
    migrate(store, 3650)
    stop = threading.Event()
    flow = threading.Thread(
        target=run_main,
        args=(kafka_flow(s, clickhouse_sink(s), stop=stop),),
        kwargs={"epoch_interval": timedelta(seconds=1)},
        daemon=True,
    )
    flow.start()
    url, server = serve(s)
    try:
        yield Service(s, url, store)
    finally:
        server.should_exit = True
        stop.set()
        flow.join(20)
        store.client.command(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
