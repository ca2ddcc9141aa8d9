"""Output encoding: data made inert for each place the app puts it.

User ids, merchant names, notes and reasons come from producers and analysts, so they are
never parsed as markup, a URL or a spreadsheet formula: pages show them as plain text,
links are built here (percent-encoded), plotly text is entity-escaped and CSV cells that
a spreadsheet would evaluate are quoted.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd

__all__ = [
    "CASES_PATH",
    "USERS_PATH",
    "case_href",
    "csv_cell",
    "csv_safe",
    "plotly_text",
    "user_href",
    "user_id_from_path",
]

USERS_PATH = "/users/"
"""Prefix of the user drill-down page; the rest of the path is one encoded user id."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Cell starts a spreadsheet evaluates (OWASP CSV injection: = + - @ tab CR)."""


def user_href(user_id: str) -> str:
    """The user page of ``user_id``: the id is one fully percent-encoded path segment
    (``/``, ``%``, ``:`` included), so no id can leave the app or split the path.

    >>> user_href("u2")
    '/users/u2'
    >>> user_href("x](https://evil.example) [y")
    '/users/x%5D%28https%3A%2F%2Fevil.example%29%20%5By'
    >>> user_href("x/y"), user_href("100%"), user_href("ü")
    ('/users/x%2Fy', '/users/100%25', '/users/%C3%BC')
    """
    return USERS_PATH + quote(user_id, safe="")


CASES_PATH = "/cases/"


def case_href(case_id: str) -> str:
    """The case page of ``case_id`` (a uuid; encoded anyway, like user ids).

    >>> case_href("0b6f1d3e-5b7a-5c1e-9a55-6a1f3c2d9e01")
    '/cases/0b6f1d3e-5b7a-5c1e-9a55-6a1f3c2d9e01'
    >>> case_href("../x?y")
    '/cases/..%2Fx%3Fy'
    """
    return CASES_PATH + quote(case_id, safe="")


def user_id_from_path(segment: str) -> str:
    """The user id from what Dash captured after ``/users/`` (the browser's pathname, still
    percent-encoded): decoded exactly once, the inverse of :func:`user_href`.

    >>> user_id_from_path("x%2Fy"), user_id_from_path("100%25"), user_id_from_path("a%20b")
    ('x/y', '100%', 'a b')
    >>> user_id_from_path("100%2525")  # decoded once: a literal "%25" in the id survives
    '100%25'
    """
    return unquote(segment)


def plotly_text(value: str) -> str:
    """``value`` shown literally in plotly text (titles, annotations, hover labels), which
    plotly renders as HTML-like markup (``<a href>``, ``<b>``, ``<br>``).

    >>> plotly_text('<a href="https://evil.example">x</a> & co')
    '&lt;a href="https://evil.example"&gt;x&lt;/a&gt; &amp; co'
    """
    return html.escape(value, quote=False)


def csv_cell(value: str) -> str:
    """A text cell that a spreadsheet shows as text instead of evaluating it (OWASP CSV
    injection rule): when it starts with ``= + - @``, tab or carriage return, also after
    leading whitespace, it is prefixed with ``'``; any other text is unchanged.

    >>> csv_cell('=HYPERLINK("https://evil.example","x")')
    '\\'=HYPERLINK("https://evil.example","x")'
    >>> [csv_cell(v) for v in ("+1", "-2+3", "@SUM(A1)", "\\tx", "\\rx", "  =1", "\\n-1")]
    ["'+1", "'-2+3", "'@SUM(A1)", "'\\tx", "'\\rx", "'  =1", "'\\n-1"]
    >>> [csv_cell(v) for v in ("u2", "a=b", "", "  ", "o'neil")]
    ['u2', 'a=b', '', '  ', "o'neil"]
    """
    if value.startswith(FORMULA_STARTS) or value.lstrip().startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with :func:`csv_cell` applied to every text value; numbers, dates
    and missing values are untouched (a negative amount stays a number).

    >>> csv_safe(pd.DataFrame({"user_id": ["=1+1", "u2"], "lon": [-74.0, 2.5]})).to_dict("list")
    {'user_id': ["'=1+1", 'u2'], 'lon': [-74.0, 2.5]}
    """
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_string_dtype(out[col]) or out[col].dtype == object:
            out[col] = out[col].map(_csv_value)
    return out


def _csv_value(v: Any) -> Any:
    return csv_cell(v) if isinstance(v, str) else v
