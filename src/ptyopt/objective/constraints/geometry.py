"""Constraints on the scan geometry: position offsets (N, 2) [px], the global scan model and per-position tilts
(N, 2) [mrad]."""

from __future__ import annotations

import torch
from pydantic import Field

from ptyopt.errors import ConfigError
from ptyopt.objective.constraints.base import (
    CONSTRAINTS,
    Constraint,
    ConstraintContext,
    ConstraintWindow,
    State,
    assign,
    require,
)
from ptyopt.objective.constraints.kernels import gaussian_blur_axis
from ptyopt.physics.scan import least_squares_fit


@CONSTRAINTS.register
class PositionRecenter(Constraint):
    """offsets <- offsets - (1 - relax) · mean_n(offsets); with the global drift refined, also
    d_0 <- d_0 - (1 - relax) · mean_n(global displacement).

    A common shift of all positions is the same as a shift of the object, which the data cannot see; removing it
    keeps the object where the nominal scan puts it.
    """

    name = "position_recenter"
    edits = ("position_offsets_px", "scan_drift_px")

    class Params(ConstraintWindow):
        relax: float = Field(0.0, ge=0, le=1, description="fraction of the mean offset left in place (0: remove all)")

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        offsets = require(state, "position_offsets_px", self.name)
        keep = 1 - self.params.relax
        assign(offsets, offsets - keep * offsets.mean(dim=0, keepdim=True))
        if "scan_drift" in ctx.refined and ctx.scan_model is not None and "scan_drift_px" in state:
            indices = torch.arange(len(offsets), device=offsets.device)
            mean = ctx.scan_model.displacement(state, indices).mean(dim=0)
            state["scan_drift_px"][0].sub_(keep * mean)


@CONSTRAINTS.register
class ScanModelFit(Constraint):
    """Moves what the global scan model can express out of the per-position offsets and into the model.

    theta* = argmin sum_n |o_n - Phi_n theta|^2 over the global parts refined at this iteration (``ScanModel``;
    affine and/or drift), then theta += theta*, o_n -= Phi_n theta*: every position stays where it is, and the
    offsets keep only the part no affine map or drift explains (orthogonal to the model, zero mean when the
    drift's translation is refined), so the two do not trade. shrink then pulls the remaining offsets toward
    zero (a prior of small jitter; it moves the positions). Nothing moves while the offsets are frozen.
    """

    name = "scan_model_fit"
    edits = ("position_offsets_px", "scan_affine", "scan_drift_px")

    class Params(ConstraintWindow):
        shrink: float = Field(0.0, ge=0, le=1, description="fraction of the remaining offsets removed per application")

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        offsets = require(state, "position_offsets_px", self.name)
        scan = ctx.scan_model
        affine, drift = "scan_affine" in ctx.refined, "scan_drift" in ctx.refined
        if scan is not None and (affine or drift) and "positions" in ctx.refined:
            columns = scan.columns(affine=affine, drift=drift)
            design = scan.design_all[:, columns].to(offsets.dtype)
            theta = least_squares_fit(offsets, design)  # (2, P_active)
            deformation, drift_step = scan.parts(theta, columns)
            if affine:
                state["scan_affine"].add_(deformation)
            if drift:
                state["scan_drift_px"].add_(drift_step)
            assign(offsets, offsets - design @ theta.T)
        if self.params.shrink > 0:
            assign(offsets, offsets * (1 - self.params.shrink))


@CONSTRAINTS.register
class TiltSmooth(Constraint):
    """Gaussian smoothing of per-position tilts on the raster: theta(iy, ix) <- (g_sigma * theta)(iy, ix).

    Separable along the scan rows and columns with replicate padding; positions are in raster order
    n = iy * Nx + ix, so it needs the scan shape (Ny, Nx). A no-op for one global tilt (1, 2).
    """

    name = "tilt_smooth"
    edits = ("tilts_mrad",)

    class Params(ConstraintWindow):
        sigma_positions: float = Field(2.0, gt=0, description="standard deviation of the Gaussian [scan positions]")

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        tilts = require(state, "tilts_mrad", self.name)
        if tilts.shape[0] == 1:
            return
        if ctx.scan_shape is None:
            raise ConfigError(
                "tilt_smooth needs a raster scan (its shape (Ny, Nx)) to know the neighbours of each position; "
                "remove the constraint for this scan"
            )
        ny, nx = ctx.scan_shape
        if ny * nx != tilts.shape[0]:
            raise ConfigError(
                f"tilt_smooth: {tilts.shape[0]} per-position tilts do not fill the scan of shape ({ny}, {nx})"
            )
        grid = tilts.reshape(ny, nx, tilts.shape[-1])
        grid = gaussian_blur_axis(grid, self.params.sigma_positions, 0, "replicate")
        grid = gaussian_blur_axis(grid, self.params.sigma_positions, 1, "replicate")
        assign(tilts, grid.reshape(tilts.shape))
