"""The forward model on a batch of positions, from the optimisable state."""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

from ptyopt.config import ModelConfig
from ptyopt.model.state import Geometry
from ptyopt.objective.losses import LossInputs, ObjectUnderBatch
from ptyopt.physics import (
    far_field_intensity,
    frequency_grid,
    gather_patches,
    gather_slices,
    multislice_far_field,
    propagator,
    shift_probes,
    split_positions,
    transmission,
    window_coverage,
)


class ForwardOutput:
    """intensities (B, K, K), DC at K//2; occupancy (omode,); the object patches (B, omode, S, Y, X) under the
    batch's probes (``phase_patches``, ``amplitude_patches``) are gathered only when read."""

    def __init__(self, intensities: Tensor, occupancy: Tensor, state: dict[str, Tensor], crop_px: Tensor,
                 window_px: tuple[int, int]):
        self.intensities, self.occupancy = intensities, occupancy
        self._state, self._crop, self._window = state, crop_px, window_px

    @cached_property
    def phase_patches(self) -> Tensor:
        return gather_patches(self._state["object_phase"], self._crop, self._window)

    @cached_property
    def amplitude_patches(self) -> Tensor:
        return gather_patches(self._state["object_amplitude"], self._crop, self._window)

    def loss_inputs(self, meas: Tensor) -> LossInputs:
        """The loss terms' view of this batch: object terms read the canvases weighted by the window coverage
        (the same numbers as on the gathered patches, without the gathers)."""
        phase = self._state["object_phase"]
        coverage = window_coverage(self._crop, self._window, tuple(phase.shape[-2:]), dtype=phase.dtype)
        canvas = ObjectUnderBatch(phase, self._state["object_amplitude"], coverage, len(self._crop), self._window)
        return LossInputs(self.intensities, meas, lambda: self.phase_patches, lambda: self.amplitude_patches,
                          self.occupancy, canvas=canvas)


def gaussian_kernel_1d(sigma_px: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    radius = max(1, int(round(3 * sigma_px)))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return kernel / kernel.sum()


def detector_blur(intensities: Tensor, sigma_px: float) -> Tensor:
    """Separable Gaussian point-spread function (std sigma_px) with replicate edges; keeps the total."""
    kernel = gaussian_kernel_1d(sigma_px, intensities.dtype, intensities.device)
    r = kernel.numel() // 2
    x = intensities[:, None]
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1))
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1))
    return x[:, 0]


def multislice_intensities(probe: Tensor, object_amplitude: Tensor, object_phase: Tensor, occupancy: Tensor,
                           crop_px: Tensor, shift_px: Tensor, propagators: Tensor, *, propagate_last: bool,
                           detector_blur_px: float) -> Tensor:
    """The hot path, a pure function of tensors (what ``compute.compile`` compiles): intensities (B, K, K).

    The transmission exp(i phi)·A is formed on the whole canvas once per batch and then gathered slice by slice:
    cheaper than per-patch transmissions because the windows cover the canvas many times over.
    """
    window = tuple(probe.shape[-2:])
    transmissions = gather_slices(transmission(object_amplitude, object_phase), crop_px, window)
    far_field = multislice_far_field(shift_probes(probe, shift_px), transmissions, propagators,
                                     propagate_last=propagate_last)
    intensities = far_field_intensity(far_field, occupancy)
    if detector_blur_px > 0:
        intensities = detector_blur(intensities, detector_blur_px)
    return intensities


class ForwardModel:
    """Multislice ptychography model: state + batch indices -> diffraction intensities.

    Positions are nominal centres + refined offsets, split into an integer crop and a sub-pixel shift at
    every call, so a refined position that crosses half a pixel moves the crop instead of wrapping the probe.
    Propagators are computed once when neither tilts nor thicknesses can change. With ``compile`` the pure
    core (``multislice_intensities``) runs through torch.compile (one graph per batch size).
    """

    def __init__(self, config: ModelConfig, geometry: Geometry, initial_state: dict[str, Tensor], *,
                 fixed_propagators: bool, device: torch.device | str, real_dtype: torch.dtype, compile: bool = False):
        self.config = config
        self.geometry = geometry
        self.nominal_centres_px = torch.as_tensor(geometry.nominal_centres_px, dtype=real_dtype, device=device)
        self.ky, self.kx = frequency_grid(geometry.window_px, geometry.dx_ang, dtype=real_dtype, device=device)
        self._core = torch.compile(multislice_intensities, dynamic=False) if compile else multislice_intensities
        self._fixed: Tensor | None = None
        if fixed_propagators:  # computed here, once: never inside a torch.func transform
            with torch.no_grad():
                self._fixed = self._compute_propagators(initial_state, torch.zeros(1, dtype=torch.long, device=device))

    def propagators(self, state: dict[str, Tensor], indices: Tensor) -> Tensor:
        """(S | 1, Y, X) for a global tilt, (S | 1, B, Y, X) for per-position tilts."""
        return self._fixed if self._fixed is not None else self._compute_propagators(state, indices)

    def _compute_propagators(self, state: dict[str, Tensor], indices: Tensor) -> Tensor:
        tilts = state["tilts_mrad"]
        tilt = tilts[indices] if tilts.shape[0] > 1 else tilts[0]
        dz = state["slice_thickness_ang"]
        if dz.numel() == 1:
            dz = dz.expand(self.config.n_slices)
        return propagator(self.ky, self.kx, dz, self.geometry.wavelength_ang, kind=self.config.propagator,
                          tilt_mrad=tilt, band_limit=self.config.band_limit)

    def centres_px(self, state: dict[str, Tensor], indices: Tensor) -> Tensor:
        return self.nominal_centres_px[indices] + state["position_offsets_px"][indices]

    @staticmethod
    def occupancy(state: dict[str, Tensor]) -> Tensor:
        return state["occupancy"].abs() / state["occupancy"].abs().sum()

    def __call__(self, state: dict[str, Tensor], indices: Tensor) -> ForwardOutput:
        crop, shift = split_positions(self.centres_px(state, indices), self.geometry.window_px)
        occupancy = self.occupancy(state)
        intensities = self._core(
            state["probe"], state["object_amplitude"], state["object_phase"], occupancy, crop, shift,
            self.propagators(state, indices), propagate_last=self.config.propagate_last,
            detector_blur_px=self.config.detector_blur_px,
        )
        return ForwardOutput(intensities, occupancy, state, crop, self.geometry.window_px)

    def output(self, state: dict[str, Tensor], indices: Tensor, intensities: Tensor) -> ForwardOutput:
        """The batch's ForwardOutput around intensities computed elsewhere (e.g. chunk by chunk)."""
        crop, _ = split_positions(self.centres_px(state, indices).detach(), self.geometry.window_px)
        return ForwardOutput(intensities, self.occupancy(state), state, crop, self.geometry.window_px)
