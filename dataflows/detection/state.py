"""Per-user state in event time, and the features computed from it.

One :class:`UserState` per user holds, in bounded memory:

* the user's recent events (last 24 h plus the lateness allowance, at most
  :data:`MAX_EVENTS`) packed into one ``array('d')`` as ``[ts_ms, usd, lat, lon]``
  records sorted by event time — velocity windows (1 min / 10 min / 1 h / 24 h) are
  exact, and an out-of-order event is inserted at its place so windows stay correct;
* a decayed running mean/variance of log amount (the spend profile);
* a local-hour histogram, known countries and devices (small capped tuples).

Packing keeps a typical user (a few transactions a day) well under 1 KB, and the state
pickles to compact bytes for cheap recovery snapshots.

Events older than the user's newest event minus ``lateness`` are *late*: they are still
scored against the state (never dropped) but do not change it.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from schemas.currency import USD_PER_UNIT, to_usd
from schemas.transaction import Transaction
from schemas.units import DAY_MS, haversine_km

__all__ = ["MAX_EVENTS", "Features", "UserState", "haversine_km", "observe"]

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
MAX_KNOWN = 16
"""Known countries/devices kept per user (most recent first)."""
HOUR_DECAY_AT = 2000
"""The hour histogram halves when its total reaches this, so habits can change."""
_STRIDE = 4
_NAN = float("nan")


def local_hour(ts_ms: int, lon: float) -> int:
    """Local solar hour at ``lon``: good enough for habits, no timezone database needed."""
    return int(((ts_ms / 3_600_000.0) + lon / 15.0) % 24.0)


Windows = tuple[int, int, int, int, float, int, float]
"""cnt_1m, cnt_10m, small_10m, cnt_1h, sum_1h, cnt_24h, sum_24h."""


class UserState:
    """Mutable per-user state; see the module docstring. Picklable, no external refs."""

    __slots__ = ("countries", "devices", "events", "hours", "last_ts", "m2", "mean", "n")

    def __init__(self) -> None:
        self.events = array("d")
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.hours = array("H", bytes(48))
        self.countries: tuple[str, ...] = ()
        self.devices: tuple[str, ...] = ()
        self.last_ts = -(2**62)

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
        )

    def __setstate__(self, s: tuple) -> None:
        (
            self.events,
            self.n,
            self.mean,
            self.m2,
            self.hours,
            self.countries,
            self.devices,
            self.last_ts,
        ) = s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserState) and self.__getstate__() == other.__getstate__()

    def checkpoint(self) -> tuple:
        """A copy to :meth:`restore` if an event fails half-way (arrays copied)."""
        ev, n, mean, m2, hours, countries, devices, last_ts = self.__getstate__()
        return (ev[:], n, mean, m2, hours[:], countries, devices, last_ts)

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

    def windows(self, end_ms: float, small_usd: float) -> Windows:
        """All velocity windows ending at ``end_ms`` in one backward scan:
        (cnt_1m, cnt_10m, small_10m, cnt_1h, sum_1h, cnt_24h, sum_24h).

        Same figures, summed in the same order, as four :meth:`window` calls."""
        ev = self.events
        i = self._index_after(end_ms) - 1
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

    def learn_profile(self, log_usd: float, hour: int, country: str, device: str | None) -> None:
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
        }


def observe(
    state: UserState,
    txn: Transaction,
    *,
    lateness_ms: float,
    small_usd: float,
    fx: dict[str, float] | None = None,
) -> Features:
    """Compute ``txn``'s features and fold it into ``state`` (unless it is late).

    Windows count the transaction itself; the profile (z-score, hour share, known
    countries and devices) is read *before* learning from it.
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
    hour_share = state.hour_share(hour)
    new_country = history > 0 and txn.country not in state.countries
    new_device = txn.device_id is not None and history > 0 and txn.device_id not in state.devices

    km = dt_s = speed = 0.0
    if geo:
        prev = state.previous_location(ts_ms)
        if prev is not None:
            p_ts, p_lat, p_lon = prev
            km = haversine_km(p_lat, p_lon, t_lat, t_lon)  # type: ignore[arg-type]
            dt_s = (ts_ms - p_ts) / 1000.0
            speed = km / max(dt_s, 1.0) * 3600.0

    if not late:
        lat, lon = (t_lat, t_lon) if geo else (_NAN, _NAN)
        state.insert(ts_ms, usd, lat, lon, DAY_MS + lateness_ms)
        state.learn_profile(log_usd, hour, txn.country, txn.device_id)
        if ts_ms > state.last_ts:
            state.last_ts = ts_ms
        c1m, c10, small, c1h, s1h, c24, s24 = state.windows(ts_ms, small_usd)
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
    )
