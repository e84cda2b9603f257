"""Probe constraints against their formulas."""

import math

import pytest
import torch

from ptyopt.errors import ConfigError
from ptyopt.objective.constraints import CONSTRAINTS, apply_constraints
from ptyopt.physics import frequency_grid, make_probe
from tests.objective.constraints.helpers import make_ctx


def run(name, state, ctx=None, **params):
    cls = CONSTRAINTS.get(name)
    apply_constraints([cls(cls.Params(**params))], state, ctx or make_ctx())


def random_modes(n_modes, size=16, dtype=torch.complex128):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n_modes, size, size, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["c64", "c128"])
def test_orthogonalize_gives_orthogonal_sorted_modes_of_the_same_mixed_state(dtype):
    probe = random_modes(3, dtype=dtype)
    original = probe.clone()
    run("probe_orthogonalize", {"probe": probe})
    flat = probe.reshape(3, -1).to(torch.complex128)
    gram = flat @ flat.conj().T
    powers = gram.diagonal().real
    tol = 1e-4 if dtype == torch.complex64 else 1e-10
    off_diagonal = gram - torch.diag(gram.diagonal())
    assert off_diagonal.abs().max() < tol * powers.max()
    assert torch.all(powers[:-1] >= powers[1:])
    # the mixed state sum_m |P_m><P_m| is what the data see; it must not change
    old = original.reshape(3, -1).to(torch.complex128)
    torch.testing.assert_close(flat.T @ flat.conj(), old.T @ old.conj(), rtol=tol, atol=tol * powers.max())
    assert probe.dtype == dtype


def test_orthogonalize_leaves_a_single_mode_alone():
    probe = random_modes(1)
    original = probe.clone()
    run("probe_orthogonalize", {"probe": probe})
    assert torch.equal(probe, original)


def test_fixed_intensity_gives_the_target_power_exactly():
    probe = random_modes(2)
    direction = probe / torch.linalg.vector_norm(probe)
    run("probe_fixed_intensity", {"probe": probe}, make_ctx(probe_power=7.5))
    assert math.isclose(float((probe.abs() ** 2).sum()), 7.5, rel_tol=1e-12)
    torch.testing.assert_close(probe / torch.linalg.vector_norm(probe), direction)


def test_fixed_intensity_needs_a_positive_target():
    with pytest.raises(ConfigError, match="positive target probe_power"):
        run("probe_fixed_intensity", {"probe": random_modes(1)}, make_ctx(probe_power=0.0))


def fourier_mask_case(radius_factor=1.5, edge_width_px=3.0):
    size, dx_ang, wavelength_ang, conv_angle_mrad = 64, 0.5, 0.0197, 10.0
    ctx = make_ctx(dx_ang=dx_ang, wavelength_ang=wavelength_ang, conv_angle_mrad=conv_angle_mrad)
    ky, kx = frequency_grid((size, size), dx_ang, dtype=torch.float64)
    k = torch.sqrt(ky**2 + kx**2)
    radius = radius_factor * conv_angle_mrad * 1e-3 / wavelength_ang
    width = edge_width_px / (size * dx_ang)
    return ctx, k, radius, width


def spectrum(probe):
    return torch.fft.fft2(torch.fft.ifftshift(probe, dim=(-2, -1)))


def test_fourier_mask_is_the_sigmoid_top_hat_and_suppresses_outside_the_radius():
    ctx, k, radius, width = fourier_mask_case()
    probe = random_modes(2, size=64)
    before = spectrum(probe)
    run("probe_fourier_mask", {"probe": probe}, ctx)
    after = spectrum(probe)
    expected = 1 / (1 + torch.exp(2 * math.log(9) * (k - radius) / width))
    torch.testing.assert_close(after, before * expected)
    outside, inside = k > radius + 2.5 * width, k < radius - 2.5 * width
    assert outside.sum() > 100 and inside.sum() > 100
    assert (after.abs()[:, outside] <= 1e-4 * before.abs()[:, outside]).all()
    torch.testing.assert_close(after[:, inside], before[:, inside], rtol=1e-4, atol=0)


def test_fourier_mask_keeps_a_focused_probe_centred_and_untouched():
    ctx, *_ = fourier_mask_case()
    probe = make_probe((64, 64), 0.5, 300.0, 10.0, dtype=torch.complex128)[None].clone()
    original = probe.clone()
    run("probe_fourier_mask", {"probe": probe}, ctx)
    # a probe whose spectrum lies inside the aperture passes the 1.5x mask (almost) unchanged, still centred
    torch.testing.assert_close(probe, original, rtol=0, atol=1e-6 * original.abs().max())
    assert divmod(int(probe[0].abs().argmax()), 64) == (32, 32)


def test_fourier_mask_radius_scales_with_the_factor():
    ctx, k, radius, width = fourier_mask_case(radius_factor=0.5, edge_width_px=1.0)
    probe = random_modes(1, size=64)
    before = spectrum(probe)
    run("probe_fourier_mask", {"probe": probe}, ctx, radius_factor=0.5, edge_width_px=1.0)
    outside = k > radius + 2.5 * width
    assert (spectrum(probe).abs()[:, outside] <= 1e-4 * before.abs()[:, outside]).all()
    inside = k < radius - 2.5 * width
    assert inside.sum() > 20
    torch.testing.assert_close(spectrum(probe)[:, inside], before[:, inside], rtol=1e-4, atol=0)


def test_fourier_mask_needs_a_convergence_angle():
    with pytest.raises(ConfigError, match="conv_angle_mrad > 0"):
        run("probe_fourier_mask", {"probe": random_modes(1)}, make_ctx(conv_angle_mrad=0.0))
