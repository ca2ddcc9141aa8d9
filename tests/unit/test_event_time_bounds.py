"""Event times a flow can be given: the storable range, and (opt-in) how far ahead of
its Kafka message an event may be stamped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from dataflows.flow import parse_message
from schemas.scored import DeadLetter
from tests.conftest import T0, fixed_clock, txn_bytes


def _message(ts: datetime, sent: datetime | None) -> SimpleNamespace:
    value = txn_bytes(ts=ts.isoformat().replace("+00:00", "Z"))
    stamp = (1, int(sent.timestamp() * 1000)) if sent is not None else (0, -1)
    return SimpleNamespace(
        key=b"alice", value=value, topic="tx", partition=3, offset=41, timestamp=stamp
    )


@pytest.mark.parametrize(
    ("ahead", "lead", "refused"),
    [
        (timedelta(hours=23), 86_400.0, False),
        (timedelta(hours=25), 86_400.0, True),
        (timedelta(days=400), 0.0, False),  # 0: no bound (generated, simulated time)
        (-timedelta(days=4000), 86_400.0, False),  # history replayed: any age passes
    ],
)
def test_an_event_stamped_too_far_after_its_message_is_dead_lettered(
    ahead: timedelta, lead: float, refused: bool
) -> None:
    out = parse_message(_message(T0 + ahead, T0), 16_384, fixed_clock, lead)
    assert isinstance(out, DeadLetter) == refused
    if isinstance(out, DeadLetter):
        assert out.error_code == "future_timestamp"
        assert out.error_message.startswith("ts is ") and out.source_offset == 41
        assert out.value == _message(T0 + ahead, T0).value  # the bytes are kept


def test_without_a_message_timestamp_there_is_nothing_to_compare() -> None:
    out = parse_message(_message(T0 + timedelta(days=30), None), 16_384, fixed_clock, 60.0)
    assert not isinstance(out, DeadLetter)


def test_the_last_storable_instant_is_accepted() -> None:
    last = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    out = parse_message(txn_bytes(ts="2299-12-31T23:59:59.999Z"), 16_384, fixed_clock)
    assert not isinstance(out, DeadLetter) and out[0].ts == last
