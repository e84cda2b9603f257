"""The probe through the specimen: the intensity of the wave entering every slice at chosen positions, from the
result's own forward model (object, probe modes, occupancy, propagators), and how it channels and spreads.

Per slice: the power (falls where the object absorbs), the RMS radius about the probe's position and the
fraction of the intensity within ``core_radius_ang`` of it (on an atom column, channelling keeps it high).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ptyopt.evaluate.phase_metrics import slice_sum
from ptyopt.explain.session import Session


@dataclass
class ProbeDepth:
    """intensity (P, S, Y, X) entering each slice at each chosen position; depth_ang (S,) of each slice's entrance;
    labels, indices (P,); power, rms_radius_ang, core_fraction (P, S)."""

    indices: np.ndarray
    labels: list[str]
    depth_ang: np.ndarray
    intensity: np.ndarray
    power: np.ndarray
    rms_radius_ang: np.ndarray
    core_fraction: np.ndarray
    dx_ang: float
    core_radius_ang: float

    def to_dict(self) -> dict:
        return {"positions": self.indices.tolist(), "labels": self.labels, "depth_ang": self.depth_ang.tolist(),
                "power": self.power.tolist(), "rms_radius_ang": self.rms_radius_ang.tolist(),
                "core_fraction": self.core_fraction.tolist(), "core_radius_ang": self.core_radius_ang}


def column_and_gap_positions(session: Session) -> tuple[int, int]:
    """The positions whose probe centre sits on the highest and on the lowest slice-summed phase (an atom column
    and the space between columns), among those inside the scan (not its outermost ring)."""
    result, geometry = session.result, session.problem.geometry
    phase = slice_sum(result.object_phase, result.occupancy)
    centres = np.rint((result.positions_ang - np.asarray(result.origin_ang)) / result.dx_ang).astype(int)
    centres = np.clip(centres, 0, np.array(phase.shape) - 1)
    values = phase[centres[:, 0], centres[:, 1]]
    nominal = geometry.nominal_positions_ang
    low, high = nominal.min(axis=0), nominal.max(axis=0)
    inner = np.all((nominal > low + 0.1 * (high - low)) & (nominal < high - 0.1 * (high - low)), axis=1)
    candidates = np.flatnonzero(inner) if inner.any() else np.arange(len(values))
    return int(candidates[np.argmax(values[candidates])]), int(candidates[np.argmin(values[candidates])])


def probe_through_slices(session: Session, indices: list[int], labels: list[str], *,
                         core_radius_ang: float = 0.5) -> ProbeDepth:
    problem = session.problem
    index = torch.as_tensor(indices, device=problem.device)
    with torch.no_grad():
        out = session.model(session.state, index, keep_waves=True)
        waves = out.waves
        weights = out.occupancy[None, None, :, None, None, None]
        intensity = (waves.incident.abs() ** 2 * weights).sum(dim=(1, 2)).double().cpu().numpy()  # (P, S, Y, X)
        shift = waves.shift_px.double().cpu().numpy()
    dx = problem.geometry.dx_ang
    window = intensity.shape[-2:]
    y = (np.arange(window[0]) - window[0] // 2)[None, :, None] - shift[:, 0, None, None]
    x = (np.arange(window[1]) - window[1] // 2)[None, None, :] - shift[:, 1, None, None]
    r2_ang2 = (y**2 + x**2) * dx**2  # (P, Y, X) about each probe's position
    power = intensity.sum(axis=(-2, -1))
    rms = np.sqrt((intensity * r2_ang2[:, None]).sum(axis=(-2, -1)) / power)
    core = (intensity * (r2_ang2[:, None] <= core_radius_ang**2)).sum(axis=(-2, -1)) / power
    thickness = session.state["slice_thickness_ang"].double().cpu().numpy().reshape(-1)
    thickness = np.broadcast_to(thickness, (intensity.shape[1],))
    depth = np.concatenate([[0.0], np.cumsum(thickness)[:-1]])
    return ProbeDepth(np.asarray(indices), labels, depth, intensity, power, rms, core, dx, core_radius_ang)
