"""The one table of optimisable tensors: config name (``optimize.<name>``), state key, unit, real or complex.

Everything that iterates over tensors (the optimize section, the state, the solvers' parameter groups, the
engine's update windows, checkpoints) reads this table, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimisableTensor:
    """config_name: key of ``optimize``; state_key: key of the state dict; unit: of its values (empty =
    dimensionless); complex: complex-valued (the probe)."""

    config_name: str
    state_key: str
    unit: str
    complex: bool = False


TENSORS: tuple[OptimisableTensor, ...] = (
    OptimisableTensor("object_amplitude", "object_amplitude", ""),
    OptimisableTensor("object_phase", "object_phase", "rad"),
    # the weights of the deep-image-prior object network, flattened (model.object_parametrisation: dip; empty
    # under pixels): the object pixels are then its output, not optimised themselves (``model.dip_object``)
    OptimisableTensor("object_dip", "object_dip_weights", ""),
    OptimisableTensor("probe", "probe", "sqrt(counts)", complex=True),
    OptimisableTensor("positions", "position_offsets_px", "px"),
    OptimisableTensor("tilts", "tilts_mrad", "mrad"),
    OptimisableTensor("slice_thickness", "slice_thickness_ang", "Å"),
    OptimisableTensor("occupancy", "occupancy", ""),
    OptimisableTensor("scan_affine", "scan_affine", ""),
    OptimisableTensor("scan_drift", "scan_drift_px", "px"),
)

TENSOR_NAMES: tuple[str, ...] = tuple(t.config_name for t in TENSORS)
STATE_KEYS: tuple[str, ...] = tuple(t.state_key for t in TENSORS)
STATE_KEY: dict[str, str] = {t.config_name: t.state_key for t in TENSORS}
