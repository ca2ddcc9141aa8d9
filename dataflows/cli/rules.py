"""``fraud rules list | show | validate | publish | rollback | export``: the rule policy
(``backtest`` lives in :mod:`dataflows.cli.rules_backtest`).

ClickHouse ``rule_policies`` holds every version (append-only, the source of truth, see
:mod:`clickhouse.rules`); ``publish`` and ``rollback`` store a new version there and then
announce it on the rules topic, from which every running flow process switches within
seconds (:mod:`dataflows.connectors.rules_feed`).  The edit loop: ``export`` the policy in
force to a file, edit it, ``validate`` it, ``publish`` it with a note saying why.

A policy refused is refused with every problem on its own line, naming the rule, the
field and the column (exit status 2), before anything is stored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dataflows.cli.common import add_common, positive_int, settings_of
from dataflows.cli.rules_backtest import register_backtest
from schemas.errors import ConfigError
from schemas.rules import Policy, PolicyError, Problem
from schemas.settings import Settings

__all__ = ["register_rules"]


def store_of(s: Settings) -> Any:
    """The configured store, migrated (every rules command reads or writes it)."""
    from clickhouse.store import Store, migrate

    store = Store.from_settings(s)
    migrate(store, s.clickhouse_ttl_days)
    return store


def _refuse(args: argparse.Namespace, where: str, problems: list[Problem]) -> int:
    """Every problem on its own line on stderr; exit status 2 (bad input)."""
    for p in problems:
        rule = f"rule {p.rule!r} " if p.rule else ""
        col = f" col {p.column}" if p.column else ""
        print(
            f"fraud rules {args.action}: {where}: {rule}{p.field}{col}: {p.message}",
            file=sys.stderr,
        )
    return 2


def _load(path: str) -> Policy:
    """The policy in ``path``, structural problems raised as :class:`PolicyError`."""
    from schemas.rules import check_policy, decode_policy

    f = Path(path)
    if not f.is_file():
        raise ConfigError(f"{path}: no such file")
    policy = decode_policy(f.read_bytes())
    problems = check_policy(policy)
    if problems:
        raise PolicyError(problems)
    return policy


def stored_or_builtin(
    s: Settings, version: int | None, flag: str = "--version", store: Any = None
) -> Policy:
    """Version ``version`` (None: the one in force, else the built-in; 0: the built-in);
    an unknown version is refused naming ``flag``."""
    from clickhouse.rules import policy_at, policy_in_force
    from schemas.rules import default_policy

    if version == 0:
        return default_policy(s)
    store = store_of(s) if store is None else store
    if version is None:
        return policy_in_force(store) or default_policy(s)
    stored = policy_at(store, version)
    if stored is None:
        raise ConfigError(f"{flag} {version}: no stored policy version {version}")
    return stored.policy


def _announce(s: Settings, policy: Policy) -> str:
    """Send ``policy`` to the running flows; what happened, for the user."""
    from dataflows.connectors.rules_feed import announce_policy

    if not s.brokers:
        return (
            "no broker configured (brokers, FRAUD_BROKERS): running flows pick it up "
            "when they (re)start"
        )
    announce_policy(s, policy)
    return f"announced on {s.topic_rules}: running flows switch within seconds"


def _summary(p: Policy) -> str:
    by: dict[str, int] = {}
    for r in p.rules:
        by[r.status] = by.get(r.status, 0) + 1
    counts = ", ".join(f"{n} {st}" for st, n in sorted(by.items()))
    thresholds = f"review >= {p.review_threshold:g}, block >= {p.block_threshold:g}"
    return f"{len(p.rules)} rules ({counts}); {thresholds}"


def cmd_list(args: argparse.Namespace) -> int:
    from clickhouse.rules import policy_history

    history = policy_history(store_of(settings_of(args)))
    if not history:
        print("no policy published: the built-in (version 0) is in force")
        return 0
    print(f"{'version':>7}  {'created_at':29s}  {'author':12s}  {'action':8s}  {'rules':>5}  note")
    for i, v in enumerate(history):
        p = v.policy
        mark = "*" if i == len(history) - 1 else " "
        print(
            f"{p.version:>6}{mark}  {p.created_at:29s}  {p.author:12s}  {v.action:8s}  "
            f"{len(p.rules):>5}  {p.note}"
        )
    print("* in force")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from schemas.rules import encode_policy

    p = stored_or_builtin(settings_of(args), args.version)
    if args.json:
        sys.stdout.write(encode_policy(p).decode() + "\n")
        return 0
    head = "built-in" if p.version == 0 else f"published {p.created_at} by {p.author}"
    print(f"policy v{p.version} ({head}): {_summary(p)}")
    if p.note:
        print(f"note: {p.note}")
    if p.params:
        print("params: " + ", ".join(f"{k}={v:g}" for k, v in sorted(p.params.items())))
    for r in p.rules:
        print(f"\n{r.id}  [{r.status}, {r.effect}]  {r.name}")
        if r.when != "True":
            print(f"  when {r.when}")
        for c in r.cases:
            cond = "" if c.when == "True" else f"if {c.when}: "
            print(f"  {cond}+{c.contribution}  {c.detail!r}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        p = _load(args.file)
    except PolicyError as e:
        return _refuse(args, args.file, e.problems)
    print(f"{args.file}: valid: {_summary(p)}")
    return 0


def _report(s: Settings, store: Any, stored: Policy) -> None:
    from clickhouse.rules import policy_at

    version = policy_at(store, stored.version)
    print(f"published version {stored.version} ({_summary(stored)})")
    print(_announce(s, stored))
    diff = version.diff if version is not None else ""
    print(diff or "(no change in rules, thresholds or params)")


def cmd_publish(args: argparse.Namespace) -> int:
    from clickhouse.rules import policy_in_force, publish_policy
    from schemas.rules import default_policy

    s = settings_of(args)
    try:
        policy = _load(args.file)
        store = store_of(s)
        base = policy_in_force(store) or default_policy(s)  # the first diff: vs built-in
        stored = publish_policy(store, policy, args.author, args.note, base=base)
    except PolicyError as e:
        return _refuse(args, args.file, e.problems)
    _report(s, store, stored)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from clickhouse.rules import publish_policy, rollback_policy
    from schemas.rules import default_policy

    s = settings_of(args)
    store = store_of(s)
    try:
        if args.version == 0:  # back to the built-in rules, as a new stored version
            note = f"rollback to v0 (built-in): {args.note}" if args.note.strip() else ""
            stored = publish_policy(store, default_policy(s), args.author, note, action="rollback")
        else:
            stored = rollback_policy(store, args.version, args.author, args.note)
    except PolicyError as e:
        return _refuse(args, f"version {args.version}", e.problems)
    _report(s, store, stored)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from schemas.rules import encode_policy

    body = encode_policy(stored_or_builtin(settings_of(args), args.version)) + b"\n"
    if args.out is None:
        sys.stdout.write(body.decode())
    else:
        Path(args.out).write_bytes(body)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


_version = positive_int("VERSION", minimum=0)


def register_rules(sub: Any) -> None:
    p = sub.add_parser(
        "rules", help="the rule policy: list, show, validate, publish, rollback, export, backtest"
    )
    rsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_: str, fn: Any) -> argparse.ArgumentParser:
        a = rsub.add_parser(name, help=help_)
        add_common(a)
        a.set_defaults(fn=fn)
        return a

    action("list", "every stored version: version, time, author, action, rules, note", cmd_list)
    a = action("show", "a policy's rules (default: the one in force)", cmd_show)
    a.add_argument("--version", type=_version, help="stored version (0: the built-in)")
    a.add_argument("--json", action="store_true", help="the policy's JSON")
    a = action(
        "validate", "check a policy file; every problem with rule, field, column", cmd_validate
    )
    a.add_argument("file", help="policy JSON (see `fraud rules export`)")
    a = action("publish", "validate, store as the next version, announce to the flows", cmd_publish)
    a.add_argument("file", help="policy JSON")
    a.add_argument("--author", required=True, help="who publishes (audit)")
    a.add_argument("--note", required=True, help="why (audit; required)")
    a = action(
        "rollback", "publish an earlier version's rules again, as a new version", cmd_rollback
    )
    a.add_argument("version", type=_version, help="the stored version to go back to (0: built-in)")
    a.add_argument("--author", required=True, help="who rolls back (audit)")
    a.add_argument("--note", required=True, help="why (audit; required)")
    a = action("export", "a policy's JSON to edit (default: in force, else built-in)", cmd_export)
    a.add_argument("--version", type=_version, help="stored version (0: the built-in)")
    a.add_argument("--out", help="write to this file (default: stdout)")
    register_backtest(rsub)
