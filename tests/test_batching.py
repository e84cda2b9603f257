import time

import numpy as np
import pytest

from ptyopt.batching import (
    GROUPING_MODES,
    GroupSampler,
    describe_groups,
    hilbert_index,
    kmeans_labels,
    mean_nn_spread,
)
from ptyopt.errors import ConfigError, DataError


def _grid(ny: int, nx: int, step_px: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[:ny, :nx]
    return step_px * np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)


GRID = _grid(40, 40, step_px=2.5)  # 1600 positions, 100 groups of 16
RNG_POSITIONS = np.random.default_rng(7).uniform(0, 300, size=(1000, 2))  # 1000 // 32 = 31 uneven groups
# (mode, fps threshold): the sparse mode twice, once through the Hilbert fallback
VARIANTS = [("random", 16384), ("compact", 16384), ("sparse", 16384), ("sparse", 0)]
VARIANT_IDS = ["random", "compact", "sparse-fps", "sparse-hilbert"]


def _assert_partition(groups, n):
    assert all(g.dtype == np.int64 and g.ndim == 1 and g.size > 0 for g in groups)
    assert all(np.all(np.diff(g) > 0) for g in groups), "indices within a group are sorted ascending"
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(n))


def _partition(groups):
    return {tuple(g.tolist()) for g in groups}


@pytest.mark.parametrize(("mode", "threshold"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("positions", [GRID, RNG_POSITIONS], ids=["grid", "uniform"])
def test_every_index_exactly_once(mode, threshold, positions):
    n, batch_size = len(positions), 16 if positions is GRID else 32
    sampler = GroupSampler(positions, batch_size, mode, seed=3, sparse_fps_max_positions=threshold)
    expected_groups = n // batch_size
    for iteration in (1, 2, 50):
        groups = sampler.groups(iteration)
        _assert_partition(groups, n)
        assert len(groups) == expected_groups
        if mode != "compact":  # k-means clusters vary in size
            assert {len(g) for g in groups} <= {n // expected_groups, n // expected_groups + 1}


@pytest.mark.parametrize("mode", GROUPING_MODES)
def test_deterministic_and_independent_of_call_history(mode):
    fresh = GroupSampler(GRID, 16, mode, seed=11)
    used = GroupSampler(GRID, 16, mode, seed=11)
    for iteration in (1, 2, 3, 4):
        used.groups(iteration)
    used.groups(9)
    for a, b in zip(fresh.groups(5), used.groups(5), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", GROUPING_MODES)
def test_iterations_change_the_order_and_seeds_change_the_groups(mode):
    sampler = GroupSampler(GRID, 16, mode, seed=0)
    first, second = sampler.groups(1), sampler.groups(2)
    assert [g.tolist() for g in first] != [g.tolist() for g in second]
    if mode == "random":
        assert _partition(first) != _partition(second)
    else:
        # compact and sparse groups are fixed for the run; only the visiting order changes
        assert _partition(first) == _partition(second)
    other_seed = GroupSampler(GRID, 16, mode, seed=1).groups(1)
    assert [g.tolist() for g in other_seed] != [g.tolist() for g in first]


@pytest.mark.parametrize("positions", [GRID, RNG_POSITIONS], ids=["grid", "uniform"])
def test_compact_groups_are_tighter_and_sparse_groups_wider_than_random(positions):
    spread = {
        name: mean_nn_spread(positions, GroupSampler(positions, 16, mode, 5, sparse_fps_max_positions=thr).groups(1))
        for name, (mode, thr) in zip(VARIANT_IDS, VARIANTS, strict=True)
    }
    # measured: random 14 / 40 px, compact 2.5 / 5, fps 22 / 65, hilbert 19 / 55 (grid / uniform)
    assert spread["compact"] < 0.5 * spread["random"]
    assert spread["sparse-fps"] > 1.3 * spread["random"]
    assert spread["sparse-hilbert"] > 1.2 * spread["random"]
    assert spread["sparse-fps"] > 4 * spread["compact"]
    assert spread["sparse-hilbert"] > 4 * spread["compact"]


def test_compact_on_a_grid_gives_neighbouring_positions():
    assert mean_nn_spread(GRID, GroupSampler(GRID, 16, "compact", seed=0).groups(1)) == pytest.approx(2.5)


def test_sparse_fallback_is_taken_and_differs_from_farthest_point_sampling():
    fps = GroupSampler(GRID, 16, "sparse", seed=0)
    hilbert = GroupSampler(GRID, 16, "sparse", seed=0, sparse_fps_max_positions=len(GRID) - 1)
    assert (fps.method, hilbert.method) == ("sparse-fps", "sparse-hilbert")
    assert _partition(fps.groups(1)) != _partition(hilbert.groups(1))
    _assert_partition(hilbert.groups(4), len(GRID))


def test_fixed_groups_cannot_be_modified_by_the_caller():
    groups = GroupSampler(GRID, 16, "compact", seed=0).groups(1)
    with pytest.raises(ValueError, match="read-only"):
        groups[0][0] = 5


@pytest.mark.parametrize("mode", GROUPING_MODES)
def test_batch_larger_than_scan_gives_one_group(mode):
    groups = GroupSampler(GRID[:10], 64, mode, seed=0).groups(1)
    assert len(groups) == 1
    np.testing.assert_array_equal(groups[0], np.arange(10))


@pytest.mark.parametrize("mode", GROUPING_MODES)
def test_batch_size_one_gives_single_positions(mode):
    groups = GroupSampler(GRID[:30], 1, mode, seed=0).groups(1)
    assert len(groups) == 30
    _assert_partition(groups, 30)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_hilbert_index_visits_every_cell_once_through_neighbours(order):
    side = 1 << order
    y, x = np.divmod(np.arange(side * side), side)
    keys = hilbert_index(y, x, order)
    np.testing.assert_array_equal(np.sort(keys), np.arange(side * side))
    path = np.stack([y, x], axis=1)[np.argsort(keys)]
    np.testing.assert_array_equal(np.abs(np.diff(path, axis=0)).sum(axis=1), 1)


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [0.0, 100.0], [100.0, 0.0], [100.0, 100.0]])
    truth = np.repeat(np.arange(4), 50)
    points = centres[truth] + rng.normal(scale=3.0, size=(200, 2))
    labels = kmeans_labels(points, 4, np.random.default_rng(1))
    # same partition up to a relabelling
    assert len({(t, lab) for t, lab in zip(truth, labels, strict=True)}) == 4
    assert len(set(labels.tolist())) == 4


def test_describe_groups_by_hand():
    positions = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 10.0], [0.0, 13.0], [5.0, 5.0]])
    info = describe_groups(positions, [np.array([0, 1]), np.array([2, 3]), np.array([4])])
    # nearest neighbours within groups: 1, 1, 3, 3; the single-point group is skipped
    assert info == {"n_groups": 3.0, "min_size": 1.0, "max_size": 2.0, "mean_nn_spread_px": 2.0}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "compat"}, ConfigError, r"unknown grouping mode 'compat'; did you mean 'compact'\?"),
        ({"mode": "hilbert"}, ConfigError, r"unknown grouping mode 'hilbert'; valid choices: compact, random, sparse"),
        ({"batch_size": 0}, ConfigError, r"batch_size must be >= 1; got 0"),
        ({"seed": -1}, ConfigError, r"seed must be >= 0; got -1"),
        ({"positions_px": np.zeros((10, 3))}, DataError, r"shape \(10, 3\); expected \(N, 2\)"),
        ({"positions_px": np.zeros((0, 2))}, DataError, r"expected \(N, 2\) with N >= 1"),
        ({"positions_px": np.array([[0.0, np.nan], [1.0, 1.0]])}, DataError, r"NaN or inf"),
    ],
)
def test_bad_input_says_what_to_change(kwargs, error, message):
    args = {"positions_px": GRID, "batch_size": 16, "mode": "random", "seed": 0, **kwargs}
    with pytest.raises(error, match=message):
        GroupSampler(**args)


def test_iteration_zero_is_rejected():
    with pytest.raises(ValueError, match="1-based"):
        GroupSampler(GRID, 16, "random", seed=0).groups(0)


@pytest.mark.parametrize("mode", GROUPING_MODES)
def test_poster_sized_scan_groups(mode, capsys):
    positions = _grid(200, 200)
    start = time.perf_counter()
    sampler = GroupSampler(positions, 32, mode, seed=0)
    groups = sampler.groups(1)
    elapsed = time.perf_counter() - start
    _assert_partition(groups, len(positions))
    assert len(groups) == 1250
    with capsys.disabled():
        print(f"\n40000 positions, batch 32, {sampler.method}: {elapsed:.2f} s")
