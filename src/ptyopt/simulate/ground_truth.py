"""Ground truth of a simulated dataset, band-limited exactly like the data it belongs to.

The detector keeps the K×K centre of the simulation grid's spectrum (K = 2N/3), and abTEM's antialias
aperture removes |k| > K/2·dk from every slice. The truth is therefore the potential Fourier-cropped to
K×K and masked to |k| < K/2·dk: what a perfect reconstruction at pixel 1/(K dk) can show.
"""

from __future__ import annotations

import numpy as np

from ptyopt.data.dataset import GroundTruth
from ptyopt.physics.constants import interaction_constant
from ptyopt.simulate.presets import SimulationSpec


def fourier_crop(array: np.ndarray, size_px: int, band_limit: bool) -> np.ndarray:
    """Resample (..., N, N) onto (..., K, K) covering the same extent by keeping the central K×K frequencies.

    Values keep their meaning (a constant stays the same constant). ``band_limit`` also removes |k| >= K/2.
    """
    n = array.shape[-1]
    spectrum = np.fft.fftshift(np.fft.fft2(array), axes=(-2, -1))
    start = n // 2 - size_px // 2
    cropped = spectrum[..., start : start + size_px, start : start + size_px]
    if band_limit:
        k = np.arange(size_px) - size_px // 2
        cropped = cropped * (k[:, None] ** 2 + k[None, :] ** 2 < (size_px / 2) ** 2)
    out = np.fft.ifft2(np.fft.ifftshift(cropped, axes=(-2, -1))) * (size_px / n) ** 2
    return out.real if np.isrealobj(array) else out


def tile_canvas(cell: np.ndarray, origin_px: tuple[int, int], shape_px: tuple[int, int]) -> np.ndarray:
    """Periodic tiling of a cell image (..., K, K) onto a canvas whose pixel (0, 0) is cell pixel origin_px."""
    rows = (origin_px[0] + np.arange(shape_px[0])) % cell.shape[-2]
    cols = (origin_px[1] + np.arange(shape_px[1])) % cell.shape[-1]
    return cell[..., rows[:, None], cols[None, :]]


def build_truth(
    spec: SimulationSpec,
    potential_slices_v_ang: np.ndarray,
    probe_sim: np.ndarray,
    positions_true_ang: np.ndarray,
    attrs: dict,
) -> GroundTruth:
    """GroundTruth on a canvas covering every probe window (scan ± half a window, plus 4 px).

    potential_slices_v_ang: thermally averaged v_z per simulation slice (S_sim, N, N) [V·Å], [y, x];
    probe_sim: the probe on the simulation grid (N, N), centred on the cell.
    """
    k, dx = spec.detector_px, spec.dx_ang
    sigma = interaction_constant(spec.energy_kv)
    fine = sigma * fourier_crop(potential_slices_v_ang, k, band_limit=True)  # (S_sim, K, K) [rad]
    group = spec.n_sim_slices // spec.recon_slices
    coarse = fine.reshape(spec.recon_slices, group, k, k).sum(axis=1)
    margin_px = 4
    low = np.floor((positions_true_ang.min(axis=0) / dx) - k / 2).astype(int) - margin_px
    high = np.ceil((positions_true_ang.max(axis=0) / dx) + k / 2).astype(int) + margin_px
    shape = (int(high[0] - low[0]), int(high[1] - low[1]))
    origin = (int(low[0]), int(low[1]))
    probe = fourier_crop(probe_sim, k, band_limit=False)
    return GroundTruth(
        phase_slices=tile_canvas(coarse, origin, shape).astype(np.float32),
        dx_ang=dx,
        slice_thickness_ang=group * spec.sim_slice_thickness_ang,
        origin_ang=(origin[0] * dx, origin[1] * dx),
        positions_ang=positions_true_ang,
        probe=(probe / np.linalg.norm(probe)).astype(np.complex64),
        probe_dx_ang=dx,
        fine_phase_slices=tile_canvas(fine, origin, shape).astype(np.float32),
        fine_slice_thickness_ang=spec.sim_slice_thickness_ang,
        attrs=attrs,
    )
