"""Preprocessing steps (registry ``STEPS``, one class per step, named by its ``kind``): each is a strict config
model that fits its numbers on the detector it receives (``fit``) and then applies them to patterns (``apply``).

``Step`` is the config type of one step: the union of every registered step, told apart by ``kind``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

import numpy as np
from pydantic import Field
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.data.transforms import (
    DetectorGeometry,
    check_detector_range,
    fit_power_law,
    flip_transpose,
    pad_patterns,
    power_law_template,
    resample_patterns,
    resampling_matrix,
)
from ptyopt.errors import ConfigError, DataError
from ptyopt.registry import Registry

Mode = Literal["precompute", "on_the_fly"]
MODE_FIELD = Field("precompute", description="'precompute' once on the whole dataset, or 'on_the_fly' per batch")


class PreprocessStep(StrictModel):
    """Base of the steps. ``needs_mean``: ``fit`` receives the mean pattern of the data reaching the step;
    ``keeps_counts``: the output is still electron counts."""

    name: ClassVar[str]
    keeps_counts: ClassVar[bool] = True
    example: ClassVar[dict[str, Any]] = {}  # values of the required fields, for docs and the generic tests
    mode: Mode = MODE_FIELD

    @property
    def needs_mean(self) -> bool:
        return False

    def fit(self, geometry: DetectorGeometry, mean_pattern: Tensor | None) -> tuple[DetectorGeometry, Any]:
        """(the detector after this step, the fitted numbers ``apply`` needs)."""
        return geometry, None

    def apply(self, patterns: Tensor, fitted: Any) -> Tensor:
        raise NotImplementedError

    per_pattern: ClassVar[bool] = False  # apply_at needs each pattern's scan index

    def apply_at(self, patterns: Tensor, fitted: Any, indices: np.ndarray, scan_shape: tuple[int, int] | None
                 ) -> Tensor:
        """``apply`` for the patterns ``indices`` of a scan (what steps that differ per pattern override)."""
        return self.apply(patterns, fitted)


STEPS: Registry[type[PreprocessStep]] = Registry("preprocessing step")


@STEPS.register
class FlipTranspose(PreprocessStep):
    """Flip the detector axes (keeping DC at K//2), then optionally swap ky and kx."""

    name = "flip_transpose"
    kind: Literal["flip_transpose"] = "flip_transpose"
    flip_y: bool = Field(False, description="mirror ky")
    flip_x: bool = Field(False, description="mirror kx")
    transpose: bool = Field(False, description="swap the ky and kx axes")

    def fit(self, geometry, mean_pattern):
        shape = geometry.shape_px
        return (DetectorGeometry((shape[1], shape[0]), geometry.dk_inv_ang) if self.transpose else geometry), None

    def apply(self, patterns, fitted):
        return flip_transpose(patterns, self.flip_y, self.flip_x, self.transpose)


@STEPS.register
class CropDetector(PreprocessStep):
    """Keep detector rows y_px = [start, stop) and columns x_px; K shrinks at fixed dk, so dx grows."""

    name = "crop_detector"
    example = {"y_px": (8, 24), "x_px": (8, 24)}
    kind: Literal["crop_detector"] = "crop_detector"
    y_px: tuple[int, int] = Field(description="detector rows [start, stop)")
    x_px: tuple[int, int] = Field(description="detector columns [start, stop)")

    def fit(self, geometry, mean_pattern):
        check_detector_range(geometry.shape_px, self.y_px, self.x_px)
        size = (self.y_px[1] - self.y_px[0], self.x_px[1] - self.x_px[0])
        return DetectorGeometry(size, geometry.dk_inv_ang), None

    def apply(self, patterns, fitted):
        return patterns[..., slice(*self.y_px), slice(*self.x_px)]


@STEPS.register
class ClipNegative(PreprocessStep):
    """Set values below ``floor`` (default 0) to ``floor``: detector offsets make small negatives."""

    name = "clip_negative"
    kind: Literal["clip_negative"] = "clip_negative"
    floor: float = Field(0.0, description="smallest value kept")

    def apply(self, patterns, fitted):
        return patterns.clamp(min=self.floor)


@STEPS.register
class Normalize(PreprocessStep):
    """Divide by one factor fitted on the mean pattern; the data are no longer counts afterwards."""

    name = "normalize"
    keeps_counts = False
    kind: Literal["normalize"] = "normalize"
    method: Literal["max_of_mean", "sum_of_mean"] = Field(
        "sum_of_mean", description="'max_of_mean': mean pattern peaks at 1; 'sum_of_mean': mean pattern sums to 1"
    )

    @property
    def needs_mean(self) -> bool:
        return True

    def fit(self, geometry, mean_pattern):
        factor = mean_pattern.max() if self.method == "max_of_mean" else mean_pattern.sum()
        if not factor > 0:
            raise DataError("the mean pattern is not positive anywhere; cannot normalise these data")
        return geometry, 1.0 / float(factor)

    def apply(self, patterns, fitted):
        return patterns * fitted


@STEPS.register
class Pad(PreprocessStep):
    """Pad the detector to target_px (DC at the centre); K grows at fixed dk, so dx shrinks."""

    name = "pad"
    example = {"target_px": (48, 48), "background": "power_law"}
    kind: Literal["pad"] = "pad"
    target_px: tuple[int, int] = Field(description="padded detector size (Ky, Kx)")
    background: Literal["constant", "power_law"] = Field(
        "constant", description="'constant' fill, or a power law a·r^-b fitted to the dark pixels of the mean pattern"
    )
    value: float = Field(0.0, description="fill value of the 'constant' background")
    threshold_percentile: float = Field(
        70.0, gt=0, lt=100, description="'power_law': fit only pixels of the mean pattern below this percentile"
    )

    @property
    def needs_mean(self) -> bool:
        return self.background == "power_law"

    def fit(self, geometry, mean_pattern):
        shape = geometry.shape_px
        if self.target_px[0] < shape[0] or self.target_px[1] < shape[1]:
            raise ConfigError(f"pad target {self.target_px} is smaller than the detector {shape}")
        if self.background == "power_law":
            a, b = fit_power_law(mean_pattern, self.threshold_percentile)
            background = power_law_template(self.target_px, shape, a, b)
        else:
            background = self.value
        return DetectorGeometry(tuple(self.target_px), geometry.dk_inv_ang), background

    def apply(self, patterns, fitted):
        background = fitted.to(patterns.device, patterns.dtype) if isinstance(fitted, Tensor) else fitted
        return pad_patterns(patterns, self.target_px, background)


@STEPS.register
class Resample(PreprocessStep):
    """Resample the detector by scale_factor (0.5 bins 2×2, 2 upsamples), keeping counts and DC at the centre.

    K -> s·K and dk -> dk/s: the real-space pixel is unchanged, the probe window scales by s."""

    name = "resample"
    example = {"scale_factor": 0.5}
    kind: Literal["resample"] = "resample"
    scale_factor: float = Field(gt=0, description="s; s·K must be an integer")

    def fit(self, geometry, mean_pattern):
        shape, s = geometry.shape_px, self.scale_factor
        matrices = (resampling_matrix(shape[0], s), resampling_matrix(shape[1], s))
        return DetectorGeometry((round(shape[0] * s), round(shape[1] * s)), geometry.dk_inv_ang / s), matrices

    def apply(self, patterns, fitted):
        my, mx = (m.to(patterns.device, patterns.dtype) for m in fitted)
        return resample_patterns(patterns, my, mx)


@STEPS.register
class DetectorCorrection(PreprocessStep):
    """Undo what ``ptyopt calibrate`` measured, in one bicubic resampling per pattern: the pattern centre moved to
    K//2 (centre_px at the scan's middle plus the descan plane), then the detector's transpose and rotation
    against the scan undone (``ptyopt.data.detector_errors`` conventions). Each pattern is moved by its own scan
    position's descan; centre_px and the descan refer to the scan as the run reads it (after data.scan_region:
    calibrate the same region you reconstruct)."""

    name = "detector_correction"
    kind: Literal["detector_correction"] = "detector_correction"
    keeps_counts: ClassVar[bool] = False  # interpolated
    per_pattern: ClassVar[bool] = True
    example = {"rotation_deg": 10.0, "transpose": True, "centre_px": (16.3, 15.6),
               "descan_px_per_step": ((0.1, 0.0), (0.0, -0.1))}
    rotation_deg: float = Field(0.0, description="detector rotation against the scan [deg]")
    transpose: bool = Field(False, description="detector axes swapped (after the rotation)")
    centre_px: tuple[float, float] | None = Field(
        None, description="pattern centre (y, x) [px] at the scan's middle (null = K//2)")
    descan_px_per_step: tuple[tuple[float, float], tuple[float, float]] = Field(
        ((0.0, 0.0), (0.0, 0.0)), description="centre motion [[dcy/diy, dcy/dix], [dcx/diy, dcx/dix]] [px/step]")

    def fit(self, geometry, mean_pattern):
        from ptyopt.data.detector_errors import DetectorErrors

        k = np.array(geometry.shape_px) // 2
        offset = (0.0, 0.0) if self.centre_px is None else tuple(np.asarray(self.centre_px) - k)
        return geometry, DetectorErrors(self.rotation_deg, self.transpose, self.descan_px_per_step, offset)

    def apply(self, patterns, fitted):
        raise DataError("detector_correction needs each pattern's scan index")

    def apply_at(self, patterns, fitted, indices, scan_shape):
        from ptyopt.data.detector_errors import correct_detector_errors

        if scan_shape is None:
            raise DataError("detector_correction needs a raster dataset with a known scan shape (Ny, Nx)")
        return correct_detector_errors(patterns, fitted, fitted.centre_shifts_px(scan_shape)[indices])


# the config type of one step: every registered step, told apart by 'kind' (each class's kind is its name)
assert all(STEPS.get(name).model_fields["kind"].default == name for name in STEPS), "a step's kind must be its name"
Step = Annotated[Union[tuple(STEPS.get(name) for name in STEPS)], Field(discriminator="kind")]  # noqa: UP007
