"""Relativistic electron wavelength and interaction constant (CODATA 2018 constants)."""

import math

PLANCK_J_S = 6.62607015e-34
SPEED_OF_LIGHT_M_S = 299792458.0
ELECTRON_CHARGE_C = 1.602176634e-19
ELECTRON_REST_ENERGY_KEV = 510.99895000  # m0 c^2


def _check_energy(energy_kv: float) -> None:
    from ptyopt.errors import ConfigError

    if not (math.isfinite(energy_kv) and energy_kv > 0):
        raise ConfigError(f"energy_kv must be a positive number of kilovolts, got {energy_kv!r}")


def wavelength_ang(energy_kv: float) -> float:
    """Relativistic electron wavelength [Å].

    lambda = h c / sqrt(eV (2 m0 c^2 + eV)),  energy_kv: accelerating voltage [kV].
    """
    _check_energy(energy_kv)
    hc_kev_ang = PLANCK_J_S * SPEED_OF_LIGHT_M_S / ELECTRON_CHARGE_C / 1e3 * 1e10
    return hc_kev_ang / math.sqrt(energy_kv * (2 * ELECTRON_REST_ENERGY_KEV + energy_kv))


def interaction_constant(energy_kv: float) -> float:
    """Interaction constant sigma [rad/(V·Å)], so that a projected potential v_z [V·Å] gives phase sigma·v_z.

    sigma = 2 pi / (lambda V) · (m0 c^2 + eV) / (2 m0 c^2 + eV)   (Kirkland 2010, ch. 5).
    """
    volts = energy_kv * 1e3
    rest = ELECTRON_REST_ENERGY_KEV
    return 2 * math.pi / (wavelength_ang(energy_kv) * volts) * (rest + energy_kv) / (2 * rest + energy_kv)
