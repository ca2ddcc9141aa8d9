"""A micro-batched numpy port of ``river.anomaly.HalfSpaceTrees``, bitwise-equal to it.

River stays the reference and the default (``FRAUD_HST_ENGINE=river``); this engine
(``numpy``) exists because River walks 25 trees node by node in Python for every event,
which caps the whole flow at ~25k events/s per core.

Why a batch can be scored at once without changing a single score: HST scores an event
from the *reference* masses (``r_mass``), which only change when a window of
``window_size`` learned events closes.  Within a window, scores are independent of each
other and learning only adds to ``l_mass``.  So a batch is cut at window boundaries;
each piece is scored with one vectorised walk and learned with one ``bincount``; at a
boundary the masses pivot exactly as River's do.

Bitwise equality holds because every partial score is an integer (mass × 2**depth)
summed exactly, and the final ``1 - total / max_score`` is the same IEEE operation.  The
trees are River's own: built by ``river.tree.padded.make_padded_tree`` with the same
seeded ``random.Random`` in the same order (features sorted by name), then flattened
into heap-ordered arrays (children of node ``i`` at ``2i+1``, ``2i+2``).

Assumes dense input: every feature present in every event (River's "missing feature"
branch is not ported; :meth:`NumpyHST.score_learn_many` refuses a missing one).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from river.tree.padded import PaddedBranch, make_padded_tree

__all__ = ["NumpyHST"]

PADDING = 0.15
"""River's split padding (``HalfSpaceTrees.learn_one`` passes 0.15)."""
SMALL = 4
"""Up to this many rows in a window piece are walked in Python: numpy's fixed cost per
call (~100 µs for 25 trees of height 6) only pays off on larger pieces."""
SIZE_LIMIT_SHARE = 0.1
"""River's early-stop constant: stop descending below 0.1 × window_size reference mass."""


def _flatten(root: PaddedBranch, height: int, col: dict[str, int]) -> tuple[list[int], list[float]]:
    """Heap-ordered split feature columns and thresholds of one River tree's branches."""
    n_branch = 2**height - 1
    feats, thrs = [0] * n_branch, [0.0] * n_branch
    stack = [(root, 0)]
    while stack:
        node, i = stack.pop()
        if i >= n_branch:
            continue
        feats[i], thrs[i] = col[node.feature], node.threshold
        left, right = node.children
        stack.append((left, 2 * i + 1))
        stack.append((right, 2 * i + 2))
    return feats, thrs


class NumpyHST:
    """Half-Space Trees over a fixed, dense feature set; same scores as River's.

    ``score_learn_many(rows)`` scores each row, then learns it, in order (prequential),
    and returns the anomaly scores River's ``score_one`` would have returned (high =
    anomalous; 0.0 through the first window).  Picklable as a handful of arrays.

    Seeded like River, it gives River's scores: after two windows of ordinary points an
    outlier scores high, a familiar point 0.

    >>> from river.anomaly import HalfSpaceTrees
    >>> rows = [[0.1, 0.2]] * 8 + [[0.12, 0.22], [0.95, 0.9]]
    >>> fast = NumpyHST(["a", "b"], n_trees=5, height=3, window_size=4, seed=1)
    >>> [round(x, 4) for x in fast.score_learn_many(rows)][-2:]
    [0.0, 0.9333]
    >>> river = HalfSpaceTrees(n_trees=5, height=3, window_size=4, seed=1)
    >>> ref = []
    >>> for a, b in rows:
    ...     ref.append(river.score_one({"a": a, "b": b}))
    ...     river.learn_one({"a": a, "b": b})
    >>> again = NumpyHST(["a", "b"], n_trees=5, height=3, window_size=4, seed=1)
    >>> ref == again.score_learn_many(rows)
    True
    """

    def __init__(
        self, features: Sequence[str], n_trees: int, height: int, window_size: int, seed: int
    ) -> None:
        self.features = tuple(sorted(features))
        self.n_trees, self.height, self.window_size = n_trees, height, window_size
        rng = random.Random(seed)
        col = {f: i for i, f in enumerate(self.features)}
        feats, thrs = [], []
        for _ in range(n_trees):
            limits = {f: (0.0, 1.0) for f in self.features}
            tree = make_padded_tree(limits, height, PADDING, rng, r_mass=0, l_mass=0)
            f, t = _flatten(tree, height, col) if height > 0 else ([], [])
            feats.append(f)
            thrs.append(t)
        self.feat = np.asarray(feats, dtype=np.intp).reshape(n_trees, 2**height - 1)
        self.thr = np.asarray(thrs, dtype=np.float64).reshape(n_trees, 2**height - 1)
        n_nodes = 2 ** (height + 1) - 1
        self.l_mass = np.zeros((n_trees, n_nodes), dtype=np.int64)
        self.r_mass = np.zeros((n_trees, n_nodes), dtype=np.int64)
        self.counter = 0
        self.first_window = True
        self.max_score = n_trees * window_size * (2 ** (height + 1) - 1)
        self._lists()

    def _lists(self) -> None:
        """Python-list views for the one-event-at-a-time walk (numpy is slow per call)."""
        self._feat_l: list[list[int]] = self.feat.tolist()
        self._thr_l: list[list[float]] = self.thr.tolist()
        self._r_l: list[list[int]] = self.r_mass.tolist()
        self._pending: list[int] = []  # visited flat node ids not yet added to l_mass
        # Flat views and per-tree offsets: 1-D ``take`` costs a fraction of 2-D fancy
        # indexing, which dominated a batch of tens of rows.
        self._feat_f = self.feat.ravel()
        self._thr_f = self.thr.ravel()
        self._ibase = np.arange(self.n_trees, dtype=np.intp) * self.feat.shape[1]
        self._mbase = np.arange(self.n_trees, dtype=np.intp) * self.l_mass.shape[1]

    _STATE = (
        "features",
        "n_trees",
        "height",
        "window_size",
        "feat",
        "thr",
        "l_mass",
        "r_mass",
        "counter",
        "first_window",
        "max_score",
    )

    def __getstate__(self) -> dict:
        # Attribute by attribute, never ``self.__dict__``: on CPython 3.11 reading an
        # instance's __dict__ materialises it and every later attribute access is slower.
        self._flush()
        return {k: getattr(self, k) for k in self._STATE}

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._lists()

    def _flush(self) -> None:
        if self._pending:
            counts = np.bincount(self._pending, minlength=self.l_mass.size)
            self.l_mass += counts.reshape(self.l_mass.shape)
            self._pending = []

    def score_learn_many(
        self, rows: Sequence[Sequence[float]], learn: Sequence[Sequence[float]] | None = None
    ) -> list[float]:
        """Scores of ``rows`` (values in :attr:`features` order), learning each after it.

        ``learn``, if given, is what is learned instead of each row (a pipeline whose
        scaler updates between River's ``score_one`` and ``learn_one``)."""
        x = self._matrix(rows)
        xl = x if learn is None else self._matrix(learn)
        if len(xl) != len(x):
            raise ValueError(f"{len(x)} rows to score but {len(xl)} to learn")
        out: list[float] = []
        start, n = 0, len(x)
        while start < n:
            end = min(n, start + self.window_size - self.counter)
            seg = x[start:end]
            if learn is None and len(seg) <= SMALL:
                out.extend(self._segment_py(seg.tolist()))
            else:
                out.extend(self._segment(seg, seg if learn is None else xl[start:end]))
            self.counter += end - start
            if self.counter == self.window_size:
                self._pivot()
            start = end
        return out

    def _matrix(self, rows: Sequence[Sequence[float]]) -> np.ndarray:
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(
                f"expected rows of {len(self.features)} features {self.features}, got {x.shape}"
            )
        return x

    def _pivot(self) -> None:
        """Close a window: learned masses become the reference (River's pivot)."""
        self._flush()
        self.r_mass = self.l_mass
        self.l_mass = np.zeros_like(self.r_mass)
        self._r_l = self.r_mass.tolist()
        self.first_window = False
        self.counter = 0

    def _segment_py(self, rows: list[list[float]]) -> list[float]:
        """River's walk over Python lists, for a few rows (same integers, same score)."""
        feat, thr, rmass, pend = self._feat_l, self._thr_l, self._r_l, self._pending
        h, limit, first = self.height, SIZE_LIMIT_SHARE * self.window_size, self.first_window
        n_nodes = self.l_mass.shape[1]
        out = []
        for x in rows:
            total = 0
            for t, (ft, tt, rt) in enumerate(zip(feat, thr, rmass, strict=True)):
                base, i, pw, alive = t * n_nodes, 0, 1, not first
                for _ in range(h):
                    pend.append(base + i)
                    if alive:
                        r = rt[i]
                        total += r * pw
                        alive = r >= limit
                    i = 2 * i + (2 if x[ft[i]] >= tt[i] else 1)
                    pw <<= 1
                pend.append(base + i)
                if alive:
                    total += rt[i] * pw
            out.append(0.0 if first else 1.0 - total / self.max_score)
        return out

    def _walk(self, x: np.ndarray) -> list[np.ndarray]:
        """Node index per depth (0..height) and tree of every row: shape (n, trees)."""
        n, trees = len(x), self.n_trees
        xf = np.ascontiguousarray(x).ravel()
        roff = (np.arange(n, dtype=np.intp) * x.shape[1])[:, None]
        feat, thr, ibase = self._feat_f, self._thr_f, self._ibase
        node = np.zeros((n, trees), dtype=np.intp)
        path = [node]
        for _ in range(self.height):
            ix = node + ibase
            right = xf.take(roff + feat.take(ix)) >= thr.take(ix)  # River: left iff < thr
            node = 2 * node + 1 + right
            path.append(node)
        return path

    def _segment(self, x: np.ndarray, xl: np.ndarray) -> list[float]:
        """Score rows ``x`` then learn ``xl``, all inside the current window."""
        n, trees = len(x), self.n_trees
        path = self._walk(x)
        scores = self._score(path, n) if not self.first_window else [0.0] * n
        if xl is not x:
            path = self._walk(xl)
        n_nodes = self.l_mass.shape[1]
        flat = (np.stack(path) + self._mbase).ravel()
        self.l_mass += np.bincount(flat, minlength=trees * n_nodes).reshape(trees, n_nodes)
        return scores

    def _score(self, path: list[np.ndarray], n: int) -> list[float]:
        limit = SIZE_LIMIT_SHARE * self.window_size
        total = np.zeros(n, dtype=np.int64)
        alive = np.ones((n, self.n_trees), dtype=bool)
        r_f, mbase = self.r_mass.ravel(), self._mbase
        for depth, node in enumerate(path):
            r = r_f.take(node + mbase)
            total += np.where(alive, r << depth, 0).sum(axis=1)
            alive &= r >= limit
        return (1.0 - total / self.max_score).tolist()
