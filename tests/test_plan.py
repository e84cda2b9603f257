"""ptyopt plan: its numbers against the formulas, its warnings on crafted bad setups, the CLI."""

import dataclasses
import json
import math
from importlib import resources

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.physics.constants import wavelength_ang
from ptyopt.plan import PlanInputs, bench_record, disk_overlap_fraction, make_plan, probe_footprint_ang

runner = CliRunner()

# 300 kV, 21.4 mrad, 100 Å underfocus, 0.4 Å step, 64 px of 2/19.525 1/Å, 8 × 3.905 Å slices: the cpu-small bench
GOOD = PlanInputs(energy_kv=300, conv_angle_mrad=21.4, step_ang=0.4, dk_inv_ang=2 / 19.525, detector_px=64,
                  n_positions=1024, scan_extent_ang=(12.4, 12.4), n_slices=8, slice_thickness_ang=3.905,
                  defocus_ang=100.0, probe_modes=2)


def test_two_disk_overlap_matches_its_formula_and_a_pixel_count():
    assert disk_overlap_fraction(0.0, 2.0) == pytest.approx(1.0)
    assert disk_overlap_fraction(2.0, 2.0) == 0.0 and disk_overlap_fraction(3.0, 2.0) == 0.0
    assert disk_overlap_fraction(1.0, 2.0) == pytest.approx((2 / math.pi) * (math.pi / 3 - 0.5 * math.sqrt(0.75)))
    y, x = np.mgrid[-1.5:1.5:1501j, -1.5:1.5:1501j]
    first = x**2 + y**2 <= 1
    for step in (0.3, 0.8, 1.4):
        second = (x - step) ** 2 + y**2 <= 1
        assert disk_overlap_fraction(step, 2.0) == pytest.approx((first & second).sum() / first.sum(), abs=3e-3)


def test_sampling_resolution_and_depth_numbers_follow_the_formulas():
    plan = make_plan(GOOD)
    lam, alpha = wavelength_ang(300), 21.4e-3
    assert plan.wavelength_ang == pytest.approx(0.019687, abs=1e-6)
    assert plan.dx_ang == pytest.approx(19.525 / 128)  # 1/(K dk)
    assert plan.window_ang == pytest.approx(19.525 / 2)
    assert plan.detector_max_angle_mrad == pytest.approx(lam * 32 * GOOD.dk_inv_ang * 1e3)
    assert plan.bright_field_radius_px == pytest.approx(alpha / (lam * GOOD.dk_inv_ang))
    assert plan.lateral_resolution_ang == pytest.approx(2 * plan.dx_ang)
    assert plan.depth_of_field_ang == pytest.approx(lam / alpha**2) and plan.depth_of_field_ang == pytest.approx(43.0,
                                                                                                                 abs=0.1)
    assert plan.depth_resolution_ang == pytest.approx(lam / (2 * alpha**2))  # the detector reaches past 2 alpha
    assert plan.probe_footprint_ang == pytest.approx(math.hypot(2 * alpha * 100, 1.22 * lam / alpha))
    assert plan.overlap_linear == pytest.approx(1 - 0.4 / plan.probe_footprint_ang)
    assert plan.areal_oversampling == pytest.approx(math.pi * plan.probe_footprint_ang**2 / 4 / 0.16)
    assert plan.suggested_slice_thickness_ang == pytest.approx(plan.depth_resolution_ang / 2)
    assert plan.suggested_n_slices == math.ceil(8 * 3.905 / plan.suggested_slice_thickness_ang)
    assert plan.warnings == []


def test_in_focus_footprint_is_the_airy_diameter():
    lam = wavelength_ang(200)
    assert probe_footprint_ang(lam, 25.0, 0.0) == pytest.approx(1.22 * lam / 25e-3)


def test_time_is_the_bench_record_scaled_by_fft_work():
    record = bench_record(None, "cpu")
    same = dataclasses.replace(GOOD, n_slices=record["n_slices"], probe_modes=record["probe_modes"])
    assert make_plan(same, record).time_per_iteration_s == pytest.approx(record["median_iteration_s"])
    double = dataclasses.replace(same, n_positions=2 * same.n_positions)
    assert make_plan(double, record).time_per_iteration_s == pytest.approx(2 * record["median_iteration_s"])
    assert make_plan(GOOD, None).time_per_iteration_s is None
    assert resources.files("ptyopt.data").joinpath("bench", "poster-h200.json").is_file()


def test_memory_matches_the_run_estimate():
    """The cpu-small bench recorded the run's own estimate (model.memory) for this geometry."""
    record = bench_record(None, "cpu")
    assert make_plan(GOOD).memory_per_batch_mib == pytest.approx(record["memory_estimate_mib"], rel=0.02)


@pytest.mark.parametrize(("change", "expected"), [
    ({"dk_inv_ang": 0.02}, "aperture clipped"),                     # 64 px of 0.02 1/Å end at 12.6 mrad
    ({"dk_inv_ang": 0.045}, "little dark field"),                   # ends at 28 mrad < 2 alpha
    ({"step_ang": 3.0}, "undersampled scan"),
    ({"defocus_ang": 300.0}, "probe window too small"),             # 12.8 Å footprint in a 9.8 Å window
    ({"slice_thickness_ang": 1.0, "n_slices": 31}, "slices thinner than the depth resolution"),
    ({"slice_thickness_ang": 50.0, "n_slices": 1}, "slices thicker than twice the depth resolution"),
    ({"specimen_thickness_ang": 62.5}, "the slices model 31.2 Å but the specimen is 62.5 Å"),
])
def test_each_unsafe_choice_is_warned(change, expected):
    warnings = make_plan(dataclasses.replace(GOOD, **change)).warnings
    assert any(expected in warning for warning in warnings), warnings


def test_bad_inputs_are_config_errors():
    from ptyopt.errors import ConfigError

    with pytest.raises(ConfigError, match="step_ang must be a positive number"):
        dataclasses.replace(GOOD, step_ang=0.0)
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        make_plan(dataclasses.replace(GOOD, device="gpu0"))
    assert make_plan(dataclasses.replace(GOOD, device="cuda:7")).free_memory_mib is None  # planning for elsewhere


def test_cli_plans_from_numbers_and_refuses_missing_ones(tmp_path):
    out = tmp_path / "plan.json"
    args = ["plan", "--energy-kv", "300", "--conv-angle-mrad", "21.4", "--step-ang", "3", "--scan", "8,8",
            "--detector-px", "64", "--dk-inv-ang", "0.1024", "--n-slices", "4", "--slice-thickness-ang", "4",
            "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "undersampled scan" in result.output
    payload = json.loads(out.read_text())
    assert payload["inputs"]["n_positions"] == 64 and payload["depth_of_field_ang"] == pytest.approx(43.0, abs=0.1)
    result = runner.invoke(app, ["plan", "--energy-kv", "300"])
    assert result.exit_code == 2 and "--conv-angle-mrad" in result.output


def test_cli_plans_from_a_config_with_a_changed_number(tmp_path):
    demo = resources.files("ptyopt.data").joinpath("examples", "sto-demo.h5")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(demo)},
                                      "model": {"n_slices": 4, "slice_thickness_ang": 3.905, "probe_modes": 2}}))
    result = runner.invoke(app, ["plan", str(config)])
    assert result.exit_code == 0, result.output
    assert "no warnings" in result.output and "576 positions, step 0.45" in result.output
    result = runner.invoke(app, ["plan", str(config), "--step-ang", "4"])
    assert result.exit_code == 0 and "undersampled scan" in result.output
