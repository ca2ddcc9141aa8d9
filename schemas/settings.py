"""The one typed, frozen settings object: env prefix ``FRAUD_``, overridable from the CLI.

Build it once per entry point with :func:`load_settings` and pass it down; nothing else
reads the environment.  Every invalid value is refused with a :class:`ConfigError` whose
message names the field, its environment variable and the allowed range.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigError

__all__ = ["MASK", "Settings", "load_settings", "mask_logins", "mask_setting", "mask_url"]

ENV_PREFIX = "FRAUD_"

# --- Masking: one set of pure functions for refusals, safe_dict, repr and describe_url ---

MASK = "***"
SECRET_NAME_PARTS = ("password", "passwd", "pwd", "secret", "token", "key", "auth", "credential")
"""A field or query parameter whose name holds one of these is masked whole."""
LOGIN_FIELDS = frozenset({"dash_auth"})
"""Fields in ``user:password,...`` form: users stay visible, passwords are masked."""

_SECRET_QUERY = re.compile(
    r"([?&;][^=&#;]*(?:" + "|".join(SECRET_NAME_PARTS) + r")[^=&#;]*=)[^&#;]*", re.IGNORECASE
)
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:\[\]]*)(:[0-9]*)?\s*")
_URL_USER_UNSAFE = re.compile(r"[\s/?#@]")
_LOGIN_USER_UNSAFE = re.compile(r"\s")


def is_secret_name(name: str) -> bool:
    """Over-masking a harmless field costs nothing; showing a secret one cannot be undone."""
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def _shown_user(user: str, password: str, unsafe: re.Pattern[str]) -> str:
    """``user`` unless it could reveal the password: it overlaps it (``alice:alice``) or it
    holds characters no user name has, which means the split guessed wrong."""
    if not user:
        return user
    users = {user, unquote(user)}
    secrets = {password, unquote(password)} - {""}
    if unsafe.search(user) or any(s in u or u in s for s in secrets for u in users):
        return MASK
    return user


def _mask_credentials(entry: str, unsafe: Any = None) -> str:
    """``user:***``; an entry without a colon may itself be a token or a bare password,
    so it is masked whole.  ``unsafe`` matches what a user name cannot contain."""
    user, colon, password = entry.partition(":")
    if not colon:
        return MASK if entry else ""
    shown = _shown_user(user, password, unsafe or _URL_USER_UNSAFE)
    return f"{shown}:{MASK if password else ''}"


def _mask_bad_port(rest: str) -> str:
    """An authority whose port is not a number (``user:password/db``, the ``@host``
    forgotten) cannot be parsed, so all of it is masked."""
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if all(_HOST_PORT.fullmatch(host) for host in authority.split(",")):
        return rest
    return MASK + rest[len(authority) :]


def mask_url(url: str) -> str:
    """``url`` (or ``user:password@host`` without a scheme) with credentials masked.

    Parsed by hand, not with urlsplit: the userinfo is everything between ``://`` and the
    *last* ``@``, so a password holding ``@ : / ? #``, spaces or odd unicode is masked
    whole (urlsplit ends the netloc at the first ``/?#`` and raises, echoing the netloc,
    on some unicode).  Query parameters named like a secret are masked too.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        rest = f"{_mask_credentials(userinfo)}@{hostpart}"
    elif sep:
        rest = _mask_bad_port(rest)
    return scheme + sep + _SECRET_QUERY.sub(rf"\g<1>{MASK}", rest)


def mask_logins(value: str) -> str:
    """``user:password,...`` with users shown and passwords masked, malformed or not.

    Split on commas only: a space may be inside a password.  A password holding a comma
    followed by a colon is indistinguishable from a next login and shows its first part.
    """
    return ",".join(_mask_credentials(entry, _LOGIN_USER_UNSAFE) for entry in value.split(","))


def mask_setting(name: str, value: Any) -> Any:
    """``value`` of setting ``name`` as it may be shown: logins, secret-named fields and
    URL credentials masked; containers (a whole-object refusal's input) masked per key."""
    if isinstance(value, dict):
        return {k: mask_setting(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_setting(name, v) for v in value]
    if name in LOGIN_FIELDS:
        return mask_logins(value) if isinstance(value, str) else MASK
    if is_secret_name(name):
        return value if value is None or value == "" else MASK
    if isinstance(value, str):
        return mask_url(value)
    return value


def _default_data_dir() -> Path:
    """``../shared/data`` beside the checkout, else the team machine's ``/work/shared/data``
    (a CI clone may live elsewhere)."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    for p in (beside, Path("/work/shared/data")):
        if p.exists():
            return p
    return beside


class Settings(BaseSettings):
    """Every tunable of the system, with documented defaults."""

    # hide_input_in_errors: a raw ValidationError (a traceback, a log) must not echo
    # secrets either; load_settings rebuilds the message from masked inputs.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", hide_input_in_errors=True
    )

    # --- Kafka ---------------------------------------------------------------------
    brokers: str = Field("", description="Kafka bootstrap servers; empty = embedded broker.")
    topic_transactions: str = Field("transactions", min_length=1, max_length=249)
    topic_alerts: str = Field("fraud-alerts", min_length=1, max_length=249)
    topic_dlq: str = Field("transactions-dlq", min_length=1, max_length=249)
    topic_feedback: str = Field("fraud-feedback", min_length=1, max_length=249)
    topic_decisions: str = Field("fraud-decisions", min_length=1, max_length=249)
    topic_rules: str = Field(
        "fraud-rules",
        min_length=1,
        max_length=249,
        description="Compacted, one partition: the rule policy in force, read by every "
        "flow process (hot reload).",
    )
    topic_feedback_state: str = Field(
        "fraud-feedback-state",
        min_length=1,
        max_length=249,
        description="Internal, compacted, one partition: merchant totals and learner models "
        "published by the 'local' feedback loop, read by every flow process.",
    )
    partitions: int = Field(
        12,
        ge=1,
        le=1024,
        description="Partitions per topic on create: 12 divides evenly over 1, 2, 3, 4 and 6 "
        "processes.",
    )
    consumer_group: str = Field("fraud-dataflow", min_length=1)
    max_message_bytes: int = Field(16_384, ge=512, le=10_485_760)
    max_event_lead_s: float = Field(
        0.0,
        ge=0,
        le=10 * 365 * 86_400,
        description="Dead-letter (future_timestamp) a Kafka message whose event time is "
        "more than this many seconds after the message's own timestamp: a clock error, "
        "which would otherwise drag stream time (windows, closed days) ahead. 0 = no "
        "bound (replays of history and generated streams stamped ahead of now pass).",
    )
    kafka_fetch_wait_ms: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Max wait of an empty fetch. Some brokers (tansu) hold a fetch this "
        "long even when data arrives meanwhile, so it is a latency floor: 100 ms gave "
        "p50 58 ms produce->alert at 2k events/s, 5 ms gave 21 ms.",
    )
    kafka_tail: bool = Field(
        True, description="Keep waiting for new input; false stops at the end of the topic."
    )
    kafka_linger_ms: int = Field(5, ge=0, le=10_000, description="Producer batching delay.")
    kafka_max_message_bytes: int = Field(
        1_000_000,
        ge=131_072,
        le=104_857_600,
        description="Largest record the producers write and the topics accept "
        "(producer message.max.bytes and topic max.message.bytes, set together).",
    )
    dlq_copy_bytes: int = Field(
        65_536,
        ge=1024,
        le=1_048_576,
        description="A dead letter larger than a Kafka record carries this many bytes of "
        "the original; the whole payload is kept in ClickHouse dead_letters.",
    )

    # --- ClickHouse ----------------------------------------------------------------
    clickhouse_url: str = Field(
        "chdb://./data/chdb",
        pattern=r"^(https?://\S+|chdb:\S*)$",
        description="http(s)://host:port or chdb:///path (embedded).",
    )
    clickhouse_database: str = Field("fraud", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    clickhouse_batch_rows: int = Field(1000, ge=1, le=1_000_000)
    clickhouse_batch_seconds: float = Field(0.5, gt=0, le=60)
    clickhouse_ttl_days: int = Field(90, ge=1, le=3650, description="TTL of raw rows.")

    # --- Dataflow runtime ----------------------------------------------------------
    align_partitions: bool = Field(
        False,
        description="Key per-user state by the Kafka partition, on the worker that reads it "
        "(no exchange before scoring); users then share a model per partition, not per shard. "
        "Change it only on an empty recovery directory.",
    )
    shards: int = Field(
        16, ge=1, le=4096, description="Model/state shards (crc32(user_id) % shards)."
    )
    epoch_interval_s: float = Field(
        10.0, gt=0, le=3600, description="Snapshot interval; each epoch snapshots touched shards."
    )
    recovery_dir: Path | None = Field(None, description="Bytewax recovery DB dir; None = off.")
    data_dir: Path = Field(
        default_factory=lambda: _default_data_dir(),
        description="External labelled datasets (read in place, never copied).",
    )
    lateness_s: float = Field(
        300.0, ge=0, le=86_400, description="Out-of-order tolerance kept in per-user windows."
    )
    user_ttl_days: float = Field(
        30.0, gt=0, le=3650, description="Idle users' state is evicted after this (event time)."
    )

    # --- Anomaly model (River HalfSpaceTrees) --------------------------------------
    hst_trees: int = Field(25, ge=1, le=500)
    hst_height: int = Field(6, ge=1, le=20)
    hst_window: int = Field(250, ge=10, le=100_000)
    hst_seed: int = Field(42, ge=0)
    hst_engine: Literal["river", "numpy"] = Field(
        "river",
        description="HST implementation: river (reference) or numpy (bitwise-equal, batched).",
    )
    hst_warmup: int = Field(
        500, ge=0, le=10_000_000, description="Events a shard model sees before its score counts."
    )
    calibration_window: int = Field(
        2000, ge=50, le=1_000_000, description="Recent scores ranked to calibrate HST."
    )
    anomaly_weight: float = Field(
        0.45, ge=0, le=1, description="Max risk contribution of the anomaly model."
    )
    anomaly_floor: float = Field(
        0.95, ge=0, lt=1, description="Percentile below which the anomaly adds nothing."
    )

    # --- Label-free calibration (dataflows.detection.rarity) -----------------------
    rarity_half_life: int = Field(
        10_000,
        ge=100,
        le=10_000_000,
        description="Events per shard after which a value weighs half in 'recent traffic'.",
    )
    calibration_share: float = Field(
        0.003,
        gt=0,
        lt=1,
        description="A calibrated rule firing on at most this share of recent traffic keeps "
        "its full strength; above it the strength falls with the log of its hit rate.",
    )
    rare_amount_share: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="An amount rarer than this share of recent traffic starts to count.",
    )
    rare_amount_weight: float = Field(
        0.45,
        ge=0,
        le=1,
        description="Contribution of an amount 100 x rarer than rare_amount_share.",
    )

    # --- Decisions -----------------------------------------------------------------
    review_threshold: float = Field(0.5, gt=0, le=1)
    block_threshold: float = Field(0.8, gt=0, le=1)

    # --- Rules ---------------------------------------------------------------------
    high_amount_usd: float = Field(3000.0, gt=0)
    zscore_threshold: float = Field(3.0, gt=0)
    min_history: int = Field(5, ge=1, description="Transactions before profile rules apply.")
    velocity_1m: int = Field(5, ge=1, description="More than this many txns in 1 min hits.")
    velocity_10m: int = Field(4, ge=1, description="More than this many txns in 10 min hits.")
    velocity_1h: int = Field(15, ge=1, description="More than this many txns in 1 h hits.")
    travel_kmh: float = Field(900.0, gt=0, description="Faster than an airliner is impossible.")
    travel_min_km: float = Field(150.0, ge=0, description="Ignore hops shorter than this.")
    card_testing_usd: float = Field(5.0, gt=0, description="A 'small' test charge, in USD.")
    card_testing_count: int = Field(3, ge=2, description="Small charges in 10 min that hit.")
    compromised_card_hours: float = Field(
        72.0,
        ge=0,
        le=8760,
        description="A card the rules blocked or an analyst confirmed as fraud stays at risk "
        "this long (0 = off; a false-positive verdict clears it).",
    )
    compromised_card_usd: float = Field(
        10.0,
        ge=0,
        description="On a card at risk, card-not-present charges above this are blocked; "
        "smaller ones and card-present ones are reviewed.",
    )
    unusual_hour_share: float = Field(
        0.02, ge=0, le=1, description="Local hours seen less often than this are unusual."
    )
    unusual_hour_history: int = Field(20, ge=1)

    # --- Feedback: merchant risk from delayed labels -------------------------------
    label_delay_days: float = Field(
        7.0, ge=0, le=365, description="A fraud label is usable this long after its event."
    )
    merchant_min_frauds: int = Field(
        2, ge=1, description="Confirmed frauds in a window before a merchant counts as risky."
    )
    merchant_min_rate: float = Field(
        0.2, gt=0, le=1, description="Fraud share of a merchant's window that makes it risky."
    )
    merchant_weight: float = Field(
        0.9, gt=0, lt=1, description="Strength of the compromised-merchant rule."
    )
    feedback_input: bool = Field(
        True,
        description="The Kafka flow reads analyst verdicts from the feedback topic: "
        "confirmed frauds train the supervised model after the label delay.",
    )
    learner_weight: float = Field(
        0.9,
        ge=0,
        lt=1,
        description="Weight of the supervised model learned from delayed labels "
        "(0 = off); only used when a labels input is wired.",
    )
    learner_retrain_days: float = Field(
        1.0,
        ge=0,
        le=365,
        description="Event time between refits of the learner's gradient-boosted model on "
        "its labelled history (0 = online logistic regression only).",
    )
    feedback_topology: Literal["funnel", "local"] = Field(
        "funnel",
        description="How the feedback loop runs: 'funnel' re-keys every scored transaction "
        "by merchant, through one learner and back by user; 'local' finishes every score on "
        "its own worker from published merchant totals and models (no per-event exchange). "
        "Change it only on an empty recovery directory.",
    )
    feedback_wait_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="With the 'local' feedback topology, how long (wall clock) a scored row "
        "may wait for the merchant totals and learner models of its day (0 = never: what "
        "is published scores it); evaluations wait, so scores depend on event time only.",
    )
    learner_fit_background: bool = Field(
        False,
        description="Fit the learner's boosted model in a background thread and swap it in "
        "when done (the flow does not pause for the fit; scores then depend on wall-clock "
        "time, so off for evaluations and replays that must be exact).",
    )

    # --- Dashboard -----------------------------------------------------------------
    dash_host: str = "127.0.0.1"
    dash_port: int = Field(8050, ge=1, le=65535)
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of a flow process; 0 = off."
    )
    dash_refresh_s: float = Field(2.0, ge=0.5, le=3600)
    dash_auth: str = Field(
        "",
        pattern=r"^$|^[^:,\s]+:[^,\s]+(,[^:,\s]+:[^,\s]+)*$",
        description="Basic-auth logins 'user:password,...'; empty = no login (local demo).",
    )
    dash_publish_feedback: bool = Field(
        True, description="Also publish verdicts to the feedback topic when brokers are set."
    )
    dash_case_sla_minutes: int = Field(
        60,
        ge=1,
        le=10080,
        description="Case SLA: minutes from a case's first alert to a closing verdict.",
    )
    dash_secret_key: str = Field(
        "",
        description="Signs the dashboard's login cookies; empty = a random key per process "
        "(sessions end on restart; set one for several gunicorn workers).",
    )

    # --- Decision API (fraud serve) -----------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_keys: str = Field(
        "",
        pattern=r"^$|^[^,\s]{16,}(,[^,\s]{16,})*$",
        description="Accepted API keys, comma-separated, each a raw key (16+ characters) or "
        "'sha256:<hex digest>' of one; empty = no authentication (local demo).",
    )
    decision_deadline_ms: int = Field(
        150, ge=1, le=60_000, description="Longest an API request waits for the flow's decision."
    )
    decision_fallback: Literal["approve", "review"] = Field(
        "review", description="The API's answer when the deadline passes (timed_out: true)."
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Settings:
        if self.review_threshold >= self.block_threshold:
            raise ValueError(
                f"review_threshold ({self.review_threshold}) must be below "
                f"block_threshold ({self.block_threshold})"
            )
        return self

    @property
    def model_version(self) -> str:
        """Identifies the scoring configuration on every row and alert."""
        return f"rules-v3+hst-t{self.hst_trees}h{self.hst_height}w{self.hst_window}s{self.hst_seed}"

    def safe_dict(self) -> dict[str, Any]:
        """Settings for display (``fraud settings``), masked like a refusal."""
        return {k: mask_setting(k, v) for k, v in self.model_dump().items()}

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """A repr is logged as readily as a message, so it is masked the same way."""
        for k, v in super().__repr_args__():
            yield k, v if k is None else mask_setting(k, v)


def settings_env(values: dict[str, Any]) -> dict[str, str]:
    """``{field: value}`` as the ``FRAUD_*`` variables a child process reads its settings
    from (None = unset, left out).

    >>> settings_env({"shards": 4, "recovery_dir": None})
    {'FRAUD_SHARDS': '4'}
    """
    return {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in values.items() if v is not None}


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``FRAUD_*`` env vars, then ``overrides`` (CLI options; None = unset).

    Raises ConfigError naming the field, its env var and what is allowed.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        lines = [_refusal_line(err["loc"], err.get("input"), err["msg"]) for err in e.errors()]
    # Not chained: the ValidationError's own text could still carry the raw input.
    raise ConfigError("invalid settings:\n  " + "\n  ".join(lines))


def _refusal_line(loc: tuple[int | str, ...], given: Any, msg: str) -> str:
    """``field (FRAUD_FIELD) = masked value: what is allowed``."""
    field = ".".join(str(p) for p in loc) or "settings"
    env = f"{ENV_PREFIX}{field.upper()}" if loc else ENV_PREFIX + "*"
    shown = mask_setting(str(loc[0]) if loc else field, given)
    return f"{field} ({env}) = {shown!r}: {msg}"
