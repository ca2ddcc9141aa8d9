"""API keys: kept as SHA-256 digests, compared in constant time, never shown."""

from __future__ import annotations

import hashlib

from dataflows.api.app import key_digests, key_matches
from schemas.settings import load_settings

KEY = "k-0123456789abcdef"


def test_raw_and_prehashed_keys_are_accepted_and_others_refused() -> None:
    digest = "sha256:" + hashlib.sha256(b"other-0123456789abcdef").hexdigest()
    digests = key_digests(f"{KEY},{digest}")
    assert digests[0] == hashlib.sha256(KEY.encode()).digest()
    assert key_matches(KEY, digests) and key_matches("other-0123456789abcdef", digests)
    for wrong in (None, "", KEY[:-1], KEY + "x", digest, "\udcff"):
        assert not key_matches(wrong, digests)
    assert key_matches(None, ())  # no keys configured: authentication off


def test_keys_are_masked_wherever_settings_are_shown() -> None:
    s = load_settings(api_keys=KEY)
    assert KEY not in repr(s) and KEY not in str(s.safe_dict())
