"""Initial optimisable state: object canvas, probe modes, position offsets, tilts, thickness, occupancy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ptyopt.config import ModelConfig
from ptyopt.data.dataset import GroundTruth
from ptyopt.errors import ConfigError
from ptyopt.physics import make_probe, probe_modes
from ptyopt.physics.scan import normalised_time


@dataclass(frozen=True)
class Geometry:
    """Fixed geometry of a run.

    window_px: probe window = detector (K, K) after preprocessing; dx_ang: real-space pixel [Å];
    origin_ang: (y, x) [Å] of object pixel (0, 0) in the positions' frame; canvas_px: object (Yo, Xo);
    nominal_centres_px: (N, 2) nominal probe centres in object pixels; nominal_positions_ang: (N, 2);
    acquisition_time: (N,) each pattern's acquisition time tau in [-1/2, 1/2] (``physics.scan``), or None when
    the order of the scan is unknown.
    """

    window_px: tuple[int, int]
    dx_ang: float
    wavelength_ang: float
    origin_ang: tuple[float, float]
    canvas_px: tuple[int, int]
    nominal_positions_ang: np.ndarray
    nominal_centres_px: np.ndarray
    acquisition_time: np.ndarray | None = None


def make_geometry(positions_ang: np.ndarray, window_px: int, dx_ang: float, wavelength_ang: float,
                  margin_px: int, acquisition_order: np.ndarray | None = None) -> Geometry:
    """Object canvas that holds every probe window plus a margin; the first position sits at integer pixels."""
    low = positions_ang.min(axis=0)
    high = positions_ang.max(axis=0)
    origin = low - (window_px // 2 + margin_px) * dx_ang
    extent_px = np.ceil((high - low) / dx_ang).astype(int) + window_px + 2 * margin_px + 1
    centres = (positions_ang - origin) / dx_ang
    return Geometry(
        window_px=(window_px, window_px), dx_ang=dx_ang, wavelength_ang=wavelength_ang,
        origin_ang=(float(origin[0]), float(origin[1])), canvas_px=(int(extent_px[0]), int(extent_px[1])),
        nominal_positions_ang=positions_ang, nominal_centres_px=centres,
        acquisition_time=None if acquisition_order is None else normalised_time(acquisition_order),
    )


def initial_state(
    config: ModelConfig,
    geometry: Geometry,
    *,
    energy_kv: float,
    conv_angle_mrad: float,
    aberrations: dict[str, float],
    probe_power: float,
    device: torch.device | str,
) -> dict[str, Tensor]:
    """Vacuum object (A = 1, phi = 0), the aberrated probe split into modes with total power probe_power
    (the mean measured total intensity), zero position offsets, the initial tilt, uniform occupancy, the
    undistorted global scan model (M = 0, drift 0), and no deep-image-prior weights (an empty vector: a DIP object
    sets them, ``model.dip_object.object_network``)."""
    real = torch.float32 if config.precision == "float32" else torch.float64
    complex_dtype = torch.complex64 if real == torch.float32 else torch.complex128
    shape = (config.object_modes, config.n_slices, *geometry.canvas_px)
    probe = make_probe(geometry.window_px, geometry.dx_ang, energy_kv, conv_angle_mrad, aberrations,
                       edge=config.aperture_edge, dtype=complex_dtype, device=device)
    n_positions = len(geometry.nominal_centres_px)
    tilts = torch.tensor(config.initial_tilt_mrad, dtype=real, device=device)
    tilts = tilts.expand(n_positions if config.tilt_mode == "each" else 1, 2).clone()
    return {
        "object_amplitude": torch.ones(shape, dtype=real, device=device),
        "object_phase": torch.zeros(shape, dtype=real, device=device),
        "object_dip_weights": torch.zeros(0, dtype=real, device=device),
        "probe": probe_modes(probe, config.probe_modes, config.probe_extra_power) * float(np.sqrt(probe_power)),
        "position_offsets_px": torch.zeros(n_positions, 2, dtype=real, device=device),
        "tilts_mrad": tilts,
        "slice_thickness_ang": torch.full(
            (config.n_slices if config.slice_thickness_mode == "each" else 1,), config.slice_thickness_ang,
            dtype=real, device=device,
        ),
        "occupancy": torch.full((config.object_modes,), 1.0 / config.object_modes, dtype=real, device=device),
        "scan_affine": torch.zeros(2, 2, dtype=real, device=device),
        "scan_drift_px": torch.zeros(config.scan_drift_order + 1, 2, dtype=real, device=device),
    }


def truth_probe(truth: GroundTruth, config: ModelConfig, geometry: Geometry, probe_power: float,
                like: Tensor) -> Tensor:
    """The dataset's true probe as the initial probe (extra modes added as for an aperture probe)."""
    probe = np.asarray(truth.probe).reshape(-1, *np.asarray(truth.probe).shape[-2:])
    if probe.shape[-2:] != geometry.window_px or abs(truth.probe_dx_ang - geometry.dx_ang) > 1e-6 * geometry.dx_ang:
        raise ConfigError(
            f"the true probe is {probe.shape[-2:]} px at {truth.probe_dx_ang:.4g} Å but the model window is "
            f"{geometry.window_px} px at {geometry.dx_ang:.4g} Å; use probe_init: aperture with this preprocessing"
        )
    main = torch.as_tensor(probe[0], dtype=like.dtype, device=like.device)
    modes = probe_modes(main / torch.linalg.vector_norm(main), config.probe_modes, config.probe_extra_power)
    return modes * float(np.sqrt(probe_power))


def truth_object_phase(truth: GroundTruth, config: ModelConfig, geometry: Geometry, like: Tensor) -> Tensor:
    """True phase per slice (summed into the model's slicing) on the object canvas; 0 outside the truth."""
    from ptyopt.evaluate.phase_metrics import image_on_canvas

    slices = truth.phase_slices
    if slices.shape[0] != config.n_slices:
        fine = truth.fine_phase_slices
        if fine is not None and fine.shape[0] % config.n_slices == 0:
            slices = fine.reshape(config.n_slices, -1, *fine.shape[1:]).sum(axis=1)
        else:
            raise ConfigError(
                f"the truth has {slices.shape[0]} slices, which cannot be summed into n_slices={config.n_slices}"
            )
    canvas = np.stack([
        image_on_canvas(s, truth.dx_ang, truth.origin_ang, geometry.canvas_px, geometry.origin_ang, geometry.dx_ang)
        for s in slices
    ])
    phase = torch.as_tensor(np.nan_to_num(canvas, nan=0.0), dtype=like.dtype, device=like.device)
    return phase.expand_as(like).clone()
