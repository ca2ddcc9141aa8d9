"""ISO 4217 currency codes and the reference FX table used to compare amounts.

Amounts are scored in a reference currency (USD) so one set of thresholds fits every
card.  The rates are static, documented approximations (mid-2025); a fraud team would
feed real rates, which is why :func:`to_usd` takes the table as an argument.
"""

from __future__ import annotations

__all__ = ["ISO_4217", "USD_PER_UNIT", "to_usd"]

# Active ISO 4217 alphabetic codes (list one, 2025), excluding funds and metals.
ISO_4217: frozenset[str] = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
    QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS
    TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG""".split()
)

# US dollars per one unit of currency (approximate). Codes missing here are scored at
# parity and the transaction carries the feature ``fx_known = 0``.
USD_PER_UNIT: dict[str, float] = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "JPY": 0.0067,
    "CNY": 0.138,
    "CHF": 1.12,
    "CAD": 0.73,
    "AUD": 0.66,
    "NZD": 0.60,
    "SEK": 0.095,
    "NOK": 0.093,
    "DKK": 0.145,
    "PLN": 0.25,
    "CZK": 0.043,
    "HUF": 0.0027,
    "RON": 0.22,
    "BGN": 0.55,
    "TRY": 0.03,
    "RUB": 0.011,
    "UAH": 0.024,
    "INR": 0.012,
    "PKR": 0.0036,
    "BDT": 0.0085,
    "IDR": 0.000062,
    "MYR": 0.21,
    "SGD": 0.74,
    "THB": 0.028,
    "VND": 0.00004,
    "PHP": 0.017,
    "KRW": 0.00073,
    "HKD": 0.128,
    "TWD": 0.031,
    "AED": 0.272,
    "SAR": 0.267,
    "ILS": 0.27,
    "EGP": 0.02,
    "ZAR": 0.054,
    "NGN": 0.00065,
    "KES": 0.0077,
    "MAD": 0.1,
    "BRL": 0.18,
    "MXN": 0.055,
    "ARS": 0.001,
    "CLP": 0.00105,
    "COP": 0.00025,
    "PEN": 0.27,
    "UYU": 0.025,
}


def to_usd(amount: float, currency: str, table: dict[str, float] = USD_PER_UNIT) -> float:
    """Convert ``amount`` to USD; unknown currencies are taken at parity (see module doc)."""
    return amount * table.get(currency, 1.0)
