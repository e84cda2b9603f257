import pytest

from ptyopt.errors import ConfigError
from ptyopt.physics import interaction_constant, wavelength_ang


@pytest.mark.parametrize(
    ("energy_kv", "wavelength", "sigma"),
    [(300, 0.019687, 6.5262e-4), (200, 0.025079, 7.2884e-4), (80, 0.041757, 1.0087e-3)],
)
def test_wavelength_and_sigma_reference_values(energy_kv, wavelength, sigma):
    assert wavelength_ang(energy_kv) == pytest.approx(wavelength, rel=5e-5)
    assert interaction_constant(energy_kv) == pytest.approx(sigma, rel=5e-5)


def test_sigma_decreases_with_voltage():
    assert interaction_constant(80) > interaction_constant(200) > interaction_constant(300)


@pytest.mark.parametrize("bad", [0, -300, float("nan")])
def test_bad_energy(bad):
    with pytest.raises(ConfigError, match="energy_kv must be a positive"):
        wavelength_ang(bad)
