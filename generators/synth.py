"""Realistic card traffic with labelled fraud patterns, generated in event-time chunks.

Legitimate traffic is vectorised: each chunk draws a Poisson number of events over its
span, picks card holders by their daily rate and keeps an event with the probability of
the holder being active at that local hour (so traffic follows the sun), then draws
channel, merchant, amount and location from the holder's profile.

Fraud is injected as incidents, each labelled with its pattern:

==================  ================================================================
impossible_travel   a cloned card used at a POS thousands of km from the holder's
                    genuine purchase minutes earlier
card_testing        10-25 e-commerce charges under $5, seconds apart, new device
velocity_burst      8-15 local purchases within minutes (lost/stolen card)
account_takeover    e-commerce from a new country and device, at 1-5 am local time,
                    8-25x the holder's typical amount
amount_spike        one local purchase 20-60x the holder's typical amount
stealth_ecom        subtle: 2-3 e-commerce purchases hours apart on a new device, 3-6x
                    the typical amount in a category the holder rarely uses; no single
                    rule fires, the anomaly model should notice the combination
==================  ================================================================

Scenario patterns (opt-in: ``GeneratorConfig(patterns=PATTERNS)``), each testing how
detection carries what it learnt from one transaction to the next:

====================  ==============================================================
card_testing_cashout  a card-testing burst, then one large e-commerce charge on the
                      same card: 1-8 min after the burst (half the episodes) or 1-36 h
                      later, when the burst is out of every velocity window
holder_returns_home   a cloned card used at a POS >= 3,000 km away minutes after the
                      holder's purchase at home, then the holder shopping at home again
                      1-48 h later; the holder's two purchases are genuine but carry
                      the pattern in their label, so the return home can be measured
cnp_no_location       2-4 e-commerce purchases without any location (Transaction v2),
                      from another town and a new device, 5-20x the typical amount
====================  ==============================================================

The default ``patterns`` are the first six, so a seed gives the same stream as before
the scenarios existed.  The same seed gives the same stream.  Chunks are sorted by event
time; an incident that runs past its chunk's end is carried into the next chunk, so the
stream stays ordered (see :func:`generators.stream.event_stream` for a shuffled one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson

from generators.population import MERCHANTS_PER_TOWN, ONLINE_MERCHANTS, Population
from schemas.currency import USD_PER_UNIT
from schemas.units import haversine_km, iso_ms

__all__ = [
    "CLASSIC_PATTERNS",
    "PATTERNS",
    "SCENARIO_PATTERNS",
    "Chunk",
    "GeneratorConfig",
    "generate_chunks",
    "iter_json",
]

PATTERNS = (
    "impossible_travel",
    "card_testing",
    "velocity_burst",
    "account_takeover",
    "amount_spike",
    "stealth_ecom",
    "card_testing_cashout",
    "holder_returns_home",
    "cnp_no_location",
)
RULE_PATTERNS = PATTERNS[:5]
"""Patterns a single explainable rule (or a co-occurrence of rules) is meant to catch."""
CLASSIC_PATTERNS = PATTERNS[:6]
"""The default mix (appending a pattern to it would change every seed's stream)."""
SCENARIO_PATTERNS = PATTERNS[6:]
_MEAN_EVENTS = {
    "impossible_travel": 1,
    "card_testing": 17.5,
    "velocity_burst": 11.5,
    "account_takeover": 1,
    "amount_spike": 1,
    "stealth_ecom": 2.5,
    "card_testing_cashout": 18.5,
    "holder_returns_home": 1,
    "cnp_no_location": 3,
}
_MIN_HISTORY = {
    "account_takeover": 20,
    "amount_spike": 20,
    "stealth_ecom": 20,
    "holder_returns_home": 20,
    "cnp_no_location": 20,
}
"""Profile-based patterns need a victim with history, as they would in real life."""
CHANNEL_ATM_SHARE = 0.05


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. ``fraud_rate`` is the expected share of fraudulent events."""

    seed: int = 7
    users: int = 5000
    fraud_rate: float = 0.01
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    chunk_events: int = 20_000
    id_prefix: str = ""
    patterns: tuple[str, ...] = CLASSIC_PATTERNS

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraud_rate <= 0.5:
            raise ValueError(f"fraud_rate={self.fraud_rate!r} must be in [0, 0.5]")
        if self.users < 1:
            raise ValueError(f"users={self.users!r} must be >= 1")
        if self.chunk_events < 100:
            raise ValueError(f"chunk_events={self.chunk_events!r} must be >= 100")
        bad = set(self.patterns) - set(PATTERNS)
        if bad:
            raise ValueError(f"patterns: unknown {sorted(bad)}; known: {list(PATTERNS)}")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


@dataclass
class Chunk:
    """Columnar events, sorted by ``ts_ms``; ``lat``/``lon`` NaN = no location."""

    txn_id: list[str]
    ts_ms: np.ndarray
    user: np.ndarray
    card: np.ndarray
    merchant: np.ndarray
    category: np.ndarray
    amount: np.ndarray
    currency: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    device: np.ndarray  # object: str or None
    ip: np.ndarray  # object: str or None
    is_fraud: np.ndarray
    pattern: np.ndarray  # object: str or None

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass
class _Rows:
    """Row-wise builder for injected incidents (few rows; clarity over speed)."""

    cols: dict[str, list] = field(default_factory=lambda: {k: [] for k in _COLS})

    def add(self, **kw: object) -> None:
        for k in _COLS:
            self.cols[k].append(kw[k])


_COLS = (
    "ts_ms",
    "user",
    "card",
    "merchant",
    "category",
    "amount",
    "currency",
    "lat",
    "lon",
    "country",
    "channel",
    "device",
    "ip",
    "is_fraud",
    "pattern",
)


class _Sim:
    def __init__(self, pop: Population, cfg: GeneratorConfig) -> None:
        self.pop, self.cfg = pop, cfg
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.count = np.zeros(pop.n_users, dtype=np.int64)
        self.usd = np.array([USD_PER_UNIT.get(c, 1.0) for c in pop.town_currency])
        self.p_user = pop.rate_per_day / pop.rate_per_day.sum()
        cdf = self.p_user.cumsum()
        self.cdf_user = cdf / cdf[-1]
        """``rng.choice(n, p=p_user)`` without its O(users) set-up on every draw: the same
        uniform draw and search numpy does, so the streams are unchanged."""
        self.rate_per_ms = pop.rate_per_day.sum() / 86_400_000.0
        self.cat_of = pop.merchant_category
        self.n_local = pop.n_towns * MERCHANTS_PER_TOWN

    # -- legitimate traffic --------------------------------------------------------
    def legit(self, t0: int, span_ms: int) -> dict[str, np.ndarray]:
        pop, rng = self.pop, self.rng
        # ~37 % of candidates survive the activity filter (mean of the hour curve).
        n = rng.poisson(self.rate_per_ms * span_ms / 0.37)
        ts = t0 + np.sort(rng.integers(0, span_ms, n))
        users = rng.choice(pop.n_users, n, p=self.p_user)
        home = pop.home[users]
        hours = ((ts / 3_600_000.0) + pop.town_lon[home] / 15.0) % 24.0
        keep = rng.random(n) < pop.hour_weight(users, hours)
        ts, users, home = ts[keep], users[keep], home[keep]
        n = len(ts)
        is_ecom = rng.random(n) < pop.ecom_share[users]
        is_atm = ~is_ecom & (rng.random(n) < CHANNEL_ATM_SHARE)
        channel = np.where(is_ecom, "ecom", np.where(is_atm, "atm", "pos"))
        local_m = home * MERCHANTS_PER_TOWN + rng.integers(0, MERCHANTS_PER_TOWN, n)
        online_m = self.n_local + rng.integers(0, ONLINE_MERCHANTS, n)
        merchant = np.where(is_ecom, online_m, local_m)
        usd = np.exp(rng.normal(pop.mu[users], pop.sigma[users]))
        usd = np.where(is_atm, np.maximum(20.0, np.round(usd / 20.0) * 20.0), usd)
        lat = np.where(
            is_ecom, pop.town_lat[home] + rng.normal(0, 0.05, n), pop.merchant_lat[merchant]
        )
        lon = np.where(
            is_ecom, pop.town_lon[home] + rng.normal(0, 0.05, n), pop.merchant_lon[merchant]
        )
        dev_k = rng.integers(0, pop.n_devices[users])
        device = np.where(is_ecom, _dev_ids(users, dev_k), None)
        ip = np.where(is_ecom, _ips(users, dev_k), None)
        second_card = (pop.n_devices[users] > 1) & (rng.random(n) < 0.3)
        return {
            "ts_ms": ts,
            "user": users,
            "card": users * 2 + second_card,
            "merchant": merchant,
            "category": self.cat_of[merchant],
            "amount": np.round(usd / self.usd[home], 2).clip(0.01),
            "currency": pop.town_currency[home],
            "lat": np.clip(lat, -90, 90),
            "lon": (lon + 180.0) % 360.0 - 180.0,
            "country": pop.town_country[home],
            "channel": channel,
            "device": device,
            "ip": ip,
            "is_fraud": np.zeros(n, dtype=bool),
            "pattern": np.full(n, None, dtype=object),
        }

    # -- fraud incidents -----------------------------------------------------------
    def victim(self, pattern: str) -> int | None:
        need = _MIN_HISTORY.get(pattern, 1)
        for _ in range(20):
            u = int(self.cdf_user.searchsorted(self.rng.random(), side="right"))
            if self.count[u] >= need:
                return u
        return None

    def far_town(self, u: int, min_km: float) -> int:
        pop = self.pop
        h = pop.home[u]
        for _ in range(50):
            t = int(self.rng.integers(0, pop.n_towns))
            if (
                haversine_km(pop.town_lat[h], pop.town_lon[h], pop.town_lat[t], pop.town_lon[t])
                >= min_km
            ):
                return t
        return t

    def incident(self, pattern: str, u: int, t: int, rows: _Rows) -> None:
        pop, rng = self.pop, self.rng
        h = int(pop.home[u])
        cur, fx = pop.town_currency[h], self.usd[h]
        typical = math.exp(pop.mu[u])
        card = u * 2

        def add(
            ts: int,
            usd: float,
            merchant: int,
            lat: float,
            lon: float,
            country: str,
            channel: str,
            device: str | None,
            fraud: bool = True,
            part: bool = False,
        ) -> None:
            """One row; ``part``: a genuine transaction labelled with its incident."""
            rows.add(
                ts_ms=ts,
                user=u,
                card=card,
                merchant=merchant,
                category=self.cat_of[merchant],
                amount=max(0.01, round(usd / fx, 2)),
                currency=cur,
                lat=lat,
                lon=lon,
                country=country,
                channel=channel,
                device=device,
                ip=None if device is None else f"185.{u % 250}.{int(rng.integers(256))}.9",
                is_fraud=fraud,
                pattern=pattern if fraud or part else None,
            )

        def local_merchant(town: int) -> int:
            return town * MERCHANTS_PER_TOWN + int(rng.integers(MERCHANTS_PER_TOWN))

        def online_merchant() -> int:
            return self.n_local + int(rng.integers(ONLINE_MERCHANTS))

        new_dev = f"dx{u}-{int(rng.integers(1 << 30))}"
        if pattern == "impossible_travel":
            m = local_merchant(h)
            add(
                t,
                typical * rng.uniform(0.5, 1.5),
                m,
                pop.merchant_lat[m],
                pop.merchant_lon[m],
                pop.town_country[h],
                "pos",
                None,
                fraud=False,
            )
            far = self.far_town(u, 3000.0)
            m2 = local_merchant(far)
            t2 = t + int(rng.uniform(5, 90) * 60_000)
            add(
                t2,
                typical * rng.uniform(1, 4),
                m2,
                pop.merchant_lat[m2],
                pop.merchant_lon[m2],
                pop.town_country[far],
                "pos",
                None,
            )
        elif pattern == "card_testing":
            far = self.far_town(u, 500.0)
            ts = t
            for _ in range(int(rng.integers(10, 26))):
                m = online_merchant()
                add(
                    ts,
                    rng.uniform(0.5, 4.99),
                    m,
                    pop.town_lat[far],
                    pop.town_lon[far],
                    pop.town_country[far],
                    "ecom",
                    new_dev,
                )
                ts += int(rng.uniform(5, 40) * 1000)
        elif pattern == "card_testing_cashout":
            far = self.far_town(u, 500.0)
            ts = t
            for _ in range(int(rng.integers(10, 26))):
                add(
                    ts,
                    rng.uniform(0.5, 4.99),
                    online_merchant(),
                    pop.town_lat[far],
                    pop.town_lon[far],
                    pop.town_country[far],
                    "ecom",
                    new_dev,
                )
                last = ts
                ts += int(rng.uniform(5, 40) * 1000)
            soon = rng.random() < 0.5
            wait_ms = rng.uniform(1, 8) * 60_000 if soon else rng.uniform(1, 36) * 3_600_000
            add(
                last + int(wait_ms),
                max(300.0, typical * rng.uniform(10, 40)),
                online_merchant(),
                pop.town_lat[far],
                pop.town_lon[far],
                pop.town_country[far],
                "ecom",
                new_dev,
            )
        elif pattern == "holder_returns_home":
            m = local_merchant(h)
            home = (pop.merchant_lat[m], pop.merchant_lon[m], pop.town_country[h])
            add(t, typical * rng.uniform(0.5, 1.5), m, *home, "pos", None, fraud=False, part=True)
            far = self.far_town(u, 3000.0)
            m2 = local_merchant(far)
            t2 = t + int(rng.uniform(5, 90) * 60_000)
            add(
                t2,
                typical * rng.uniform(1, 4),
                m2,
                pop.merchant_lat[m2],
                pop.merchant_lon[m2],
                pop.town_country[far],
                "pos",
                None,
            )
            m3 = local_merchant(h)
            add(
                t2 + int(rng.uniform(1, 48) * 3_600_000),
                typical * rng.uniform(0.5, 1.5),
                m3,
                pop.merchant_lat[m3],
                pop.merchant_lon[m3],
                pop.town_country[h],
                "pos",
                None,
                fraud=False,
                part=True,
            )
        elif pattern == "cnp_no_location":
            far = self.far_town(u, 1500.0)
            ts = t
            for _ in range(int(rng.integers(2, 5))):
                add(
                    ts,
                    typical * rng.uniform(5, 20),
                    online_merchant(),
                    math.nan,
                    math.nan,
                    pop.town_country[far],
                    "ecom",
                    new_dev,
                )
                ts += int(rng.uniform(2, 20) * 60_000)
        elif pattern == "velocity_burst":
            ts = t
            for _ in range(int(rng.integers(8, 16))):
                m = local_merchant(h)
                add(
                    ts,
                    typical * math.exp(rng.normal(0.7, 0.5)),
                    m,
                    pop.merchant_lat[m],
                    pop.merchant_lon[m],
                    pop.town_country[h],
                    "pos",
                    None,
                )
                ts += int(rng.uniform(15, 60) * 1000)
        elif pattern == "account_takeover":
            far = self.far_town(u, 1500.0)
            lon = float(pop.town_lon[far])
            local_h = ((t / 3_600_000.0) + lon / 15.0) % 24.0
            target = rng.uniform(1.0, 5.0)
            t = t + int(((target - local_h) % 24.0) * 3_600_000)
            add(
                t,
                typical * rng.uniform(8, 25),
                online_merchant(),
                pop.town_lat[far],
                lon,
                pop.town_country[far],
                "ecom",
                new_dev,
            )
        elif pattern == "amount_spike":
            m = local_merchant(h)
            add(
                t,
                max(800.0, typical * rng.uniform(20, 60)),
                m,
                pop.merchant_lat[m],
                pop.merchant_lon[m],
                pop.town_country[h],
                "pos",
                None,
            )
        elif pattern == "stealth_ecom":
            ts = t
            for _ in range(int(rng.integers(2, 4))):
                m = self.n_local + int(rng.integers(ONLINE_MERCHANTS))
                lat = pop.town_lat[h] + rng.normal(0, 0.05)
                lon = pop.town_lon[h] + rng.normal(0, 0.05)
                add(
                    ts,
                    typical * rng.uniform(3, 6),
                    m,
                    lat,
                    lon,
                    pop.town_country[h],
                    "ecom",
                    new_dev,
                )
                ts += int(rng.uniform(1, 5) * 3_600_000)
        else:  # pragma: no cover - validated by GeneratorConfig
            raise ValueError(pattern)

    def fraud(self, t0: int, span_ms: int, n_legit: int) -> dict[str, np.ndarray]:
        cfg, rng = self.cfg, self.rng
        rows = _Rows()
        if cfg.fraud_rate > 0 and cfg.patterns:
            mean_len = sum(_MEAN_EVENTS[p] for p in cfg.patterns) / len(cfg.patterns)
            n_inc = rng.poisson(n_legit * cfg.fraud_rate / mean_len)
            for _ in range(n_inc):
                pattern = cfg.patterns[int(rng.integers(len(cfg.patterns)))]
                u = self.victim(pattern)
                if u is not None:
                    before = len(rows.cols["user"])
                    self.incident(pattern, u, t0 + int(rng.integers(span_ms)), rows)
                    self.count[u] += len(rows.cols["user"]) - before
        return {
            k: np.array(v, dtype=object if k in ("device", "ip", "pattern") else None)
            for k, v in rows.cols.items()
        }


def _dev_ids(users: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(np.char.add("d", users.astype(str)), "-"), k.astype(str))


def _ips(users: np.ndarray, k: np.ndarray) -> np.ndarray:
    a = (users * 7919) % 223 + 1
    return np.char.add(
        np.char.add(np.char.add(a.astype(str), "."), ((users >> 8) & 255).astype(str)),
        np.char.add(
            np.char.add(".", (users & 255).astype(str)), np.char.add(".", (k + 1).astype(str))
        ),
    )


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {}
    for k in _COLS:
        arrs = [p[k] for p in parts if len(p[k])]
        if not arrs:
            out[k] = parts[0][k][:0]
        elif any(a.dtype == object for a in arrs):
            out[k] = np.concatenate([a.astype(object) for a in arrs])
        else:
            out[k] = np.concatenate(arrs)
    return out


def generate_chunks(pop: Population, cfg: GeneratorConfig) -> Iterator[Chunk]:
    """Endless chunks of ~``cfg.chunk_events`` events, in event-time order."""
    sim = _Sim(pop, cfg)
    span = max(1000, int(cfg.chunk_events / sim.rate_per_ms))
    t0 = int(cfg.start.timestamp() * 1000)
    pending: dict[str, np.ndarray] | None = None
    seq = 0
    prefix = cfg.id_prefix or f"s{cfg.seed}"
    while True:
        legit = sim.legit(t0, span)
        # Victims are drawn among holders with history, including this chunk's.
        np.add.at(sim.count, legit["user"].astype(np.int64), 1)
        parts = [legit, sim.fraud(t0, span, len(legit["ts_ms"]))]
        if pending is not None:
            parts.append(pending)
        cols = _concat(parts)
        end = t0 + span
        later = cols["ts_ms"] >= end
        pending = {k: v[later] for k, v in cols.items()}
        cols = {k: v[~later] for k, v in cols.items()}
        order = np.argsort(cols["ts_ms"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        n = len(order)
        ids = [f"{prefix}-{i}" for i in range(seq, seq + n)]
        seq += n
        t0 = end
        yield Chunk(ids, **{k: cols[k] for k in _COLS})  # type: ignore[arg-type]


def iter_json(
    chunk: Chunk, with_label: bool = True, order: np.ndarray | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) JSON bytes of each event in the chunk (in ``order`` if given):
    Transaction v1 + label, or v2 without ``lat``/``lon`` for an event with no location."""
    c = chunk
    users = c.user.tolist()
    cards = c.card.tolist()
    merch = c.merchant.tolist()
    for i in range(len(c)) if order is None else order.tolist():
        uid = f"u{users[i]}"
        d = {
            "txn_id": c.txn_id[i],
            "ts": iso_ms(c.ts_ms[i]),
            "user_id": uid,
            "card_id": f"c{cards[i]}",
            "merchant_id": f"m{merch[i]}",
            "merchant_category": str(c.category[i]),
            "amount": float(c.amount[i]),
            "currency": str(c.currency[i]),
            "lat": round(float(c.lat[i]), 5),
            "lon": round(float(c.lon[i]), 5),
            "country": str(c.country[i]),
            "channel": str(c.channel[i]),
            "device_id": c.device[i],
            "ip": c.ip[i],
            "schema_version": 1,
        }
        if math.isnan(d["lat"]):  # card-not-present without a location: v2 leaves it out
            del d["lat"], d["lon"]
            d["schema_version"] = 2
        if with_label:
            d["label"] = {"is_fraud": bool(c.is_fraud[i]), "pattern": c.pattern[i]}
        yield uid.encode(), orjson.dumps(d)
