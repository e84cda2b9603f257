import pytest
import torch

from ptyopt.errors import ConfigError
from ptyopt.physics import (
    frequency_grid,
    make_probe,
    orthogonalize_modes,
    probe_modes,
    propagator,
    wavelength_ang,
)


def _power(x):
    return (x.abs() ** 2).sum(dim=(-2, -1))


@pytest.mark.parametrize("edge", ["hard", "soft"])
def test_probe_normalised_centred_band_limited(edge, cdtype):
    probe = make_probe((64, 64), 0.2, 300.0, 20.0, edge=edge, dtype=cdtype)
    assert probe.dtype == cdtype and probe.shape == (64, 64)
    torch.testing.assert_close(_power(probe), torch.tensor(1.0, dtype=probe.real.dtype))
    intensity = probe.abs() ** 2
    assert torch.argmax(intensity).item() == 32 * 64 + 32  # focused probe peaks at (Y//2, X//2)
    spectrum = torch.fft.fft2(torch.fft.ifftshift(probe))
    ky, kx = frequency_grid((64, 64), 0.2, dtype=probe.real.dtype)
    alpha_mrad = wavelength_ang(300.0) * torch.sqrt(ky**2 + kx**2) * 1e3
    edge_mrad = wavelength_ang(300.0) / (64 * 0.2) * 1e3
    assert spectrum[alpha_mrad > 20.0 + edge_mrad].abs().max() < 1e-5


def test_soft_edge_is_between_hard_apertures():
    hard = torch.fft.fft2(torch.fft.ifftshift(make_probe((64, 64), 0.2, 300.0, 20.0, dtype=torch.complex128))).abs()
    soft = torch.fft.fft2(
        torch.fft.ifftshift(make_probe((64, 64), 0.2, 300.0, 20.0, edge="soft", dtype=torch.complex128))
    ).abs()
    fractional = (soft > 1e-9) & (soft < soft.max() * 0.999)
    assert fractional.sum() > 0 and not ((hard > 1e-9) & (hard < hard.max() * 0.999)).any()


def test_defocused_probe_focuses_downstream():
    """defocus +D (C10 = -D) propagated by +D in vacuum is at focus, not at -D."""
    defocus_ang, dx = 100.0, 0.15
    lam = wavelength_ang(300.0)
    probe = make_probe((128, 128), dx, 300.0, 25.0, {"defocus": defocus_ang}, dtype=torch.complex128)
    ky, kx = frequency_grid((128, 128), dx, dtype=torch.float64)
    peaks = {}
    for z in (-defocus_ang, -defocus_ang / 2, 0.0, defocus_ang / 2, defocus_ang, 1.5 * defocus_ang):
        h = propagator(ky, kx, z, lam)
        peaks[z] = (torch.fft.ifft2(torch.fft.fft2(probe) * h).abs() ** 2).max().item()
    assert max(peaks, key=peaks.get) == defocus_ang
    focused = make_probe((128, 128), dx, 300.0, 25.0, dtype=torch.complex128)
    assert peaks[defocus_ang] == pytest.approx((focused.abs() ** 2).max().item(), rel=1e-9)
    assert peaks[-defocus_ang] < 0.2 * peaks[defocus_ang]


def test_probe_errors():
    with pytest.raises(ConfigError, match="conv_angle_mrad must be positive"):
        make_probe((16, 16), 0.2, 300.0, 0.0)
    with pytest.raises(ConfigError, match="holds no pixel"):
        make_probe((4, 4), 0.001, 300.0, 0.01)
    with pytest.raises(ConfigError, match="edge must be"):
        make_probe((16, 16), 0.2, 300.0, 20.0, edge="fuzzy")


@pytest.mark.parametrize("n_modes", [1, 2, 4, 6])
def test_probe_modes_orthogonal_with_power_split(n_modes, cdtype):
    probe = make_probe((48, 48), 0.2, 300.0, 20.0, {"defocus": 30.0}, dtype=cdtype) * 3.0
    modes = probe_modes(probe, n_modes, extra_power_fraction=0.2)
    assert modes.shape == (n_modes, 48, 48) and modes.dtype == cdtype
    flat = modes.reshape(n_modes, -1)
    gram = flat @ flat.conj().T
    total = _power(probe)
    tol = 1e-5 if cdtype == torch.complex64 else 1e-10
    off_diagonal = gram - torch.diag(torch.diagonal(gram))
    assert off_diagonal.abs().max() < tol * total
    expected = torch.full((n_modes,), 0.2 / max(n_modes - 1, 1), dtype=torch.float64) * total.item()
    expected[0] = total.item() * (0.8 if n_modes > 1 else 1.0)
    torch.testing.assert_close(torch.diagonal(gram).real, expected.to(gram.real.dtype), rtol=tol, atol=tol)
    # the main mode is the input probe, scaled
    overlap = torch.vdot(modes[0].reshape(-1), probe.reshape(-1)).abs() / (
        torch.linalg.vector_norm(modes[0]) * torch.linalg.vector_norm(probe)
    )
    assert overlap.item() == pytest.approx(1.0, abs=tol)


def test_orthogonalize_sorts_and_keeps_power(cdtype):
    modes = torch.randn(4, 20, 20, dtype=cdtype)
    modes[2] *= 3.0
    ortho = orthogonalize_modes(modes)
    flat = ortho.reshape(4, -1)
    gram = flat @ flat.conj().T
    powers = torch.diagonal(gram).real
    tol = 1e-4 if cdtype == torch.complex64 else 1e-10
    assert (powers[:-1] >= powers[1:]).all()
    assert (gram - torch.diag(torch.diagonal(gram))).abs().max() < tol * powers.sum()
    torch.testing.assert_close(powers.sum(), _power(modes).sum(), rtol=tol, atol=0)
    # same mixed state: the density matrix sum_m |m><m| is unchanged
    a, b = modes.reshape(4, -1), flat
    torch.testing.assert_close(a.T @ a.conj(), b.T @ b.conj(), rtol=tol, atol=tol * 10)


def test_probe_modes_errors():
    probe = make_probe((32, 32), 0.2, 300.0, 20.0)
    with pytest.raises(ConfigError, match="extra_power_fraction"):
        probe_modes(probe, 3, 0.0)
    with pytest.raises(ConfigError, match="number of probe modes"):
        probe_modes(probe, 0, 0.1)


def test_added_defocus_composes_with_the_probe_formula(cdtype):
    """add_aberrations(make_probe(defocus a), defocus b) == make_probe(defocus a + b): chi is linear in C10, and
    the probe keeps its power."""
    from ptyopt.physics import add_aberrations, wavelength_ang

    start = make_probe((48, 48), 0.15, 300.0, 21.4, {"defocus": 40.0, "Cs": 1e4}, edge="hard", dtype=cdtype)
    target = make_probe((48, 48), 0.15, 300.0, 21.4, {"defocus": -20.0, "Cs": 1e4}, edge="hard", dtype=cdtype)
    moved = add_aberrations(start, 0.15, wavelength_ang(300.0), {"defocus": -60.0})
    tolerance = 1e-5 if cdtype == torch.complex64 else 1e-12
    assert torch.allclose(moved, target, atol=tolerance)
    assert float(torch.linalg.vector_norm(moved)) == pytest.approx(1.0, abs=tolerance)
