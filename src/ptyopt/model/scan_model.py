"""The probe positions of the model: nominal scan + global scan model (affine, drift) + per-position offsets.

``physics.scan`` holds the formulas; this module binds them to a run's geometry (object pixels, the scan
centre, each pattern's acquisition time) and keeps every probe window on the object canvas.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ptyopt.model.state import Geometry
from ptyopt.physics.scan import coefficients, orthogonal_drift_design, scan_design, split_coefficients

GLOBAL_KEYS: tuple[str, ...] = ("scan_affine", "scan_drift_px")


class ScanModel:
    """r_n = r_nom,n + M (r_nom,n - c) + d_0 + sum_k d_k q_k(n) + o_n in object pixels (``physics.scan``).

    c is the centroid of the nominal centres; q_k the drift basis: tau^k made orthogonal to the affine and the
    lower powers over this scan (``physics.scan.orthogonal_drift_design``); tau the acquisition time (None for a
    scan of unknown order: only d_0 then acts). Centres are clamped so every window stays on the canvas: a
    position refined past the canvas margin (``model.object_margin_px``) stops at its edge instead of wrapping
    the probe to the other side.
    """

    def __init__(self, geometry: Geometry, drift_order: int, *, dtype: torch.dtype, device: torch.device | str):
        self.nominal_px = torch.as_tensor(geometry.nominal_centres_px, dtype=dtype, device=device)
        self.centred_px = self.nominal_px - self.nominal_px.mean(dim=0)
        time = geometry.acquisition_time
        self.time = None if time is None else torch.as_tensor(time, dtype=dtype, device=device)
        self.drift_rows = drift_order + 1  # rows of the state's scan_drift_px
        self.drift_order = drift_order if time is not None else 0  # the drift terms that act
        raw = scan_design(self.centred_px.double(), None if self.time is None else self.time.double(), self.drift_order)
        self.design_all = orthogonal_drift_design(raw).to(dtype)  # (N, 3 + K)
        half = torch.tensor([w // 2 for w in geometry.window_px], dtype=dtype, device=device)
        self.low_px = half
        self.high_px = torch.tensor(geometry.canvas_px, dtype=dtype, device=device) - torch.tensor(
            geometry.window_px, dtype=dtype, device=device) + half

    def drift_terms(self, drift: Tensor) -> Tensor:
        """The drift coefficients (K' + 1, 2) that act (all, or d_0 alone without acquisition times)."""
        return drift[: self.drift_order + 1]

    def displacement(self, state: dict[str, Tensor], indices: Tensor) -> Tensor:
        """Global model's displacement (B, 2) [px] of the positions ``indices``: Phi_n theta."""
        theta = coefficients(state["scan_affine"], self.drift_terms(state["scan_drift_px"]))
        return self.design_all[indices].to(theta.dtype) @ theta.T

    def clamp(self, centres: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(centres, self.high_px), self.low_px)

    def centres_px(self, state: dict[str, Tensor], indices: Tensor) -> Tensor:
        centres = self.nominal_px[indices] + self.displacement(state, indices) + state["position_offsets_px"][indices]
        return self.clamp(centres)

    def total_displacement_px(self, state: dict[str, Tensor]) -> Tensor:
        """Every position's refined minus nominal centre (N, 2) [px] (global model + offsets, clamped to the
        canvas), computed without the nominal centres' round-off where no clamp acts."""
        indices = torch.arange(len(self.nominal_px), device=self.nominal_px.device)
        total = self.displacement(state, indices) + state["position_offsets_px"]
        centres = self.nominal_px + total
        clamped = self.clamp(centres)
        return torch.where(clamped == centres, total, clamped - self.nominal_px)

    def design(self, indices: Tensor) -> Tensor:
        """Phi (B, 3 + K') of the positions ``indices`` (columns u_y, u_x, 1, q_1, ..., q_K')."""
        return self.design_all[indices]

    def columns(self, *, affine: bool, drift: bool) -> list[int]:
        """Design columns of the refined parts: the affine's (u_y, u_x), the drift's (1, q_1, ..., q_K')."""
        return ([0, 1] if affine else []) + ([2 + k for k in range(self.drift_order + 1)] if drift else [])

    def parts(self, theta: Tensor, columns: list[int]) -> tuple[Tensor, Tensor]:
        """theta (2, len(columns)) on ``columns`` (zero elsewhere) as state-shaped tensors: the deformation
        (2, 2) and the drift (rows of scan_drift_px, 2)."""
        full = torch.zeros(2, 3 + self.drift_order, dtype=theta.dtype, device=theta.device)
        full[:, columns] = theta
        deformation, acting = split_coefficients(full)
        drift = torch.zeros(self.drift_rows, 2, dtype=theta.dtype, device=theta.device)
        drift[: acting.shape[0]] = acting
        return deformation, drift
