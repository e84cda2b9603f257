"""Evaluation of a result file: against the ground truth (``evaluate_result``) or against a second, independent
reconstruction (``compare_results``, the half-dataset FRC). Everything returned is plain floats, lists and dicts.

Phase recipe (research/simulation.md §5): the slice-summed phase over the scanned field of view minus a margin,
registered to the reference with sub-pixel phase correlation, freed of the offset (and optionally of a ramp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from ptyopt.data.dataset import Dataset4D, GroundTruth
from ptyopt.data.detector_errors import detector_map
from ptyopt.data.transforms import scan_region_indices
from ptyopt.errors import DataError, PtyoptError
from ptyopt.evaluate.data_fidelity import result_r_factor
from ptyopt.evaluate.frc import fourier_ring_correlation
from ptyopt.evaluate.phase_metrics import (
    align_phase,
    image_on_canvas,
    phase_error_metrics,
    scanned_region_mask,
    shift_mirrored,
    slice_sum,
)
from ptyopt.evaluate.probe_positions import position_errors, probe_overlap
from ptyopt.evaluate.ssim import structural_similarity
from ptyopt.io.result_file import ReconstructionResult, read_result


def load_result(path: str | Path) -> ReconstructionResult:
    """``read_result`` with a DataError (not an HDF5 traceback) for a missing, foreign or incomplete file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no result file at {path}")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path} is not a ptyopt result file (not HDF5); give the result.h5 of a reconstruction")
    try:
        return read_result(path)
    except KeyError as err:
        raise DataError(f"{path} is not a complete ptyopt result file (missing {err})") from None


@dataclass
class PhaseAlignment:
    """A slice-summed phase registered to a reference on one canvas (Y, X) [rad].

    aligned: the registered phase, offset (and ramp) removed; reference: the truth or the other reconstruction
    (NaN where unknown); region: bool pixels compared; info: shift_px (dy, dx) applied, offset_rad,
    ramp_rad_per_px; dx_ang [Å]; origin_ang (y, x) [Å] of pixel (0, 0) in the positions' frame.
    """

    aligned: np.ndarray
    reference: np.ndarray
    region: np.ndarray
    info: dict[str, Any]
    dx_ang: float
    origin_ang: tuple[float, float]

    @property
    def box(self) -> tuple[slice, slice]:
        """Bounding box of the region."""
        rows, cols = np.nonzero(self.region.any(axis=1))[0], np.nonzero(self.region.any(axis=0))[0]
        return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)

    def crops(self) -> tuple[np.ndarray, np.ndarray]:
        """Aligned and reference phase on the region's bounding box; pixels outside the region take the
        region's mean of each image (so that they add no structure)."""
        inside = self.region[self.box]
        out = []
        for image in (self.aligned, self.reference):
            crop = np.asarray(image, dtype=np.float64)[self.box].copy()
            crop[~inside] = crop[inside].mean()
            out.append(crop)
        return out[0], out[1]


def _align(phase, reference, mask, result, remove_ramp) -> PhaseAlignment:
    aligned, info = align_phase(phase, reference, mask, remove_ramp=remove_ramp)
    region = info.pop("region")
    return PhaseAlignment(aligned, reference, region, info, float(result.dx_ang), tuple(result.origin_ang))


def detector_frame(result: ReconstructionResult) -> tuple[np.ndarray, np.ndarray] | None:
    """(M, c) when the result's object lives in a detector frame rotated or transposed against the scan
    (``experiment.detector_rotation_deg`` / ``detector_transpose``), c the scan centre; else None."""
    try:
        raw = yaml.safe_load(result.config) if result.config else None
    except yaml.YAMLError:
        return None
    experiment = raw.get("experiment") if isinstance(raw, dict) else None
    if not isinstance(experiment, dict):
        return None
    angle, transpose = float(experiment.get("detector_rotation_deg") or 0), bool(experiment.get("detector_transpose"))
    if angle == 0 and not transpose:
        return None
    return detector_map(angle, transpose), np.asarray(result.nominal_positions_ang, dtype=np.float64).mean(axis=0)


def _mask(result: ReconstructionResult, positions_ang: np.ndarray, margin_ang: float) -> np.ndarray:
    return scanned_region_mask(result.object_phase.shape[-2:], result.origin_ang, result.dx_ang, positions_ang,
                               margin_ang, detector_frame(result))


def _canvas(image, dx_ang, origin_ang, result: ReconstructionResult, *, truth: bool = False) -> np.ndarray:
    """An image on the result's canvas; a truth's (in the scan frame) through the result's detector frame."""
    return image_on_canvas(image, dx_ang, origin_ang, result.object_phase.shape[-2:], result.origin_ang,
                           result.dx_ang, detector_frame(result) if truth else None)


def _recon_slices(result: ReconstructionResult) -> np.ndarray:
    """Occupancy-weighted phase per slice (S, Y, X) [rad]."""
    weights = np.asarray(result.occupancy, dtype=np.float64).reshape(-1)
    return np.tensordot(weights / weights.sum(), np.asarray(result.object_phase, dtype=np.float64), axes=1)


def align_to_truth(
    result: ReconstructionResult, truth: GroundTruth, *, margin_ang: float = 2.0, remove_ramp: bool = False
) -> PhaseAlignment:
    """The result's slice-summed phase registered to the true one over its scanned region minus margin_ang [Å]."""
    phase = slice_sum(result.object_phase, result.occupancy)
    reference = _canvas(truth.phase_slices.sum(axis=0, dtype=np.float64), truth.dx_ang, truth.origin_ang, result,
                        truth=True)
    return _align(phase, reference, _mask(result, result.nominal_positions_ang, margin_ang), result, remove_ramp)


def align_results(
    result_a: ReconstructionResult, result_b: ReconstructionResult, *, margin_ang: float = 2.0,
    remove_ramp: bool = False,
) -> PhaseAlignment:
    """Result a's slice-summed phase registered to result b's (resampled on a's canvas) over the region both
    scanned, minus margin_ang [Å]."""
    phase = slice_sum(result_a.object_phase, result_a.occupancy)
    reference = _canvas(slice_sum(result_b.object_phase, result_b.occupancy), result_b.dx_ang,
                        tuple(result_b.origin_ang), result_a)
    mask = (_mask(result_a, result_a.nominal_positions_ang, margin_ang)
            & _mask(result_a, result_b.nominal_positions_ang, margin_ang))
    return _align(phase, reference, mask, result_a, remove_ramp)


def _truth_slices(truth: GroundTruth, n_slices: int) -> np.ndarray | None:
    if truth.phase_slices.shape[0] == n_slices:
        return truth.phase_slices
    fine = truth.fine_phase_slices
    if fine is not None and fine.shape[0] % n_slices == 0:
        return fine.reshape(n_slices, -1, *fine.shape[1:]).sum(axis=1)
    return None


def _aligned_slices(result: ReconstructionResult, references: list[np.ndarray], alignment: PhaseAlignment,
                    remove_ramp: bool) -> list[PhaseAlignment]:
    """Each slice of ``result`` against its reference slice (on the result's canvas), moved by the slice sum's
    registration shift and freed of its own offset (and ramp)."""
    out = []
    for recon_slice, reference in zip(_recon_slices(result), references, strict=True):
        shifted = shift_mirrored(recon_slice, alignment.info["shift_px"])
        aligned, _ = align_phase(shifted, reference, alignment.region, register=False, remove_ramp=remove_ramp)
        out.append(PhaseAlignment(aligned, reference, alignment.region, {}, alignment.dx_ang, alignment.origin_ang))
    return out


def per_slice_metrics(
    result: ReconstructionResult, truth: GroundTruth, alignment: PhaseAlignment, *, remove_ramp: bool = False
) -> list[dict[str, Any]] | None:
    """rmse_rad and pearson_r of each slice against the true slice, after the slice sum's shift and each slice's
    own offset (and ramp) removal; None when the truth's slicing cannot be summed into the result's."""
    slices = _truth_slices(truth, result.object_phase.shape[1])
    if slices is None:
        return None
    references = [_canvas(truth_slice, truth.dx_ang, truth.origin_ang, result, truth=True) for truth_slice in slices]
    out = []
    for index, pair in enumerate(_aligned_slices(result, references, alignment, remove_ramp)):
        metrics = phase_error_metrics(pair.aligned, pair.reference, pair.region)
        out.append({"slice": index, "rmse_rad": metrics["rmse_rad"], "pearson_r": metrics["pearson_r"]})
    return out


def per_slice_frc(result_a: ReconstructionResult, result_b: ReconstructionResult, *, margin_ang: float = 2.0,
                  remove_ramp: bool = False) -> list[dict[str, Any]] | None:
    """FRC of each slice of a against the same slice of b (e.g. reconstructions of the two halves of the
    positions) after the slice sums' registration: frc_resolution_ang and the curve per slice; None when the two
    have different numbers of slices."""
    if result_a.object_phase.shape[1] != result_b.object_phase.shape[1]:
        return None
    alignment = align_results(result_a, result_b, margin_ang=margin_ang, remove_ramp=remove_ramp)
    references = [_canvas(b, result_b.dx_ang, tuple(result_b.origin_ang), result_a) for b in _recon_slices(result_b)]
    out = []
    for index, pair in enumerate(_aligned_slices(result_a, references, alignment, remove_ramp)):
        frc = fourier_ring_correlation(*pair.crops(), pair.dx_ang)
        out.append({"slice": index, "frc_resolution_ang": frc.resolution_ang, "frc": frc.to_dict()})
    return out


def _image_metrics(alignment: PhaseAlignment) -> dict[str, Any]:
    """Error metrics, SSIM and FRC of an alignment (FRC skipped with a note when the region is too small)."""
    metrics = phase_error_metrics(alignment.aligned, alignment.reference, alignment.region)
    aligned, reference = alignment.crops()
    data_range = metrics["truth_range_rad"]
    inside = alignment.region[alignment.box]
    metrics["ssim"] = (structural_similarity(aligned, reference, data_range, mask=inside)
                       if data_range > 0 else math.nan)
    try:
        frc = fourier_ring_correlation(aligned, reference, alignment.dx_ang)
        metrics["frc_resolution_ang"], metrics["frc"] = frc.resolution_ang, frc.to_dict()
    except DataError as err:
        metrics["frc_resolution_ang"], metrics["frc"] = None, None
        metrics.setdefault("notes", []).append(f"FRC skipped: {err}")
    return metrics


def _config_scan_region(result: ReconstructionResult):
    try:
        raw = yaml.safe_load(result.config) if result.config else None
    except yaml.YAMLError:
        return None
    data = raw.get("data") if isinstance(raw, dict) else None
    return data.get("scan_region") if isinstance(data, dict) else None


def _true_positions(result: ReconstructionResult, dataset: Dataset4D) -> np.ndarray | None:
    """True positions matching the result's, selecting the config's scan region when the result used one."""
    truth_positions = dataset.truth.positions_ang
    if truth_positions is None:
        return None
    n = len(result.positions_ang)
    frame = detector_frame(result)
    if frame is not None:  # the truth's scan-frame positions in the result's frame
        truth_positions = frame[1] + (truth_positions - frame[1]) @ frame[0].T
    if len(truth_positions) == n:
        return truth_positions
    region = _config_scan_region(result)
    if region is not None and dataset.scan_shape is not None and len(truth_positions) == dataset.n_patterns:
        index, _ = scan_region_indices(dataset.scan_shape, tuple(region[0]), tuple(region[1]))
        if len(index) == n:
            return truth_positions[index]
    return None


def _probe_metrics(result: ReconstructionResult, truth: GroundTruth, notes: list[str]) -> dict[str, Any]:
    empty = {"probe_overlap": None, "probe_overlap_mixed": None, "probe_shift_px": None}
    if truth.probe is None:
        notes.append("probe overlap skipped: the truth holds no probe")
        return empty
    same_pixel = abs(float(truth.probe_dx_ang) - result.dx_ang) <= 1e-6 * result.dx_ang
    if truth.probe.shape[-2:] != result.probe.shape[-2:] or not same_pixel:
        notes.append(f"probe overlap skipped: the true probe is {truth.probe.shape[-2:]} px at "
                     f"{truth.probe_dx_ang:.4g} Å, the result's {result.probe.shape[-2:]} px at {result.dx_ang:.4g} Å")
        return empty
    return probe_overlap(result.probe, truth.probe)


def _position_metrics(result: ReconstructionResult, dataset: Dataset4D, notes: list[str]) -> dict[str, Any]:
    truth_positions = _true_positions(result, dataset)
    if truth_positions is None:
        notes.append("position errors skipped: the truth holds no positions matching the result's")
        return {key: None for key in ("position_rms_error_ang", "position_rms_error_centred_ang",
                                      "position_mean_offset_ang", "position_rms_error_affine_ang",
                                      "nominal_rms_error_ang", "nominal_rms_error_centred_ang",
                                      "nominal_rms_error_affine_ang")}
    return position_errors(result.positions_ang, truth_positions, result.nominal_positions_ang)


def evaluate_result(
    result: ReconstructionResult,
    dataset: Dataset4D,
    *,
    margin_ang: float = 2.0,
    remove_ramp: bool = False,
    data_r_factor: bool = True,
    data_path: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Every ground-truth metric of a result against dataset.truth (see the module and function docs).

    Slice-summed phase over the scanned region minus margin_ang [Å]: rmse_rad, nrmse, psnr_db, ssim, pearson_r,
    truth_range_rad, n_pixels, shift_px, offset_rad, ramp_rad_per_px; per_slice (list, or None when the slicings
    differ); frc_resolution_ang and frc (curve) against the truth; probe_overlap, probe_overlap_mixed,
    probe_shift_px; position_rms_error_ang (± _centred), position_mean_offset_ang, nominal_rms_error_ang
    (± _centred); data_r_factor (on the config's data file, or data_path; None when it cannot be computed, or when
    data_r_factor is False); dx_ang, margin_ang, remove_ramp; notes: why any metric is None.
    """
    truth = dataset.truth
    if truth is None:
        raise DataError("the dataset holds no ground truth (/truth); compare two reconstructions instead")
    notes: list[str] = []
    alignment = align_to_truth(result, truth, margin_ang=margin_ang, remove_ramp=remove_ramp)
    metrics = _image_metrics(alignment)
    notes.extend(metrics.pop("notes", []))
    metrics.update(alignment.info)
    metrics.update({"dx_ang": float(result.dx_ang), "margin_ang": float(margin_ang), "remove_ramp": remove_ramp})
    metrics["per_slice"] = per_slice_metrics(result, truth, alignment, remove_ramp=remove_ramp)
    if metrics["per_slice"] is None:
        notes.append(f"per-slice metrics skipped: the truth's {truth.phase_slices.shape[0]} slices do not sum into "
                     f"the result's {result.object_phase.shape[1]}")
    metrics.update(_probe_metrics(result, truth, notes))
    metrics.update(_position_metrics(result, dataset, notes))
    metrics["data_r_factor"] = None
    if data_r_factor:
        try:
            metrics["data_r_factor"] = result_r_factor(result, data_path=data_path, device=device)
        except PtyoptError as err:
            notes.append(f"data R-factor skipped: {err}")
    metrics["notes"] = notes
    return metrics


def compare_results(
    result_a: ReconstructionResult,
    result_b: ReconstructionResult,
    *,
    margin_ang: float = 2.0,
    remove_ramp: bool = False,
) -> dict[str, Any]:
    """Half-dataset FRC: two independent reconstructions (e.g. of interleaved halves of the positions, or two
    noise realisations) registered to each other over their common scanned region minus margin_ang [Å].

    frc_resolution_ang and frc (curve); rms_difference_rad and pearson_r of a (aligned) against b; shift_px,
    offset_rad, ramp_rad_per_px moving a onto b; n_pixels, dx_ang, margin_ang; no truth needed.
    """
    alignment = align_results(result_a, result_b, margin_ang=margin_ang, remove_ramp=remove_ramp)
    metrics = _image_metrics(alignment)
    return {
        "frc_resolution_ang": metrics["frc_resolution_ang"], "frc": metrics["frc"],
        "rms_difference_rad": metrics["rmse_rad"], "pearson_r": metrics["pearson_r"], "ssim": metrics["ssim"],
        **alignment.info, "n_pixels": metrics["n_pixels"], "dx_ang": float(result_a.dx_ang),
        "margin_ang": float(margin_ang), "notes": metrics.get("notes", []),
    }


def json_safe(value: Any) -> Any:
    """A copy for strict JSON: NaN and ±inf become None, numpy scalars and arrays become Python numbers, lists."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
