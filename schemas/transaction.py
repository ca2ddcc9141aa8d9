"""Transaction v1: the input contract on topic ``transactions``, and its strict decoder.

Decoding never raises on bad input: it returns a :class:`DecodeError` carrying a reason
code and message, so the dataflow can route the original bytes to the dead-letter
topic and keep running.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson

from schemas.currency import ISO_4217
from schemas.fields import FieldSpec, compact_pickle, location_required_v1
from schemas.units import format_ts

__all__ = [
    "CHANNELS",
    "LABEL_SPECS",
    "MAX_MESSAGE_BYTES",
    "TRANSACTION_SPECS",
    "TRANSACTION_V1_SPECS",
    "TRANSACTION_VERSION",
    "DecodeError",
    "Label",
    "Transaction",
    "decode_event",
    "decode_event_checked",
    "encode_transaction",
    "format_ts",
]

TRANSACTION_VERSION = 2
"""The latest input contract: v2 makes ``lat``/``lon`` optional (card-not-present traffic
often has no location).  v1 events (location required) are still accepted as v1."""
ACCEPTED_VERSIONS = (1, 2)
CHANNELS = ("pos", "ecom", "atm")
MAX_AMOUNT = 1e9
"""Larger amounts are data errors, not purchases."""
TS_MIN = datetime(1900, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
"""Event times outside what ClickHouse's DateTime64 stores are data errors: refused, they
can neither fail an insert nor drag stream time centuries ahead."""
MAX_MESSAGE_BYTES = 16_384
"""A transaction is ~400 bytes; anything 40x larger is refused before parsing."""

_ID = "Opaque identifier, 1-64 characters."

TRANSACTION_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("txn_id", "id", "String", "Unique transaction id. " + _ID),
    # also refused outside [TS_MIN, TS_MAX] (the published v1/v2 text stays as it is)
    FieldSpec("ts", "ts", "DateTime64(3, 'UTC')", "Event time, ISO-8601 with a UTC offset."),
    FieldSpec("user_id", "id", "String", "Account holder. " + _ID),
    FieldSpec("card_id", "id", "String", "Card used. " + _ID),
    FieldSpec("merchant_id", "id", "String", "Merchant or terminal. " + _ID),
    FieldSpec(
        "merchant_category", "str", "LowCardinality(String)", "Merchant category (MCC label)."
    ),
    FieldSpec(
        "amount",
        "float",
        "Float64",
        "Amount in `currency`; positive and finite.",
        extra_json={"exclusiveMinimum": 0, "maximum": MAX_AMOUNT},
    ),
    FieldSpec("currency", "currency", "LowCardinality(String)", "ISO 4217 code."),
    FieldSpec(
        "lat",
        "lat",
        "Nullable(Float64)",
        "Latitude of the point of sale; absent or null when unknown (with lon).",
        False,
        minimum=-90,
        maximum=90,
    ),
    FieldSpec(
        "lon",
        "lon",
        "Nullable(Float64)",
        "Longitude of the point of sale; absent or null when unknown (with lat).",
        False,
        minimum=-180,
        maximum=180,
    ),
    FieldSpec("country", "country", "LowCardinality(String)", "ISO 3166-1 alpha-2 code."),
    FieldSpec("channel", "enum", "LowCardinality(String)", "Channel.", choices=CHANNELS),
    FieldSpec("device_id", "id", "Nullable(String)", "Device fingerprint, if known.", False),
    FieldSpec("ip", "ip", "Nullable(String)", "Client IP address, if known.", False),
    FieldSpec(
        "schema_version",
        "int",
        "UInt8",
        "Contract version: 2 (1 is still accepted, with lat/lon required).",
        extra_json={"enum": list(ACCEPTED_VERSIONS)},
    ),
)

TRANSACTION_V1_SPECS = location_required_v1(TRANSACTION_SPECS, "Contract version; must be 1.")
"""Transaction v1 as published (location required), for its schema file and decoder."""

LABEL_SPECS: tuple[FieldSpec, ...] = (
    FieldSpec("is_fraud", "bool", "Nullable(UInt8)", "Ground truth, generator only.", False),
    FieldSpec("pattern", "str", "LowCardinality(Nullable(String))", "Fraud pattern name.", False),
)


@compact_pickle
@dataclass(frozen=True, slots=True)
class Transaction:
    """A validated card transaction (Transaction v1). ``ts`` is always UTC-aware."""

    txn_id: str
    ts: datetime
    user_id: str
    card_id: str
    merchant_id: str
    merchant_category: str
    amount: float
    currency: str
    lat: float | None
    lon: float | None
    country: str
    channel: str
    device_id: str | None = None
    ip: str | None = None
    schema_version: int = 1


@compact_pickle
@dataclass(frozen=True, slots=True)
class Label:
    """Generator/dataset ground truth. Travels beside a transaction; scoring never reads it."""

    is_fraud: bool
    pattern: str | None = None


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a message was refused. ``code`` is a stable machine-readable reason."""

    code: str
    message: str
    field: str | None = None


def encode_transaction(txn: Transaction, label: Label | None = None) -> bytes:
    """JSON bytes of ``txn`` (and its optional ``label`` object)."""
    d: dict[str, Any] = {
        "txn_id": txn.txn_id,
        "ts": format_ts(txn.ts),
        "user_id": txn.user_id,
        "card_id": txn.card_id,
        "merchant_id": txn.merchant_id,
        "merchant_category": txn.merchant_category,
        "amount": txn.amount,
        "currency": txn.currency,
        "lat": txn.lat,
        "lon": txn.lon,
        "country": txn.country,
        "channel": txn.channel,
        "device_id": txn.device_id,
        "ip": txn.ip,
        "schema_version": txn.schema_version,
    }
    if label is not None:
        d["label"] = {"is_fraud": label.is_fraud, "pattern": label.pattern}
    return orjson.dumps(d)


class _Invalid(Exception):
    """Internal: raised by field checks, turned into a DecodeError at the boundary."""

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message)
        self.err = DecodeError(code, message, field)


_IP_CHARS = frozenset("0123456789abcdefABCDEF:.")


def _check(spec: FieldSpec, value: Any) -> Any:
    name, kind = spec.name, spec.kind
    if value is None:
        if spec.required:
            raise _Invalid("null_field", f"field {name!r} is null", name)
        return None
    if kind in ("id", "str"):
        if type(value) is not str:
            raise _Invalid("wrong_type", f"field {name!r} must be a string, got {value!r}", name)
        if not value or len(value) > spec.max_len:
            raise _Invalid(
                "out_of_range", f"field {name!r} must be 1-{spec.max_len} characters", name
            )
        return value
    if kind in ("float", "lat", "lon"):
        if type(value) not in (float, int):  # bool is not a number here
            raise _Invalid("wrong_type", f"field {name!r} must be a number, got {value!r}", name)
        v = float(value)
        if not math.isfinite(v):
            raise _Invalid("out_of_range", f"field {name!r} must be finite", name)
        if kind == "float" and not (0.0 < v <= MAX_AMOUNT):
            raise _Invalid("out_of_range", f"{name}={value!r} must be in (0, {MAX_AMOUNT:g}]", name)
        if kind != "float" and not (spec.minimum <= v <= spec.maximum):  # type: ignore[operator]
            raise _Invalid(
                "out_of_range",
                f"{name}={value!r} outside [{spec.minimum:g}, {spec.maximum:g}]",
                name,
            )
        return v
    if kind == "ts":
        if type(value) is not str:
            raise _Invalid("wrong_type", f"field {name!r} must be an ISO-8601 string", name)
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("invalid_timestamp", f"{name}={value!r} is not ISO-8601", name) from None
        if ts.tzinfo is None:
            raise _Invalid("naive_timestamp", f"{name}={value!r} has no UTC offset", name)
        if not TS_MIN <= ts <= TS_MAX:  # aware datetimes compare across offsets
            raise _Invalid(
                "out_of_range", f"{name}={value!r} outside [1900-01-01, 2299-12-31]", name
            )
        return ts if ts.tzinfo is UTC else ts.astimezone(UTC)
    if kind == "currency":
        if type(value) is not str or value not in ISO_4217:
            raise _Invalid("invalid_value", f"{name}={value!r} is not an ISO 4217 code", name)
        return value
    if kind == "country":
        if type(value) is not str or not _country_ok(value):
            raise _Invalid("invalid_value", f"{name}={value!r} is not ISO 3166 alpha-2", name)
        return value
    if kind == "enum":
        if value not in spec.choices:
            raise _Invalid("invalid_value", f"{name}={value!r} not one of {spec.choices}", name)
        return value
    if kind == "ip":
        if type(value) is not str or not _ip_ok(value):
            raise _Invalid("invalid_value", f"{name}={value!r} is not an IP address", name)
        return value
    if kind == "int":
        if type(value) is not int:
            raise _Invalid("wrong_type", f"field {name!r} must be an integer, got {value!r}", name)
        return value
    raise AssertionError(f"unhandled kind {kind!r}")  # pragma: no cover


_TXN_FIELDS = tuple(s for s in TRANSACTION_SPECS if s.name != "schema_version")
_BAD = object()


def _fast(spec: FieldSpec) -> Callable[[Any], Any] | None:
    """A check for the common valid case of ``spec``'s kind, or None (use :func:`_check`).

    It returns the value :func:`_check` would return, or ``_BAD``; then :func:`_check`
    runs and raises with the precise message.  Saves ~3 µs per event."""
    kind, top = spec.kind, spec.max_len
    if kind in ("id", "str"):
        return lambda v: v if type(v) is str and 0 < len(v) <= top else _BAD
    if kind == "float":
        return lambda v: v if type(v) is float and 0.0 < v <= MAX_AMOUNT else _BAD
    if kind in ("lat", "lon"):
        lo, hi = spec.minimum, spec.maximum
        return lambda v: v if type(v) is float and lo <= v <= hi else _BAD  # NaN fails
    if kind == "currency":
        return lambda v: v if type(v) is str and v in ISO_4217 else _BAD
    if kind == "enum":
        choices = frozenset(spec.choices)
        return lambda v: v if type(v) is str and v in choices else _BAD
    return None


_PLAN = tuple((spec.name, spec, _fast(spec)) for spec in _TXN_FIELDS)
_PLAN_V1 = tuple(
    (spec.name, spec, _fast(spec)) for spec in TRANSACTION_V1_SPECS if spec.name != "schema_version"
)
_LAT = [spec.name for spec in _TXN_FIELDS].index("lat")


def decode_event(
    raw: bytes | str | None, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[Transaction, Label | None] | DecodeError:
    """Decode and validate one message value into a transaction and its optional label.

    Returns a :class:`DecodeError` (never raises) for: a null value, an oversized
    message, malformed JSON, a non-object, an unknown ``schema_version``, or any field
    that is missing, null, of the wrong type or out of range.  Unknown extra properties
    are ignored (tolerant reader) so producers can add optional fields within v1.

    Valid messages take a typed msgspec decode (:data:`_WIRE`, ~3x faster than JSON to
    dicts plus per-field checks); anything it refuses goes through
    :func:`decode_event_checked`, which names the reason.  Both accept the same messages
    with the same values (a fuzz test compares them), with one exception: an unknown extra
    property that orjson cannot hold (nesting over 1024, a number like 1e400) is skipped
    here and refused there as ``invalid_json``.
    """
    if raw is None or len(raw) > max_bytes:
        return _refused(raw, max_bytes)
    try:
        w = _WIRE_DECODER.decode(raw)
    except (msgspec.MsgspecError, UnicodeError, RecursionError):
        # msgspec raises UnicodeDecodeError (not a MsgspecError) on invalid UTF-8 inside
        # a string, UnicodeEncodeError on a ``str`` with lone surrogates, and
        # RecursionError on very deep nesting in an unknown property (found by
        # ``make fuzz``); the field-by-field path names the reason for all of them.
        return _decode_fields(raw)
    ts = _ts_fast(w.ts)
    if (
        ts is None
        or w.schema_version not in ACCEPTED_VERSIONS
        or (w.lat is None) != (w.lon is None)
        or (w.lat is None and w.schema_version == 1)
        or w.currency not in ISO_4217
        or not _country_ok(w.country)
        or (w.ip is not None and not _ip_ok(w.ip))
    ):
        return _decode_fields(raw)
    txn = Transaction(
        w.txn_id,
        ts,
        w.user_id,
        w.card_id,
        w.merchant_id,
        w.merchant_category,
        w.amount,
        w.currency,
        w.lat,
        w.lon,
        w.country,
        w.channel,
        w.device_id,
        w.ip,
        w.schema_version,
    )
    lab = w.label
    return txn, None if lab is None else Label(lab.is_fraud, lab.pattern)


def decode_event_checked(
    raw: bytes | str | None, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[Transaction, Label | None] | DecodeError:
    """:func:`decode_event` field by field: the reference, and the path that explains
    a refusal (reason code, message, field)."""
    if raw is None or len(raw) > max_bytes:
        return _refused(raw, max_bytes)
    return _decode_fields(raw)


def _refused(raw: bytes | str | None, max_bytes: int) -> DecodeError:
    """Why a message is refused before parsing (null or oversized)."""
    if raw is None:
        return DecodeError("null_value", "message value is null (tombstone)")
    return DecodeError("too_large", f"message is {len(raw)} bytes, limit {max_bytes}")


def _decode_fields(raw: bytes | str) -> tuple[Transaction, Label | None] | DecodeError:
    try:
        d = orjson.loads(raw)
    except (orjson.JSONDecodeError, UnicodeError) as e:
        return DecodeError("invalid_json", f"malformed JSON: {e}")
    if type(d) is not dict:
        return DecodeError("not_an_object", f"expected a JSON object, got {type(d).__name__}")
    version = d.get("schema_version")
    if version not in ACCEPTED_VERSIONS or type(version) is not int:
        return DecodeError(
            "unknown_schema_version",
            f"schema_version={version!r} is not supported (expected one of {ACCEPTED_VERSIONS})",
            "schema_version",
        )
    try:
        values = []
        for name, spec, fast in _PLAN_V1 if version == 1 else _PLAN:
            v = d.get(name, _BAD)
            if v is _BAD:
                if spec.required:
                    raise _Invalid("missing_field", f"required field {name!r} is missing", name)
                values.append(None)
                continue
            ok = _BAD if fast is None else fast(v)
            values.append(_check(spec, v) if ok is _BAD else ok)
        if (values[_LAT] is None) != (values[_LAT + 1] is None):
            raise _Invalid("invalid_value", "lat and lon are given together or not at all", "lat")
        txn = Transaction(*values, version)
        label = _decode_label(d.get("label"))
    except _Invalid as e:
        return e.err
    return txn, label


def _ts_fast(value: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    if not TS_MIN <= ts <= TS_MAX:
        return None
    return ts if ts.tzinfo is UTC else ts.astimezone(UTC)


def _country_ok(v: str) -> bool:
    return len(v) == 2 and v.isascii() and v.isupper()


def _ip_ok(v: str) -> bool:
    return 2 <= len(v) <= 45 and _IP_CHARS.issuperset(v)


class _WireLabel(msgspec.Struct):
    is_fraud: bool
    pattern: str | None = None


def _wire_type(spec: FieldSpec) -> Any:
    """The msgspec type enforcing what a msgspec decode can check of ``spec``; the
    rest (timestamp, code lists, IP characters) is checked after it."""
    kind = spec.kind
    if kind in ("id", "str"):
        t: Any = Annotated[str, msgspec.Meta(min_length=1, max_length=spec.max_len)]
    elif kind == "float":
        t = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_AMOUNT)]
    elif kind in ("lat", "lon"):
        t = Annotated[float, msgspec.Meta(ge=spec.minimum, le=spec.maximum)]
    elif kind == "enum":
        t = Literal[spec.choices]  # type: ignore[valid-type]
    elif kind == "int":
        t = int
    else:  # ts, currency, country, ip
        t = str
    return t if spec.required else (t | None, None)


def _wire_struct() -> type[msgspec.Struct]:
    fields: list[Any] = []
    for spec in TRANSACTION_SPECS:  # required fields first (msgspec needs defaults last)
        t = _wire_type(spec)
        fields.append((spec.name, *t) if isinstance(t, tuple) else (spec.name, t))
    fields.append(("label", _WireLabel | None, None))
    fields.sort(key=lambda f: len(f) == 3)
    return msgspec.defstruct("_Wire", fields)


_WIRE = _wire_struct()
"""Transaction v1 as a msgspec type, derived from :data:`TRANSACTION_SPECS`."""
_WIRE_DECODER = msgspec.json.Decoder(_WIRE)


def _decode_label(obj: Any) -> Label | None:
    if obj is None:
        return None
    if type(obj) is not dict or type(obj.get("is_fraud")) is not bool:
        raise _Invalid(
            "invalid_value", f"label={obj!r} must be {{is_fraud: bool, pattern}}", "label"
        )
    pattern = obj.get("pattern")
    if pattern is not None and type(pattern) is not str:
        raise _Invalid("wrong_type", f"label.pattern={pattern!r} must be a string", "label")
    return Label(obj["is_fraud"], pattern)
