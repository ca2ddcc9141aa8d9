"""The shared-consumer Kafka source on the real broker: every message once, in partition
order, one consumer per worker, and resume states that mean what bytewax's mean."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, cluster_main

import dataflows.connectors.kafka_source as ks
from dataflows.connectors.kafka import kafka_source, make_producer, produce_all
from schemas.settings import Settings


def _produce(s: Settings, n: int) -> None:
    produce_all(
        make_producer(s),
        s.topic_transactions,
        ((f"k{i % 37}".encode(), f"v{i}".encode()) for i in range(n)),
    )


class _Counted(ks.Consumer):  # type: ignore[misc]
    """The real consumer, counted per thread."""

    made: ClassVar[dict[int, int]] = {}

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        t = threading.get_ident()
        _Counted.made[t] = _Counted.made.get(t, 0) + 1


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [6], indirect=True)
def test_every_message_once_in_order_with_one_consumer_per_worker(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = kafka_settings
    _produce(s, 900)
    monkeypatch.setattr(ks, "Consumer", _Counted)
    _Counted.made = {}
    source = kafka_source(s, s.topic_transactions, False)
    assert isinstance(source, ks.SharedKafkaSource)
    out: list[tuple[int, int, bytes]] = []
    flow = Dataflow("shared_source")
    msgs = op.input("in", flow, source)
    op.output(
        "out", op.map("origin", msgs, lambda m: (m.partition, m.offset, m.value)), TestingSink(out)
    )
    cluster_main(flow, [], 0, worker_count_per_proc=2)

    assert sorted(v for _, _, v in out) == sorted(f"v{i}".encode() for i in range(900))
    by_part: dict[int, list[int]] = {}
    for p, off, _ in out:
        by_part.setdefault(p, []).append(off)
    assert sorted(by_part) == list(range(6))
    for offs in by_part.values():  # each partition whole and in order
        assert offs == list(range(len(offs)))
    assert sorted(_Counted.made.values()) == [1, 1]  # two workers, one consumer each
    assert source._readers == {}  # every consumer closed at the end


@pytest.mark.integration
@pytest.mark.parametrize("kafka_settings", [3], indirect=True)
def test_resume_state_is_the_next_offset(kafka_settings: Settings) -> None:
    s = kafka_settings
    _produce(s, 300)
    source = kafka_source(s, s.topic_transactions, False)
    part = source.build_part("in", f"1-{s.topic_transactions}", 7)
    other = source.build_part("in", f"2-{s.topic_transactions}", None)
    got: dict[Any, list[int]] = {part: [], other: []}
    live = [part, other]
    while live:  # poll both in turn, as a worker does; they share one consumer
        for p in list(live):
            try:
                got[p] += [m.offset for m in p.next_batch()]
            except StopIteration:
                live.remove(p)
    mine, rest = got[part], got[other]
    assert mine[0] == 7 and mine == list(range(7, 7 + len(mine)))
    assert part.snapshot() == mine[-1] + 1
    assert rest == list(range(len(rest))) and len(rest) > 0
    assert len(mine) + 7 + len(rest) < 300  # partition 0 was never assigned
    part.close()
    other.close()
    assert source._readers == {}
