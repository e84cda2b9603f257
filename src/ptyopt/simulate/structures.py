"""Crystal structures for ground-truth simulations (ASE Atoms)."""

from __future__ import annotations

import numpy as np

SRTIO3_LATTICE_ANG = 3.905  # cubic Pm-3m at room temperature
# RMS thermal displacement per axis [Å] (U_iso of ICSD 23076, O averaged over its anisotropy)
SRTIO3_THERMAL_U_ANG = {"Sr": 0.072, "Ti": 0.063, "O": 0.089}


def srtio3_supercell(repeats_xy: int, thickness_uc: int, lattice_ang: float = SRTIO3_LATTICE_ANG):
    """SrTiO3 [001] supercell of repeats_xy × repeats_xy × thickness_uc unit cells, beam along +z.

    Atoms sit at z + a/4, so the SrO and TiO2 planes lie mid-slice for slices of a/2 and no
    (thermally displaced) atom lands on a slice boundary.
    """
    from ase import Atoms

    cell = Atoms(
        "SrTiO3",
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=[lattice_ang] * 3,
        pbc=True,
    )
    atoms = cell.repeat((repeats_xy, repeats_xy, thickness_uc))
    atoms.positions[:, 2] += lattice_ang / 4
    return atoms


def displaced(atoms, u_ang: dict[str, float], rng: np.random.Generator):
    """A frozen-phonon configuration: every atom moved by N(0, u²) along x, y and z (Einstein model)."""
    out = atoms.copy()
    sigma = np.array([u_ang.get(symbol, 0.0) for symbol in out.get_chemical_symbols()])
    out.positions = out.positions + rng.normal(size=out.positions.shape) * sigma[:, None]
    return out
