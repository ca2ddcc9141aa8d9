"""The msgspec fast path of ``decode_event`` accepts exactly what the field-by-field
decoder accepts, with the same values, and refuses with the same reasons."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from generators.stream import event_stream
from generators.synth import GeneratorConfig
from schemas.transaction import TRANSACTION_SPECS, decode_event, decode_event_checked

ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    1.0,
    2,
    -1,
    5,
    0.0,
    -0.5,
    1e9,
    1e9 + 1,
    1e400,
    -91.0,
    90.0,
    180.0,
    181,
    "",
    "x",
    "x" * 64,
    "x" * 65,
    "1",
    "USD",
    "usd",
    "XX",
    "us",
    "US",
    "É",
    "pos",
    "POS",
    "ecom",
    "10.0.0.1",
    "::1",
    "1",
    "not an ip!",
    [],
    {},
    ["a"],
    {"a": 1},
    "2026-01-05T10:00:00Z",
    "2026-01-05T10:00:00.123+02:00",
    "2026-01-05 10:00:00+00:00",
    "2026-01-05T10:00:00",
    "2026-01-05",
    "20260105T100000Z",
    "yesterday",
)
LABELS: tuple[Any, ...] = (
    None,
    {"is_fraud": True},
    {"is_fraud": False, "pattern": None},
    {"is_fraud": True, "pattern": "card_testing", "extra": 1},
    {"is_fraud": 1},
    {"pattern": "x"},
    {"is_fraud": True, "pattern": 3},
    [],
    "yes",
)


def _same(raw: Any) -> None:
    fast, ref = decode_event(raw), decode_event_checked(raw)
    assert repr(fast) == repr(ref), raw  # repr: 5 and 5.0 differ, == would not see it


def _valid(n: int) -> list[dict[str, Any]]:
    cfg = GeneratorConfig(seed=5, users=300, fraud_rate=0.05)
    return [orjson.loads(v) for _, v in event_stream(cfg, n)]


def test_generated_events_decode_identically() -> None:
    for d in _valid(3000):
        _same(orjson.dumps(d))


@pytest.mark.parametrize("spec", TRANSACTION_SPECS, ids=lambda s: s.name)
def test_every_field_mutation_decodes_identically(spec: Any) -> None:
    base = _valid(1)[0]
    for value in ODD_VALUES:
        _same(orjson.dumps({**base, spec.name: value}))
    missing = {k: v for k, v in base.items() if k != spec.name}
    _same(orjson.dumps(missing))


def test_labels_shapes_and_documents_decode_identically() -> None:
    base = _valid(1)[0]
    for label in LABELS:
        _same(orjson.dumps({**base, "label": label}))
    _same(orjson.dumps({k: v for k, v in base.items() if k != "label"}))
    _same(orjson.dumps({**base, "new_optional_field": {"nested": [1, 2]}}))
    doc = orjson.dumps(base).decode()
    for raw in (
        doc,
        doc[:-1],
        "[]",
        "null",
        "1",
        '"s"',
        "",
        "{}",
        doc.replace("{", "{ ", 1),
        doc[:-1] + ',"amount":7.5}',
        doc[:-1] + ',"amount":"7.5"}',
    ):
        _same(raw)
        _same(raw.encode())


def test_random_multi_field_mutations_decode_identically() -> None:
    rnd = random.Random(3)
    names = [s.name for s in TRANSACTION_SPECS] + ["label"]
    for d in _valid(400):
        for _ in range(5):
            m = dict(d)
            for name in rnd.sample(names, rnd.randint(1, 3)):
                m[name] = rnd.choice(ODD_VALUES + LABELS)
            _same(orjson.dumps(m))
