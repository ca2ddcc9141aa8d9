"""Adapters from external labelled datasets to Transaction v1 events (with their label).

The datasets are read in place (setting ``data_dir``, default ``../shared/data``, or a
path the user gives); nothing is
copied into the repository.  Each adapter yields JSON bytes exactly as a producer would
put them on the ``transactions`` topic, in timestamp order, so evaluation runs the same
``build_flow`` as production.

Fraud Detection Handbook (Le Borgne et al., ULB 2022), documented mapping:

* customer -> ``user_id`` and ``card_id`` (``c<CUSTOMER_ID>``), terminal ->
  ``merchant_id`` (``t<TERMINAL_ID>``), ``TRANSACTION_ID`` -> ``txn_id``;
* the 100 x 100 grid is read as kilometres around Brussels: ``lat = 50.40 + y / 111.0``,
  ``lon = 3.70 + x / 70.1`` (70.1 km per degree of longitude at 50.85 N), country BE,
  currency EUR, channel pos, category ``retail`` (the simulator has none);
* the 42 amounts of 0.00 become 0.01 (Transaction v1 requires a positive amount);
* ``label`` = ``TX_FRAUD``, pattern ``scenario_<TX_FRAUD_SCENARIO>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from schemas.scored import label_json

__all__ = ["handbook_events", "handbook_frame", "handbook_labels", "sparkov_events"]


KM_PER_DEG_LAT = 111.0
KM_PER_DEG_LON = 70.1
BRUSSELS_SW = (50.40, 3.70)


def handbook_frame(
    root: Path, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Handbook transactions in [start, end) with terminal coordinates, in id order."""
    d = root / "fraud_handbook_simulated"
    filters = []
    if start is not None:
        filters.append(("TX_DATETIME", ">=", pd.Timestamp(start.replace(tzinfo=None))))
    if end is not None:
        filters.append(("TX_DATETIME", "<", pd.Timestamp(end.replace(tzinfo=None))))
    tx = pd.read_parquet(d / "transactions.parquet", filters=filters or None)
    term = pd.read_parquet(d / "terminal_profiles.parquet")
    tx = tx.merge(term, on="TERMINAL_ID", how="left", validate="many_to_one")
    return tx.sort_values("TRANSACTION_ID", kind="stable").reset_index(drop=True)


def handbook_events(df: pd.DataFrame) -> Iterator[bytes]:
    """Transaction v1 JSON (plus label) for each row of :func:`handbook_frame`."""
    ts = (df.TX_DATETIME.dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")).to_numpy()
    lat = np.round(BRUSSELS_SW[0] + df.y_terminal_id.to_numpy() / KM_PER_DEG_LAT, 6)
    lon = np.round(BRUSSELS_SW[1] + df.x_terminal_id.to_numpy() / KM_PER_DEG_LON, 6)
    amount = np.maximum(df.TX_AMOUNT.to_numpy(), 0.01)
    cols = zip(
        df.TRANSACTION_ID.to_numpy(),
        ts,
        df.CUSTOMER_ID.to_numpy(),
        df.TERMINAL_ID.to_numpy(),
        amount,
        lat,
        lon,
        df.TX_FRAUD.to_numpy(),
        df.TX_FRAUD_SCENARIO.to_numpy(),
        strict=True,
    )
    for tid, t, cust, term, amt, la, lo, fraud, scen in cols:
        yield orjson.dumps(
            {
                "txn_id": str(tid),
                "ts": t,
                "user_id": f"c{cust}",
                "card_id": f"c{cust}",
                "merchant_id": f"t{term}",
                "merchant_category": "retail",
                "amount": float(amt),
                "currency": "EUR",
                "lat": float(la),
                "lon": float(lo),
                "country": "BE",
                "channel": "pos",
                "schema_version": 1,
                "label": {"is_fraud": bool(fraud), "pattern": f"scenario_{scen}" if scen else None},
            }
        )


def handbook_labels(df: pd.DataFrame) -> Iterator[bytes]:
    """A confirmed-fraud label event per fraudulent row (terminal and event time), in time
    order; the flow uses each only after ``label_delay_days``."""
    fraud = df[df.TX_FRAUD == 1]
    for tid, term, ts in zip(
        fraud.TRANSACTION_ID, fraud.TERMINAL_ID, fraud.TX_DATETIME, strict=True
    ):
        yield label_json(f"t{term}", ts.to_pydatetime().replace(tzinfo=UTC), str(tid))


def sparkov_events(path: Path) -> Iterator[bytes]:
    """Transaction v1 JSON for the Sparkov CSV (card -> user, merchant location as the
    point of sale, US/USD; local times are read as UTC, the dataset has no zone)."""
    df = pd.read_csv(path, index_col=0)
    for r in df.itertuples(index=False):
        ts = datetime.strptime(r.trans_date_trans_time, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        channel = "ecom" if str(r.category).endswith("_net") else "pos"
        yield orjson.dumps(
            {
                "txn_id": str(r.trans_num),
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "user_id": f"cc{r.cc_num}",
                "card_id": f"cc{r.cc_num}",
                "merchant_id": str(r.merchant)[:64],
                "merchant_category": str(r.category),
                "amount": float(r.amt),
                "currency": "USD",
                "lat": float(r.merch_lat),
                "lon": float(r.merch_long),
                "country": "US",
                "channel": channel,
                "schema_version": 1,
                "label": {"is_fraud": bool(r.is_fraud), "pattern": None},
            }
        )
