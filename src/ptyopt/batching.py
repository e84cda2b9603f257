"""Grouping of scan positions into mini-batches: random, compact (k-means) or sparse (farthest-point / Hilbert).

Every grouping covers each position index exactly once. The groups of an iteration depend only on
(seed, iteration), never on call history, so a resumed run reproduces the batches without storing RNG state.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ptyopt.errors import ConfigError, DataError
from ptyopt.registry import did_you_mean

GROUPING_MODES = ("random", "compact", "sparse")

_KMEANS_MAX_ITER = 30
_FPS_MAX_CELLS = 1 << 26  # (groups × positions) float32 distance cache of farthest-point sampling: 256 MiB
_HILBERT_ORDER = 16


class GroupSampler:
    """Partition N scan positions into G = max(1, N // batch_size) groups, anew or reordered each iteration.

    positions_px: (N, 2) scan positions (y, x) in pixels (any length unit works; only geometry matters).
    mode: 'random' (new random partition every iteration), 'compact' (spatially contiguous k-means clusters,
    fixed; order reshuffled every iteration) or 'sparse' (each group spread over the whole scan, fixed; order
    reshuffled every iteration).
    sparse_fps_max_positions: above this N, 'sparse' uses the O(N log N) Hilbert-curve grouping instead of
    O(N²) farthest-point sampling. A constant, not a config key: both give groups spread over the whole scan
    (``describe_groups`` measures it), and 16384 positions is where farthest-point sampling's distance cache
    reaches _FPS_MAX_CELLS and its time seconds; it changes how, not whether, the groups are sparse."""

    def __init__(
        self,
        positions_px: np.ndarray,
        batch_size: int,
        mode: str,
        seed: int,
        sparse_fps_max_positions: int = 16384,
    ):
        if mode not in GROUPING_MODES:
            raise ConfigError(f"unknown grouping mode '{mode}'{did_you_mean(str(mode), GROUPING_MODES)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1; got {batch_size}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0; got {seed}")
        pos = np.asarray(positions_px, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 1:
            raise DataError(f"positions have shape {pos.shape}; expected (N, 2) with N >= 1")
        if not np.isfinite(pos).all():
            raise DataError("positions contain NaN or inf; fix or drop those scan points")
        self.positions_px = pos
        self.batch_size = int(batch_size)
        self.mode = mode
        self.seed = int(seed)
        self.n_groups = max(1, pos.shape[0] // self.batch_size)
        self.method = mode
        self._fixed: list[np.ndarray] | None = None
        # iteration 0 is never a real iteration, so its stream is free for the fixed grouping
        rng = np.random.default_rng([self.seed, 0])
        if mode == "compact":
            labels = kmeans_labels(pos, self.n_groups, rng)
            self._fixed = _groups_from_labels(labels, self.n_groups)
        elif mode == "sparse":
            n = pos.shape[0]
            if n > sparse_fps_max_positions or n * self.n_groups > _FPS_MAX_CELLS:
                self.method = "sparse-hilbert"
                order = np.argsort(hilbert_keys(pos), kind="stable")
                self._fixed = [np.sort(order[g :: self.n_groups]) for g in range(self.n_groups)]
            else:
                self.method = "sparse-fps"
                self._fixed = _groups_from_labels(farthest_point_labels(pos, self.n_groups, rng), self.n_groups)
        if self._fixed is not None:
            for g in self._fixed:
                g.flags.writeable = False

    def groups(self, iteration: int) -> list[np.ndarray]:
        """Index arrays (int64, each sorted ascending) of the groups of 1-based `iteration`, in visiting order."""
        if iteration < 1:
            raise ValueError(f"iterations are 1-based; got {iteration}")
        rng = np.random.default_rng([self.seed, iteration])
        if self._fixed is None:
            perm = rng.permutation(self.positions_px.shape[0])
            # sorted indices read contiguously from HDF5, which also needs them increasing for fancy indexing
            return [np.sort(g) for g in np.array_split(perm, self.n_groups)]
        return [self._fixed[k] for k in rng.permutation(len(self._fixed))]


def _groups_from_labels(labels: np.ndarray, n_labels: int) -> list[np.ndarray]:
    """Sorted index arrays of each non-empty label."""
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=n_labels))[:-1]
    return [g.astype(np.int64) for g in np.split(order, bounds) if g.size]


def kmeans_labels(points: np.ndarray, k: int, rng: np.random.Generator, max_iter: int = _KMEANS_MAX_ITER) -> np.ndarray:
    """Cluster labels (N,) int64 in [0, k) from Lloyd's k-means with k-means++ seeding.

    points: (N, D). Empty clusters are re-seeded at the point farthest from its centroid, so every label is
    used whenever N >= k and the points are distinct."""
    n = points.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    centroids = _kmeans_plus_plus(points, k, rng)
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(max_iter):
        dist, new_labels = cKDTree(centroids).query(points)
        counts = np.bincount(new_labels, minlength=k)
        for empty in np.flatnonzero(counts == 0):
            far = int(np.argmax(dist))
            new_labels[far] = empty
            dist[far] = 0.0
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        counts = np.bincount(labels, minlength=k)
        used = counts > 0
        for d in range(points.shape[1]):
            centroids[used, d] = np.bincount(labels, weights=points[:, d], minlength=k)[used] / counts[used]
    return labels


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, D) initial centroids: each next one drawn with probability ∝ squared distance to the nearest chosen."""
    n = points.shape[0]
    columns = np.ascontiguousarray(points.T)  # per-axis rows: (N, D).sum(axis=1) is several times slower

    def sq_dist(p: np.ndarray) -> np.ndarray:
        d2 = (columns[0] - p[0]) ** 2
        for axis in range(1, columns.shape[0]):
            d2 += (columns[axis] - p[axis]) ** 2
        return d2

    centroids = np.empty((k, points.shape[1]))
    centroids[0] = points[rng.integers(n)]
    d2 = sq_dist(centroids[0])
    for c in range(1, k):
        cum = np.cumsum(d2)
        # all remaining squared distances are 0 only if points repeat; any point then serves
        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right")) if cum[-1] > 0 else int(rng.integers(n))
        centroids[c] = points[min(i, n - 1)]
        np.minimum(d2, sq_dist(centroids[c]), out=d2)
    return centroids


def farthest_point_labels(points: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Group labels (N,) int64 from greedy max-min farthest-point sampling, round-robin over the groups.

    Group g (in turn) takes the unassigned point farthest from its own members, so each group ends up spread
    over the whole scan. Memory: one (n_groups, N) float32 distance cache. Time: O(N²)."""
    n = points.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    # min squared distance from each point to each group's members; -inf marks assigned points
    cache = np.full((n_groups, n), np.inf, dtype=np.float32)
    py, px = np.ascontiguousarray(points.T, dtype=np.float32)
    first = rng.choice(n, size=n_groups, replace=False)
    for step in range(n):
        g = step % n_groups
        i = int(first[g]) if step < n_groups else int(np.argmax(cache[g]))
        labels[i] = g
        cache[:, i] = -np.inf
        d2 = (py - py[i]) ** 2 + (px - px[i]) ** 2
        np.minimum(cache[g], d2, out=cache[g])
    return labels


def hilbert_keys(points: np.ndarray, order: int = _HILBERT_ORDER) -> np.ndarray:
    """Position of each point (N, 2) along a Hilbert curve over its bounding square, as int64 keys (N,).

    Points are quantised to a 2^order × 2^order grid with one scale for both axes, so the curve keeps the
    scan's aspect ratio."""
    lo = points.min(axis=0)
    extent = float((points.max(axis=0) - lo).max())
    side = 1 << order
    scale = (side - 1) / extent if extent > 0 else 0.0
    q = np.rint((points - lo) * scale).astype(np.int64)
    return hilbert_index(q[:, 0], q[:, 1], order)


def hilbert_index(y: np.ndarray, x: np.ndarray, order: int) -> np.ndarray:
    """Hilbert-curve index (int64) of integer cells (y, x) in [0, 2^order); consecutive indices are neighbours."""
    y = y.astype(np.int64).copy()
    x = x.astype(np.int64).copy()
    full = (1 << order) - 1
    key = np.zeros_like(x)
    s = 1 << (order - 1)
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        key += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        # rotate the quadrant so the sub-curve inside it starts and ends where the parent curve expects
        flip = ~ry & rx
        x = np.where(flip, full - x, x)
        y = np.where(flip, full - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s >>= 1
    return key


def mean_nn_spread(positions_px: np.ndarray, groups: list[np.ndarray]) -> float:
    """Mean distance [px] from each position to its nearest neighbour within its own group.

    Small for compact groups (≈ the scan step), large for sparse ones; groups of one point are skipped."""
    pos = np.asarray(positions_px, dtype=np.float64)
    total, count = 0.0, 0
    for g in groups:
        if len(g) < 2:
            continue
        dist, _ = cKDTree(pos[g]).query(pos[g], k=2)
        total += float(dist[:, 1].sum())
        count += len(g)
    return total / count if count else float("nan")


def describe_groups(positions_px: np.ndarray, groups: list[np.ndarray]) -> dict[str, float]:
    """Summary for logs: number of groups, smallest and largest size, mean within-group NN spread [px]."""
    sizes = [len(g) for g in groups]
    return {
        "n_groups": float(len(groups)),
        "min_size": float(min(sizes)),
        "max_size": float(max(sizes)),
        "mean_nn_spread_px": mean_nn_spread(positions_px, groups),
    }


def evenly_spread(n_items: int, count: int) -> np.ndarray:
    """At most ``count`` indices spread evenly over 0..n_items-1, the first and the last among them (all of them
    when there are not more than ``count``)."""
    if count >= n_items:
        return np.arange(n_items)
    return np.unique(np.round(np.linspace(0, n_items - 1, count)).astype(np.int64))
