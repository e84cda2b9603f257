import math

import pytest
import torch

from ptyopt.errors import ConfigError
from ptyopt.physics import ABERRATION_SYMBOLS, aberration_phase, canonical_aberrations, frequency_grid
from ptyopt.physics.aberrations import ORDERS


def test_symbols_cover_fifth_order():
    assert ORDERS[0] == (1, 0) and ORDERS[-1] == (5, 6)
    assert {"C10", "C12", "phi12", "C21", "C23", "C30", "C32", "C34", "C41", "C43", "C45"} <= set(
        ABERRATION_SYMBOLS
    )
    assert {"C50", "C52", "C54", "C56", "phi56"} <= set(ABERRATION_SYMBOLS)
    assert len(ORDERS) == 14


def test_aliases_and_errors():
    assert canonical_aberrations({"defocus": 50.0, "Cs": 1e4}) == {"C10": -50.0, "C30": 1e4}
    with pytest.raises(ConfigError, match="did you mean 'defocus'"):
        canonical_aberrations({"defocsu": 1.0})
    with pytest.raises(ConfigError, match="given twice"):
        canonical_aberrations({"defocus": 1.0, "C10": 2.0})


def test_defocus_and_cs_match_kirkland_formula():
    lam = 0.0197
    ky, kx = frequency_grid((32, 32), 0.1, dtype=torch.float64)
    k2 = ky**2 + kx**2
    defocus, cs = 120.0, 2.0e5
    chi = aberration_phase(ky, kx, lam, {"defocus": defocus, "Cs": cs})
    # Kirkland: chi = pi lambda k^2 (Cs lambda^2 k^2 / 2 - defocus)
    expected = math.pi * lam * k2 * (0.5 * cs * lam**2 * k2 - defocus)
    torch.testing.assert_close(chi, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("n", "m"), ORDERS)
def test_each_coefficient_polar_form(n, m):
    lam = 0.025
    ky, kx = frequency_grid((16, 16), 0.2, dtype=torch.float64)
    c, phi0 = 1000.0 * 10 ** (n - 1), 0.3
    ab = {f"C{n}{m}": c} | ({f"phi{n}{m}": phi0} if m else {})
    alpha = lam * torch.sqrt(ky**2 + kx**2)
    azimuth = torch.atan2(ky, kx)
    expected = 2 * math.pi / lam * c * alpha ** (n + 1) * torch.cos(m * (azimuth - (phi0 if m else 0))) / (n + 1)
    torch.testing.assert_close(aberration_phase(ky, kx, lam, ab), expected, rtol=1e-12, atol=1e-12)


def test_astigmatism_rotates_with_its_angle():
    lam = 0.02
    ky, kx = frequency_grid((32, 32), 0.1, dtype=torch.float64)
    a = aberration_phase(ky, kx, lam, {"C12": 50.0, "phi12": 0.0})
    b = aberration_phase(kx, ky, lam, {"C12": 50.0, "phi12": math.pi / 2})  # swap axes = rotate by 90° + mirror
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
