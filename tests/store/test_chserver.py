"""The test server decodes every frame of a compressed request body, or refuses the body.

clickhouse-connect compresses each block of an insert on its own, so one HTTP body is
several LZ4 (or zstd) frames back to back; gzip streams may hold several members.  A
server that decodes only the first frame stores part of the insert and answers 200,
which hides exactly the row losses the store tests are there to catch.
"""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import lz4.frame
import pytest
from backports import zstd

from tests import chserver
from tests.chserver import ChServer

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": lz4.frame.compress,
    "zstd": zstd.compress,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
}
"""One frame (member, stream) per call, as clickhouse-connect writes one per block."""

ERROR_CODE = {"lz4": 618, "zstd": 561, "gzip": 354, "deflate": 354}
"""ClickHouse's own codes: LZ4_DECODER_FAILED, ZSTD_DECODER_FAILED, ZLIB_INFLATE_FAILED."""


def _blocks(n: int, rows: int) -> list[bytes]:
    """``n`` TSV blocks of ``rows`` numbers each, all numbers distinct."""
    return [b"".join(b"%d\n" % (b * rows + i) for i in range(rows)) for b in range(n)]


def _frames(enc: str, blocks: list[bytes]) -> bytes:
    return b"".join(COMPRESS[enc](b) for b in blocks)


@pytest.mark.parametrize("enc", sorted(COMPRESS))
def test_decoder_reads_every_frame(enc: str) -> None:
    blocks = _blocks(3, 20_000)
    assert chserver.decode_body(enc, _frames(enc, blocks)) == (b"".join(blocks), 3)


@pytest.mark.parametrize("enc", sorted(COMPRESS))
def test_decoder_refuses_a_body_it_cannot_decode_in_full(enc: str) -> None:
    body = _frames(enc, _blocks(3, 1000))
    for bad in (body[:-7], body + b"junk", b"not compressed"):
        with pytest.raises(chserver.BodyError) as e:
            chserver.decode_body(enc, bad)
        assert e.value.code == ERROR_CODE[enc]


def test_decoder_refuses_an_unknown_encoding() -> None:
    with pytest.raises(chserver.BodyError, match="Unknown compression method 'br'") as e:
        chserver.decode_body("br", b"x")
    assert e.value.code == 48


def _post(srv: ChServer, sql: str, body: bytes = b"", enc: str = "") -> tuple[int, str, str]:
    """(status, body, X-ClickHouse-Exception-Code) of one request with ``sql`` in the URL."""
    req = urllib.request.Request(f"{srv.url}/?{urlencode({'query': sql})}", body, method="POST")
    if enc:
        req.add_header("Content-Encoding", enc)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(), ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("X-ClickHouse-Exception-Code", "")


@pytest.fixture
def table(ch_http: ChServer) -> Iterator[str]:
    """An empty ``n UInt32`` table in a database of its own on the test server."""
    db = f"test_{uuid.uuid4().hex[:10]}"
    assert _post(ch_http, f"CREATE DATABASE {db}")[0] == 200
    sql = f"CREATE TABLE {db}.t (n UInt32) ENGINE = MergeTree ORDER BY n"
    assert _post(ch_http, sql)[0] == 200
    yield f"{db}.t"
    _post(ch_http, f"DROP DATABASE IF EXISTS {db}")


def _count(srv: ChServer, table: str) -> str:
    return _post(srv, f"SELECT count(), uniqExact(n) FROM {table}")[1].strip()


@pytest.mark.parametrize("enc", sorted(COMPRESS))
def test_server_stores_every_frame_of_an_insert(ch_http: ChServer, table: str, enc: str) -> None:
    body = _frames(enc, _blocks(4, 5000))
    assert _post(ch_http, f"INSERT INTO {table} FORMAT TSV", body, enc)[0] == 200
    assert _count(ch_http, table) == "20000\t20000"


@pytest.mark.parametrize("enc", sorted(COMPRESS))
def test_server_refuses_a_truncated_body_and_stores_nothing(
    ch_http: ChServer, table: str, enc: str
) -> None:
    body = _frames(enc, _blocks(4, 5000))[:-7]
    status, text, code = _post(ch_http, f"INSERT INTO {table} FORMAT TSV", body, enc)
    assert (status, code) == (400, str(ERROR_CODE[enc]))
    assert text.startswith(f"Code: {ERROR_CODE[enc]}. DB::Exception: "), text
    assert "(version " in text
    assert _count(ch_http, table) == "0\t0"
