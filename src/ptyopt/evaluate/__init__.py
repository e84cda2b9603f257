"""Evaluation against ground truth and without it: registration, phase metrics, SSIM, FRC, probe and position
errors, data R-factors (figures live in ``ptyopt.evaluate.figures``, which imports matplotlib)."""

from ptyopt.evaluate.data_fidelity import model_r_factor, result_r_factor
from ptyopt.evaluate.evaluation import (
    PhaseAlignment,
    align_results,
    align_to_truth,
    compare_results,
    evaluate_result,
    json_safe,
    load_result,
    per_slice_metrics,
)
from ptyopt.evaluate.frc import FRCResult, fourier_ring_correlation, half_bit_threshold
from ptyopt.evaluate.phase_metrics import (
    align_phase,
    compare_phase,
    image_on_canvas,
    phase_error_metrics,
    phase_metrics,
    scanned_region_mask,
    shift_mirrored,
    slice_sum,
    truth_on_canvas,
)
from ptyopt.evaluate.probe_positions import position_errors, probe_overlap
from ptyopt.evaluate.registration import apodization_window, fourier_shift_image, phase_correlation_shift
from ptyopt.evaluate.report import summary_rows
from ptyopt.evaluate.ssim import ssim_map, structural_similarity

__all__ = [
    "FRCResult",
    "PhaseAlignment",
    "align_phase",
    "align_results",
    "align_to_truth",
    "apodization_window",
    "compare_phase",
    "compare_results",
    "evaluate_result",
    "fourier_ring_correlation",
    "fourier_shift_image",
    "half_bit_threshold",
    "image_on_canvas",
    "json_safe",
    "load_result",
    "model_r_factor",
    "per_slice_metrics",
    "phase_correlation_shift",
    "phase_error_metrics",
    "phase_metrics",
    "position_errors",
    "probe_overlap",
    "result_r_factor",
    "scanned_region_mask",
    "shift_mirrored",
    "slice_sum",
    "ssim_map",
    "structural_similarity",
    "summary_rows",
    "truth_on_canvas",
]
