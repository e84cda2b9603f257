"""Self-consistency of a dataset and its ground truth: ptyopt's forward model run on the truth.

With the true (thermally averaged) phase, the true probe and the true positions, ptyopt's multislice
model should predict the simulated patterns up to what it does not model (phonon averaging of the
intensities, sampling). A misplaced origin, swapped axes or a wrong sign shows up as a large R-factor.
"""

from __future__ import annotations

import numpy as np
import torch

from ptyopt.data.dataset import Dataset4D
from ptyopt.errors import DataError
from ptyopt.physics import forward_intensities, frequency_grid, propagator, split_positions


def truth_patterns(dataset: Dataset4D, *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Noise-free intensities (N, K, K) predicted from the truth (fine slices when present), sum ≈ probe power."""
    truth = dataset.truth
    if truth is None or truth.probe is None or truth.positions_ang is None:
        raise DataError("this dataset has no complete ground truth (phase, probe and true positions)")
    k = dataset.detector_shape[0]
    if abs(truth.dx_ang - dataset.dx_ang) > 1e-6 * dataset.dx_ang or truth.probe.shape[-1] != k:
        raise DataError(f"truth pixel {truth.dx_ang} Å / probe {truth.probe.shape} do not match the detector")
    fine = truth.fine_phase_slices is not None
    phase_np = truth.fine_phase_slices if fine else truth.phase_slices
    thickness = truth.fine_slice_thickness_ang if fine else truth.slice_thickness_ang
    phase = torch.as_tensor(phase_np, dtype=torch.float32, device=device)[None]
    probe = torch.as_tensor(truth.probe, dtype=torch.complex64, device=device).reshape(-1, k, k)
    centres = (torch.as_tensor(truth.positions_ang - np.asarray(truth.origin_ang), device=device)) / truth.dx_ang
    crop, shift = split_positions(centres.float(), (k, k))
    ky, kx = frequency_grid((k, k), truth.dx_ang, device=device)
    dz = torch.full((phase.shape[1],), thickness, device=device)
    props = propagator(ky, kx, dz, dataset.wavelength_ang, band_limit=True)
    amplitude, occupancy = torch.ones_like(phase), torch.ones(1, device=device)
    out = [
        forward_intensities(amplitude, phase, probe, crop[s : s + batch_size], shift[s : s + batch_size], props,
                            occupancy).cpu().numpy()
        for s in range(0, len(crop), batch_size)
    ]
    return np.concatenate(out)


def r_factor(model: np.ndarray, measured: np.ndarray) -> float:
    """R = sum |I_model - I_meas| / sum I_meas over all patterns and pixels."""
    measured = measured.astype(np.float64)
    return float(np.abs(model - measured).sum() / measured.sum())
