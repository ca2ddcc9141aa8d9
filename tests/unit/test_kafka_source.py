"""The shared consumer's sorting of messages into partitions, with scripted polls.

The real-broker behaviour (every message once, one consumer per worker, resume) is in
tests/integration/test_kafka_source.py; this pins the cases a healthy broker does not
produce on demand: errors, errors without an offset, end-of-partition mid-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaError
from confluent_kafka import KafkaError as ConfluentError

from dataflows.connectors.kafka_source import SharedKafkaSource


@dataclass
class Msg:
    """What ``Consumer.consume`` returns, scripted."""

    _topic: str | None
    _partition: int | None
    _offset: int | None
    _value: bytes | None = b"v"
    _error: ConfluentError | None = None

    def error(self) -> ConfluentError | None:
        return self._error

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> None:
        return None

    def latency(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


class Script:
    """A consumer whose polls return the scripted batches, then nothing."""

    def __init__(self, *polls: list[Msg]) -> None:
        self.polls = list(polls)
        self.assigned: list[tuple[str, int, int]] = []
        self.paused: set[int] = set()
        self.closed = False

    def pause(self, tps: list[Any]) -> None:
        self.paused |= {tp.partition for tp in tps}

    def resume(self, tps: list[Any]) -> None:
        self.paused -= {tp.partition for tp in tps}

    def incremental_assign(self, tps: list[Any]) -> None:
        self.assigned += [(tp.topic, tp.partition, tp.offset) for tp in tps]

    def incremental_unassign(self, tps: list[Any]) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Msg]:
        return self.polls.pop(0) if self.polls else []

    def close(self) -> None:
        self.closed = True


def _source(
    script: Script, monkeypatch: pytest.MonkeyPatch, batch: int = 1000
) -> SharedKafkaSource:
    import dataflows.connectors.kafka_source as ks

    monkeypatch.setattr(ks, "Consumer", lambda config: script)
    return SharedKafkaSource(
        ["127.0.0.1:1"], ["t"], tail=False, raise_on_errors=False, batch_size=batch
    )


def _drain(part: Any) -> list[Any]:
    out = []
    try:
        for _ in range(10):
            out.append(part.next_batch())
    except StopIteration:
        out.append("stop")
    return out


EOF = ConfluentError(ConfluentError._PARTITION_EOF)
BAD = ConfluentError(ConfluentError._MSG_TIMED_OUT, "bad")


def test_messages_go_to_their_partition_and_offsets_resume_after_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Script(
        [Msg("t", 0, 5), Msg("t", 1, 0), Msg("t", 0, 6), Msg("t", 1, None, None, EOF)],
        [Msg("t", 0, None, None, EOF)],
    )
    src = _source(script, monkeypatch)
    p0 = src.build_part("in", "0-t", 5)
    p1 = src.build_part("in", "1-t", None)
    assert script.assigned == [("t", 0, 5), ("t", 1, -2)]  # -2: OFFSET_BEGINNING
    first = p0.next_batch()
    assert [m.offset for m in first] == [5, 6] and p0.snapshot() == 7
    assert [[m.offset for m in b] for b in _drain(p1)[:-1]] == [[0]]
    assert p1.snapshot() == 1
    assert _drain(p0)[-1] == "stop" and p0.snapshot() == 7
    p0.close()
    assert not script.closed  # p1 still open
    p1.close()
    assert script.closed and src._readers == {}


def test_errors_are_items_and_never_move_the_offset_when_they_have_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Script(
        [Msg("t", 0, 3), Msg("t", 0, None, None, BAD), Msg(None, -1, None, None, BAD)],
    )
    src = _source(script, monkeypatch)
    part = src.build_part("in", "0-t", 3)
    items = part.next_batch()
    assert [type(i).__name__ for i in items] == ["KafkaSourceMessage", "KafkaError", "KafkaError"]
    assert all(i.err.code() == ConfluentError._MSG_TIMED_OUT for i in items[1:])
    assert isinstance(items[2], KafkaError)  # not a partition's: handed to the first one
    assert part.snapshot() == 4
    assert part.next_batch() == [] and part.next_awake() is not None  # idle: parks


def test_a_recovered_partition_of_another_topic_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = _source(Script(), monkeypatch)
    with pytest.raises(ValueError, match="'0-other' is not of"):
        src.build_part("in", "0-other", 4)


def test_a_consumer_left_open_is_closed_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow that ended before bytewax closed its partitions leaves a consumer open;
    the exit hook closes it (librdkafka's destructor at teardown can crash the process),
    and a later close of the partition does not close it again."""
    import dataflows.connectors.kafka_source as ks

    closes = []
    script = Script()
    monkeypatch.setattr(script, "close", lambda: closes.append(1))
    part = _source(script, monkeypatch).build_part("in", "0-t", 0)
    ks.close_open()
    assert closes == [1]
    part.close()
    assert closes == [1]


def test_a_partition_a_batch_ahead_is_paused_until_drained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fetches of one consumer come a partition at a time; without a pause one
    partition runs ahead of the others in event time (a day closes early)."""
    script = Script([Msg("t", 0, 0), Msg("t", 0, 1), Msg("t", 0, 2), Msg("t", 1, 0)])
    src = _source(script, monkeypatch, batch=2)
    p0 = src.build_part("in", "0-t", None)
    p1 = src.build_part("in", "1-t", None)
    assert [m.offset for m in p1.next_batch()] == [0]
    assert script.paused == {0}  # three queued for p0: a batch ahead
    assert [m.offset for m in p0.next_batch()] == [0, 1]
    assert script.paused == {0}  # one left: still at least half a batch
    assert [m.offset for m in p0.next_batch()] == [2]
    assert script.paused == set()  # drained: fetched again
    assert p0.snapshot() == 3


def test_a_lone_partition_is_never_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one partition there is nothing to keep in step, and every pause would
    throw away what librdkafka had prefetched for it."""
    script = Script([Msg("t", 0, 0), Msg("t", 0, 1), Msg("t", 0, 2)], [Msg("t", 0, 3)])
    src = _source(script, monkeypatch, batch=2)
    p0 = src.build_part("in", "0-t", None)
    assert [m.offset for m in p0.next_batch()] == [0, 1]
    assert script.paused == set()
    assert [m.offset for m in p0.next_batch()] == [2]
    assert [m.offset for m in p0.next_batch()] == [3]
    assert script.paused == set()


def test_a_paused_partition_is_resumed_before_it_is_unassigned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unassigned and closed as librdkafka fetched it: no paused partition outlives its
    bytewax partition or the consumer."""
    script = Script([Msg("t", 0, 0), Msg("t", 0, 1), Msg("t", 0, 2)])
    src = _source(script, monkeypatch, batch=2)
    p0 = src.build_part("in", "0-t", None)
    p1 = src.build_part("in", "1-t", None)
    assert p1.next_batch() == [] and script.paused == {0}
    p0.close()
    assert script.paused == set() and not script.closed
    p1.close()
    assert script.closed
