"""Preprocessing pipeline: an ordered list of detector steps, each precomputed once or applied per batch.

Steps run in the order given. Every step may run ``precompute`` (once, on the whole dataset) or
``on_the_fly`` (on each batch as the engine fetches it, saving memory); precomputed steps must come
first. Steps that need statistics of the data (normalisation factor, padding background) fit them
once on the mean pattern of the data as it arrives at that step, so both modes give the same numbers.
The steps themselves are registered classes in ``ptyopt.data.steps``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ptyopt.data.dataset import Dataset4D
from ptyopt.data.steps import Step
from ptyopt.data.transforms import DetectorGeometry, scan_region_indices
from ptyopt.errors import ConfigError, DataError
from ptyopt.progress import progress_bar


class FittedStep:
    """A step with its fitted numbers, ready to apply to tensors (..., Ky, Kx)."""

    def __init__(self, config: Step, geometry_in: DetectorGeometry, mean_pattern: Tensor | None):
        self.config = config
        self.geometry_in = geometry_in
        self.geometry_out, self.fitted = config.fit(geometry_in, mean_pattern)

    def __call__(self, patterns: Tensor, indices: np.ndarray | None = None,
                 scan_shape: tuple[int, int] | None = None) -> Tensor:
        if self.config.per_pattern:
            if indices is None:
                raise DataError(f"preprocess step '{self.config.kind}' needs the patterns' scan indices")
            return self.config.apply_at(patterns, self.fitted, indices, scan_shape)
        return self.config.apply(patterns, self.fitted)


def _chunks(meas: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, Tensor]]:
    """(the patterns' indices, the patterns as float32) in chunks."""
    for start in range(0, meas.shape[0], chunk):
        part = np.asarray(meas[start : start + chunk], dtype=np.float32)
        yield np.arange(start, start + len(part)), torch.from_numpy(part)


def _apply_all(steps: Sequence[FittedStep], patterns: Tensor, indices: np.ndarray | None = None,
               scan_shape: tuple[int, int] | None = None) -> Tensor:
    for step in steps:
        patterns = step(patterns, indices, scan_shape)
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
        self.scan_shape = None if dataset.scan_shape is None else tuple(dataset.scan_shape)
        self.steps: list[FittedStep] = []
        geometry = DetectorGeometry(dataset.detector_shape, dataset.dk_inv_ang)
        for config in steps:
            mean = self._mean_pattern(dataset.meas) if config.needs_mean else None
            step = FittedStep(config, geometry, mean)
            self.steps.append(step)
            geometry = step.geometry_out
        self.geometry = geometry
        self._precompute = [s for s in self.steps if s.config.mode == "precompute"]
        self._on_the_fly = [s for s in self.steps if s.config.mode == "on_the_fly"]

    def _mean_pattern(self, meas: np.ndarray) -> Tensor:
        """Mean of all patterns after the steps fitted so far (streamed in chunks, float64 accumulation)."""
        total = None
        for indices, chunk in _chunks(meas, self.chunk_patterns):
            part = _apply_all(self.steps, chunk, indices, self.scan_shape).to(torch.float64).sum(dim=0)
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
            for indices, chunk in _chunks(dataset.meas, self.chunk_patterns):
                parts.append(_apply_all(self._precompute, chunk, indices, self.scan_shape).numpy())
                bar.advance(task, len(chunk))
        out = np.concatenate(parts)
        geometry = self._precompute[-1].geometry_out
        still_counts = dataset.counts and all(s.config.keeps_counts for s in self._precompute)
        return dataset.replace(meas=out, dk_inv_ang=geometry.dk_inv_ang, counts=still_counts)

    def on_the_fly(self, patterns: Tensor, indices: np.ndarray | None = None) -> Tensor:
        """Apply the on-the-fly steps to a batch (B, Ky, Kx) on its device; ``indices``: the patterns' scan
        indices (needed by steps that differ per pattern)."""
        return _apply_all(self._on_the_fly, patterns, None if indices is None else np.asarray(indices),
                          self.scan_shape)

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
    return dataset.subset(index, shape)
