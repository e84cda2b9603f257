"""The global scan model: formulas, exact reproduction of known distortions, gradients, the global Gauss-Newton
step on an exact small problem, and probe windows that never leave the canvas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptyopt.data import raster_positions_ang
from ptyopt.model.scan_model import ScanModel
from ptyopt.model.state import make_geometry
from ptyopt.physics import split_positions
from ptyopt.physics.scan import (
    affine_matrix,
    global_step,
    least_squares_fit,
    normalised_time,
    orthogonal_drift_design,
    scan_design,
    scan_displacement,
)
from ptyopt.simulate.abtem_driver import scan_positions_ang
from ptyopt.simulate.presets import get_preset, with_overrides
from tests.solvers.conftest import make_problem, synthetic_path  # noqa: F401  (fixtures)

F64 = torch.float64


def test_affine_matrix_formulas():
    np.testing.assert_array_equal(affine_matrix(), np.eye(2))
    np.testing.assert_allclose(affine_matrix(scale=0.02), 1.02 * np.eye(2))
    quarter = affine_matrix(rotation_mrad=1000 * math.pi / 2)  # turns x = (0, 1) into y = (1, 0)
    np.testing.assert_allclose(quarter @ [0.0, 1.0], [1.0, 0.0], atol=1e-15)
    sheared = affine_matrix(shear=0.1)
    np.testing.assert_allclose(sheared, [[1, 0.05], [0.05, 1]])
    np.testing.assert_allclose(affine_matrix(asymmetry=0.1), [[1.05, 0], [0, 0.95]])


def test_normalised_time_spans_minus_to_plus_half():
    np.testing.assert_allclose(normalised_time(np.array([3.0, 5.0, 7.0])), [-0.5, 0.0, 0.5])
    np.testing.assert_array_equal(normalised_time(np.array([2.0])), [0.0])


def _geometry(scan=(6, 7), step_ang=0.5, dx_ang=0.25, order=None, margin_px=4):
    positions = raster_positions_ang(scan, step_ang)
    acquisition = np.arange(len(positions)) if order is None else order
    return make_geometry(positions, 16, dx_ang, 0.0197, margin_px, acquisition)


def test_linear_drift_of_a_raster_is_an_affine_map_and_higher_orders_are_not():
    geometry = _geometry()
    scan = ScanModel(geometry, 2, dtype=F64, device="cpu")
    phi = scan.design_all
    assert torch.count_nonzero(phi[:, 3]) == 0  # tau is affine in the raster position: nothing left for d_1
    assert phi[:, 4].abs().max() > 1e-3  # tau^2 is not
    np.testing.assert_allclose((phi[:, :3].T @ phi[:, 4]).numpy(), 0, atol=1e-12)
    # a scan acquired in another order keeps a linear drift of its own
    shuffled = ScanModel(_geometry(order=np.random.default_rng(0).permutation(42).astype(float)), 1,
                         dtype=F64, device="cpu")
    assert shuffled.design_all[:, 3].abs().max() > 1e-3


@pytest.mark.parametrize("affine, drift", [((12.0, 0.02, 0.01), (0.0, 0.0)), ((0.0, 0.0, 0.0), (0.6, -0.8)),
                                           ((-8.0, -0.03, 0.02), (1.0, 0.5))])
def test_the_model_reproduces_the_simulated_distortion_exactly(affine, drift):
    """simulate's true positions (jitter 0) = nominal + the ScanModel displacement of the fitted parameters."""
    spec = with_overrides(get_preset("sto-tiny"), scan_shape=(7, 9), scan_affine=affine, drift_ang=drift)
    nominal, true = scan_positions_ang(spec)
    raw = scan_displacement(torch.from_numpy(affine_matrix(*affine) - np.eye(2)),
                            torch.tensor([[0.0, 0.0], list(drift)], dtype=F64),
                            torch.from_numpy(nominal - nominal.mean(0)),
                            torch.from_numpy(normalised_time(np.arange(len(nominal)))))
    np.testing.assert_allclose(true - nominal, raw.numpy(), atol=1e-12)
    dx_ang = 0.2
    geometry = make_geometry(nominal, 16, dx_ang, 0.0197, 30, np.arange(len(nominal)))
    scan = ScanModel(geometry, 1, dtype=F64, device="cpu")
    theta = least_squares_fit(torch.from_numpy((true - nominal) / dx_ang), scan.design_all)
    state = {"scan_affine": theta[:, :2].clone(), "scan_drift_px": theta[:, 2:].T.clone(),
             "position_offsets_px": torch.zeros(len(nominal), 2, dtype=F64)}
    index = torch.arange(len(nominal))
    centres = scan.centres_px(state, index).numpy()
    np.testing.assert_allclose(centres * dx_ang + np.asarray(geometry.origin_ang), true, atol=1e-10)
    if drift == (0.0, 0.0):  # a pure affine error is the affine itself (about the scan centre)
        np.testing.assert_allclose(state["scan_affine"].numpy(), affine_matrix(*affine) - np.eye(2), atol=1e-10)


def test_global_step_solves_an_exact_small_problem():
    """Positions whose own systems say 'move by Phi theta*' (any SPD G_n) give dtheta = theta* exactly."""
    g = torch.Generator().manual_seed(0)
    phi = scan_design(torch.randn(30, 2, generator=g, dtype=F64) * 5, torch.rand(30, generator=g, dtype=F64) - 0.5, 2)
    theta = torch.randn(2, phi.shape[1], generator=g, dtype=F64)
    root = torch.randn(30, 2, 2, generator=g, dtype=F64)
    gram = root @ root.transpose(1, 2) + 0.1 * torch.eye(2, dtype=F64)
    rhs = torch.einsum("nab,nb->na", gram, phi @ theta.T)
    torch.testing.assert_close(global_step(gram, rhs, phi, damping=0.0), theta, rtol=1e-6, atol=1e-9)


def test_orthogonal_design_spans_the_raw_design():
    g = torch.Generator().manual_seed(1)
    raw = scan_design(torch.randn(40, 2, generator=g, dtype=F64), torch.rand(40, generator=g, dtype=F64) - 0.5, 3)
    orthogonal = orthogonal_drift_design(raw)
    target = raw @ torch.randn(raw.shape[1], 2, generator=g, dtype=F64)
    fit = least_squares_fit(target, orthogonal)
    torch.testing.assert_close(orthogonal @ fit.T, target, rtol=1e-9, atol=1e-9)


def test_gradients_of_the_global_parameters_match_finite_differences(make_problem):  # noqa: F811
    problem = make_problem(n_slices=2, scan_drift_order=2)
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    g = torch.Generator().manual_seed(2)
    state["object_phase"] = 0.5 * torch.rand(state["object_phase"].shape, generator=g, dtype=F64)
    state["scan_affine"] = 0.02 * torch.randn(2, 2, generator=g, dtype=F64)
    state["scan_drift_px"] = 0.3 * torch.randn(3, 2, generator=g, dtype=F64)
    indices = torch.arange(16)
    weights = torch.rand(16, 16, 16, generator=g, dtype=F64)

    def loss(affine, drift):
        return (problem.model({**state, "scan_affine": affine, "scan_drift_px": drift}, indices).intensities
                * weights).sum()

    affine = state["scan_affine"].clone().requires_grad_(True)
    drift = state["scan_drift_px"].clone().requires_grad_(True)
    grad_affine, grad_drift = torch.autograd.grad(loss(affine, drift), [affine, drift])
    eps = 1e-6
    for tensor, grad, other in ((state["scan_affine"], grad_affine, "affine"), (state["scan_drift_px"], grad_drift,
                                                                                 "drift")):
        for index in np.ndindex(*tensor.shape):
            plus, minus = tensor.clone(), tensor.clone()
            plus[index] += eps
            minus[index] -= eps
            if other == "affine":
                numeric = (loss(plus, state["scan_drift_px"]) - loss(minus, state["scan_drift_px"])) / (2 * eps)
            else:
                numeric = (loss(state["scan_affine"], plus) - loss(state["scan_affine"], minus)) / (2 * eps)
            assert abs(float(numeric) - float(grad[index])) <= 1e-5 * max(1.0, abs(float(numeric))), (other, index)


def test_refined_positions_never_wrap_the_probe_or_leave_the_canvas():
    geometry = _geometry(margin_px=3)
    scan = ScanModel(geometry, 1, dtype=F64, device="cpu")
    n = len(geometry.nominal_centres_px)
    state = {"scan_affine": torch.tensor([[0.8, 0.0], [0.0, -0.9]], dtype=F64),
             "scan_drift_px": torch.tensor([[40.0, -40.0], [0.0, 0.0]], dtype=F64),
             "position_offsets_px": 25 * torch.randn(n, 2, dtype=F64)}
    crop, shift = split_positions(scan.centres_px(state, torch.arange(n)), geometry.window_px)
    assert (crop >= 0).all()
    assert (crop[:, 0] + geometry.window_px[0] <= geometry.canvas_px[0]).all()
    assert (crop[:, 1] + geometry.window_px[1] <= geometry.canvas_px[1]).all()
    assert shift.abs().max() <= 0.5
    total = scan.total_displacement_px(state)
    torch.testing.assert_close(scan.nominal_px + total, scan.centres_px(state, torch.arange(n)))


def test_position_errors_after_removing_the_best_affine():
    from ptyopt.evaluate.probe_positions import position_errors

    nominal = raster_positions_ang((8, 8), 0.5)
    distorted = nominal + (nominal - nominal.mean(0)) @ (affine_matrix(20.0, 0.03, 0.01) - np.eye(2)).T + [0.4, -0.2]
    errors = position_errors(nominal, distorted, nominal)
    assert errors["position_rms_error_centred_ang"] > 0.02
    assert errors["position_rms_error_affine_ang"] < 1e-12  # an affine error is all explained
    jitter = np.random.default_rng(0).normal(scale=0.05, size=nominal.shape)
    noisy = position_errors(nominal, distorted + jitter, nominal)
    assert 0.8 * 0.05 * np.sqrt(2) < noisy["position_rms_error_affine_ang"] < 1.1 * 0.05 * np.sqrt(2)
    assert noisy["nominal_rms_error_affine_ang"] == noisy["position_rms_error_affine_ang"]


def test_simulate_refuses_a_malformed_distortion_option(tmp_path):
    from typer.testing import CliRunner

    from ptyopt.cli import app

    for option, value in (("--drift-ang", "1.0"), ("--scan-affine", "10,0.02"), ("--drift-ang", "a,b")):
        result = CliRunner().invoke(app, ["simulate", "--preset", "sto-tiny", "--out", str(tmp_path / "x.h5"),
                                          f"{option}={value}"])
        assert result.exit_code == 2, result.output
        assert option in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.h5").exists()


def test_the_global_scan_model_round_trips_through_result_h5(tmp_path):
    from ptyopt.io.result_file import GlobalScan, ReconstructionResult, read_result, write_result

    n = 6
    scan = GlobalScan(affine_matrix=np.array([[1.01, 0.02], [-0.01, 0.99]]), drift_ang=np.array([[0.1, 0.2],
                      [0.3, -0.4], [0.05, 0.0]]), centre_ang=np.array([1.0, 2.0]),
                      displacement_ang=np.arange(2 * n, dtype=float).reshape(n, 2),
                      acquisition_time=np.linspace(-0.5, 0.5, n))
    result = ReconstructionResult(
        object_phase=np.zeros((1, 1, 4, 4), np.float32), object_amplitude=np.ones((1, 1, 4, 4), np.float32),
        occupancy=np.ones(1), probe=np.ones((1, 4, 4), np.complex64), positions_ang=np.zeros((n, 2)),
        nominal_positions_ang=np.zeros((n, 2)), tilts_mrad=np.zeros((1, 2)), slice_thickness_ang=np.ones(1),
        dx_ang=0.5, origin_ang=(0.0, 0.0), scan=scan)
    back = read_result(write_result(tmp_path / "result.h5", result)).scan
    for name in ("affine_matrix", "drift_ang", "centre_ang", "displacement_ang", "acquisition_time"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scan, name))


def test_warp_image_moves_a_feature_by_the_affine_map_and_zero_is_identity():
    from ptyopt.physics.scan import warp_image

    yy, xx = torch.meshgrid(torch.arange(48, dtype=F64), torch.arange(48, dtype=F64), indexing="ij")
    blob = torch.exp(-((yy - 30) ** 2 + (xx - 18) ** 2) / 8)
    centre = torch.tensor([24.0, 24.0], dtype=F64)
    torch.testing.assert_close(warp_image(blob, torch.zeros(2, 2, dtype=F64), centre), blob)
    delta = torch.tensor([[0.05, 0.02], [-0.03, 0.04]], dtype=F64)
    moved = warp_image(blob, delta, centre)
    expected = centre + (torch.eye(2, dtype=F64) + delta) @ (torch.tensor([30.0, 18.0], dtype=F64) - centre)
    weight = moved / moved.sum()
    found = torch.stack([(weight * yy).sum(), (weight * xx).sum()])
    torch.testing.assert_close(found, expected, atol=0.05, rtol=0)


def test_a_coordinated_move_keeps_positions_and_object_together():
    from ptyopt.solvers.scan_search import coordinated_state

    geometry = _geometry()
    scan = ScanModel(geometry, 1, dtype=F64, device="cpu")
    n = len(geometry.nominal_centres_px)
    g = torch.Generator().manual_seed(3)
    state = {"scan_affine": 0.02 * torch.randn(2, 2, generator=g, dtype=F64),
             "scan_drift_px": torch.randn(2, 2, generator=g, dtype=F64),
             "position_offsets_px": 0.3 * torch.randn(n, 2, generator=g, dtype=F64),
             "object_phase": torch.rand(1, 2, *geometry.canvas_px, generator=g, dtype=F64),
             "object_amplitude": torch.ones(1, 2, *geometry.canvas_px, dtype=F64)}
    centre = scan.nominal_px.mean(0)
    delta = torch.tensor([[0.01, -0.02], [0.015, 0.005]], dtype=F64)
    moved = coordinated_state(state, delta, centre)
    index = torch.arange(n)
    before, after = scan.centres_px(state, index), scan.centres_px(moved, index)
    torch.testing.assert_close(after, centre + (before - centre) @ (torch.eye(2, dtype=F64) + delta).T)
    same = coordinated_state(state, torch.zeros(2, 2, dtype=F64), centre)
    for key in state:
        torch.testing.assert_close(same[key], state[key])


def test_the_search_sums_its_misfit_over_an_evenly_spread_subset():
    from ptyopt.config import ScanSearchConfig
    from ptyopt.solvers.scan_search import CoordinatedAffineSearch

    search = CoordinatedAffineSearch.__new__(CoordinatedAffineSearch)
    search.config = ScanSearchConfig(positions_fraction=0.5)
    np.testing.assert_array_equal(search.subset(np.array([9, 1, 5, 3, 7, 0, 2, 4, 6, 8])), [0, 2, 4, 6, 8])
    search.config = ScanSearchConfig()
    assert len(search.subset(np.arange(7))) == 7
