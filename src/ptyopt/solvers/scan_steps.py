"""Position steps of the exit-wave and Gauss-Newton solvers, split between the global scan model and the
per-position offsets.

Both kinds of solver form, for every position n, the 2×2 normal equations G_n delta_n = g_n of its own shift
(``exitwave.position_system`` from the far field, ``ggn.per_position_system`` from JVPs). The global model moves
position n by Phi_n dtheta (``physics.scan``), so its Gauss-Newton step solves the small system
sum_n J_n^T G_n J_n dtheta = sum_n J_n^T g_n (``physics.scan.global_step``); the per-position offsets then take
what the global model leaves, delta_n - Phi_n dtheta. With only offsets refined this is the per-position step
as before; with only the global model it is the model's own step (few parameters fitted to every position,
robust where single positions are not).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ptyopt.model.scan_model import ScanModel
from ptyopt.physics.scan import global_step


@dataclass(frozen=True)
class PositionRefinement:
    """Which position tensors an update refines: per-position offsets, the affine, the drift."""

    offsets: bool
    affine: bool
    drift: bool

    @classmethod
    def of(cls, active: dict[str, bool]) -> PositionRefinement:
        """From an iteration plan's active tensors (``optimize`` names)."""
        return cls(active.get("positions", False), active.get("scan_affine", False), active.get("scan_drift", False))

    @property
    def any(self) -> bool:
        return self.offsets or self.affine or self.drift

    @property
    def global_model(self) -> bool:
        return self.affine or self.drift


def split_position_step(scan: ScanModel, indices: Tensor, gram: Tensor, rhs: Tensor, per_position: Tensor,
                        refine: PositionRefinement, *, damping: float, max_shift_px: float) -> dict[str, Tensor]:
    """Steps by state key: ``position_offsets_px`` (B, 2) of the positions ``indices``, ``scan_affine`` (2, 2),
    ``scan_drift_px`` (K + 1, 2), each only when refined.

    gram (B, 2, 2), rhs (B, 2): each position's system G_n delta_n = g_n; per_position (B, 2): the solver's own
    (damped, clipped) solution of it. The global step is damped by ``damping`` relative to its diagonal and
    scaled down so that it moves no position of the whole scan by more than max_shift_px along an axis.
    """
    steps: dict[str, Tensor] = {}
    moved = torch.zeros_like(per_position)
    if refine.global_model:
        columns = scan.columns(affine=refine.affine, drift=refine.drift)
        design = scan.design(indices)[:, columns]
        step = global_step(gram, rhs, design, damping)  # (2, P_active)
        everywhere = scan.design_all[:, columns]
        largest = float((everywhere @ step.T).abs().max())
        if largest > max_shift_px:
            step = step * (max_shift_px / largest)
        deformation, drift = scan.parts(step, columns)
        if refine.affine:
            steps["scan_affine"] = deformation
        if refine.drift:
            steps["scan_drift_px"] = drift
        moved = design @ step.T
    if refine.offsets:
        steps["position_offsets_px"] = (per_position - moved).clamp(-max_shift_px, max_shift_px)
    return steps
