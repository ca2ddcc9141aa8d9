"""External datasets through the production flow (read from ../shared/data, never copied).

These need the shared datasets; when they are missing the tests fail loudly naming the
path (they are part of this machine's CI, not optional).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from dataflows.evaluation.handbook import card_precision_at_k, score_stream
from generators.datasets import handbook_events, handbook_frame, sparkov_events
from schemas.settings import Settings, load_settings
from schemas.transaction import DecodeError, decode_event

pytestmark = pytest.mark.integration


def _need(path: Path) -> Path:
    assert path.exists(), f"dataset missing: {path} (see ../shared/data/*/README.md)"
    return path


def test_handbook_two_day_slice_end_to_end(settings: Settings) -> None:
    """Two days (≈ 19k transactions) through build_flow: all scored once, labels intact,
    and the handbook metrics computable on the second day."""
    root = _need(load_settings().data_dir)
    df = handbook_frame(root, datetime(2018, 7, 1, tzinfo=UTC), datetime(2018, 7, 3, tzinfo=UTC))
    assert 18_000 < len(df) < 20_500
    first = orjson.loads(next(handbook_events(df.head(1))))
    assert first["user_id"] == f"c{df.CUSTOMER_ID[0]}" and first["country"] == "BE"
    assert 50.4 <= first["lat"] <= 51.31 and 3.7 <= first["lon"] <= 5.13
    scored = score_stream(settings, lambda: handbook_events(df), len(df), progress=False)
    assert sorted(scored.TRANSACTION_ID) == sorted(df.TRANSACTION_ID), "each exactly once"
    assert scored.risk_raw.between(0, 1).all() and scored.hst.between(0, 1).all()
    merged = df.merge(scored, on="TRANSACTION_ID")
    day2 = merged[merged.TX_TIME_DAYS.max() == merged.TX_TIME_DAYS]
    cp, daily = card_precision_at_k(day2, "risk")
    assert len(daily) == 1 and 0 <= cp <= 1
    # Scenario-1 frauds (amount > 220) are far above these customers' usual amounts.
    big = merged[merged.TX_FRAUD_SCENARIO == 1]
    assert len(big) > 0 and big.risk.mean() > merged[merged.TX_FRAUD == 0].risk.mean()


def test_sparkov_rows_are_valid_transactions() -> None:
    path = _need(load_settings().data_dir / "sparkov_sample" / "fraudTrain_prefix.csv.gz")
    n = frauds = 0
    for raw in sparkov_events(path):
        res = decode_event(raw, 16_384)
        assert not isinstance(res, DecodeError), res
        txn, label = res
        n += 1
        frauds += bool(label and label.is_fraud)
        assert txn.country == "US" and txn.channel in ("pos", "ecom")
    assert n > 1000 and frauds > 0


@pytest.mark.parametrize("engine", ["river", "numpy"])
def test_ulb_reproduces_rivers_documented_hst_figure(engine: str) -> None:
    """River's HalfSpaceTrees docstring: MinMaxScaler | HST(seed=42) on the first 2,500
    rows of the credit-card stream gives ROCAUC 91.15 %; our flow must give exactly that."""
    from dataflows.evaluation.ulb import UlbConfig, run_ulb

    path = _need(load_settings().data_dir / "ulb_creditcard" / "creditcard_day1.parquet")
    m = run_ulb(path, UlbConfig(engine=engine), limit=2500)
    assert m["events"] == 2500
    assert round(m["river_rocauc_2500"], 4) == 0.9115
