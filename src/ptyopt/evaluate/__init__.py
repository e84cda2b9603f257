"""Evaluation against ground truth and without it."""

from ptyopt.evaluate.phase_metrics import (
    align_phase,
    compare_phase,
    phase_error_metrics,
    phase_metrics,
    scanned_region_mask,
    slice_sum,
    truth_on_canvas,
)
from ptyopt.evaluate.registration import apodization_window, fourier_shift_image, phase_correlation_shift

__all__ = [
    "align_phase",
    "apodization_window",
    "compare_phase",
    "fourier_shift_image",
    "phase_correlation_shift",
    "phase_error_metrics",
    "phase_metrics",
    "scanned_region_mask",
    "slice_sum",
    "truth_on_canvas",
]
