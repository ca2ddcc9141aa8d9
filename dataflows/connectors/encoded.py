"""A sink plus the function that maps the flow's objects to the items it accepts.

``build_flow`` speaks domain objects (ScoredTransaction, Alert, DeadLetter); each
connector says how it wants them (Kafka messages, ClickHouse rows) by wrapping its sink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bytewax.outputs import Sink

__all__ = ["Encoded"]

X = TypeVar("X")


@dataclass(frozen=True)
class Encoded(Generic[X]):
    """A sink plus the function that turns the flow's objects into its items."""

    sink: Sink[Any]
    encode: Callable[[X], Any]
