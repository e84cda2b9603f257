"""Coarse stage of position refinement: coordinated searches of the global scan affine.

Why: a scan distorted by a global affine map (scan-coil error, or a raster's linear drift) is a slow mode for
every position update. The object is reconstructed from the positions, so it follows them: built from the
nominal scan it comes out distorted the same way, and against that object each position's own gradient sees
almost nothing. What the data do see is the distorted object's geometry against the probe and the detector
(lattice spacings and angles in the diffraction patterns, the probe's shadow image), which a position step
alone cannot change.

What: a coordinated move changes the affine by Delta and carries the object along with it
(``physics.scan.warp_image``: every position and the object canvas mapped by r -> c + (I + Delta)(r - c)), so
the object stays consistent with the positions and the data misfit measures only what the distortion changes.
Each pass tries ±h along the four shapes of an affine map (isotropic scale, asymmetry, shear, rotation), takes
the parabola's minimum along each (at most max_step; none where the misfit does not change by more than a
relative 1e-5, e.g. a rotation under a round probe), and keeps the combined move if it lowers the misfit
sum_n ||sqrt(I_n) - sqrt(y_n)||^2 over the training positions, or an evenly spread fraction of them (10 forward
passes per pass; no gradients).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ptyopt.config import ScanSearchConfig
from ptyopt.model.forward import ForwardModel
from ptyopt.physics.scan import warp_image
from ptyopt.solvers.base import Batch

# relative change of the misfit below which a trial counts as no change (float32 sums over many patterns)
SIGNIFICANT = 1e-5

SHAPES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "scale": ((1.0, 0.0), (0.0, 1.0)),
    "asymmetry": ((1.0, 0.0), (0.0, -1.0)),
    "shear": ((0.0, 1.0), (1.0, 0.0)),
    "rotation": ((0.0, 1.0), (-1.0, 0.0)),
}


def coordinated_state(state: dict[str, Tensor], delta: Tensor, centre_px: Tensor) -> dict[str, Tensor]:
    """The state moved by r -> c + (I + delta)(r - c): M' = M + delta (I + M), drift and offsets times (I + delta),
    the object canvas warped along (probe, tilts and the rest unchanged)."""
    eye = torch.eye(2, dtype=delta.dtype, device=delta.device)
    transform = eye + delta
    moved = dict(state)
    affine = state["scan_affine"]
    moved["scan_affine"] = (transform @ (eye + affine.to(delta.dtype)) - eye).to(affine.dtype)
    for key in ("scan_drift_px", "position_offsets_px"):
        moved[key] = (state[key].to(delta.dtype) @ transform.T).to(state[key].dtype)
    for key in ("object_phase", "object_amplitude"):
        moved[key] = warp_image(state[key], delta, centre_px)
    return moved


class CoordinatedAffineSearch:
    """Runs ``config.passes`` coordinated search passes on the state in place (see the module docstring)."""

    def __init__(self, config: ScanSearchConfig, model: ForwardModel):
        self.config, self.model = config, model
        self.centre_px = model.scan.nominal_px.to(torch.float64).mean(dim=0)
        self.evaluations = 0

    def subset(self, indices: np.ndarray) -> np.ndarray:
        """The positions the misfit is summed over: every k-th of the sorted training positions (k from
        positions_fraction), so the subset covers the whole scan evenly."""
        step = max(1, round(1 / self.config.positions_fraction))
        return np.sort(indices)[::step]

    def active(self, iteration: int) -> bool:
        c = self.config
        return iteration >= c.start_iter and (c.end_iter is None or iteration < c.end_iter) and (
            (iteration - c.start_iter) % c.every == 0)

    def misfit(self, state: dict[str, Tensor], chunks: list[Batch]) -> float:
        total = 0.0
        with torch.no_grad():
            for chunk in chunks:
                predicted = self.model(state, chunk.index_tensor).intensities
                residual = predicted.clamp(min=0).sqrt() - chunk.meas.clamp(min=0).sqrt()
                total += float((residual.double() ** 2).sum())
                self.evaluations += len(chunk.indices)
        return total

    def run(self, state: dict[str, Tensor], chunks: list[Batch]) -> Tensor:
        """The passes; returns the accepted change of the affine, Delta (2, 2), summed over them."""
        h, limit = self.config.probe_step, self.config.max_step
        device = state["scan_affine"].device
        shapes = [torch.tensor(s, dtype=torch.float64, device=device) for s in SHAPES.values()]
        accepted = torch.zeros(2, 2, dtype=torch.float64, device=device)
        for _ in range(self.config.passes):
            here = self.misfit(state, chunks)
            delta = torch.zeros_like(accepted)
            for shape in shapes:
                plus = self.misfit(coordinated_state(state, h * shape, self.centre_px), chunks)
                minus = self.misfit(coordinated_state(state, -h * shape, self.centre_px), chunks)
                curvature = plus + minus - 2 * here
                tolerance = SIGNIFICANT * here  # below it a change is round-off, and no step is taken
                if curvature > tolerance:
                    step = h * (minus - plus) / (2 * curvature)
                elif here - min(plus, minus) > tolerance:  # concave along this shape: to the better side
                    step = -h if minus < plus else h
                else:  # flat (e.g. a rotation under a round probe): the data do not say
                    step = 0.0
                delta += max(-limit, min(limit, step)) * shape
            trial = coordinated_state(state, delta, self.centre_px)
            if self.misfit(trial, chunks) >= here * (1 - SIGNIFICANT):
                break
            with torch.no_grad():
                for key in ("scan_affine", "scan_drift_px", "position_offsets_px", "object_phase",
                            "object_amplitude"):
                    state[key].copy_(trial[key])
            accepted += delta
        return accepted
