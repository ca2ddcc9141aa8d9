"""A synthetic population of card holders and merchants, deterministic for a seed.

Places come from Faker's list of ~970 real towns (name, country, coordinates); people get
Faker-made names and a home town, a spend profile (log-normal amounts), active local
hours, a daily transaction rate, an e-commerce share, one or two cards and devices.
Attributes are numpy arrays so millions of users cost seconds, not minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faker import Faker
from faker.providers.geo import Provider as GeoProvider

__all__ = ["CATEGORIES", "COUNTRY_CURRENCY", "Population", "make_population"]

_EURO = (
    "AT",
    "BE",
    "CY",
    "DE",
    "EE",
    "ES",
    "FI",
    "FR",
    "GR",
    "HR",
    "IE",
    "IT",
    "LT",
    "LU",
    "LV",
    "MT",
    "NL",
    "PT",
    "SI",
    "SK",
)
_EURO = (
    "AT",
    "BE",
    "CY",
    "DE",
    "EE",
    "ES",
    "FI",
    "FR",
    "GR",
    "HR",
    "IE",
    "IT",
    "LT",
    "LU",
    "LV",
    "MT",
    "NL",
    "PT",
    "SI",
    "SK",
)
COUNTRY_CURRENCY: dict[str, str] = {
    "US": "USD",
    "GB": "GBP",
    "JP": "JPY",
    "CN": "CNY",
    "IN": "INR",
    "RU": "RUB",
    "BR": "BRL",
    "MX": "MXN",
    "CA": "CAD",
    "AU": "AUD",
    "NZ": "NZD",
    "CH": "CHF",
    "SE": "SEK",
    "NO": "NOK",
    "DK": "DKK",
    "PL": "PLN",
    "CZ": "CZK",
    "HU": "HUF",
    "RO": "RON",
    "BG": "BGN",
    "TR": "TRY",
    "UA": "UAH",
    "PK": "PKR",
    "BD": "BDT",
    "ID": "IDR",
    "MY": "MYR",
    "SG": "SGD",
    "TH": "THB",
    "VN": "VND",
    "PH": "PHP",
    "KR": "KRW",
    "HK": "HKD",
    "TW": "TWD",
    "AE": "AED",
    "SA": "SAR",
    "IL": "ILS",
    "EG": "EGP",
    "ZA": "ZAR",
    "NG": "NGN",
    "KE": "KES",
    "MA": "MAD",
    "AR": "ARS",
    "CL": "CLP",
    "CO": "COP",
    "PE": "PEN",
    "UY": "UYU",
    **dict.fromkeys(_EURO, "EUR"),
}
"""Home currency by country; elsewhere cards are issued in USD."""

CATEGORIES: tuple[tuple[str, float, bool], ...] = (
    # (merchant category, weight, sold online)
    ("grocery", 0.24, False),
    ("restaurant", 0.16, False),
    ("fuel", 0.10, False),
    ("retail", 0.12, True),
    ("electronics", 0.04, True),
    ("travel", 0.03, True),
    ("entertainment", 0.06, True),
    ("health", 0.05, False),
    ("digital_goods", 0.08, True),
    ("utilities", 0.04, True),
    ("fashion", 0.08, True),
)

MERCHANTS_PER_TOWN = 24
ONLINE_MERCHANTS = 400


@dataclass(frozen=True)
class Population:
    """Columnar users, towns and merchants (index = id number)."""

    seed: int
    # towns
    town_lat: np.ndarray
    town_lon: np.ndarray
    town_country: np.ndarray  # str
    town_currency: np.ndarray  # str
    # users
    home: np.ndarray  # town index
    mu: np.ndarray  # log-USD median of amounts
    sigma: np.ndarray  # log-USD spread
    hour_center: np.ndarray  # local hour of peak activity
    hour_spread: np.ndarray
    rate_per_day: np.ndarray
    ecom_share: np.ndarray
    n_devices: np.ndarray
    names: tuple[str, ...]  # a few Faker names, cycled (display only)
    # merchants: town-bound (town * MERCHANTS_PER_TOWN + j) then online ones
    merchant_category: np.ndarray  # str, per merchant
    merchant_lat: np.ndarray
    merchant_lon: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.home)

    @property
    def n_towns(self) -> int:
        return len(self.town_lat)

    def hour_weight(self, users: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """Relative activity of ``users`` at local ``hours`` (peak 1, floor 0.01)."""
        d = np.abs(hours - self.hour_center[users])
        d = np.minimum(d, 24.0 - d)
        return np.maximum(np.exp(-0.5 * (d / self.hour_spread[users]) ** 2), 0.01)


def make_population(n_users: int, seed: int) -> Population:
    """Build ``n_users`` card holders; the same seed always yields the same population."""
    if n_users < 1:
        raise ValueError(f"n_users={n_users!r} must be >= 1")
    rng = np.random.default_rng(seed)
    fake = Faker()
    fake.seed_instance(seed)
    coords = GeoProvider.land_coords
    town_lat = np.array([float(c[0]) for c in coords])
    town_lon = np.array([float(c[1]) for c in coords])
    town_country = np.array([c[3] for c in coords])
    town_currency = np.array([COUNTRY_CURRENCY.get(c, "USD") for c in town_country])
    n_towns = len(coords)

    # People cluster: 70 % live in one of 40 "home" towns, the rest anywhere.
    hubs = rng.choice(n_towns, size=40, replace=False)
    home = np.where(
        rng.random(n_users) < 0.7, rng.choice(hubs, n_users), rng.integers(0, n_towns, n_users)
    )
    mu = rng.normal(np.log(40.0), 0.6, n_users)
    sigma = rng.uniform(0.35, 0.8, n_users)
    hour_center = rng.normal(14.5, 2.5, n_users) % 24
    hour_spread = rng.uniform(2.5, 4.5, n_users)
    rate = np.clip(rng.lognormal(np.log(3.0), 0.5, n_users), 0.3, 30.0)
    ecom = rng.beta(2.0, 5.0, n_users)
    n_dev = rng.integers(1, 3, n_users)
    names = tuple(fake.name() for _ in range(min(n_users, 1000)))

    cat_names = np.array([c[0] for c in CATEGORIES])
    cat_w = np.array([c[1] for c in CATEGORIES])
    cat_w = cat_w / cat_w.sum()
    online = np.array([c[2] for c in CATEGORIES])
    n_local = n_towns * MERCHANTS_PER_TOWN
    local_cat = rng.choice(len(CATEGORIES), n_local, p=cat_w)
    on_w = np.where(online, cat_w, 0.0)
    online_cat = rng.choice(len(CATEGORIES), ONLINE_MERCHANTS, p=on_w / on_w.sum())
    mtown = np.repeat(np.arange(n_towns), MERCHANTS_PER_TOWN)
    m_lat = np.concatenate(
        [town_lat[mtown] + rng.normal(0, 0.03, n_local), np.zeros(ONLINE_MERCHANTS)]
    )
    m_lon = np.concatenate(
        [town_lon[mtown] + rng.normal(0, 0.03, n_local), np.zeros(ONLINE_MERCHANTS)]
    )
    return Population(
        seed,
        town_lat,
        town_lon,
        town_country,
        town_currency,
        home,
        mu,
        sigma,
        hour_center,
        hour_spread,
        rate,
        ecom,
        n_dev,
        names,
        cat_names[np.concatenate([local_cat, online_cat])],
        np.clip(m_lat, -90, 90),
        (m_lon + 180.0) % 360.0 - 180.0,
    )
