"""Re-centring the object along z, with the probe refocused to keep the exit waves consistent."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ptyopt.objective.constraints.base import (
    CONSTRAINTS,
    Constraint,
    ConstraintContext,
    ConstraintWindow,
    State,
    assign,
    require,
)
from ptyopt.objective.constraints.kernels import scanned
from ptyopt.physics import frequency_grid, propagator


def shift_linear(values: Tensor, shift: float, dim: int) -> Tensor:
    """out(z) = values(z - shift) along ``dim`` by linear interpolation, edge samples repeated beyond the ends."""
    length = values.shape[dim]
    source = torch.arange(length, dtype=values.dtype, device=values.device) - shift
    lower = torch.floor(source)
    frac = (source - lower).reshape((length,) + (1,) * (values.dim() - dim % values.dim() - 1))
    i0 = lower.long().clamp(0, length - 1)
    i1 = (lower.long() + 1).clamp(0, length - 1)
    return values.index_select(dim, i0) * (1 - frac) + values.index_select(dim, i1) * frac


def upper_quantile(values: Tensor, percentile: float) -> Tensor:
    """The value below which `percentile` % of the entries lie (kthvalue: torch.quantile caps the input size)."""
    flat = values.reshape(-1)
    k = min(max(int(round(percentile / 100 * (flat.numel() - 1))) + 1, 1), flat.numel())
    return flat.kthvalue(k).values


@CONSTRAINTS.register
class ObjectZRecenter(Constraint):
    """Moves the object's centre of mass along z towards the middle slice; refocuses the probe to match.

    Weights w_s = sum over the scanned region of phi where phi >= max(q, 0), q the `percentile` of phi there
    (the atoms, not the noise); z_com = sum_s s w_s / sum_s w_s; c = (S - 1) / 2;
    shift = clip(scale · (c - z_com), ±max_shift_slices) [slices]. A and phi become f(z - shift), and the probe
    is propagated by -shift · dz (dz the mean slice thickness, with the mean tilt), since moving the specimen
    by +shift · dz is the same as starting the wave that much earlier. It resolves the depth/defocus ambiguity.

    The shift is a linear interpolation of A and phi along z with the end slices repeated, not a Fourier shift
    of A e^{i phi}: a Fourier shift is periodic (the bottom slice would re-enter at the top), it rings with a few
    slices, and angle(A e^{i phi}) wraps phases beyond pi. Linear interpolation keeps phi >= 0 and A within its
    bounds; its slight blur along z is why shifts below min_shift_slices are skipped. No-op for S = 1.
    """

    name = "object_z_recenter"
    edits = ("object_amplitude", "object_phase", "probe")

    class Params(ConstraintWindow):
        percentile: float = Field(95.0, ge=0, lt=100, description="phase percentile below which voxels carry no weight")
        scale: float = Field(1.0, gt=0, le=1, description="fraction of the distance to the centre moved per call")
        max_shift_slices: float = Field(1.0, gt=0, description="largest shift per call [slices]")
        min_shift_slices: float = Field(0.1, ge=0, description="shifts smaller than this are skipped [slices]")

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        phase = require(state, "object_phase", self.name)
        n_slices = phase.shape[1]
        if n_slices < 2:
            return
        shift = self.shift_slices(phase, ctx.scan_mask)
        if abs(shift) < max(self.params.min_shift_slices, 1e-12):
            return
        for key in ("object_amplitude", "object_phase"):
            values = require(state, key, self.name)
            assign(values, shift_linear(values, shift, 1))
        probe = require(state, "probe", self.name)
        dz_ang = float(require(state, "slice_thickness_ang", self.name).mean())
        tilt_mrad = state["tilts_mrad"].mean(dim=0) if "tilts_mrad" in state else None
        ky, kx = frequency_grid(probe.shape[-2:], ctx.dx_ang, dtype=probe.real.dtype, device=probe.device)
        kernel = propagator(ky, kx, -shift * dz_ang, ctx.wavelength_ang, tilt_mrad=tilt_mrad)
        assign(probe, torch.fft.ifft2(torch.fft.fft2(probe) * kernel))

    def shift_slices(self, phase: Tensor, scan_mask: Tensor | None) -> float:
        """The shift [slices] towards the centre, before the dead band; 0 when no voxel carries weight."""
        region = scanned(phase, scan_mask).transpose(0, 1).reshape(phase.shape[1], -1)
        threshold = upper_quantile(region, self.params.percentile).clamp(min=0.0)
        weights = torch.where(region >= threshold, region, torch.zeros_like(region)).sum(dim=1)
        total = float(weights.sum())
        if not total > 0:
            return 0.0
        z = torch.arange(phase.shape[1], dtype=weights.dtype, device=weights.device)
        z_com = float((z * weights).sum()) / total
        shift = self.params.scale * ((phase.shape[1] - 1) / 2 - z_com)
        return max(-self.params.max_shift_slices, min(self.params.max_shift_slices, shift))
