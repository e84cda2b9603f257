"""Position, tilt and depth constraints against their formulas."""

import pytest
import torch

from ptyopt.errors import ConfigError
from ptyopt.objective.constraints import CONSTRAINTS, apply_constraints
from ptyopt.objective.constraints.depth import shift_linear
from ptyopt.physics import frequency_grid, propagator
from tests.objective.constraints.helpers import make_ctx, make_state

F64 = torch.float64


def run(name, state, ctx=None, **params):
    cls = CONSTRAINTS.get(name)
    apply_constraints([cls(cls.Params(**params))], state, ctx or make_ctx(scan_mask=None))


# --- positions and tilts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("relax", [0.0, 0.25])
def test_position_recenter_removes_the_mean(relax):
    offsets = torch.randn(12, 2, dtype=F64) + torch.tensor([1.5, -0.7], dtype=F64)
    original = offsets.clone()
    run("position_recenter", {"position_offsets_px": offsets}, relax=relax)
    torch.testing.assert_close(offsets.mean(0), relax * original.mean(0), atol=1e-14, rtol=0)
    torch.testing.assert_close(offsets[1:] - offsets[:1], original[1:] - original[:1])


def roughness(grid):
    return float(((grid[1:] - grid[:-1]) ** 2).sum() + ((grid[:, 1:] - grid[:, :-1]) ** 2).sum())


def test_tilt_smooth_reduces_roughness_on_the_grid():
    ny, nx = 6, 5
    tilts = torch.randn(ny * nx, 2, dtype=F64) + torch.linspace(0, 3, ny * nx, dtype=F64)[:, None]
    original = tilts.clone()
    run("tilt_smooth", {"tilts_mrad": tilts}, make_ctx(scan_shape=(ny, nx)), sigma_positions=1.0)
    grid, grid0 = tilts.reshape(ny, nx, 2), original.reshape(ny, nx, 2)
    assert roughness(grid) < 0.3 * roughness(grid0)
    assert abs(float(tilts.mean() - original.mean())) < 0.2


def test_tilt_smooth_is_the_gaussian_on_the_raster():
    ny, nx = 9, 7
    tilts = torch.zeros(ny * nx, 2, dtype=F64)
    tilts[4 * nx + 3] = torch.tensor([1.0, -2.0], dtype=F64)  # a spike at raster (4, 3)
    run("tilt_smooth", {"tilts_mrad": tilts}, make_ctx(scan_shape=(ny, nx)), sigma_positions=1.0)
    g = torch.exp(-0.5 * torch.arange(-3, 4, dtype=F64) ** 2)
    g = g / g.sum()
    expected = torch.zeros(ny, nx, dtype=F64)
    expected[1:8, 0:7] = g[:, None] * g[None, :]
    torch.testing.assert_close(tilts.reshape(ny, nx, 2)[..., 0], expected)
    torch.testing.assert_close(tilts.reshape(ny, nx, 2)[..., 1], -2 * expected)


def test_tilt_smooth_leaves_a_global_tilt_and_a_constant_field_alone():
    global_tilt = torch.tensor([[1.0, 2.0]], dtype=F64)
    run("tilt_smooth", {"tilts_mrad": global_tilt}, make_ctx(scan_shape=None))
    assert torch.equal(global_tilt, torch.tensor([[1.0, 2.0]], dtype=F64))
    constant = torch.full((12, 2), 0.5, dtype=F64)
    run("tilt_smooth", {"tilts_mrad": constant}, make_ctx(scan_shape=(3, 4)))
    torch.testing.assert_close(constant, torch.full((12, 2), 0.5, dtype=F64))


def test_tilt_smooth_needs_the_scan_shape():
    with pytest.raises(ConfigError, match=r"tilt_smooth needs a raster scan \(its shape \(Ny, Nx\)\)"):
        run("tilt_smooth", {"tilts_mrad": torch.zeros(12, 2)}, make_ctx(scan_shape=None))
    with pytest.raises(ConfigError, match=r"12 per-position tilts do not fill the scan of shape \(5, 5\)"):
        run("tilt_smooth", {"tilts_mrad": torch.zeros(12, 2)}, make_ctx(scan_shape=(5, 5)))


# --- depth re-centring -------------------------------------------------------------------------------------------


def layered_state(n_slices=8, feature_slice=1, tilt_mrad=(0.0, 0.0)):
    phase = torch.zeros(1, n_slices, 16, 16, dtype=F64)
    phase[:, feature_slice, 6:10, 6:10] = 1.0
    amplitude = torch.ones_like(phase)
    amplitude[:, 0] = 0.9
    probe = make_state()["probe"].detach()
    return {
        "object_phase": phase,
        "object_amplitude": amplitude,
        "probe": probe,
        "slice_thickness_ang": torch.tensor([2.0], dtype=F64),
        "tilts_mrad": torch.tensor([tilt_mrad], dtype=F64),
    }


def centre_of_mass(phase):
    weights = phase.clamp(min=0).sum(dim=(0, 2, 3))
    return float((torch.arange(phase.shape[1], dtype=F64) * weights).sum() / weights.sum())


def test_z_recenter_moves_the_centre_of_mass_to_the_middle():
    state = layered_state()
    assert centre_of_mass(state["object_phase"]) == pytest.approx(1.0)
    run("object_z_recenter", state, max_shift_slices=5.0)
    assert centre_of_mass(state["object_phase"]) == pytest.approx(3.5, abs=1e-12)
    assert float(state["object_phase"].sum()) == pytest.approx(16.0)


def test_z_recenter_clips_the_shift_pads_the_edges_and_refocuses_the_probe():
    state = layered_state(tilt_mrad=(3.0, -2.0))
    old = {k: v.clone() for k, v in state.items()}
    run("object_z_recenter", state, max_shift_slices=1.0)
    # shift = +1 slice: content moves one slice deeper; the top slice is repeated, nothing wraps from the bottom
    torch.testing.assert_close(state["object_phase"][:, 2], old["object_phase"][:, 1])
    torch.testing.assert_close(state["object_amplitude"][:, :2], old["object_amplitude"][:, :1].expand(-1, 2, -1, -1))
    torch.testing.assert_close(state["object_amplitude"][:, 2:], old["object_amplitude"][:, 1:-1])
    ctx = make_ctx()
    ky, kx = frequency_grid((16, 16), ctx.dx_ang, dtype=F64)
    h = propagator(ky, kx, -1.0 * 2.0, ctx.wavelength_ang, tilt_mrad=old["tilts_mrad"][0])
    torch.testing.assert_close(state["probe"], torch.fft.ifft2(torch.fft.fft2(old["probe"]) * h))
    torch.testing.assert_close((state["probe"].abs() ** 2).sum(), (old["probe"].abs() ** 2).sum())


def test_z_recenter_scale_dead_band_and_single_slice():
    state = layered_state(feature_slice=3)  # CoM 3, centre 3.5: shift 0.5 · scale
    run("object_z_recenter", state, scale=0.5)
    assert centre_of_mass(state["object_phase"]) == pytest.approx(3.25, abs=1e-12)
    for state, params in ((layered_state(feature_slice=3), {"min_shift_slices": 0.6}), (layered_state(1, 0), {})):
        old = {k: v.clone() for k, v in state.items()}
        run("object_z_recenter", state, **params)
        assert all(torch.equal(state[k], old[k]) for k in state)


def test_z_recenter_ignores_weak_phase_below_the_percentile_and_outside_the_scan():
    state = layered_state(feature_slice=6)
    state["object_phase"][:, 6, 4:12, 4:12] = 1.0  # 1/8 of the scanned voxels: above the 95th percentile
    state["object_phase"][:, 0] += 0.01  # a weak background in the top slice would pull the CoM up
    state["object_phase"][:, 1, :2, :2] = 5.0  # a strong feature outside the scanned region
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = True
    shift = CONSTRAINTS.get("object_z_recenter")(CONSTRAINTS.get("object_z_recenter").Params(max_shift_slices=9.0))
    assert shift.shift_slices(state["object_phase"], mask) == pytest.approx(3.5 - 6.0)


def test_shift_linear_matches_a_roll_with_edge_padding():
    values = torch.arange(5, dtype=F64).reshape(1, 5, 1, 1) * torch.ones(1, 5, 2, 2, dtype=F64)
    torch.testing.assert_close(shift_linear(values, 2.0, 1)[0, :, 0, 0], torch.tensor([0, 0, 0, 1, 2], dtype=F64))
    torch.testing.assert_close(
        shift_linear(values, -1.5, 1)[0, :, 0, 0], torch.tensor([1.5, 2.5, 3.5, 4, 4], dtype=F64)
    )
