"""Preprocessing pipeline: an ordered list of detector steps, each precomputed once or applied per batch.

Steps run in the order given. Every step may run ``precompute`` (once, on the whole dataset) or
``on_the_fly`` (on each batch as the engine fetches it, saving memory); precomputed steps must come
first. Steps that need statistics of the data (normalisation factor, padding background) fit them
once on the mean pattern of the data as it arrives at that step, so both modes give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.data.dataset import Dataset4D
from ptyopt.data.transforms import (
    DetectorGeometry,
    check_detector_range,
    fit_power_law,
    flip_transpose,
    pad_patterns,
    power_law_template,
    resample_patterns,
    resampling_matrix,
    scan_region_indices,
)
from ptyopt.errors import ConfigError, DataError
from ptyopt.progress import progress_bar

Mode = Literal["precompute", "on_the_fly"]
MODE_FIELD = Field("precompute", description="'precompute' once on the whole dataset, or 'on_the_fly' per batch")


class FlipTranspose(StrictModel):
    """Flip the detector axes (keeping DC at K//2), then optionally swap ky and kx."""

    kind: Literal["flip_transpose"] = "flip_transpose"
    mode: Mode = MODE_FIELD
    flip_y: bool = Field(False, description="mirror ky")
    flip_x: bool = Field(False, description="mirror kx")
    transpose: bool = Field(False, description="swap the ky and kx axes")


class CropDetector(StrictModel):
    """Keep detector rows y_px = [start, stop) and columns x_px; K shrinks at fixed dk, so dx grows."""

    kind: Literal["crop_detector"] = "crop_detector"
    mode: Mode = MODE_FIELD
    y_px: tuple[int, int] = Field(description="detector rows [start, stop)")
    x_px: tuple[int, int] = Field(description="detector columns [start, stop)")


class ClipNegative(StrictModel):
    """Set values below ``floor`` (default 0) to ``floor``: detector offsets make small negatives."""

    kind: Literal["clip_negative"] = "clip_negative"
    mode: Mode = MODE_FIELD
    floor: float = Field(0.0, description="smallest value kept")


class Normalize(StrictModel):
    """Divide by one factor fitted on the mean pattern; the data are no longer counts afterwards."""

    kind: Literal["normalize"] = "normalize"
    mode: Mode = MODE_FIELD
    method: Literal["max_of_mean", "sum_of_mean"] = Field(
        "sum_of_mean", description="'max_of_mean': mean pattern peaks at 1; 'sum_of_mean': mean pattern sums to 1"
    )


class Pad(StrictModel):
    """Pad the detector to target_px (DC at the centre); K grows at fixed dk, so dx shrinks."""

    kind: Literal["pad"] = "pad"
    mode: Mode = MODE_FIELD
    target_px: tuple[int, int] = Field(description="padded detector size (Ky, Kx)")
    background: Literal["constant", "power_law"] = Field(
        "constant", description="'constant' fill, or a power law a·r^-b fitted to the dark pixels of the mean pattern"
    )
    value: float = Field(0.0, description="fill value of the 'constant' background")
    threshold_percentile: float = Field(
        70.0, gt=0, lt=100, description="'power_law': fit only pixels of the mean pattern below this percentile"
    )


class Resample(StrictModel):
    """Resample the detector by scale_factor (0.5 bins 2×2, 2 upsamples), keeping counts and DC at the centre.

    K -> s·K and dk -> dk/s: the real-space pixel is unchanged, the probe window scales by s."""

    kind: Literal["resample"] = "resample"
    mode: Mode = MODE_FIELD
    scale_factor: float = Field(gt=0, description="s; s·K must be an integer")


Step = Annotated[FlipTranspose | CropDetector | ClipNegative | Normalize | Pad | Resample, Field(discriminator="kind")]


def _needs_mean(config: Step) -> bool:
    """Steps whose numbers are fitted on the mean pattern of the data reaching them."""
    return isinstance(config, Normalize) or (isinstance(config, Pad) and config.background == "power_law")


class FittedStep:
    """A step with its fitted numbers, ready to apply to tensors (..., Ky, Kx)."""

    def __init__(self, config: Step, geometry_in: DetectorGeometry, mean_pattern: Tensor | None):
        self.config = config
        self.geometry_in = geometry_in
        self.geometry_out = geometry_in
        self.scale = 1.0
        self.background: Tensor | float = 0.0
        self.matrices: tuple[Tensor, Tensor] | None = None
        shape, dk = geometry_in.shape_px, geometry_in.dk_inv_ang
        match config:
            case FlipTranspose(transpose=True):
                self.geometry_out = DetectorGeometry((shape[1], shape[0]), dk)
            case CropDetector():
                check_detector_range(shape, config.y_px, config.x_px)
                size = (config.y_px[1] - config.y_px[0], config.x_px[1] - config.x_px[0])
                self.geometry_out = DetectorGeometry(size, dk)
            case Normalize():
                assert mean_pattern is not None
                factor = mean_pattern.max() if config.method == "max_of_mean" else mean_pattern.sum()
                if not factor > 0:
                    raise DataError("the mean pattern is not positive anywhere; cannot normalise these data")
                self.scale = 1.0 / float(factor)
            case Pad():
                if config.target_px[0] < shape[0] or config.target_px[1] < shape[1]:
                    raise ConfigError(f"pad target {config.target_px} is smaller than the detector {shape}")
                self.geometry_out = DetectorGeometry(tuple(config.target_px), dk)
                if config.background == "power_law":
                    assert mean_pattern is not None
                    a, b = fit_power_law(mean_pattern, config.threshold_percentile)
                    self.background = power_law_template(config.target_px, shape, a, b)
                else:
                    self.background = config.value
            case Resample():
                s = config.scale_factor
                self.matrices = (resampling_matrix(shape[0], s), resampling_matrix(shape[1], s))
                self.geometry_out = DetectorGeometry((round(shape[0] * s), round(shape[1] * s)), dk / s)

    def __call__(self, patterns: Tensor) -> Tensor:
        config = self.config
        match config:
            case FlipTranspose():
                return flip_transpose(patterns, config.flip_y, config.flip_x, config.transpose)
            case CropDetector():
                return patterns[..., slice(*config.y_px), slice(*config.x_px)]
            case ClipNegative():
                return patterns.clamp(min=config.floor)
            case Normalize():
                return patterns * self.scale
            case Pad():
                background = self.background
                if isinstance(background, Tensor):
                    background = background.to(patterns.device, patterns.dtype)
                return pad_patterns(patterns, config.target_px, background)
            case Resample():
                my, mx = (m.to(patterns.device, patterns.dtype) for m in self.matrices)
                return resample_patterns(patterns, my, mx)
        raise AssertionError(f"unhandled step {config}")


def _chunks(meas: np.ndarray, chunk: int) -> Iterator[Tensor]:
    for start in range(0, meas.shape[0], chunk):
        yield torch.from_numpy(np.asarray(meas[start : start + chunk], dtype=np.float32))


def _apply_all(steps: Sequence[FittedStep], patterns: Tensor) -> Tensor:
    for step in steps:
        patterns = step(patterns)
    return patterns


class Preprocessor:
    """Fitted pipeline: ``precompute(dataset)`` runs the precompute part once; ``on_the_fly(batch)`` the rest.

    ``geometry`` is the detector the model sees after every step (its K, dk and real-space pixel).
    """

    def __init__(self, steps: Sequence[Step], dataset: Dataset4D, *, chunk_patterns: int = 256):
        modes = [step.mode for step in steps]
        if "on_the_fly" in modes and "precompute" in modes[modes.index("on_the_fly") :]:
            raise ConfigError(
                "a 'precompute' preprocessing step follows an 'on_the_fly' one; precomputed steps must come first "
                "(make the later steps 'on_the_fly' too, or reorder them)"
            )
        self.chunk_patterns = chunk_patterns
        self.steps: list[FittedStep] = []
        geometry = DetectorGeometry(dataset.detector_shape, dataset.dk_inv_ang)
        for config in steps:
            mean = self._mean_pattern(dataset.meas) if _needs_mean(config) else None
            step = FittedStep(config, geometry, mean)
            self.steps.append(step)
            geometry = step.geometry_out
        self.geometry = geometry
        self._precompute = [s for s in self.steps if s.config.mode == "precompute"]
        self._on_the_fly = [s for s in self.steps if s.config.mode == "on_the_fly"]

    def _mean_pattern(self, meas: np.ndarray) -> Tensor:
        """Mean of all patterns after the steps fitted so far (streamed in chunks, float64 accumulation)."""
        total = None
        for chunk in _chunks(meas, self.chunk_patterns):
            part = _apply_all(self.steps, chunk).to(torch.float64).sum(dim=0)
            total = part if total is None else total + part
        return total / meas.shape[0]

    @property
    def has_on_the_fly(self) -> bool:
        return bool(self._on_the_fly)

    def precompute(self, dataset: Dataset4D) -> Dataset4D:
        """Dataset after the precomputed steps (float32), with dk and counts flag updated."""
        if not self._precompute:
            return dataset
        parts = []
        with progress_bar(transient=True) as bar:
            task = bar.add_task("preprocessing", total=dataset.n_patterns)
            for chunk in _chunks(dataset.meas, self.chunk_patterns):
                parts.append(_apply_all(self._precompute, chunk).numpy())
                bar.advance(task, len(chunk))
        out = np.concatenate(parts)
        geometry = self._precompute[-1].geometry_out
        still_counts = dataset.counts and not any(isinstance(s.config, Normalize) for s in self._precompute)
        return dataset.replace(meas=out, dk_inv_ang=geometry.dk_inv_ang, counts=still_counts)

    def on_the_fly(self, patterns: Tensor) -> Tensor:
        """Apply the on-the-fly steps to a batch (B, Ky, Kx) on its device."""
        return _apply_all(self._on_the_fly, patterns)

    def apply_all(self, patterns: Tensor) -> Tensor:
        """Every step, in order, on a tensor of raw patterns (used by tests and previews)."""
        return _apply_all(self.steps, patterns)


def select_scan_region(
    dataset: Dataset4D, y_range: tuple[int, int] | None, x_range: tuple[int, int] | None
) -> Dataset4D:
    """Keep the scan rows y_range = [start, stop) and columns x_range of a raster dataset (positions keep
    their absolute values, so a ground truth stays aligned); e.g. the central 100×100 of a 200×200 scan."""
    if dataset.scan_shape is None:
        raise DataError("scan cropping needs a raster dataset with a known scan_shape (Ny, Nx)")
    index, shape = scan_region_indices(dataset.scan_shape, y_range, x_range)
    truth = dataset.truth
    if truth is not None and truth.positions_ang is not None:
        truth = type(truth)(**{**truth.__dict__, "positions_ang": truth.positions_ang[index]})
    return dataset.replace(
        meas=dataset.meas[index], positions_ang=dataset.positions_ang[index], scan_shape=shape, truth=truth
    )
