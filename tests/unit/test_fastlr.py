"""FastLogReg reproduces River's StandardScaler | LogisticRegression(SGD) bitwise."""

from __future__ import annotations

import pickle
import random

from dataflows.detection.fastlr import FastLogReg
from dataflows.detection.learner import LEARNER_FEATURES, LEARNING_RATE, river_model

N = len(LEARNER_FEATURES)


def _stream(n: int, seed: int = 1) -> list[tuple[tuple[float, ...], bool]]:
    """Skewed, correlated features with rare positives (like fraud labels)."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        x = tuple(
            rnd.gauss(0, 1) * (40 if j % 5 == 0 else 1) + (6 if rnd.random() < 0.02 else 0)
            for j in range(N)
        )
        out.append((x, rnd.random() < 0.02 + 0.4 * (x[1] > 2)))
    return out


def _river_state(model: object) -> tuple[list[float], float]:
    lr = model.steps["LogisticRegression"]  # type: ignore[attr-defined]
    return [lr.weights.get(k, 0.0) for k in LEARNER_FEATURES], lr.intercept


def test_probabilities_and_weights_are_bitwise_rivers() -> None:
    ref, fast = river_model(), FastLogReg(N, LEARNING_RATE)
    for i, (x, y) in enumerate(_stream(8000)):
        if i >= 50:
            assert fast.predict_proba(x) == ref.predict_proba_one(
                dict(zip(LEARNER_FEATURES, x, strict=True))
            ).get(True, 0.0), i
        ref.learn_one(dict(zip(LEARNER_FEATURES, x, strict=True)), y)
        fast.learn(x, y)
    weights, intercept = _river_state(ref)
    assert fast.weights == weights and fast.intercept == intercept
    assert any(w != 0.0 for w in fast.weights)


def test_converts_a_river_model_and_survives_pickling() -> None:
    """An older snapshot holds River's pipeline: converted, it continues identically."""
    data = _stream(3000, seed=2)
    ref = river_model()
    for x, y in data[:2000]:
        ref.learn_one(dict(zip(LEARNER_FEATURES, x, strict=True)), y)
    fast = FastLogReg.from_river(ref, LEARNER_FEATURES, LEARNING_RATE)
    fast = pickle.loads(pickle.dumps(fast))
    for x, y in data[2000:]:
        d = dict(zip(LEARNER_FEATURES, x, strict=True))
        assert fast.predict_proba(x) == ref.predict_proba_one(d).get(True, 0.0)
        ref.learn_one(d, y)
        fast.learn(x, y)
    assert (fast.weights, fast.intercept) == _river_state(ref)


def test_restored_models_of_other_versions_are_upgraded_or_restarted() -> None:
    from dataflows.detection.learner import current_model

    fast = FastLogReg(N, LEARNING_RATE)
    assert current_model(fast) is fast
    old_inputs = FastLogReg(N - 3, LEARNING_RATE)  # a snapshot from another feature list
    fresh = current_model(old_inputs)
    assert len(fresh.weights) == N and fresh.count == 0
    ref = river_model()
    for x, y in _stream(50):
        ref.learn_one(dict(zip(LEARNER_FEATURES, x, strict=True)), y)
    converted = current_model(ref)
    assert converted.weights == _river_state(ref)[0] and converted.count == 50
