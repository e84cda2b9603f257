"""Analytic SrTiO3-like phase phantom: Gaussian atomic columns on the [001] projected lattice.

Not a physical potential (abTEM does that, see ``ptyopt simulate``); a fast, exactly known object for
demos and self-consistency tests of the forward model and the solvers.
"""

from __future__ import annotations

import torch
from torch import Tensor

SRTIO3_LATTICE_ANG = 3.905
# fractional (y, x) column sites of the [001] projection and their peak phase per unit cell [rad] at 300 kV
# (thermally smeared abTEM values, research/simulation.md §0): Sr corner, Ti-O centre, O edge centres
SRTIO3_COLUMNS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.71),
    (0.5, 0.5, 0.64),
    (0.5, 0.0, 0.19),
    (0.0, 0.5, 0.19),
)


def srtio3_phantom_phase(
    shape_px: tuple[int, int],
    dx_ang: float,
    n_slices: int,
    slice_thickness_ang: float,
    *,
    column_sigma_ang: float = 0.3,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Phase slices (n_slices, Y, X) [rad] of Gaussian columns (RMS width column_sigma_ang [Å]) on a
    3.905 Å square lattice; each slice carries its thickness' share of the per-unit-cell column phase."""
    y = torch.arange(shape_px[0], dtype=dtype)[:, None] * dx_ang
    x = torch.arange(shape_px[1], dtype=dtype)[None, :] * dx_ang
    a = SRTIO3_LATTICE_ANG
    phase = torch.zeros(shape_px, dtype=dtype)
    for fy, fx, phase_per_cell_rad in SRTIO3_COLUMNS:
        # distance to the nearest lattice site of this column type (periodic images)
        dy = torch.remainder(y - fy * a + a / 2, a) - a / 2
        dx = torch.remainder(x - fx * a + a / 2, a) - a / 2
        gaussian = torch.exp(-(dy**2 + dx**2) / (2 * column_sigma_ang**2))
        phase = phase + phase_per_cell_rad * gaussian
    per_slice = phase * (slice_thickness_ang / a)
    return per_slice.expand(n_slices, *shape_px).clone()
