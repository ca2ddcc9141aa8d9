"""A sink plus the function that maps the flow's objects to the items it accepts.

``build_flow`` speaks domain objects (ScoredTransaction, Alert, DeadLetter); each
connector says how it wants them (Kafka messages, ClickHouse rows) by wrapping its sink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from bytewax.outputs import Sink

__all__ = ["Encoded", "Placeable", "place"]

X = TypeVar("X")


@dataclass(frozen=True)
class Encoded(Generic[X]):
    """A sink plus the function that turns the flow's objects into its items."""

    sink: Sink[Any]
    encode: Callable[[X], Any]


@runtime_checkable
class Placeable(Protocol):
    """A partitioned sink that can write each item on the worker that produced it (see
    :meth:`dataflows.connectors.chsink.ClickHouseSink.placed`)."""

    def placed(self, part_of: Callable[[str], int], parts: int) -> Sink[Any]: ...


def place(sinks: Any, part_of: Callable[[str], int], parts: int) -> Any:
    """``sinks`` (one or a sequence, plain or :class:`Encoded`) with every
    :class:`Placeable` one given ``parts`` partitions, an item keyed ``k`` written by
    the ``part_of(k)``-th."""

    def one(sink: Any) -> Any:
        if isinstance(sink, Encoded):
            return Encoded(one(sink.sink), sink.encode)
        return sink.placed(part_of, parts) if isinstance(sink, Placeable) else sink

    return [one(x) for x in sinks] if isinstance(sinks, list | tuple) else one(sinks)
