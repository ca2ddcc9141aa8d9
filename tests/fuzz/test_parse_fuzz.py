"""Property-based fuzzing of the parse boundary (Hypothesis).

Invariants: whatever the bytes, decoding returns an event or a reason code from the
published list and never raises; the fast (msgspec) and the reference (field by field)
decoders accept exactly the same messages with the same values; the guarded boundary of
the flow turns anything, Kafka-message-shaped or not, into exactly one outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from hypothesis import example, given
from hypothesis import strategies as st

from dataflows.flow import parse_message
from schemas.scored import DeadLetter
from schemas.transaction import DecodeError, decode_event, decode_event_checked
from schemas.vocab import DLQ_CODES
from tests.fuzz.strategies import messages

NOW = datetime(2026, 1, 5, tzinfo=UTC)


@given(messages)
@example(b'{"user_id":"u\xff1"}')
@example(b"\xff\xfe")
@example(b'{"schema_version":1,"extra":' + b"[" * 7000 + b"]" * 7000 + b"}")
def test_decoders_never_raise_and_agree(raw: bytes) -> None:
    fast = decode_event(raw)
    ref = decode_event_checked(raw)
    if isinstance(ref, DecodeError):
        assert ref.code in DLQ_CODES
        if isinstance(fast, DecodeError):
            assert fast.code == ref.code
        else:
            # The one allowed difference: the typed decoder skips unknown extra
            # properties without parsing them, the reference parses the whole document
            # and refuses what orjson cannot hold (nesting over 1024, 1e400).
            assert ref.code == "invalid_json"
    else:
        assert fast == ref


@given(st.text(max_size=200))
def test_str_input_with_lone_surrogates_never_raises(text: str) -> None:
    out = parse_message(text + "\ud800", 16_384, lambda: NOW)
    assert isinstance(out, DeadLetter) and out.error_code in DLQ_CODES
    assert out.value == (text + "\ud800").encode("utf-8", "surrogatepass")


kafka_like = st.builds(
    lambda key, value, topic, part, off, ts: SimpleNamespace(
        key=key, value=value, topic=topic, partition=part, offset=off, timestamp=ts
    ),
    st.none() | st.binary(max_size=20),
    st.none() | messages,
    st.none() | st.text(max_size=10),
    st.none() | st.integers(-5, 1000),
    st.none() | st.integers(0, 10**12),
    st.none() | st.tuples(st.integers(-1, 3), st.integers(-(2**40), 2**45)) | st.just(()),
)


@given(kafka_like | messages | st.none() | st.integers() | st.lists(st.integers(), max_size=3))
def test_the_guarded_boundary_never_raises(item: object) -> None:
    """Whatever reaches the parse step (even an object no source should produce) ends
    as a parsed event or a dead letter with a published code, keeping the bytes."""
    out = parse_message(item, 16_384, lambda: NOW, 3600.0)
    if isinstance(out, DeadLetter):
        assert out.error_code in DLQ_CODES
        value = getattr(item, "value", item)
        if isinstance(value, bytes):
            assert out.value == value
    else:
        assert isinstance(out, tuple) and len(out) == 3
