"""The numpy HST engine returns exactly River's HalfSpaceTrees scores (bitwise)."""

from __future__ import annotations

import pickle
import random

import pytest
from river.anomaly import HalfSpaceTrees

from dataflows.detection.anomaly import ShardModel
from dataflows.detection.fasthst import NumpyHST

FEATURES = ["zeta", "amount", "cnt", "speed", "ecom"]  # unsorted on purpose


def _stream(n: int, seed: int) -> list[dict[str, float]]:
    """Skewed features with ties, exact 0/1 and a burst of outliers."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {f: rng.random() ** (1 + k) for k, f in enumerate(FEATURES)}
        x["ecom"] = float(rng.random() < 0.3)
        if 1500 <= i < 1520:
            x["amount"] = 1.0
        out.append(x)
    return out


def _river(xs: list[dict[str, float]], trees: int, height: int, window: int, seed: int):
    hst = HalfSpaceTrees(n_trees=trees, height=height, window_size=window, seed=seed)
    scores = []
    for x in xs:
        scores.append(float(hst.score_one(x)))
        hst.learn_one(x)
    return scores


@pytest.mark.parametrize(
    ("trees", "height", "window", "seed"),
    [(25, 6, 250, 42), (10, 8, 50, 7), (3, 1, 10, 0), (1, 3, 1000, 123)],
)
def test_bitwise_equal_to_river_for_any_batching(
    trees: int, height: int, window: int, seed: int
) -> None:
    xs = _stream(4000, seed=seed + 1)
    ref = _river(xs, trees, height, window, seed)
    model = NumpyHST(FEATURES, trees, height, window, seed)
    rng, got, i = random.Random(99), [], 0
    while i < len(xs):
        size = rng.choice([1, 2, 3, 5, 17, 64, 249, 250, 251, 1000])
        rows = [[x[f] for f in model.features] for x in xs[i : i + size]]
        got += model.score_learn_many(rows)
        i += size
        if rng.random() < 0.1:  # a recovery snapshot and restore mid-stream
            model = pickle.loads(pickle.dumps(model))
    assert got == ref  # exact float equality, every event
    assert len(set(ref)) > 20  # a stream that really exercises the scores


def test_shard_model_engines_agree_on_scores_and_percentiles() -> None:
    xs = _stream(3000, seed=3)
    river = ShardModel(25, 6, 250, 42, warmup=300, calib=500, engine="river")
    fast = ShardModel(25, 6, 250, 42, warmup=300, calib=500, engine="numpy")
    expected = [river.score_learn(x) for x in xs]
    got = fast.score_learn_many(xs[:7]) + fast.score_learn_many(xs[7:2000])
    got += [fast.score_learn(x) for x in xs[2000:2100]] + fast.score_learn_many(xs[2100:])
    assert got == expected


def test_wrong_width_is_refused() -> None:
    model = NumpyHST(FEATURES, 5, 3, 50, 1)
    with pytest.raises(ValueError, match="expected rows of 5 features"):
        model.score_learn_many([[0.1, 0.2]])


def test_separate_learn_rows_equal_river_behind_a_minmax_scaler() -> None:
    """River's Pipeline(MinMaxScaler, HST) scores x scaled before the scaler learns x and
    learns it scaled after: the numpy engine takes both row sets."""
    from river import preprocessing

    xs = [{f: v * 40 - 7 for f, v in x.items()} for x in _stream(3000, seed=8)]
    ref_scaler, hst = preprocessing.MinMaxScaler(), HalfSpaceTrees(n_trees=10, height=8, seed=42)
    ref = []
    for x in xs:
        ref.append(float(hst.score_one(ref_scaler.transform_one(x))))
        ref_scaler.learn_one(x)
        hst.learn_one(ref_scaler.transform_one(x))
    scaler, model = preprocessing.MinMaxScaler(), NumpyHST(FEATURES, 10, 8, 250, 42)
    got, i = [], 0
    for size in [1, 7, 300, 2692]:
        score_rows, learn_rows = [], []
        for x in xs[i : i + size]:
            score_rows.append([scaler.transform_one(x)[f] for f in model.features])
            scaler.learn_one(x)
            learn_rows.append([scaler.transform_one(x)[f] for f in model.features])
        got += model.score_learn_many(score_rows, learn_rows)
        i += size
    assert got == ref
