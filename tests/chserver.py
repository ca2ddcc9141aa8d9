"""A ClickHouse HTTP-protocol server backed by chDB, for tests (``python tests/chserver.py``).

Tests start it as a subprocess so clickhouse-connect's *HTTP* client runs its real code
paths against a real engine: POST with the query in the body or ``query=``, settings and
``param_*`` from the URL, ``INSERT ... FORMAT Native`` bodies, lz4/zstd/gzip/deflate request
and response compression, ``X-ClickHouse-*`` headers and ClickHouse error codes.  A compressed
body is decoded frame by frame to its end (the client sends one frame per insert block) or
refused with 400, as ClickHouse does: never stored in part.

Not a production server: one chDB connection serves requests one at a time, there is no
authentication, and sessions are ignored (each request applies its own settings).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar, Protocol
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame
from backports import zstd

TRANSPORT = {
    "query",
    "database",
    "default_format",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "query_id",
    "quota_key",
    "wait_end_of_query",
    "buffer_size",
    "client_protocol_version",
    "role",
    "user",
    "password",
    "enable_http_compression",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
}
"""URL parameters the HTTP layer consumes; every other one is a query setting."""

_INSERT = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_CODE = re.compile(r"Code: (\d+)")
_HTTP_STATUS = {60: 404, 81: 404, 62: 400, 47: 400, 27: 400, 53: 400, 36: 400, 115: 400}


class _Decompressor(Protocol):
    """One frame's decoder: zlib's decompressobj, LZ4FrameDecompressor, ZstdDecompressor."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, /) -> bytes: ...


_DECODERS: dict[str, tuple[Callable[[], _Decompressor], int, str]] = {
    "gzip": (partial(zlib.decompressobj, wbits=31), 354, "ZLIB_INFLATE_FAILED"),
    "deflate": (zlib.decompressobj, 354, "ZLIB_INFLATE_FAILED"),
    "lz4": (lz4.frame.LZ4FrameDecompressor, 618, "LZ4_DECODER_FAILED"),
    "zstd": (zstd.ZstdDecompressor, 561, "ZSTD_DECODER_FAILED"),
}
"""Content-Encoding -> (new decoder of one frame, ClickHouse error code and name)."""
_ENCODE = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "lz4": lz4.frame.compress,
    "zstd": zstd.compress,
}


class BodyError(Exception):
    """A request body that cannot be decoded in full: refused with 400, nothing stored."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_body(encoding: str, body: bytes) -> tuple[bytes, int]:
    """``body`` decoded to its last byte, and how many frames (gzip members) it held.

    clickhouse-connect compresses each block of an insert as a frame of its own, and a
    gzip stream may hold several members; one-shot decoders such as
    ``lz4.frame.decompress`` or ``zlib.decompress`` stop after the first and drop the
    rest without a word.  A truncated frame or trailing bytes raise :class:`BodyError`.
    """
    if encoding not in _DECODERS:
        raise BodyError(
            48,
            f"Unknown compression method '{encoding}'. Supported: {', '.join(_DECODERS)}."
            " (NOT_IMPLEMENTED)",
        )
    new, code, name = _DECODERS[encoding]
    out: list[bytes] = []
    rest = body
    while rest:
        d = new()
        try:
            out.append(d.decompress(rest))
        except Exception as e:  # zlib.error, RuntimeError, ZstdError: one per library
            raise BodyError(
                code, f"Cannot decode {encoding} frame {len(out) + 1}: {e}. ({name})"
            ) from e
        if not d.eof:
            raise BodyError(
                code,
                f"The {encoding} body ends inside frame {len(out)}: truncated, or followed"
                f" by bytes that are not a frame. ({name})",
            )
        rest = d.unused_data
    return b"".join(out), len(out)


def _q(v: str) -> str:
    return v.replace("\\", "\\\\").replace("'", "\\'")


class Engine:
    """The chDB connection; chDB handles are not thread-safe, so one query at a time."""

    def __init__(self, path: str) -> None:
        self.conn = chdb.connect(path)
        self.lock = threading.Lock()
        self.version = self.run("SELECT version()", "TabSeparated", {})[0].decode().strip()
        # The profile default, as a server applies it when the URL does not say.
        self.http_compression = (
            self.run(
                "SELECT value FROM system.settings WHERE name = 'enable_http_compression'",
                "TabSeparated",
                {},
            )[0]
            .decode()
            .strip()
        )

    def run(
        self,
        sql: str,
        fmt: str,
        params: dict[str, str],
        database: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        with self.lock:
            self.conn.query(f"USE {database or 'default'}", "TabSeparated")
            for k, v in (settings or {}).items():
                self.conn.query(
                    f"SET {k} = {v}" if v.isdigit() else f"SET {k} = '{_q(v)}'", "TabSeparated"
                )
            try:
                res = self.conn.query(sql, fmt, params=params)
            finally:
                for k in settings or {}:
                    self.conn.query(f"SET {k} = DEFAULT", "TabSeparated")
        summary = {
            "read_rows": str(res.rows_read()),
            "read_bytes": str(res.bytes_read()),
            "written_rows": "0",
            "written_bytes": "0",
            "total_rows_to_read": str(res.rows_read()),
            "result_rows": str(res.rows_read()),
            "result_bytes": str(len(res.bytes() or b"")),
            "elapsed_ns": str(int(res.elapsed() * 1e9)),
        }
        return res.bytes() or b"", summary


class Handler(BaseHTTPRequestHandler):
    engine: Engine
    stats: ClassVar[Counter[str]] = Counter()
    """What the server saw (``GET /stats``), so tests can assert compression was used."""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/ping", "/") and "query=" not in self.path:
            self._reply(200, b"Ok.\n", {"Content-Type": "text/plain"})
            return
        if path == "/stats":
            self._reply(200, json.dumps(self.stats).encode(), {"Content-Type": "application/json"})
            return
        self._handle(b"")

    def do_POST(self) -> None:
        body = self._read_body()
        enc = (self.headers.get("Content-Encoding") or "").strip().lower()
        if enc:
            try:
                body, frames = decode_body(enc, body)
            except BodyError as e:
                qid = dict(parse_qsl(urlsplit(self.path).query)).get("query_id", "")
                self._fail(e.code, f"Code: {e.code}. DB::Exception: {e}", 400, qid)
                return
            self.stats[f"request_{enc}"] += 1
            self.stats[f"request_{enc}_frames"] += frames
        self._handle(body)

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() != "chunked":
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _handle(self, body: bytes) -> None:
        url = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        qid = url.get("query_id") or str(uuid.uuid4())
        params = {k[6:]: v for k, v in url.items() if k.startswith("param_")}
        settings = {
            k: v for k, v in url.items() if k not in TRANSPORT and not k.startswith("param_")
        }
        sql = url.get("query")
        data = b""
        if sql is None:
            # An insert may carry its statement in the body, data after the first line.
            head, sep, rest = body.partition(b"\n")
            if sep and _INSERT.match(head.decode(errors="replace")):
                sql, data = head.decode(), rest
            else:
                sql = body.decode()
        else:
            data = body
            if body and not _INSERT.match(sql):
                sql = sql + "\n" + body.decode()
                data = b""
        fmt = url.get("default_format", "TabSeparated")
        if m := _FORMAT.search(sql):
            fmt = m.group(1)
        tmp = None
        try:
            if data:
                m = _INSERT.match(sql)
                assert m is not None
                with tempfile.NamedTemporaryFile(delete=False, suffix=".bin") as f:
                    f.write(data)
                    tmp = f.name
                sql = f"{m.group(1)} FROM INFILE '{tmp}' FORMAT {m.group(2)}"
            self.stats["insert" if data else "query"] += 1
            out, summary = self.engine.run(sql, fmt, params, url.get("database"), settings)
        except Exception as e:
            msg = str(e)
            code = int(m.group(1)) if (m := _CODE.search(msg)) else 1002
            text = msg if msg.startswith("Code:") else f"Code: {code}. DB::Exception: {msg}"
            self._fail(code, text, _HTTP_STATUS.get(code, 500), qid)
            return
        finally:
            if tmp:
                os.unlink(tmp)
        headers = {
            "X-ClickHouse-Query-Id": qid,
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Server-Display-Name": "chserver",
            "X-ClickHouse-Summary": json.dumps(summary),
            "Content-Type": "application/octet-stream",
        }
        if url.get("enable_http_compression", self.engine.http_compression) == "1":
            for enc in (self.headers.get("Accept-Encoding") or "").split(","):
                enc = enc.strip().lower()
                if enc in _ENCODE:
                    out = _ENCODE[enc](out)
                    headers["Content-Encoding"] = enc
                    self.stats[f"response_{enc}"] += 1
                    break
        self._reply(200, out, headers)

    def _fail(self, code: int, text: str, status: int, qid: str = "") -> None:
        """Reply with a ClickHouse-style error: the code in a header and in the text."""
        self._reply(
            status,
            f"{text} (version {self.engine.version})\n".encode(),
            {
                "X-ClickHouse-Exception-Code": str(code),
                "X-ClickHouse-Query-Id": qid or str(uuid.uuid4()),
                "Content-Type": "text/plain; charset=UTF-8",
            },
        )

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(path: str, port: int) -> ThreadingHTTPServer:
    """Start serving chDB at ``path`` on 127.0.0.1:``port`` (0 = any free port)."""
    Handler.engine = Engine(path)
    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True, help="chDB data directory")
    ap.add_argument("--port", type=int, default=0, help="TCP port (0 = any free port)")
    a = ap.parse_args()
    server = serve(a.path, a.port)
    # The parent reads the port from this line; it is printed once the socket listens.
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    t0 = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.1)
    print(f"stopped after {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


class ChServer:
    """Runs this module as a subprocess on a free port (a context manager for fixtures)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> ChServer:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--path", str(self.path), "--port", str(self._port())],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"chserver did not start (exit {self.proc.wait()}): {line!r}")
        self.url = "http://" + line.split()[-1]
        return self

    def _port(self) -> int:
        if self.url:  # restart on the same port so clients keep their URL
            return int(self.url.rsplit(":", 1)[1])
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as r:
            return json.loads(r.read())

    def __enter__(self) -> ChServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
