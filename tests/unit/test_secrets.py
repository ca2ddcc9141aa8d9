"""Secrets never reach a message: refusals, ``fraud settings``, repr and describe_url mask them.

Every secret in the table is tried on every way a setting is shown.  A secret counts as
shown if it appears whole, percent-decoded, or as any word of 3+ characters from it, so a
leaked tail (``ss@host`` of ``p@ss``) fails too.  The words are unusual (Zebra, Quokka)
so they cannot collide with the parts that must stay visible.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest

from clickhouse.store import describe_url
from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings

HOST = "db.example:8123"
BROKER = "broker.example:9092"

SECRETS = [
    pytest.param("Zebra99Quokka", id="plain"),
    pytest.param("Zebra@Quokka", id="at"),
    pytest.param("Zebu@Yak@Quokka", id="two-ats"),
    pytest.param("ZebraQuokka@", id="trailing-at"),
    pytest.param("Zebra:Quokka", id="colon"),
    pytest.param("Zebra%40Quokka%3AYak", id="percent-encoded"),
    pytest.param("Zebra/Quokka", id="slash"),
    pytest.param("Zebra?Quokka#Yak", id="query-and-fragment"),
    pytest.param("Zebra Quokka", id="space"),
    pytest.param("Zebra,Quokka", id="comma"),
    pytest.param("Zebra\nQuokka", id="newline"),
    pytest.param("Zebra\\Quokka", id="backslash"),
    pytest.param("Zébra—Quökka", id="unicode"),
    pytest.param("Zebra℀Quokka", id="unicode-nfkc-slash"),
    pytest.param("Zebra＠Quokka", id="fullwidth-at"),
]


def assert_hidden(secret: str, shown: str) -> None:
    """The secret, its decoded form and each of its words are absent from ``shown``."""
    for form in {secret, unquote(secret)}:
        assert form not in shown, f"{form!r} leaked in {shown!r}"
        for word in re.findall(r"\w{3,}", form):
            assert word not in shown, f"{word!r} of {form!r} leaked in {shown!r}"


def refusal(**overrides: Any) -> str:
    """The whole traceback of the refusal, chained causes included."""
    with pytest.raises(ConfigError) as e:
        load_settings(**overrides)
    return "".join(traceback.format_exception(e.value))


def url(secret: str, scheme: str = "http") -> str:
    return f"{scheme}://default:{secret}@{HOST}/?database=fraud"


def broker(secret: str) -> str:
    return f"SASL_SSL://kafka:{secret}@{BROKER}"


def shown_settings(**fields: Any) -> Settings:
    """Settings as a display sees them, built unvalidated so every secret can be tried."""
    return Settings.model_construct(**fields)


# Each way a secret can be shown: build the text from the secret, then the useful parts.
SURFACES: dict[str, tuple[Callable[[str], str], list[str]]] = {
    "describe_url": (
        lambda s: describe_url(url(s)),
        ["http://default:***@", HOST, "database=fraud"],
    ),
    "safe_dict-clickhouse_url": (
        lambda s: str(shown_settings(clickhouse_url=url(s)).safe_dict()["clickhouse_url"]),
        ["default:***@", HOST],
    ),
    "safe_dict-dash_auth": (
        lambda s: shown_settings(dash_auth=f"alice:{s},bob:{s}").safe_dict()["dash_auth"],
        ["alice:***", "bob:***"],
    ),
    "safe_dict-brokers": (
        lambda s: shown_settings(brokers=broker(s)).safe_dict()["brokers"],
        ["kafka:***@", BROKER],
    ),
    "repr": (
        lambda s: repr(shown_settings(clickhouse_url=url(s), dash_auth=f"alice:{s}")),
        [HOST, "alice:***"],
    ),
    "refused-wrong-scheme": (
        lambda s: refusal(clickhouse_url=url(s, scheme="ftp")),
        [
            f"clickhouse_url (FRAUD_CLICKHOUSE_URL) = 'ftp://default:***@{HOST}",
            "https?://",
        ],
    ),
    "refused-other-field": (
        lambda s: refusal(clickhouse_url=url(s), dash_auth=f"alice:{s}", shards=0),
        ["shards (FRAUD_SHARDS) = 0", "greater than or equal to 1"],
    ),
    "refused-thresholds": (
        lambda s: refusal(
            clickhouse_url=url(s), dash_auth=f"alice:{s}", brokers=broker(s), review_threshold=0.9
        ),
        ["invalid settings", "(FRAUD_"],
    ),
    "refused-dash_auth-space": (
        lambda s: refusal(dash_auth=f"alice:{s} bob"),
        ["dash_auth (FRAUD_DASH_AUTH) = 'alice:***", "should match pattern"],
    ),
    "refused-dash_auth-no-colon": (
        lambda s: refusal(dash_auth=f"alice:{s},bob"),
        ["dash_auth (FRAUD_DASH_AUTH) = 'alice:***,***"],
    ),
    "refused-dash_auth-not-a-string": (
        lambda s: refusal(dash_auth=[f"alice:{s}"]),
        ["dash_auth (FRAUD_DASH_AUTH) = ['alice:***", "valid string"],
    ),
    "refused-secret-name": (
        lambda s: refusal(api_token=s),
        ["api_token (FRAUD_API_TOKEN) = '***'", "Extra inputs are not permitted"],
    ),
}


@pytest.mark.parametrize("surface", list(SURFACES))
@pytest.mark.parametrize("secret", SECRETS)
def test_secret_is_never_shown(secret: str, surface: str) -> None:
    show, useful = SURFACES[surface]
    shown = show(secret)
    assert_hidden(secret, shown)
    for part in useful:
        assert part in shown


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_from_the_environment_is_not_echoed(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_CLICKHOUSE_URL", url(secret, scheme="ftp"))
    monkeypatch.setenv("FRAUD_DASH_AUTH", f"alice:{secret} bob")
    shown = refusal()
    assert_hidden(secret, shown)
    assert "clickhouse_url (FRAUD_CLICKHOUSE_URL) = 'ftp://default:***@" in shown
    assert "dash_auth (FRAUD_DASH_AUTH) = 'alice:***" in shown


@pytest.mark.parametrize("secret", [p for p in SECRETS if ":" not in p.values[0]])
def test_bare_password_as_dash_auth_is_masked_whole(secret: str) -> None:
    """Without a colon nobody can tell a user from a password, so nothing is shown."""
    assert_hidden(secret, refusal(dash_auth=secret))


def test_threshold_refusal_shows_the_masked_inputs() -> None:
    """A refusal of the whole object lists every input given, each masked by its field."""
    secret = "Zebra99Quokka"
    shown = refusal(
        clickhouse_url=url(secret),
        dash_auth=f"alice:{secret}",
        brokers=broker(secret),
        review_threshold=0.9,
    )
    assert_hidden(secret, shown)
    assert "review_threshold (0.9) must be below block_threshold (0.8)" in shown
    for part in (f"default:***@{HOST}", f"kafka:***@{BROKER}", "'dash_auth': 'alice:***'"):
        assert part in shown


def test_password_equal_to_the_username_hides_the_username() -> None:
    same = "Zebra99Quokka"
    assert_hidden(same, describe_url(f"http://{same}:{same}@{HOST}"))
    assert_hidden(same, shown_settings(dash_auth=f"{same}:{same}").safe_dict()["dash_auth"])
    assert_hidden(same, refusal(clickhouse_url=f"ftp://{same}:{same}@{HOST}"))


def test_password_equal_to_the_host_appears_only_as_the_host() -> None:
    assert describe_url("http://u:db.example@db.example:8123") == "http://u:***@db.example:8123"


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("http://Zebra99Quokka@db.example", "http://***@db.example"),
        ("http://default:Zebra99Quokka/fraud", "http://***/fraud"),
        ("Zebra99Quokka@host", "***@host"),
        ("kafka:Zebra99Quokka@host:9092", "kafka:***@host:9092"),
        (
            "https://h:8443/?user=default&password=Zebra99Quokka&database=x",
            "https://h:8443/?user=default&password=***&database=x",
        ),
    ],
)
def test_ambiguous_credentials_are_masked_conservatively(raw: str, masked: str) -> None:
    """A lone userinfo may be a token, a non-numeric port a password missing its ``@host``."""
    assert describe_url(raw) == masked


@pytest.mark.parametrize(
    "plain",
    [
        "chdb://./data/chdb",
        "chdb:",
        "chdb:///var/lib/fraud",
        "http://localhost:8123",
        "https://[::1]:8443/?database=fraud",
        "kafka-1:9092,kafka-2:9092",
    ],
)
def test_values_without_credentials_are_shown_unchanged(plain: str) -> None:
    assert describe_url(plain) == plain
    assert shown_settings(brokers=plain).safe_dict()["brokers"] == plain


def test_refusals_still_echo_values_that_are_not_secret() -> None:
    assert "clickhouse_url (FRAUD_CLICKHOUSE_URL) = 'mysql://x'" in refusal(
        clickhouse_url="mysql://x"
    )
    assert "hst_trees (FRAUD_HST_TREES) = 'many'" in refusal(hst_trees="many")


def test_safe_dict_masks_only_what_is_secret() -> None:
    s = load_settings(clickhouse_url=url("Zebra99Quokka"), dash_auth="alice:pw1,bob:pw2")
    safe, raw = s.safe_dict(), s.model_dump()
    assert safe["clickhouse_url"] == f"http://default:***@{HOST}/?database=fraud"
    assert safe["dash_auth"] == "alice:***,bob:***"
    assert {k: v for k, v in safe.items() if k not in ("clickhouse_url", "dash_auth")} == {
        k: v for k, v in raw.items() if k not in ("clickhouse_url", "dash_auth")
    }
