"""Where bytewax puts things, computed: so a user's events can be read, parsed, scored and
stored on one worker with nothing crossing processes.

Two functions decide it in bytewax 0.21 (both pinned by ``tests/unit/test_routing.py``
against a real cluster run, so an upgrade that changes them fails loudly):

* a **keyed stream** goes to worker ``siphash13(key bytes + 0xFF) mod workers`` (Rust's
  ``DefaultHasher`` of a ``String``: SipHash-1-3 with zero keys, the ``0xFF`` is how Rust
  hashes a ``str``);
* **source partitions**, when every worker lists all of them, go round-robin in sorted
  order of their keys (``"{partition}-{topic}"`` for Kafka, sorted as strings).

:func:`aligned_key` picks, for a Kafka partition, a state key that routes to the worker
reading that partition, the same key for every worker count that divides the partition
count (so a restart on more or fewer processes finds the state).  Correctness never
depends on it: a partition's events always get the same key, so per-user state is
exact; only the crossing is avoided.
"""

from __future__ import annotations

import zlib

__all__ = [
    "Alignment",
    "aligned_key",
    "keyed_partition",
    "partition_owner",
    "route",
    "siphash13",
]

_M = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 (one compression round, three finalisation rounds), 64-bit.

    >>> hex(siphash13(b""))
    '0xd1fba762150c532c'
    """
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def sipround() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _M
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _M
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        sipround()
        v0 ^= m
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    sipround()
    v0 ^= last
    v2 ^= 0xFF
    sipround()
    sipround()
    sipround()
    return v0 ^ v1 ^ v2 ^ v3


def route(key: str, workers: int) -> int:
    """The worker bytewax sends state key ``key`` to, among ``workers``."""
    return siphash13(key.encode() + b"\xff") % workers


def keyed_partition(key: bytes, partitions: int) -> int:
    """The partition a producer of this project puts a message keyed ``key`` in:
    librdkafka's default partitioner (``consistent_random``) is ``crc32(key) %
    partitions`` for a keyed message (pinned against the real broker by
    ``tests/integration/test_verdict_routing.py``; Java clients hash with murmur2).

    >>> keyed_partition(b"alice", 6)
    5
    """
    return zlib.crc32(key) % partitions


def partition_owner(partition: int, topic: str, partitions: int, workers: int) -> int:
    """The worker that reads Kafka ``partition`` of ``topic`` when every worker lists all
    ``partitions`` (bytewax hands them out round-robin in sorted key order)."""
    keys = sorted(f"{p}-{topic}" for p in range(partitions))
    return keys.index(f"{partition}-{topic}") % workers


PORTABLE_UP_TO = 256
"""Partition counts up to this get state keys that hold for every worker count dividing
them (finding one costs ~``partitions`` hashes per partition)."""


def _salted(name: str, index: int, size: int, workers: int) -> str:
    """``name`` salted so bytewax routes it to worker ``index % workers``, the one that
    reads the ``index``-th of ``size`` partitions in sorted order.

    When ``workers`` divides ``size`` the salt makes ``route(key, size) == index``,
    which implies the same for every divisor of ``size``: the key does not depend on
    the number of workers, so a restart on another divisor (12 partitions: 1, 2, 3, 4,
    6 or 12 workers) finds each partition's state under the key its events now use.
    """
    modulus, target = (workers, index % workers)
    if size % workers == 0 and size <= PORTABLE_UP_TO:
        modulus, target = size, index
    salt = 0
    while route(f"{name}.{salt}", modulus) != target:
        salt += 1
    return f"{name}.{salt}"


def aligned_key(partition: int, topic: str, partitions: int, workers: int) -> str:
    """A state key for ``partition`` that bytewax routes to the worker reading it.

    >>> k = aligned_key(5, "transactions", 12, 2)
    >>> route(k, 2) == partition_owner(5, "transactions", 12, 2)
    True
    """
    parts = [f"{p}-{topic}" for p in range(partitions)]
    key = Alignment(parts, workers).key_of(topic, partition)
    assert key is not None
    return key


class Alignment:
    """State keys for a source's partitions on ``workers`` workers: the events of a
    partition are scored on the worker that reads it (see the module docstring).

    ``part_keys`` are the source's ``list_parts()`` (``"{partition}-{topic}"`` for Kafka,
    ``"{partition}"`` for the local partitioned source).  Every partition gets its own
    state key (so its users share that key's state and model), salted to land where the
    partition is read.
    """

    def __init__(self, part_keys: list[str], workers: int) -> None:
        self.workers = workers
        self.size = len(part_keys)
        ordered = sorted(part_keys)
        self._keys: dict[tuple[str, int], str] = {}
        self._index: dict[tuple[str, int], int] = {}
        self._counts: dict[str, int] = {}
        for key in part_keys:
            idx, _, topic = key.partition("-")
            self._index[(topic, int(idx))] = ordered.index(key)
            self._keys[(topic, int(idx))] = _salted(
                f"p{key}", ordered.index(key), self.size, workers
            )
            self._counts[topic] = self._counts.get(topic, 0) + 1

    def keys(self) -> list[str]:
        """Every state key of this alignment (one per partition)."""
        return sorted(set(self._keys.values()))

    def key_of(self, topic: str, partition: int) -> str | None:
        """The state key of events read from ``topic``/``partition`` (None if unknown)."""
        return self._keys.get((topic, partition))

    def key_of_user(self, user_id: str) -> str | None:
        """The state key of ``user_id``'s events when they are produced keyed by user id
        (as every producer here does) to the one topic of this alignment: where a
        message about the user that did not come through the source (an analyst's
        verdict) must go to meet the user's state.  None with several topics."""
        where = self._partition_of_user(user_id)
        return None if where is None else self._keys.get(where)

    def index_of_user(self, user_id: str) -> int | None:
        """The position, in sorted order of the source's partition keys, of the partition
        ``user_id``'s events are produced to (None with several topics): bytewax deals
        partitions round-robin in that order, so it says which worker reads them."""
        where = self._partition_of_user(user_id)
        return None if where is None else self._index.get(where)

    def _partition_of_user(self, user_id: str) -> tuple[str, int] | None:
        if len(self._counts) != 1:
            return None
        ((topic, n),) = self._counts.items()
        return topic, keyed_partition(user_id.encode(), n)
