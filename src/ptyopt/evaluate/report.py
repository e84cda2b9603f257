"""Text summaries of evaluation metrics (the rows of the CLI table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MISSING = "—"


def _number(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return MISSING
    if isinstance(value, list | tuple):
        return "(" + ", ".join(format(v, spec) for v in value) + ")"
    return format(value, spec)


def summary_rows(metrics: Mapping[str, Any] | None, compare: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(label with unit, formatted value) of the main metrics of ``evaluate_result`` and ``compare_results``."""
    rows: list[tuple[str, str]] = []
    if metrics:
        per_slice = metrics["per_slice"]
        rows += [
            ("phase RMSE (rad)", _number(metrics["rmse_rad"])),
            ("phase NRMSE", _number(metrics["nrmse"])),
            ("phase PSNR (dB)", _number(metrics["psnr_db"], ".2f")),
            ("phase SSIM", _number(metrics["ssim"])),
            ("phase Pearson r", _number(metrics["pearson_r"])),
            ("per-slice Pearson r", MISSING if per_slice is None else
             ", ".join(format(s["pearson_r"], ".3f") for s in per_slice)),
            ("FRC resolution vs truth (Å)", _number(metrics["frc_resolution_ang"])),
            ("probe overlap (dominant / mixed)",
             f"{_number(metrics['probe_overlap'])} / {_number(metrics['probe_overlap_mixed'])}"),
            ("position RMS error (Å)", _number(metrics["position_rms_error_ang"])),
            ("position RMS error, translation removed (Å)", _number(metrics["position_rms_error_centred_ang"])),
            ("position RMS error, best affine removed (Å)", _number(metrics["position_rms_error_affine_ang"])),
            ("nominal position RMS error: as is / translation / affine removed (Å)",
             " / ".join(_number(metrics[k]) for k in ("nominal_rms_error_ang", "nominal_rms_error_centred_ang",
                                                      "nominal_rms_error_affine_ang"))),
            ("data R-factor", _number(metrics["data_r_factor"])),
            ("shift (px) / offset (rad)",
             f"{_number(metrics['shift_px'], '.3f')} / {_number(metrics['offset_rad'])}"),
            ("pixels compared (pixel Å)", f"{metrics['n_pixels']} ({metrics['dx_ang']:.4g})"),
        ]
    if compare:
        rows += [
            ("half-dataset FRC resolution (Å)", _number(compare["frc_resolution_ang"])),
            ("A vs B: RMS difference (rad)", _number(compare["rms_difference_rad"])),
            ("A vs B: Pearson r", _number(compare["pearson_r"])),
        ]
    return rows
