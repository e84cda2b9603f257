"""abTEM-driven simulation: presets, ground truth physics, noise, caching, CLI, the shipped demo dataset."""

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("abtem")

from ptyopt.cli import app  # noqa: E402
from ptyopt.data import read_dataset, write_dataset  # noqa: E402
from ptyopt.demo import demo_dataset_path  # noqa: E402
from ptyopt.errors import ConfigError  # noqa: E402
from ptyopt.simulate import run as sim_run  # noqa: E402
from ptyopt.simulate.consistency import r_factor, truth_patterns  # noqa: E402
from ptyopt.simulate.presets import PRESETS, SimulationSpec, get_preset, with_overrides  # noqa: E402

pytestmark = pytest.mark.abtem
A = 3.905


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("simcache")


@pytest.fixture(scope="module")
def tiny(cache_dir):
    spec = with_overrides(get_preset("sto-tiny"), position_jitter_ang=0.05)
    return spec, sim_run.simulate_dataset(spec, cache_dir=cache_dir)


def _site_phase(truth, y_ang, x_ang):
    """Slice-summed truth phase at a point given in the positions' frame (nearest pixel)."""
    summed = truth.phase_slices.sum(axis=0)
    iy = int(round((y_ang - truth.origin_ang[0]) / truth.dx_ang))
    ix = int(round((x_ang - truth.origin_ang[1]) / truth.dx_ang))
    return summed[iy, ix]


def test_truth_physics_lattice_columns_and_mean_phase(tiny):
    spec, ds = tiny
    truth = ds.truth
    sr = np.mean([_site_phase(truth, i * A, j * A) for i in (1, 2) for j in (1, 2)])
    tio = np.mean([_site_phase(truth, (i + 0.5) * A, (j + 0.5) * A) for i in (0, 1) for j in (0, 1)])
    oxy = np.mean([_site_phase(truth, (i + 0.5) * A, j * A) for i in (0, 1) for j in (1, 2)])
    midway = _site_phase(truth, 0.25 * A, 0.25 * A)
    assert sr > 2.5 * oxy and tio > 2.5 * oxy and oxy > 2 * midway > 0
    # square lattice of 3.905 Å: the summed phase is periodic by one cell along y and x
    summed = truth.phase_slices.sum(axis=0)
    period_px = round(A / truth.dx_ang * spec.cell_repeats) // spec.cell_repeats
    assert A / truth.dx_ang == pytest.approx(period_px, abs=1e-6)
    np.testing.assert_allclose(summed[:-period_px], summed[period_px:], atol=1e-4)
    np.testing.assert_allclose(summed[:, :-period_px], summed[:, period_px:], atol=1e-4)
    # mean phase per unit cell about 0.057 rad at 300 kV (mean inner potential ~22 V)
    assert summed.mean() / spec.thickness_uc == pytest.approx(0.057, rel=0.05)
    assert truth.fine_phase_slices.shape[0] == 2 * spec.thickness_uc
    np.testing.assert_allclose(truth.fine_phase_slices.sum(0), summed, rtol=1e-5, atol=1e-6)
    assert truth.attrs["abtem_version"] and truth.attrs["simulation"]["name"] == "sto-tiny"


def test_truth_is_consistent_with_the_data(tiny):
    """ptyopt's forward model on the truth predicts the abTEM data; misaligned positions do not."""
    _, ds = tiny
    r = r_factor(truth_patterns(ds), ds.meas)
    assert r < 0.04
    shifted = ds.replace(truth=type(ds.truth)(**{**ds.truth.__dict__, "positions_ang": ds.truth.positions_ang + 0.5}))
    assert r_factor(truth_patterns(shifted), ds.meas) > 3 * r
    assert np.abs(ds.truth.positions_ang - ds.positions_ang).std() == pytest.approx(0.05, rel=0.4)


def test_file_round_trip_and_poisson_counts(tiny, tmp_path):
    spec, clean = tiny
    sums = clean.meas.sum(axis=(1, 2))
    assert clean.dose_e_per_ang2 is None and not clean.counts and 0.98 < sums.mean() <= 1.0001
    noisy = sim_run.add_poisson_noise(clean, 1e5, seed=3)
    assert noisy.counts and noisy.meas.dtype == np.uint32 and noisy.dose_e_per_ang2 == 1e5
    electrons = 1e5 * spec.step_ang**2
    expected = float(electrons * sums.mean())
    # mean counts = dose × step² × (pattern sum ≈ 1), within 4 standard errors of the Poisson mean
    assert noisy.mean_counts_per_pattern == pytest.approx(expected, abs=4 * np.sqrt(expected / len(sums)))
    assert np.abs(noisy.meas / electrons - clean.meas).max() > 0
    back = read_dataset(write_dataset(tmp_path / "tiny.h5", noisy))
    assert back.summary() == noisy.summary()
    np.testing.assert_array_equal(back.meas, noisy.meas)
    np.testing.assert_array_equal(back.truth.phase_slices, noisy.truth.phase_slices)
    np.testing.assert_array_equal(back.truth.probe, noisy.truth.probe)
    assert back.truth.attrs["simulation"] == noisy.truth.attrs["simulation"]


def test_cache_makes_reruns_instant(tiny, cache_dir, monkeypatch):
    spec, first = tiny

    def boom(*args, **kwargs):
        raise AssertionError("abTEM was called although the result is cached")

    monkeypatch.setattr("ptyopt.simulate.abtem_driver.simulate_patterns", boom)
    again = sim_run.simulate_dataset(spec.model_copy(update={"dose_e_per_ang2": 1e4}), cache_dir=cache_dir)
    assert again.counts and again.meas.shape == first.meas.shape
    with pytest.raises(AssertionError, match="cached"):
        sim_run.simulate_dataset(with_overrides(spec, seed=99), cache_dir=cache_dir)


def test_cli_simulate_and_errors(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("PTYOPT_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "d.h5"
    result = runner.invoke(app, ["simulate", "--preset", "sto-tiny", "--out", str(out), "--dose", "1e5",
                                 "--scan", "3,4", "--phonons", "0", "--tilt-mrad", "1,-2"])
    assert result.exit_code == 0, result.output
    ds = read_dataset(out)
    assert ds.scan_shape == (3, 4) and ds.counts and ds.dose_e_per_ang2 == 1e5
    assert ds.truth.attrs["tilt_mrad"] == [1.0, -2.0]
    bad = runner.invoke(app, ["simulate", "--preset", "sto-tiyn", "--out", str(out)])
    assert bad.exit_code == 2 and "did you mean 'sto-tiny'" in bad.output
    bad = runner.invoke(app, ["simulate", "--preset", "sto-tiny", "--out", str(out), "--thickness-uc", "3",
                              "--recon-slices", "4"])
    assert bad.exit_code == 2 and "recon_slices" in bad.output


def test_presets_are_valid_and_scaled():
    assert {"sto-tiny", "sto-demo", "sto-small", "sto-poster"} <= set(PRESETS)
    small, poster = PRESETS["sto-small"], PRESETS["sto-poster"]
    assert small.scan_shape == (64, 64) and small.detector_px == 128 and small.thickness_uc == 8
    assert small.frozen_phonons > 0
    assert poster.scan_shape == (200, 200) and poster.recon_scan_region == ((50, 150), (50, 150))
    assert poster.recon_slices == 32
    with pytest.raises(ConfigError, match="sim_gpts"):
        with_overrides(small, sim_gpts=100)


def test_shipped_demo_dataset_matches_its_preset():
    path = demo_dataset_path()
    assert path.exists() and path.stat().st_size <= 10 * 2**20
    ds = read_dataset(path)
    spec = PRESETS["sto-demo"]
    # (a file written before a field existed records no value for it: its default, which changes nothing)
    assert SimulationSpec.model_validate(ds.truth.attrs["simulation"]) == spec
    assert ds.counts and ds.dose_e_per_ang2 == spec.dose_e_per_ang2 and ds.scan_shape == spec.scan_shape
    assert r_factor(truth_patterns(ds) * spec.dose_e_per_ang2 * spec.step_ang**2, ds.meas) < 0.08


def test_partial_coherence_variants(tmp_path):
    from ptyopt.simulate.abtem_driver import defocus_samples

    spec = with_overrides(get_preset("sto-tiny"), scan_shape=(3, 3), frozen_phonons=0)
    values, weights = defocus_samples(with_overrides(spec, focal_spread_ang=20.0))
    assert weights.sum() == pytest.approx(1.0) and values.mean() == pytest.approx(spec.defocus_ang)
    assert values.max() - values.min() == pytest.approx(80.0)  # ±2 sigma
    coherent = sim_run.simulate_dataset(spec, cache_dir=tmp_path)
    spread = sim_run.simulate_dataset(with_overrides(spec, focal_spread_ang=20.0), cache_dir=tmp_path)
    assert r_factor(spread.meas, coherent.meas) > 0.01
    # source size: a Gaussian blur along the scan axes only
    cube = np.zeros((25, 4, 4), dtype=np.float32)
    cube[12] = 1.0
    blurred = sim_run.apply_source_size(cube, with_overrides(spec, scan_shape=(5, 5), source_size_ang=0.6))
    assert blurred[12, 0, 0] < 0.5 and blurred[7, 0, 0] > 0.05 and blurred[0, 0, 0] < blurred[7, 0, 0]
    np.testing.assert_allclose(blurred[12], blurred[12, 0, 0])  # each pattern keeps its shape
