"""How rare a value is in recent traffic: the label-free calibration of the rules.

A fixed strength says what a signal is worth everywhere; what it is worth *here* depends
on how often it happens here.  An amount that 1 in 10,000 recent transactions reach is
evidence; a rule that fires on 14 % of the traffic (an "unusual" hour in a city that
shops at night) is not, however strong its author thought it.  Three pieces:

* :class:`TailRate`: the share of recent traffic with a value at least as high as ``x``
  (a conformal p-value over an exponentially decayed histogram).  Bins are fixed (log
  amounts, z-scores), counts live in a Fenwick tree, so an update and a query cost
  O(log bins) whatever the memory; "recent" is a half-life in events, not a window that
  must be kept and sorted.
* :func:`rate_weight`: a recent rate turned into a weight: 1 at or below ``share`` of
  the traffic, falling with the log of the rate to 0 for what happens on every event.
* :class:`Calibrator`: per shard, the amount tails behind the ``amount_rarity`` feature
  and the recent rate of every *pattern* of calibrated signals (the set that fired
  together), from which :meth:`PatternRates.weight` weighs an event's calibrated hits.

Measured, label-free (``risk``, AUC / AP / CP@100) on the handbook's ch.7 week: 0.61 /
0.102 / 0.053 before, 0.644 / 0.288 / 0.099 with the rare-amount rule and the weighing
(ties broken by the HST percentile, as before); on the project's generator (seed 11,
60,000 events) legitimate traffic flagged 0.26 % → 0.19 %, card-testing transaction
recall 0.931 → 0.928 (the first charges of a burst are caught only by weak signals
together).  Weighing each signal by its own rate instead of its pattern's reached AP
0.287 there but lost those first charges (0.892, under the generator's bar).

All of it is per shard, pickled with it, and deterministic (replays give the same values).
"""

from __future__ import annotations

import math

__all__ = ["Calibrator", "PatternRates", "TailRate", "amount_tail", "rate_weight", "z_tail"]

_RESCALE = 1e150
"""When the next increment passes this, every weight is scaled down (decay without
touching every bin on every event: increments grow instead of old counts shrinking)."""


class TailRate:
    """Share of recent values ``>= x``, over bins ``lo + i * step`` (clamped at both ends),
    each value weighing ``2 ** (-age / half_life)``.

    ``tail(x)`` reads before ``add(x)`` is called for the same event, so a value is
    never compared with itself; the +1 of the conformal p-value keeps it above 0.
    """

    __slots__ = ("bins", "half_life", "inc", "lo", "step", "total", "tree")

    def __init__(self, lo: float, hi: float, bins: int, half_life: float) -> None:
        self.lo, self.step, self.bins = lo, (hi - lo) / bins, bins
        self.half_life = half_life
        self.tree = [0.0] * (bins + 1)
        self.inc = 1.0
        self.total = 0.0

    def _bin(self, x: float) -> tuple[int, float]:
        """(1-based bin, position in it in [0, 1))."""
        b = (x - self.lo) / self.step
        if b < 0.0:
            return 1, 0.0
        i = int(b)
        if i >= self.bins:
            return self.bins, 1.0
        return i + 1, b - i

    def _prefix(self, i: int) -> float:
        t, s = self.tree, 0.0
        while i > 0:
            s += t[i]
            i -= i & -i
        return s

    def tail(self, x: float) -> float:
        """(weight of values above ``x`` + 1) / (total weight + 1), in (0, 1]; a value
        in the same bin counts by how far above ``x`` it may lie (uniform in the bin)."""
        if self.total <= 0.0:
            return 1.0
        i, frac = self._bin(x)
        below = self._prefix(i - 1)
        own = self._prefix(i) - below
        above = self.total - below - own * frac
        inc = self.inc
        return min(1.0, (above / inc + 1.0) / (self.total / inc + 1.0))

    def add(self, x: float) -> None:
        """Count ``x`` with the current (growing) increment."""
        i = self._bin(x)[0]
        inc, t, n = self.inc, self.tree, self.bins
        while i <= n:
            t[i] += inc
            i += i & -i
        self.total += inc
        self.inc = inc * 2.0 ** (1.0 / self.half_life)
        if self.inc > _RESCALE:
            k = 1.0 / self.inc
            self.tree = [v * k for v in t]
            self.total *= k
            self.inc = 1.0

    def copy(self) -> TailRate:
        c = TailRate.__new__(TailRate)
        c.__setstate__(self.__getstate__())
        c.tree = self.tree[:]
        return c

    def __getstate__(self) -> tuple:
        return (self.lo, self.step, self.bins, self.half_life, self.tree, self.inc, self.total)

    def __setstate__(self, s: tuple) -> None:
        self.lo, self.step, self.bins, self.half_life, self.tree, self.inc, self.total = s


def amount_tail(half_life: float) -> TailRate:
    """Amounts in USD by log10, $0.01 … $10M in 1/64-decade bins (3.7 % wide)."""
    return TailRate(-2.0, 7.0, 576, half_life)


def z_tail(half_life: float) -> TailRate:
    """Profile z-scores, -10 … 20 in 0.05 steps."""
    return TailRate(-10.0, 20.0, 600, half_life)


def rate_weight(rate: float, share: float) -> float:
    """Weight of a hit of a rule firing on ``rate`` of recent traffic: 1 at or below
    ``share``, ``ln(1/rate) / ln(1/share)`` above it (0 when it fires on everything).

    >>> rate_weight(0.0005, 0.001), rate_weight(0.14, 0.001), rate_weight(1.0, 0.001)
    (1.0, 0.2846, 0.0)
    """
    if rate <= share:
        return 1.0
    return round(max(0.0, math.log(rate) / math.log(share)), 4)


PRIOR_EVENTS = 200.0
"""A signal pattern's rate starts as if it had been seen on ``share`` of this many
events: a fresh shard neither trusts nor silences a pattern on its first few hits."""

WEIGHT_POWER = 2
"""How fast a pattern's weight falls with its rates (see :meth:`PatternRates.weight`).
Chosen with ``calibration_share`` on the handbook's ch.7 week and the generator's
streams together (at share 0.001: power 1 gives AP 0.273 there and 0.19 % flagged here,
2 gives 0.291 and 0.18 %; share 0.003 with power 2 keeps every generator bar)."""

Pattern = tuple[str, ...]
"""The calibrated rules that fired on one event, sorted."""


class PatternRates:
    """How often each pattern of calibrated signals occurred in recent traffic (decayed
    counts; a pattern's rate counts every event whose pattern contains it)."""

    __slots__ = ("growth", "inc", "patterns", "total")

    def __init__(self, half_life: float) -> None:
        self.patterns: dict[Pattern, float] = {}
        self.total = 0.0
        self.inc = 1.0
        self.growth = 2.0 ** (1.0 / half_life)

    def rate(self, pattern: Pattern, share: float) -> float:
        """Recent share of events on which at least these signals fired together."""
        want = set(pattern)
        seen = sum(w for q, w in self.patterns.items() if want.issubset(q))
        return (seen / self.inc + share * PRIOR_EVENTS) / (self.total / self.inc + PRIOR_EVENTS)

    def weight(self, pattern: Pattern, share: float) -> tuple[float, float]:
        """(weight of an event's calibrated hits, the pattern's rate), read only.

        The weight is ``(rate_weight(pattern) * rate_weight(rarest signal)) ** 2``: the
        pattern must be rare (a new device is common, a new device from a new country
        far less, so the pair keeps its strength where each alone would not), and so
        must one of its signals on its own (two everyday signals that happen to coincide
        are still every day: an odd hour plus the anomaly model's top 5 %).  One signal
        alone is both, so its weight is ``rate_weight ** 4``: a signal firing on 5 % of
        the traffic keeps 3.5 % of its strength, one on 0.3 % or less keeps it all."""
        if not pattern:
            return 1.0, 0.0
        rate = self.rate(pattern, share)
        rarest = min(self.rate((x,), share) for x in pattern) if len(pattern) > 1 else rate
        return round(
            (rate_weight(rate, share) * rate_weight(rarest, share)) ** WEIGHT_POWER, 4
        ), rate

    def count(self, pattern: Pattern) -> None:
        """Count one event's pattern (the empty one too: it is the traffic)."""
        inc = self.inc
        self.patterns[pattern] = self.patterns.get(pattern, 0.0) + inc
        self.total += inc
        self.inc = inc * self.growth
        if self.inc > _RESCALE:
            k = 1.0 / self.inc
            self.patterns = {q: v * k for q, v in self.patterns.items()}
            self.total *= k
            self.inc = 1.0

    def copy(self) -> PatternRates:
        c = PatternRates.__new__(PatternRates)
        c.patterns, c.total, c.inc, c.growth = (
            dict(self.patterns),
            self.total,
            self.inc,
            self.growth,
        )
        return c

    def __getstate__(self) -> tuple:
        return (self.patterns, self.total, self.inc, self.growth)

    def __setstate__(self, s: tuple) -> None:
        self.patterns, self.total, self.inc, self.growth = s


class Calibrator:
    """One shard's view of recent traffic: amount tails, and pattern rates twice.

    ``first`` counts the patterns of the first-pass rules (those that read no model
    score): it weighs their hits when deciding whether they block alone, which marks a
    card compromised before the user's next event.  ``full`` counts the patterns of
    every calibrated rule once the model has scored: it weighs the hits in the final
    risk.  Each is read, then (once the event is through) updated, once per event in
    event order within its own pass, so a replay (or another batch size) computes the
    same values, and an event that fails leaves no trace.
    """

    __slots__ = ("amounts", "first", "full", "zs")

    def __init__(self, half_life: float) -> None:
        self.amounts = amount_tail(half_life)
        self.zs = z_tail(half_life)
        self.first = PatternRates(half_life)
        self.full = PatternRates(half_life)

    def rarity(self, usd: float, z: float, profiled: bool) -> float:
        """Share of recent traffic at least as unusual in amount as this one (read only):
        the rarer of its amount among everyone's and (once the user has a profile) of
        its z-score against the user's own profile."""
        p = self.amounts.tail(math.log10(max(usd, 0.01)))
        if profiled:
            p = min(p, self.zs.tail(z))
        return round(p, 6)

    def learn(self, usd: float, z: float, profiled: bool) -> None:
        """Fold one event's amount into recent traffic (after :meth:`rarity`)."""
        self.amounts.add(math.log10(max(usd, 0.01)))
        if profiled:
            self.zs.add(z)

    def copy(self) -> Calibrator:
        """An independent copy (~5 µs): the scoring step keeps one per batch to put back
        if the model fails on the batch, so dead-lettered events leave no trace."""
        c = Calibrator.__new__(Calibrator)
        c.amounts, c.zs = self.amounts.copy(), self.zs.copy()
        c.first, c.full = self.first.copy(), self.full.copy()
        return c

    def __getstate__(self) -> tuple:
        return (self.amounts, self.zs, self.first, self.full)

    def __setstate__(self, s: tuple) -> None:
        self.amounts, self.zs, self.first, self.full = s
