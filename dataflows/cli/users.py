"""``fraud users add|list``: analyst accounts of the dashboard (ClickHouse ``app_users``).

The password is read from the terminal without echo (asked twice) or, when stdin is not
a terminal, from its first line (``printf '%s\\n' "$PW" | fraud users add ana``); it is
never printed, logged or passed on the command line.  Only werkzeug's salted hash is
stored; the table is append-only, so adding an existing name sets a new password/role.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from typing import Any

from dataflows.cli.common import add_common, settings_of
from schemas.cases import ROLES, AppUser

MIN_PASSWORD = 8


def _read_password() -> str:
    if sys.stdin.isatty():
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != pw:
            raise ValueError("the passwords differ")
    else:
        pw = sys.stdin.readline().rstrip("\r\n")
    if len(pw) < MIN_PASSWORD:
        raise ValueError(f"the password needs at least {MIN_PASSWORD} characters")
    return pw


def cmd_users(args: argparse.Namespace) -> int:
    from werkzeug.security import generate_password_hash

    from clickhouse import queries as q
    from clickhouse.store import Store, migrate

    s = settings_of(args)
    store = Store.from_settings(s)
    migrate(store, s.clickhouse_ttl_days)
    if args.action == "list":
        for name, (role, _) in q.app_users(store).items():
            print(f"{name}\t{role}")
        return 0
    if not args.name:
        raise ValueError("users add needs a NAME")
    now = datetime.now(UTC)
    if args.action == "disable":
        q.save_app_user(store, AppUser(args.name, args.role, "disabled", now, active=False))
        print(f"disabled {args.name}")
        return 0
    AppUser(args.name, args.role, "-", now)  # refuse a bad name/role before asking
    user = AppUser(args.name, args.role, generate_password_hash(_read_password()), now)
    q.save_app_user(store, user)
    print(f"saved {user.name} ({user.role})")
    return 0


def register_users(sub: Any) -> None:
    p = sub.add_parser("users", help="dashboard accounts: add NAME [--role admin], list, disable")
    p.add_argument("action", choices=("add", "list", "disable"))
    p.add_argument("name", nargs="?", help="login name (letters, digits, . _ @ -)")
    p.add_argument("--role", choices=ROLES, default="analyst")
    add_common(p)
    p.set_defaults(fn=cmd_users)
