"""``fraud rules backtest CANDIDATE.json``: what a candidate policy would change.

Against stored transactions (default: the last 7 days of stored data; ``--from/--to``
for another range), vectorised over the features each row keeps
(:mod:`clickhouse.backtest`, a million rows in seconds); or through the stateful flow
over a JSONL / Parquet file (``--file``) or the Fraud Detection Handbook data
(``--handbook``), which re-runs the state a candidate's blocks would change
(:mod:`dataflows.evaluation.backtest`).  The live policy is the one in force (else the
built-in), or ``--against N``.  Prints tables; ``--json OUT`` writes the whole report.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from dataflows.cli.common import add_common, iso_date, positive_int, settings_of
from schemas.errors import ConfigError
from schemas.rules import Policy, PolicyError

__all__ = ["format_report", "register_backtest"]

WEEK = timedelta(days=7)
HANDBOOK_RANGE = (date(2018, 9, 1), date(2018, 10, 1))
"""The handbook's last month by default: two flow runs of ~290k events."""


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _candidate(path: str) -> Policy:
    """The candidate file, validated: every problem names the rule, field and column."""
    from schemas.rules import check_policy, decode_policy

    f = Path(path)
    if not f.is_file():
        raise ConfigError(f"CANDIDATE {path}: no such file")
    try:
        p = decode_policy(f.read_bytes())
    except PolicyError as e:
        raise ConfigError(f"CANDIDATE {path}: {e}") from None
    problems = check_policy(p)
    if problems:
        raise ConfigError(f"CANDIDATE {path}: " + "; ".join(str(x) for x in problems))
    return p


def _day(d: date) -> datetime:
    return datetime.combine(d, datetime.min.time(), UTC)


def stored_range(store: Any, since: date | None, until: date | None) -> tuple[datetime, datetime]:
    """``[from, to)``; a missing end is the last 7 days of stored data."""
    from clickhouse.queries import data_bounds

    if since is not None and until is not None:
        return _day(since), _day(until)
    if until is not None:
        return _day(until) - WEEK, _day(until)
    bounds = data_bounds(store)
    end = (bounds[1] if bounds else datetime.now(UTC)) + timedelta(milliseconds=1)
    return (_day(since) if since is not None else end - WEEK), end


def cmd_backtest(args: argparse.Namespace) -> int:
    from clickhouse.store import describe_url

    s = settings_of(args)
    since, until = getattr(args, "from"), args.to
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--to {until} must be after --from {since}")
    if args.file is not None and (since is not None or until is not None):
        raise ConfigError("--from/--to: a --file is backtested whole (they select stored data)")
    if args.file is not None and not Path(args.file).exists():
        raise ConfigError(f"--file {args.file}: no such file or folder")
    root = Path(args.data) if args.data else s.data_dir
    hb = root / "fraud_handbook_simulated" / "transactions.parquet"
    if args.handbook and not hb.exists():
        raise ConfigError(f"--data {root}: no fraud_handbook_simulated/transactions.parquet there")
    candidate = _candidate(args.candidate)
    flow = args.file is not None or args.handbook
    from dataflows.cli.rules import store_of, stored_or_builtin  # rules.py registers us

    store = None if flow and args.against == 0 else store_of(s)
    live = stored_or_builtin(s, args.against, "--against", store)
    _say(f"candidate v{candidate.version} ({args.candidate}) against live v{live.version}")
    if flow:
        from dataflows.evaluation.backtest import backtest_flow, file_events, handbook_stream

        if args.file is not None:
            _say(f"reading events from {args.file}")
            events = list(file_events(Path(args.file)))
        else:
            lo, hi = since or HANDBOOK_RANGE[0], until or HANDBOOK_RANGE[1]
            _say(f"reading the handbook transactions {lo} … {hi} from {root}")
            events = list(handbook_stream(root, lo, hi))
        if not events:
            raise ConfigError("--file: no events in it" if args.file else "--from/--to: no events")
        _say(f"{len(events):,} events; scoring them under each policy through the flow")
        report = backtest_flow(s, events, candidate, live, _say)
    else:
        from clickhouse.backtest import backtest_store

        start, end = stored_range(store, since, until)
        _say(
            f"stored transactions {start:%Y-%m-%d %H:%M} … {end:%Y-%m-%d %H:%M} "
            f"on {describe_url(s.clickhouse_url)} ({s.clickhouse_database})"
        )
        report = backtest_store(store, candidate, live, start, end)
    print(format_report(report, live, candidate))
    if args.json:
        import orjson

        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        _say(f"wrote {out}")
    return 0


# --- the printed report ---------------------------------------------------------------


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table: first column left-aligned, the others right."""
    cells = [[str(c) for c in head]] + [[_cell(c) for c in r] for r in rows]
    width = [max(len(r[i]) for r in cells) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(width[i]) if i == 0 else c.rjust(width[i]) for i, c in enumerate(r)
        ).rstrip()

    return "\n".join(
        [line(cells[0]), "  ".join("-" * w for w in width)] + [line(r) for r in cells[1:]]
    )


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _usd(x: float) -> str:
    return f"${x:,.0f}"


def format_report(r: Any, live: Policy, candidate: Policy) -> str:
    """The report as readable tables (what ``--json`` writes in full)."""
    from schemas.vocab import DECISIONS

    what = "stored transactions" if r.source == "store" else "events through the flow"
    out = [
        f"\nBacktest: candidate v{candidate.version} vs live v{live.version} over "
        f"{r.rows:,} {what}, {r.start} … {r.end} ({r.seconds:.1f}s)",
        f"labelled rows (dataset) {r.labelled:,}; with an analyst verdict {r.with_verdict:,}",
        "",
    ]
    pol = [
        (
            f"{name} v{p.version}",
            p.flagged,
            p.reviews,
            p.blocks,
            _usd(p.flagged_usd),
            _usd(p.blocked_usd),
            p.precision_labels,
            p.recall_labels,
            p.precision_verdicts,
            p.recall_verdicts,
        )
        for name, p in (("live", r.live), ("candidate", r.candidate))
    ]
    head = ["policy", "flagged", "reviews", "blocks", "flagged USD", "blocked USD"]
    head += ["prec lab", "rec lab", "prec verd", "rec verd"]
    out += [_table(head, pol), "", "Decisions, live (rows) → candidate (columns):"]
    out.append(
        _table(["live \\ cand", *DECISIONS], [(d, *r.changes[i]) for i, d in enumerate(DECISIONS)])
    )
    for cell, ids in r.examples.items():
        out.append(f"  e.g. {cell}: {', '.join(ids)}")
    for title, stats in (("Candidate rules", r.candidate_rules), ("Live rules", r.live_rules)):
        rows = []
        for x in stats:
            top = sorted(((-n, o) for o, n in x.overlap.items() if n))[:3]
            rows.append(
                (
                    x.rule,
                    x.status,
                    x.effect,
                    x.hits,
                    f"{x.hit_rate:.3%}",
                    _usd(x.amount_usd),
                    x.precision_labels,
                    x.recall_labels,
                    x.precision_verdicts,
                    x.recall_verdicts,
                    ", ".join(f"{o} {-n:,}" for n, o in top) or "-",
                )
            )
        head = ["rule", "status", "effect", "hits", "hit rate", "USD"]
        head += ["prec lab", "rec lab", "prec verd", "rec verd", "overlaps most with"]
        out += ["", f"{title}:", _table(head, rows)]
    days = [(d, a, b, f"{b - a:+,}") for d, a, b in r.alerts_per_day]
    out += ["", "Alerts per day:", _table(["day", "live", "candidate", "change"], days)]
    out += ["", *(f"note: {n}" for n in r.notes)]
    return "\n".join(out)


_version = positive_int("against", minimum=0)


def register_backtest(subparsers: Any) -> None:
    """Add ``backtest`` to the ``fraud rules`` subcommands."""
    p = subparsers.add_parser(
        "backtest",
        help="what a candidate policy would change: stored data (default) or through the flow",
    )
    p.add_argument("candidate", metavar="CANDIDATE.json", help="the candidate policy file")
    p.add_argument(
        "--against",
        type=_version,
        help="live policy version to compare with (default: the one in force; 0: built-in)",
    )
    p.add_argument(
        "--from", type=iso_date, help="first day (YYYY-MM-DD; default: 7 days before --to)"
    )
    p.add_argument(
        "--to",
        type=iso_date,
        help="day after the last (default: the end of the stored data)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--file", help="JSONL or Parquet events, scored through the flow")
    src.add_argument(
        "--handbook",
        action="store_true",
        help=f"the Fraud Detection Handbook data through the flow "
        f"(default {HANDBOOK_RANGE[0]} … {HANDBOOK_RANGE[1]})",
    )
    p.add_argument("--data", help="datasets folder for --handbook (default: setting data_dir)")
    p.add_argument("--json", metavar="OUT", help="also write the whole report as JSON")
    add_common(p)
    p.set_defaults(fn=cmd_backtest)
