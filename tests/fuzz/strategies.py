"""Hostile inputs for the parse boundary, built around a valid Transaction v1 event so
the fuzzer spends its time near the grammar, not only on random noise."""

from __future__ import annotations

import orjson
from hypothesis import strategies as st

from tests.conftest import txn_dict

FIELDS = list(txn_dict().keys())

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# Raw JSON text fragments that no encoder produces but a producer might send.
raw_values = st.sampled_from(
    [
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"1e400",
        b"-1e400",
        b"-0",
        b"1" * 400,
        b'"\\ud800"',
        b'"\\udfff\\ud800"',
        b'"\xff"',
        b'"\xc3"',
        b'"\xed\xa0\x80"',
        b'"a\x00b"',
        b'"\\u0000"',
        b"[" * 5000 + b"]" * 5000,
        b"{" * 2000,
        b'"' + b"x" * 70 + b'"',
        b"tru",
        b"nul",
        b"0x10",
        b"+1",
        b".5",
        b"1.",
        b"01",
        b'"2026-13-45T99:00:00Z"',
        b'"2026-01-05T10:00:00"',
        b'"2026-01-05T10:00:00+25:00"',
        b'""',
        b"[]",
        b"{}",
    ]
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event, written pair by pair, with one to three hostile changes: a value
    of another JSON type, raw text no encoder writes, a dropped field, a duplicated key,
    invalid UTF-8 inside a string."""
    pairs = [(k, orjson.dumps(v)) for k, v in txn_dict(draw(st.integers(0, 10_000))).items()]
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from([*FIELDS, "label", "extra"]))
        how = draw(st.sampled_from(["value", "raw", "drop", "dup", "utf8"]))
        keep = [(k, v) for k, v in pairs if k != field]
        if how == "value":
            pairs = [*keep, (field, orjson.dumps(draw(json_values)))]
        elif how == "raw":
            pairs = [*keep, (field, draw(raw_values))]
        elif how == "drop":
            pairs = keep
        elif how == "dup":  # which duplicate wins must not matter for safety
            pairs = [*pairs, (field, orjson.dumps(draw(json_values)))]
        else:
            junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
            pairs = [*keep, (field, b'"a' + junk + b'b"')]
    return b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in pairs) + b"}"


messages = st.one_of(
    st.binary(max_size=300),
    mutated_events(),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda d: orjson.dumps(d), json_values),
)
