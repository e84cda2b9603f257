"""Aberration function chi(k) in Krivanek polar notation, up to 5th order.

Sign convention (abTEM / Kirkland): C10 = -defocus, and a positive ``defocus`` is underfocus.
A probe with defocus +D (C10 = -D) comes to its crossover after propagating +D downstream.
``Cs`` is C30. Magnitudes C_nm are in Å, azimuths phi_nm in rad, measured from +x towards +y.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ptyopt.errors import ConfigError
from ptyopt.registry import did_you_mean

# (n, m) of the Krivanek coefficients C_nm up to 5th order: m <= n + 1 and n + m odd.
ORDERS: tuple[tuple[int, int], ...] = tuple(
    (n, m) for n in range(1, 6) for m in range(n + 2) if (n + m) % 2 == 1
)
ABERRATION_SYMBOLS: tuple[str, ...] = tuple(
    s for n, m in ORDERS for s in ((f"C{n}{m}",) if m == 0 else (f"C{n}{m}", f"phi{n}{m}"))
)
# alias -> (symbol, sign)
ALIASES: dict[str, tuple[str, float]] = {
    "defocus": ("C10", -1.0),
    "Cs": ("C30", 1.0),
    "C5": ("C50", 1.0),
    "astigmatism": ("C12", 1.0),
    "astigmatism_angle": ("phi12", 1.0),
    "coma": ("C21", 1.0),
    "coma_angle": ("phi21", 1.0),
}


def canonical_aberrations(aberrations: Mapping[str, float] | None) -> dict[str, float]:
    """Map user keys (symbols or aliases such as ``defocus``, ``Cs``) to Krivanek symbols.

    Raises ConfigError for unknown keys (with the closest valid key) and for a value given twice.
    """
    out: dict[str, float] = {}
    for key, value in (aberrations or {}).items():
        if key in ALIASES:
            symbol, sign = ALIASES[key]
        elif key in ABERRATION_SYMBOLS:
            symbol, sign = key, 1.0
        else:
            valid = list(ABERRATION_SYMBOLS) + list(ALIASES)
            raise ConfigError(f"unknown aberration '{key}'{did_you_mean(key, valid)}")
        if symbol in out:
            raise ConfigError(f"aberration {symbol} is given twice (as '{key}' and another alias)")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"aberration '{key}' must be finite, got {value}")
        out[symbol] = sign * value
    return out


def aberration_phase(
    ky_inv_ang: Tensor, kx_inv_ang: Tensor, wavelength_ang: float, aberrations: Mapping[str, float]
) -> Tensor:
    """chi(k) [rad] = (2 pi / lambda) sum_nm C_nm alpha^(n+1) cos(m (phi - phi_nm)) / (n + 1).

    alpha = lambda |k| [rad], phi = atan2(ky, kx). ky, kx: spatial frequencies [1/Å], any shape.
    aberrations: symbols or aliases (see ``canonical_aberrations``), C_nm in Å, phi_nm in rad.
    """
    coefficients = canonical_aberrations(aberrations)
    alpha = wavelength_ang * torch.sqrt(ky_inv_ang**2 + kx_inv_ang**2)
    azimuth = torch.atan2(ky_inv_ang, kx_inv_ang)
    chi = torch.zeros_like(alpha)
    for n, m in ORDERS:
        c_ang = coefficients.get(f"C{n}{m}", 0.0)
        if c_ang == 0.0:
            continue
        term = c_ang * alpha ** (n + 1) / (n + 1)
        if m:
            term = term * torch.cos(m * (azimuth - coefficients.get(f"phi{n}{m}", 0.0)))
        chi = chi + term
    return (2 * math.pi / wavelength_ang) * chi
