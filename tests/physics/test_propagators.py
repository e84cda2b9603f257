import math

import pytest
import torch

from ptyopt.errors import ConfigError
from ptyopt.physics import PROPAGATORS, frequency_grid, propagator, wavelength_ang
from ptyopt.physics.propagators import band_limit_mask

LAM = wavelength_ang(300.0)


@pytest.fixture
def grid():
    return frequency_grid((32, 48), 0.15, dtype=torch.float64)


@pytest.mark.parametrize("kind", PROPAGATORS.names())
def test_unitary_composes_identity(kind, grid):
    ky, kx = grid
    h = propagator(ky, kx, 3.0, LAM, kind=kind)
    torch.testing.assert_close(h.abs(), torch.ones_like(h.abs()))
    torch.testing.assert_close(propagator(ky, kx, 3.0, LAM, kind=kind) * propagator(ky, kx, 4.5, LAM, kind=kind),
                               propagator(ky, kx, 7.5, LAM, kind=kind))
    torch.testing.assert_close(propagator(ky, kx, 0.0, LAM, kind=kind), torch.ones_like(h))
    psi = torch.randn(32, 48, dtype=torch.complex128)
    out = torch.fft.ifft2(torch.fft.fft2(psi) * h)
    torch.testing.assert_close(torch.linalg.vector_norm(out), torch.linalg.vector_norm(psi))


def test_fresnel_formula_and_angular_spectrum_agree_paraxially(grid):
    ky, kx = grid
    k2 = ky**2 + kx**2
    expected = torch.polar(torch.ones_like(k2), -math.pi * LAM * 2.0 * k2)
    torch.testing.assert_close(propagator(ky, kx, 2.0, LAM), expected)
    fresnel = torch.angle(propagator(ky, kx, 2.0, LAM))
    angular = torch.angle(propagator(ky, kx, 2.0, LAM, kind="angular_spectrum"))
    # difference is the next paraxial term -pi lambda^3 dz k^4 / 4
    torch.testing.assert_close(angular - fresnel, -math.pi * LAM**3 * 2.0 * k2**2 / 4, rtol=1e-2, atol=1e-9)


def test_per_slice_thickness_and_tilts(grid):
    ky, kx = grid
    dz = torch.tensor([1.0, 2.0, 3.5], dtype=torch.float64)
    h = propagator(ky, kx, dz, LAM)
    assert h.shape == (3, 32, 48)
    torch.testing.assert_close(h[2], propagator(ky, kx, 3.5, LAM))
    tilts = torch.tensor([[0.0, 0.0], [2.0, -1.0]], dtype=torch.float64)
    ht = propagator(ky, kx, dz, LAM, tilt_mrad=tilts)
    assert ht.shape == (3, 2, 32, 48)
    torch.testing.assert_close(ht[:, 0], h)
    ramp = 2 * math.pi * 3.5 * (ky * math.tan(2e-3) + kx * math.tan(-1e-3))
    torch.testing.assert_close(ht[2, 1], h[2] * torch.polar(torch.ones_like(ramp), ramp))
    assert propagator(ky, kx, dz, LAM, tilt_mrad=tilts[1]).shape == (3, 32, 48)


def test_tilt_moves_wave_by_minus_dz_tan_theta():
    ky, kx = frequency_grid((64, 64), 0.1, dtype=torch.float64)
    dz, tilt_mrad = 50.0, 4.0  # lateral shift -50 Å · tan(4 mrad) = -0.2 Å = -2 px along y
    psi = torch.zeros(64, 64, dtype=torch.complex128)
    psi[20, 30] = 1.0
    h = propagator(ky, kx, dz, LAM, tilt_mrad=torch.tensor([tilt_mrad, 0.0], dtype=torch.float64))
    h0 = propagator(ky, kx, dz, LAM)
    out = torch.fft.ifft2(torch.fft.fft2(psi) * h)
    ref = torch.fft.ifft2(torch.fft.fft2(psi) * h0)
    torch.testing.assert_close(out, torch.roll(ref, shifts=(-2, 0), dims=(0, 1)), atol=1e-3, rtol=0)


def test_band_limit(grid):
    ky, kx = grid
    mask = band_limit_mask(ky, kx)
    k = torch.sqrt(ky**2 + kx**2)
    k_nyquist = 1 / (2 * 0.15)
    assert mask[k <= 2 / 3 * k_nyquist * 0.999].min() == 1 and mask[k > 2 / 3 * k_nyquist * 1.001].max() == 0
    h = propagator(ky, kx, 2.0, LAM, band_limit=True)
    torch.testing.assert_close(h.abs(), mask)


def test_unknown_kind(grid):
    with pytest.raises(ConfigError, match="did you mean 'fresnel'"):
        propagator(*grid, 1.0, LAM, kind="fresnell")
