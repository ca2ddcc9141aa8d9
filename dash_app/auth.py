"""Sign-in and roles: a cookie session (flask-login) opened on a login page.

Accounts come from ClickHouse ``app_users`` (``fraud users add NAME --role admin``;
werkzeug password hashes) and, as a fallback for existing deployments, from
``FRAUD_DASH_AUTH=user:password,...`` (analyst role).  Sign-in is required as soon as
one account exists; with none (the local demo) every request acts as ``local`` with the
admin role and the app says so.  ``/healthz``, ``/metrics`` and the login page are open.

Callbacks never trust a name from the page: :func:`current_actor` is the signed-in
account, and :func:`require` refuses an action the account's role does not allow.
"""

from __future__ import annotations

import hmac
import html
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, has_request_context, redirect, request
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.security import check_password_hash

from clickhouse import queries as q
from dash_app.context import ctx

__all__ = ["LOCAL", "Actor", "accounts", "current_actor", "install", "require"]

log = logging.getLogger(__name__)

OPEN_PATHS = ("/login", "/logout", "/healthz", "/metrics")
ACCOUNTS_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: the signed-in account's name and role."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


LOCAL = Actor("local", "admin")
"""The actor when no account exists (local demo, no sign-in)."""


class _Session(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


class Accounts:
    """Active accounts (name -> role, checker), re-read from ClickHouse every few
    seconds; FRAUD_DASH_AUTH entries are analyst accounts with a plain password."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, str, str] | None = None
        self._at = 0.0
        self._db: dict[str, tuple[str, str]] = {}

    def _stored(self) -> dict[str, tuple[str, str]]:
        c = ctx()
        key = (c.store.url, c.store.database, c.settings.dash_auth)
        with self._lock:
            if key != self._key or time.monotonic() - self._at > ACCOUNTS_TTL_S:
                try:
                    self._db = q.app_users(c.store)
                except Exception as e:  # ClickHouse down: keep the last accounts known
                    log.warning("cannot read app_users: %s", e)
                    if key != self._key:
                        self._db = {}
                self._key, self._at = key, time.monotonic()
            return self._db

    def _fallback(self) -> dict[str, str]:
        auth = ctx().settings.dash_auth
        return dict(u.split(":", 1) for u in auth.split(",")) if auth else {}

    def any(self) -> bool:
        return bool(self._fallback() or self._stored())

    def role(self, name: str) -> str | None:
        stored = self._stored()
        if name in stored:
            return stored[name][0]
        return "analyst" if name in self._fallback() else None

    def names(self) -> list[str]:
        return sorted(set(self._stored()) | set(self._fallback()))

    def check(self, name: str, password: str) -> Actor | None:
        stored = self._stored()
        if name in stored:
            role, h = stored[name]
            return Actor(name, role) if check_password_hash(h, password) else None
        pw = self._fallback().get(name)
        if pw is not None and hmac.compare_digest(pw.encode(), password.encode()):
            return Actor(name, "analyst")
        return None


_ACCOUNTS = Accounts()


def accounts() -> Accounts:
    return _ACCOUNTS


def current_actor() -> Actor | None:
    """The signed-in account; :data:`LOCAL` when no account exists; None when sign-in is
    required and nobody is signed in."""
    if has_request_context() and current_user.is_authenticated:
        role = _ACCOUNTS.role(current_user.get_id())
        return None if role is None else Actor(current_user.get_id(), role)
    return None if _ACCOUNTS.any() else LOCAL


def require(role: str | None = None) -> Actor:
    """The current actor, or PermissionError when signed out or lacking ``role``."""
    actor = current_actor()
    if actor is None:
        raise PermissionError("sign in first")
    if role == "admin" and not actor.is_admin:
        raise PermissionError(f"{actor.name} is an analyst; this needs the admin role")
    return actor


# --- Flask wiring -----------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path of this app (no scheme, no host, no ``//``) is followed after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Sign in · Fraud monitor</title>
<style>body{{font-family:system-ui,sans-serif;background:#f5f6f8;display:flex;
justify-content:center;padding-top:12vh}}form{{background:#fff;padding:2em;border-radius:8px;
box-shadow:0 1px 4px #0002;display:flex;flex-direction:column;gap:.8em;width:18em}}
input{{padding:.5em;font-size:1em}}button{{padding:.6em;font-size:1em}}
.err{{color:#b00}}</style></head><body>
<form method="post" action="/login?next={next}">
<h2>Fraud monitor</h2>{error}
<label>User <input id="login-user" name="username" autocomplete="username" required
 autofocus></label>
<label>Password <input id="login-password" name="password" type="password"
 autocomplete="current-password" required></label>
<button id="login-submit" type="submit">Sign in</button>
</form></body></html>"""


def _login_page(error: str = "", status: int = 200) -> Response:
    nxt = quote(_safe_next(request.args.get("next")), safe="/")
    err = f'<p class="err" role="alert">{html.escape(error)}</p>' if error else ""
    body = _PAGE.format(next=html.escape(nxt), error=err)
    return Response(body, status, {"Content-Type": "text/html; charset=utf-8"})


def _login() -> Any:
    if request.method == "GET":
        return _login_page()
    name = request.form.get("username", "")
    actor = _ACCOUNTS.check(name, request.form.get("password", ""))
    if actor is None:
        return _login_page("Unknown user or wrong password.", 401)
    login_user(_Session(actor.name))
    return redirect(_safe_next(request.args.get("next")))


def _logout() -> Any:
    logout_user()
    return redirect("/login")


def _guard() -> Any:
    if request.path in OPEN_PATHS or current_user.is_authenticated or not _ACCOUNTS.any():
        return None
    if request.method == "GET" and not request.path.startswith("/_"):
        return redirect("/login?next=" + quote(request.full_path.rstrip("?"), safe="/?=&"))
    return Response("Sign in required", 401)


def install(server: Flask, secret_key: str) -> None:
    """Cookie sessions, the login/logout routes and the guard on every other route."""
    server.secret_key = secret_key or secrets.token_hex(32)
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    lm = LoginManager()
    lm.init_app(server)

    @lm.user_loader
    def _load(name: str) -> _Session | None:
        return _Session(name) if _ACCOUNTS.role(name) is not None else None

    server.add_url_rule("/login", "login", _login, methods=["GET", "POST"])
    server.add_url_rule("/logout", "logout", _logout)
    server.before_request(_guard)
