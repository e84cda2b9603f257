"""Constraints on the scan geometry: position offsets (N, 2) [px] and per-position tilts (N, 2) [mrad]."""

from __future__ import annotations

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


@CONSTRAINTS.register
class PositionRecenter(Constraint):
    """offsets <- offsets - (1 - relax) · mean_n(offsets).

    A common shift of all positions is the same as a shift of the object, which the data cannot see; removing it
    keeps the object where the nominal scan puts it.
    """

    name = "position_recenter"

    class Params(ConstraintWindow):
        relax: float = Field(0.0, ge=0, le=1, description="fraction of the mean offset left in place (0: remove all)")

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        offsets = require(state, "position_offsets_px", self.name)
        assign(offsets, offsets - (1 - self.params.relax) * offsets.mean(dim=0, keepdim=True))


@CONSTRAINTS.register
class TiltSmooth(Constraint):
    """Gaussian smoothing of per-position tilts on the raster: theta(iy, ix) <- (g_sigma * theta)(iy, ix).

    Separable along the scan rows and columns with replicate padding; positions are in raster order
    n = iy * Nx + ix, so it needs the scan shape (Ny, Nx). A no-op for one global tilt (1, 2).
    """

    name = "tilt_smooth"

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
