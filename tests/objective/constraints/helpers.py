"""Small states and contexts shared by the constraint tests."""

import numpy as np
import torch

from ptyopt.data import raster_positions_ang
from ptyopt.model.scan_model import ScanModel
from ptyopt.model.state import make_geometry
from ptyopt.model.tensors import TENSOR_NAMES
from ptyopt.objective.constraints import ConstraintContext

SCAN_SHAPE = (3, 4)


def make_state(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """A small random state with structure every constraint can act on; leaves that require grad."""
    g = torch.Generator().manual_seed(1)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    omode, n_slices, yo, xo = 2, 4, 24, 24
    phase = 0.3 * torch.randn(omode, n_slices, yo, xo, generator=g, dtype=dtype)
    phase[:, 0, 8:12, 8:12] += 2.0  # "atoms" in the top slice: the depth centre of mass is off-centre
    amplitude = (1 + 0.15 * torch.randn(omode, n_slices, yo, xo, generator=g, dtype=dtype)).clamp(min=0.5)
    n = SCAN_SHAPE[0] * SCAN_SHAPE[1]
    state = {
        "object_amplitude": amplitude,
        "object_phase": phase,
        "probe": torch.randn(2, 16, 16, generator=g, dtype=cdtype),
        "position_offsets_px": 0.5 + torch.randn(n, 2, generator=g, dtype=dtype),
        "tilts_mrad": 1.0 + torch.randn(n, 2, generator=g, dtype=dtype),
        "slice_thickness_ang": torch.tensor([2.0], dtype=dtype),
        "occupancy": torch.tensor([0.6, 0.4], dtype=dtype),
        "scan_affine": 0.01 * torch.randn(2, 2, generator=g, dtype=dtype),
        "scan_drift_px": torch.randn(2, 2, generator=g, dtype=dtype),
    }
    return {key: value.requires_grad_(True) for key, value in state.items()}


def make_ctx(iteration: int = 1, **changes) -> ConstraintContext:
    mask = torch.zeros(24, 24, dtype=torch.bool)
    mask[4:20, 4:20] = True
    values = dict(
        iteration=iteration,
        dx_ang=0.5,
        wavelength_ang=0.0197,
        conv_angle_mrad=10.0,
        probe_power=3.0,
        scan_shape=SCAN_SHAPE,
        scan_mask=mask,
        refined=frozenset(TENSOR_NAMES),
        scan_model=make_scan_model(),
    )
    values.update(changes)
    return ConstraintContext(**values)


def make_scan_model() -> ScanModel:
    """The global scan model of the raster SCAN_SHAPE (0.5 Å steps and pixels), acquired in raster order."""
    n = SCAN_SHAPE[0] * SCAN_SHAPE[1]
    geometry = make_geometry(raster_positions_ang(SCAN_SHAPE, 0.5), 16, 0.5, 0.0197, 2, np.arange(n))
    return ScanModel(geometry, 1, dtype=torch.float64, device="cpu")


def snapshot(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in state.items()}
