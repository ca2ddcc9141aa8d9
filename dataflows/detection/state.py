"""Per-user state in event time, and the features computed from it.

One :class:`UserState` per user holds, in bounded memory:

* the user's recent events (last 24 h plus the lateness allowance, at most
  :data:`MAX_EVENTS`) packed into one ``array('d')`` as ``[ts_ms, usd, lat, lon]``
  records sorted by event time — velocity windows (1 min / 10 min / 1 h / 24 h) are
  exact, and an out-of-order event is inserted at its place so windows stay correct;
* a decayed running mean/variance of log amount (the spend profile);
* a local-hour histogram, known countries and devices (small capped tuples);
* the ids of its recent transactions with their first decision (``seen``, at most
  :data:`MAX_SEEN` within the horizon), so a duplicate is answered without being
  counted twice (see :mod:`dataflows.detection.idempotency`);
* its established places (``places``: at most :data:`MAX_PLACES` points with a weight,
  points within :data:`PLACE_KM` merged), learnt from card-present purchases the rules
  did not block: a return to one is never an impossible hop, even right after a cloned
  card was used far away (the last location seen was then the fraudster's);
* its compromised cards (``compromised``: at most :data:`MAX_COMPROMISED` of
  ``(card_id, first block ms, last block ms)``): a card the rules blocked stays at risk
  for a while, so a cash-out long after a card-testing burst is still caught; an
  analyst's confirmed-fraud verdict marks a card too, a false-positive verdict clears it
  (``cleared``: at most :data:`MAX_COMPROMISED` of ``(card_id, cleared through ms)``, so
  a block at or before the verdict cannot mark the card again, even replayed after it:
  see :mod:`dataflows.detection.verdicts`).

Velocity windows do not depend on arrival order within the lateness bound: an event's
window spans ``(t - span, newest seen]``, so an event that arrives after later-stamped
ones counts them too (on an ordered stream nothing later exists: the same figures).

Packing keeps a typical user (a few transactions a day) well under 1 KB, and the state
pickles to compact bytes for cheap recovery snapshots.

Events older than the user's newest event minus ``lateness`` are *late*: they are still
scored against the state (never dropped) but do not change it.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from dataflows.detection.idempotency import MAX_SEEN, Compact
from schemas.currency import USD_PER_UNIT, to_usd
from schemas.transaction import Transaction
from schemas.units import DAY_MS, haversine_km

__all__ = [
    "MAX_COMPROMISED",
    "MAX_EVENTS",
    "MAX_PLACES",
    "Features",
    "UserState",
    "haversine_km",
    "observe",
    "settle",
]

MAX_EVENTS = 512
"""Cap of retained events per user; past it the oldest go (24 h counts then saturate,
long after the velocity rules have fired)."""
PROFILE_HALF_LIFE = 200
"""The amount profile weighs the last ~200 transactions (a decayed Welford): it follows
a user whose spending drifts, yet one spree does not rewrite it."""
PRIOR_VAR = 0.36
"""Prior variance of log amounts (a typical card holder's spread, sigma 0.6)."""
PRIOR_WEIGHT = 5
"""The prior counts as this many transactions."""
Spend = tuple[float, float, float, float, float]
"""Last update (ms), then decayed count and USD sum over ~7 days and over ~30 days."""
NO_SPEND: Spend = (-math.inf, 0.0, 0.0, 0.0, 0.0)
TAU_7D = 7 * DAY_MS
TAU_30D = 30 * DAY_MS
PROFILE_CLIP = 2.0
"""Standard deviations above the mean past which an amount is learnt clipped."""
PROFILE_CLIP_AFTER = 5
"""Transactions before clipping starts (the profile rules' ``min_history``)."""
MAX_KNOWN = 16
"""Known countries/devices kept per user (most recent first)."""
HOUR_DECAY_AT = 2000
"""The hour histogram halves when its total reaches this, so habits can change."""
MAX_PLACES = 4
"""Established places kept per user (home, work, a regular second area...)."""
PLACE_KM = 25.0
"""Card-present purchases within this distance of a place count for that place."""
PLACE_TRUSTED = 3.0
"""Weight (genuine purchases) from which a place is established: one visit is not."""
PLACE_DECAY_AT = 500.0
"""Place weights halve when their total reaches this, so a move is learnt in time."""
MAX_COMPROMISED = 4
"""Compromised cards kept per user (a user has a few cards)."""
_KM_PER_DEG = 111.2
_PLACE_KM2 = PLACE_KM * PLACE_KM
_STRIDE = 4
_NAN = float("nan")


def local_hour(ts_ms: int, lon: float) -> int:
    """Local solar hour at ``lon``: good enough for habits, no timezone database needed."""
    return int(((ts_ms / 3_600_000.0) + lon / 15.0) % 24.0)


Windows = tuple[int, int, int, int, float, int, float]
"""cnt_1m, cnt_10m, small_10m, cnt_1h, sum_1h, cnt_24h, sum_24h."""


class UserState:
    """Mutable per-user state; see the module docstring. Picklable, no external refs."""

    __slots__ = (
        "cleared",
        "compromised",
        "countries",
        "devices",
        "events",
        "hours",
        "last_ts",
        "m2",
        "mean",
        "n",
        "places",
        "seen",
        "spend",
    )

    def __init__(self) -> None:
        self.events = array("d")
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.hours = array("H", bytes(48))
        self.countries: tuple[str, ...] = ()
        self.devices: tuple[str, ...] = ()
        self.last_ts = -(2**62)
        self.seen: dict[str, Compact] = {}
        self.places: list[float] = []  # [lat, lon, weight] * up to MAX_PLACES
        self.compromised: tuple[tuple[str, float, float], ...] = ()
        self.cleared: tuple[tuple[str, float], ...] = ()
        self.spend: Spend = NO_SPEND

    def __getstate__(self) -> tuple:
        return (
            self.events,
            self.n,
            self.mean,
            self.m2,
            self.hours,
            self.countries,
            self.devices,
            self.last_ts,
            self.seen,
            self.places,
            self.compromised,
            self.cleared,
            self.spend,
        )

    def __setstate__(self, s: tuple) -> None:
        if len(s) == 8:  # a snapshot from before ``seen`` existed
            s = (*s, {})
        if len(s) == 9:  # before ``places`` and ``compromised``
            s = (*s, [], ())
        if len(s) == 11:  # before analysts' verdicts could clear a card
            s = (*s, ())
        if len(s) == 12:  # before the 7/30-day spend windows
            s = (*s, NO_SPEND)
        (
            self.events,
            self.n,
            self.mean,
            self.m2,
            self.hours,
            self.countries,
            self.devices,
            self.last_ts,
            self.seen,
            self.places,
            self.compromised,
            self.cleared,
            self.spend,
        ) = s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserState) and self.__getstate__() == other.__getstate__()

    def checkpoint(self) -> tuple:
        """A copy to :meth:`restore` if an event fails half-way (arrays copied)."""
        ev, n, mean, m2, hours, countries, devices, last_ts, seen, places, comp, cleared, spend = (
            self.__getstate__()
        )
        return (
            ev[:],
            n,
            mean,
            m2,
            hours[:],
            countries,
            devices,
            last_ts,
            dict(seen),
            places[:],
            comp,
            cleared,
            spend,
        )

    def restore(self, checkpoint: tuple) -> None:
        self.__setstate__(checkpoint)

    # -- queries -------------------------------------------------------------------
    def _index_after(self, ts: float) -> int:
        """Record index of the first event with time > ts (binary search)."""
        ev = self.events
        lo, hi = 0, len(ev) // _STRIDE
        while lo < hi:
            mid = (lo + hi) // 2
            if ev[mid * _STRIDE] <= ts:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def window(self, end_ms: float, span_ms: float, small_usd: float) -> tuple[int, float, int]:
        """(count, usd sum, small-amount count) of events in (end - span, end]."""
        ev = self.events
        i = self._index_after(end_ms) - 1
        lo = end_ms - span_ms
        count, total, small = 0, 0.0, 0
        while i >= 0 and ev[i * _STRIDE] > lo:
            usd = ev[i * _STRIDE + 1]
            count += 1
            total += usd
            small += usd < small_usd
            i -= 1
        return count, total, small

    def windows(self, end_ms: float, small_usd: float, upto_ms: float | None = None) -> Windows:
        """All velocity windows in one backward scan over ``(end_ms - span, upto_ms]``
        (``upto_ms`` defaults to ``end_ms``):
        (cnt_1m, cnt_10m, small_10m, cnt_1h, sum_1h, cnt_24h, sum_24h).

        With ``upto_ms`` = ``end_ms``, the same figures, summed in the same order, as four
        :meth:`window` calls; :func:`observe` passes +inf so an event counts every event
        already seen after it too (arrival order then changes nothing)."""
        ev = self.events
        hi = end_ms if upto_ms is None else upto_ms
        n = len(ev) // _STRIDE
        i = n - 1 if n and ev[-_STRIDE] <= hi else self._index_after(hi) - 1
        lo1m, lo10m, lo1h = end_ms - 60_000, end_ms - 600_000, end_ms - 3_600_000
        lo24 = end_ms - DAY_MS
        c1m = c10 = small = c1h = c24 = 0
        s1h = s24 = 0.0
        while i >= 0:
            ts = ev[i * _STRIDE]
            if ts <= lo24:
                break
            usd = ev[i * _STRIDE + 1]
            c24 += 1
            s24 += usd
            if ts > lo1h:
                c1h += 1
                s1h += usd
                if ts > lo10m:
                    c10 += 1
                    small += usd < small_usd
                    if ts > lo1m:
                        c1m += 1
            i -= 1
        return c1m, c10, small, c1h, s1h, c24, s24

    def previous_location(self, ts_ms: float) -> tuple[float, float, float] | None:
        """(ts, lat, lon) of the latest card-present event strictly before ``ts_ms``."""
        ev = self.events
        i = self._index_after(ts_ms) - 1
        while i >= 0 and ev[i * _STRIDE] >= ts_ms:
            i -= 1
        while i >= 0:
            lat = ev[i * _STRIDE + 2]
            if lat == lat:  # not NaN: card-present
                return ev[i * _STRIDE], lat, ev[i * _STRIDE + 3]
            i -= 1
        return None

    def place_near(self, lat: float, lon: float) -> int:
        """Offset in ``places`` of the nearest place within :data:`PLACE_KM`, or -1.

        Equirectangular distance: exact enough at 25 km and a tenth of a haversine."""
        p = self.places
        if not p:
            return -1
        k = math.cos(math.radians(lat))
        best, best_d = -1, _PLACE_KM2
        for i in range(0, len(p), 3):
            dy = (p[i] - lat) * _KM_PER_DEG
            dx = ((p[i + 1] - lon + 180.0) % 360.0 - 180.0) * _KM_PER_DEG * k
            d = dx * dx + dy * dy
            if d < best_d:
                best, best_d = i, d
        return best

    def is_compromised(self, card_id: str, ts_ms: float, hold_ms: float) -> bool:
        """Was ``card_id`` blocked before ``ts_ms``, and not more than ``hold_ms`` before?"""
        for card, first, last in self.compromised:
            if card == card_id:
                return first < ts_ms <= last + hold_ms
        return False

    def last_mark_ms(self) -> float:
        """Event time of the latest compromise or clearance kept (-inf if none): a user
        known so far only from an analyst's verdict is not idle before it."""
        last = -math.inf
        for c in self.compromised:
            last = max(last, c[2])
        for c in self.cleared:
            last = max(last, c[1])
        return last

    def hour_share(self, hour: int) -> float:
        total = sum(self.hours)
        return self.hours[hour] / total if total else 0.0

    def amount_z(self, log_usd: float) -> float:
        """z-score of a log amount against the profile.

        The variance is shrunk toward a population prior (:data:`PRIOR_VAR`, worth
        :data:`PRIOR_WEIGHT` transactions) so a short history cannot make an ordinary
        amount look extreme, while a long one speaks for itself.
        """
        if self.n < 2:
            return 0.0
        k = min(self.n, PROFILE_HALF_LIFE)
        var = (self.m2 + PRIOR_WEIGHT * PRIOR_VAR) / (k + PRIOR_WEIGHT)
        return (log_usd - self.mean) / math.sqrt(var)

    # -- updates -------------------------------------------------------------------
    def remember(self, txn_id: str, first: Compact, horizon_ms: float) -> None:
        """Keep ``txn_id``'s first decision; forget ids past :data:`MAX_SEEN` or older
        than ``horizon_ms`` before the newest event (oldest first: dict order)."""
        seen = self.seen
        seen[txn_id] = first
        cutoff = self.last_ts - horizon_ms
        while len(seen) > MAX_SEEN or next(iter(seen.values()))[0] < cutoff:
            del seen[next(iter(seen))]
            if not seen:
                break

    def learn_place(self, at: int, lat: float, lon: float) -> None:
        """Count a genuine card-present purchase for the place at offset ``at`` (from
        :meth:`place_near`), or open a place, replacing the least visited when full."""
        p = self.places
        if at < 0:
            if len(p) < MAX_PLACES * 3:
                p.extend((lat, lon, 1.0))
                return
            at = min(range(0, len(p), 3), key=lambda i: p[i + 2])
            p[at], p[at + 1], p[at + 2] = lat, lon, 1.0
            return
        p[at + 2] += 1.0
        if sum(p[2::3]) >= PLACE_DECAY_AT:
            for i in range(2, len(p), 3):
                p[i] *= 0.5

    def compromise(self, card_id: str, ts_ms: float, hold_ms: float) -> None:
        """Mark ``card_id`` at risk from a block at ``ts_ms`` (unless an analyst cleared
        the card at or after it); forget cards whose risk ended, and past
        :data:`MAX_COMPROMISED` the one blocked longest ago."""
        for card, through in self.cleared:
            if card == card_id and ts_ms <= through:
                return
        first, last = ts_ms, ts_ms
        keep = []
        for c in self.compromised:
            if c[0] == card_id:
                first, last = min(first, c[1]), max(last, c[2])
            elif c[2] + hold_ms >= ts_ms:
                keep.append(c)
        keep.append((card_id, first, last))
        keep.sort(key=lambda c: -c[2])
        self.compromised = tuple(keep[:MAX_COMPROMISED])

    def confirm(self, card_id: str, at_ms: float, hold_ms: float) -> None:
        """An analyst confirmed fraud on ``card_id`` at ``at_ms``: at risk from then on
        (for ``hold_ms``), whatever an earlier false positive had cleared."""
        self.cleared = tuple(c for c in self.cleared if c[0] != card_id)
        self.compromise(card_id, at_ms, hold_ms)

    def clear(self, card_id: str, through_ms: float) -> None:
        """An analyst found ``card_id``'s alerts false positives at ``through_ms``: its
        blocks up to then stop counting, and one processed again later (a replay after a
        restart) cannot mark it again.  A block after ``through_ms`` still counts.

        Marks are kept while a block they cover can still arrive on time (a day past
        them: the lateness bound is at most a day), at most :data:`MAX_COMPROMISED`."""
        keep = []
        for c in self.compromised:
            if c[0] != card_id:
                keep.append(c)
            elif c[2] > through_ms:  # blocked again after the verdict: that block stays
                keep.append((card_id, max(c[1], through_ms), c[2]))
        self.compromised = tuple(keep)
        marks = dict(self.cleared)
        marks[card_id] = max(marks.get(card_id, through_ms), through_ms)
        horizon = self.last_ts - DAY_MS
        live = sorted(((c, t) for c, t in marks.items() if t >= horizon), key=lambda c: -c[1])
        self.cleared = tuple(live[:MAX_COMPROMISED])

    def insert(self, ts_ms: float, usd: float, lat: float, lon: float, horizon_ms: float) -> None:
        """Insert an event in time order and drop what fell out of the horizon/cap."""
        ev = self.events
        rec = (ts_ms, usd, lat, lon)
        if not ev or ev[-_STRIDE] <= ts_ms:
            ev.extend(rec)
        else:
            i = self._index_after(ts_ms) * _STRIDE
            ev[i:i] = array("d", rec)
        newest = ev[-_STRIDE]
        cut = 0
        n = len(ev) // _STRIDE
        while cut < n and ev[cut * _STRIDE] < newest - horizon_ms:
            cut += 1
        cut = max(cut, n - MAX_EVENTS)
        if cut:
            del ev[: cut * _STRIDE]

    def spend_windows(self, ts_ms: float) -> tuple[float, float, float, float]:
        """(count, mean USD) over ~7 days and over ~30 days before ``ts_ms``: counts and
        sums decayed with those time constants (O(1) memory, unlike a 30-day event log)."""
        last, c7, s7, c30, s30 = self.spend
        if ts_ms > last:
            k7, k30 = math.exp((last - ts_ms) / TAU_7D), math.exp((last - ts_ms) / TAU_30D)
            c7, s7, c30, s30 = c7 * k7, s7 * k7, c30 * k30, s30 * k30
        return (c7, s7 / c7 if c7 > 1e-9 else 0.0, c30, s30 / c30 if c30 > 1e-9 else 0.0)

    def learn_spend(self, ts_ms: float, usd: float) -> None:
        """Fold one charge into the decayed windows (a late one counts as of its time)."""
        last, c7, s7, c30, s30 = self.spend
        if ts_ms >= last:
            k7, k30 = math.exp((last - ts_ms) / TAU_7D), math.exp((last - ts_ms) / TAU_30D)
            self.spend = (ts_ms, c7 * k7 + 1.0, s7 * k7 + usd, c30 * k30 + 1.0, s30 * k30 + usd)
        else:
            k7, k30 = math.exp((ts_ms - last) / TAU_7D), math.exp((ts_ms - last) / TAU_30D)
            self.spend = (last, c7 + k7, s7 + usd * k7, c30 + k30, s30 + usd * k30)

    def learn_profile(self, log_usd: float, hour: int, country: str, device: str | None) -> None:
        """Fold one transaction into the profile.  Once the profile has a history, an
        amount above :data:`PROFILE_CLIP` standard deviations is learnt as if it were
        there: a spree of inflated charges (a compromised card) then moves the profile
        slowly instead of inflating the variance that judges its next charge (handbook
        ch.7, AP of the z-score alone 0.252 → 0.261)."""
        if self.n >= PROFILE_CLIP_AFTER:
            k = min(self.n, PROFILE_HALF_LIFE)
            top = self.mean + PROFILE_CLIP * math.sqrt(
                (self.m2 + PRIOR_WEIGHT * PRIOR_VAR) / (k + PRIOR_WEIGHT)
            )
            log_usd = min(log_usd, top)
        self.n += 1
        k = min(self.n, PROFILE_HALF_LIFE)
        delta = log_usd - self.mean
        self.mean += delta / k
        self.m2 = self.m2 * (k - 1) / k if self.n > PROFILE_HALF_LIFE else self.m2
        self.m2 += delta * (log_usd - self.mean)
        h = self.hours
        h[hour] += 1
        if sum(h) >= HOUR_DECAY_AT:
            for i in range(24):
                h[i] //= 2
        if country not in self.countries:
            self.countries = (country, *self.countries)[:MAX_KNOWN]
        if device is not None and device not in self.devices:
            self.devices = (device, *self.devices)[:MAX_KNOWN]


@dataclass(slots=True)
class Features:
    """What the rules and the model see of one transaction (before/after its own event).

    A value: never mutated after :func:`observe` builds it.  Not ``frozen`` because a
    frozen dataclass sets each field through ``object.__setattr__`` (~1.2 µs more per
    event for 20 fields, measured); the same holds for the other per-event records."""

    amount_usd: float
    fx_known: bool
    history: int
    amount_z: float
    cnt_1m: int
    cnt_10m: int
    cnt_1h: int
    cnt_24h: int
    sum_1h_usd: float
    sum_24h_usd: float
    small_10m: int
    km_prev: float
    dt_prev_s: float
    speed_kmh: float
    new_country: bool
    new_device: bool
    hour_local: int
    hour_share: float
    card_present: bool
    late: bool
    card_compromised: bool = False
    """The card was blocked earlier (within ``compromised_card_hours``)."""
    known_place: bool = False
    """Located at one of the user's established places (card-present purchases, and
    card-not-present ones on a compromised card: the holder at home, not the thief)."""
    place: int = -1
    """Offset of the nearest place in ``UserState.places`` (for :func:`settle`)."""
    amount_rarity: float = 1.0
    """Share of recent traffic at least this unusual in amount (set by the scoring step,
    which owns the shard's view of recent traffic; see :mod:`dataflows.detection.rarity`)."""
    cal_weight: float = 1.0
    """The weight the calibrated hits of this event got in its final risk (stored, so a
    backtest over stored rows weighs them as the flow did)."""
    cnt_7d: float = 0.0
    """The user's transactions over ~7 days before this one (decayed count)."""
    avg_usd_7d: float = 0.0
    """Their mean amount, USD (0 without history)."""
    cnt_30d: float = 0.0
    """The same over ~30 days."""
    avg_usd_30d: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Flat numeric map for rows and alerts."""
        r = round
        return {
            "amount_usd": r(self.amount_usd, 4),
            "history": float(self.history),
            "amount_z": r(self.amount_z, 4),
            "cnt_1m": float(self.cnt_1m),
            "cnt_10m": float(self.cnt_10m),
            "cnt_1h": float(self.cnt_1h),
            "cnt_24h": float(self.cnt_24h),
            "sum_1h_usd": r(self.sum_1h_usd, 4),
            "sum_24h_usd": r(self.sum_24h_usd, 4),
            "small_10m": float(self.small_10m),
            "km_prev": r(self.km_prev, 3) if self.km_prev else 0.0,
            "dt_prev_s": r(self.dt_prev_s, 3) if self.dt_prev_s else 0.0,
            "speed_kmh": r(self.speed_kmh, 3) if self.speed_kmh else 0.0,
            "new_country": 1.0 if self.new_country else 0.0,
            "new_device": 1.0 if self.new_device else 0.0,
            "hour_local": float(self.hour_local),
            "hour_share": r(self.hour_share, 4),
            "card_compromised": 1.0 if self.card_compromised else 0.0,
            "known_place": 1.0 if self.known_place else 0.0,
            "amount_rarity": self.amount_rarity,
            "cal_weight": self.cal_weight,
            "cnt_7d": r(self.cnt_7d, 3),
            "avg_usd_7d": r(self.avg_usd_7d, 3),
            "cnt_30d": r(self.cnt_30d, 3),
            "avg_usd_30d": r(self.avg_usd_30d, 3),
        }


def observe(
    state: UserState,
    txn: Transaction,
    *,
    lateness_ms: float,
    small_usd: float,
    fx: dict[str, float] | None = None,
    compromised_ms: float = 0.0,
) -> Features:
    """Compute ``txn``'s features and fold it into ``state`` (unless it is late).

    Windows count the transaction itself and every event already seen after it (see the
    module docstring); the profile (z-score, hour share, known countries and devices,
    places) is read *before* learning from it.  Places and compromised cards learn only
    once the rules have decided (:func:`settle`).
    """
    ts_ms = txn.ts.timestamp() * 1000.0
    table = USD_PER_UNIT if fx is None else fx
    usd = to_usd(txn.amount, txn.currency, table)
    fx_known = txn.currency in table
    t_lat, t_lon = txn.lat, txn.lon
    located = t_lat is not None and t_lon is not None
    # Geography needs a location: without one (card-not-present traffic often has none)
    # no distance or speed is invented, the last known place is kept for the next
    # card-present event, and the local hour is read at the last known longitude.
    card_present = txn.channel != "ecom"
    geo = card_present and located
    late = ts_ms < state.last_ts - lateness_ms
    log_usd = math.log1p(usd)
    if located:
        hour = local_hour(int(ts_ms), t_lon)  # type: ignore[arg-type]
    else:
        known = state.previous_location(ts_ms)
        hour = local_hour(int(ts_ms), known[2] if known is not None else 0.0)

    history = state.n
    z = state.amount_z(log_usd)
    c7d, avg7d, c30d, avg30d = state.spend_windows(ts_ms)
    hour_share = state.hour_share(hour)
    new_country = history > 0 and txn.country not in state.countries
    new_device = txn.device_id is not None and history > 0 and txn.device_id not in state.devices

    km = dt_s = speed = 0.0
    place, known_place = -1, False
    if geo:
        place = state.place_near(t_lat, t_lon)  # type: ignore[arg-type]
        known_place = place >= 0 and state.places[place + 2] >= PLACE_TRUSTED
        prev = state.previous_location(ts_ms)
        if prev is not None:
            p_ts, p_lat, p_lon = prev
            km = haversine_km(p_lat, p_lon, t_lat, t_lon)  # type: ignore[arg-type]
            dt_s = (ts_ms - p_ts) / 1000.0
            speed = km / max(dt_s, 1.0) * 3600.0

    compromised = compromised_ms > 0 and state.is_compromised(txn.card_id, ts_ms, compromised_ms)
    if compromised and located and not geo:
        near = state.place_near(t_lat, t_lon)  # type: ignore[arg-type]
        known_place = near >= 0 and state.places[near + 2] >= PLACE_TRUSTED

    if not late:
        lat, lon = (t_lat, t_lon) if geo else (_NAN, _NAN)
        state.insert(ts_ms, usd, lat, lon, DAY_MS + lateness_ms)
        state.learn_profile(log_usd, hour, txn.country, txn.device_id)
        state.learn_spend(ts_ms, usd)
        if ts_ms > state.last_ts:
            state.last_ts = ts_ms
        c1m, c10, small, c1h, s1h, c24, s24 = state.windows(ts_ms, small_usd, math.inf)
    else:
        # Late: count it virtually, leave the state untouched.
        small_one = usd < small_usd
        c1m, c10, small, c1h, s1h, c24, s24 = state.windows(ts_ms, small_usd)
        c1m, c10, c1h, c24 = c1m + 1, c10 + 1, c1h + 1, c24 + 1
        s1h, s24, small = s1h + usd, s24 + usd, small + small_one

    return Features(
        usd,
        fx_known,
        history,
        z,
        c1m,
        c10,
        c1h,
        c24,
        s1h,
        s24,
        small,
        km,
        dt_s,
        speed,
        new_country,
        new_device,
        hour,
        hour_share,
        card_present,
        late,
        compromised,
        known_place,
        place,
        cnt_7d=c7d,
        avg_usd_7d=avg7d,
        cnt_30d=c30d,
        avg_usd_30d=avg30d,
    )


def settle(
    state: UserState, txn: Transaction, f: Features, blocked: bool, compromised_ms: float
) -> None:
    """Fold the rules' verdict on ``txn`` into ``state`` (not for a late event).

    A block puts the card at risk for ``compromised_ms``; a card-present purchase the
    rules let through counts for its place (a blocked one, perhaps a cloned card far
    away, never makes a place established).  Missing locations are skipped."""
    if f.late:
        return
    if blocked:
        if compromised_ms > 0:
            state.compromise(txn.card_id, txn.ts.timestamp() * 1000.0, compromised_ms)
    elif f.card_present and txn.lat is not None and txn.lon is not None:
        state.learn_place(f.place, txn.lat, txn.lon)
