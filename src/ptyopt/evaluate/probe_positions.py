"""Probe fidelity and scan-position error against the ground truth (research/simulation.md §5, step 5)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ptyopt.errors import DataError
from ptyopt.evaluate.registration import fourier_shift_image, phase_correlation_shift


def _modes(probe: np.ndarray, name: str) -> np.ndarray:
    probe = np.asarray(probe)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3:
        raise DataError(f"{name} has shape {probe.shape}; expected (Y, X) or (pmode, Y, X)")
    if not np.isfinite(probe).all():
        raise DataError(f"{name} holds NaN or infinite values")
    return probe.astype(np.complex128)


def _dominant(modes: np.ndarray) -> int:
    return int(np.argmax(np.sum(np.abs(modes) ** 2, axis=(1, 2))))


def _overlaps(modes: np.ndarray, true_mode: np.ndarray) -> tuple[float, float]:
    """(|<P_0|P_t>| / (||P_0|| ||P_t||) of the dominant mode, sqrt(Σ_m |<P_m|P_t>|² / (Σ_m ||P_m||² ||P_t||²)))."""
    inner = np.einsum("myx,yx->m", np.conj(modes), true_mode)
    norms2 = np.sum(np.abs(modes) ** 2, axis=(1, 2))
    true_norm2 = float(np.sum(np.abs(true_mode) ** 2))
    if true_norm2 <= 0 or norms2.sum() <= 0:
        raise DataError("a probe is zero everywhere; its overlap is undefined")
    main = _dominant(modes)
    dominant = float(np.abs(inner[main]) / math.sqrt(norms2[main] * true_norm2))
    mixed = math.sqrt(float(np.sum(np.abs(inner) ** 2)) / (float(norms2.sum()) * true_norm2))
    return min(dominant, 1.0), min(mixed, 1.0)  # Cauchy–Schwarz bounds both by 1; trims round-off


def probe_overlap(probe: np.ndarray, true_probe: np.ndarray, *, register: bool = True) -> dict[str, Any]:
    """Overlap of a reconstructed probe (pmode, Y, X) or (Y, X) complex with the true probe (same pixel).

    probe_overlap = |<P_0|P_t>| / (||P_0|| ||P_t||) for the most powerful reconstructed mode P_0 and the most
    powerful true mode P_t (1 for the same probe times any complex factor); probe_overlap_mixed =
    sqrt(Σ_m |<P_m|P_t>|² / (Σ_m ||P_m||² ||P_t||²)) over all reconstructed modes (1 when P_t lies in their span
    and holds all their power). With register, |P_0| is registered to |P_t| by sub-pixel phase correlation (the
    probe position in its window trades off against the object translation) and every mode is shifted by it
    (periodically) when that raises the dominant overlap; probe_shift_px (dy, dx) is the shift used.
    """
    modes = _modes(probe, "reconstructed probe")
    true_modes = _modes(true_probe, "true probe")
    if modes.shape[1:] != true_modes.shape[1:]:
        raise DataError(f"the probe window {modes.shape[1:]} differs from the true probe's {true_modes.shape[1:]}")
    true_mode = true_modes[_dominant(true_modes)]
    dominant, mixed = _overlaps(modes, true_mode)
    shift = (0.0, 0.0)
    if register and min(modes.shape[1:]) >= 4:
        moved = phase_correlation_shift(np.abs(true_mode), np.abs(modes[_dominant(modes)]))
        shifted = fourier_shift_image(modes, moved)
        dominant_shifted, mixed_shifted = _overlaps(shifted, true_mode)
        if dominant_shifted > dominant:
            dominant, mixed, shift = dominant_shifted, mixed_shifted, moved
    return {"probe_overlap": dominant, "probe_overlap_mixed": mixed,
            "probe_shift_px": [float(shift[0]), float(shift[1])]}


def _rms(displacement: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(displacement**2, axis=1))))


def without_affine(displacement: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The displacement (N, 2) minus its least-squares affine fit B [r_n - mean r, 1] over the positions reference
    (N, 2): what no scan-coil affine error (with translation) explains."""
    design = np.column_stack([reference - reference.mean(axis=0), np.ones(len(reference))])
    fit, *_ = np.linalg.lstsq(design, displacement, rcond=None)
    return displacement - design @ fit


def position_errors(
    positions_ang: np.ndarray,
    true_positions_ang: np.ndarray,
    nominal_positions_ang: np.ndarray | None = None,
) -> dict[str, Any]:
    """RMS (over positions) of the 2-D distance between positions (N, 2) and the true ones (N, 2) [Å].

    position_rms_error_ang: as they are; position_rms_error_centred_ang: after removing the mean displacement
    position_mean_offset_ang (y, x), the global translation that ptychography does not determine;
    position_rms_error_affine_ang: after removing the best affine map of the error (translation, rotation,
    scale, shear: the part a scan-coil calibration explains), i.e. the local errors. With the nominal positions
    (N, 2): nominal_rms_error_ang, nominal_rms_error_centred_ang and nominal_rms_error_affine_ang, the same for
    the scan as commanded (the error the refinement started from).
    """
    positions = np.asarray(positions_ang, dtype=np.float64)
    truth = np.asarray(true_positions_ang, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2 or positions.shape != truth.shape:
        raise DataError(f"positions {positions.shape} and true positions {truth.shape} must both be (N, 2)")
    displacement = positions - truth
    offset = displacement.mean(axis=0)
    out: dict[str, Any] = {
        "position_rms_error_ang": _rms(displacement),
        "position_rms_error_centred_ang": _rms(displacement - offset),
        "position_mean_offset_ang": [float(offset[0]), float(offset[1])],
        "position_rms_error_affine_ang": _rms(without_affine(displacement, truth)),
    }
    if nominal_positions_ang is not None:
        nominal = np.asarray(nominal_positions_ang, dtype=np.float64)
        if nominal.shape != truth.shape:
            raise DataError(f"nominal positions {nominal.shape} and true positions {truth.shape} differ in shape")
        nominal_displacement = nominal - truth
        out["nominal_rms_error_ang"] = _rms(nominal_displacement)
        out["nominal_rms_error_centred_ang"] = _rms(nominal_displacement - nominal_displacement.mean(axis=0))
        out["nominal_rms_error_affine_ang"] = _rms(without_affine(nominal_displacement, truth))
    return out
