"""The forward model on a batch of positions, from the optimisable state: the one operator every solver runs.

``ForwardModel(state, indices)`` maps the state to detected intensities through ``physics.forward_intensities``;
with ``keep_waves=True`` the same pass keeps its intermediates (``physics.MultisliceWaves``: crops, shifts, the
wave entering every slice, the far field), which the exit-wave solvers read instead of running a multislice
of their own. Whatever the model adds (detector response, tilts, ...) thus reaches every solver. With a
deep-image-prior object (``model.dip_object``) every pass first materialises the object from the network's weights
in the state, inside the autograd graph, so gradients reach the weights.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ptyopt.config import ModelConfig
from ptyopt.model.scan_model import ScanModel
from ptyopt.model.state import Geometry
from ptyopt.physics import (
    MultisliceWaves,
    forward_intensities,
    frequency_grid,
    gather_patches,
    multislice_forward,
    propagator,
    split_positions,
)

if TYPE_CHECKING:
    from ptyopt.model.dip_object import ObjectNetwork


class ForwardOutput:
    """intensities (B, K, K) as detected, DC at K//2; occupancy (omode,) normalised; crop_px (B, 2); the object
    patches (B, omode, S, Y, X) under the batch's probes (``phase_patches``, ``amplitude_patches``) are
    gathered only when read; ``waves``: the pass's intermediates when the model was called with keep_waves."""

    def __init__(self, intensities: Tensor, occupancy: Tensor, state: dict[str, Tensor], crop_px: Tensor,
                 window_px: tuple[int, int], waves: MultisliceWaves | None = None):
        self.intensities, self.occupancy, self.waves = intensities, occupancy, waves
        self.state, self.crop_px, self.window_px = state, crop_px, window_px

    @cached_property
    def phase_patches(self) -> Tensor:
        return gather_patches(self.state["object_phase"], self.crop_px, self.window_px)

    @cached_property
    def amplitude_patches(self) -> Tensor:
        return gather_patches(self.state["object_amplitude"], self.crop_px, self.window_px)


class ForwardModel:
    """Multislice ptychography model: state + batch indices -> diffraction intensities.

    Positions are the nominal centres moved by the global scan model and the per-position offsets
    (``model.scan_model.ScanModel``), split into an integer crop and a sub-pixel shift at every call, so a refined
    position that crosses half a pixel moves the crop instead of wrapping the probe.
    Propagators are computed once when neither tilts nor thicknesses can change. With ``compile`` the pure
    core (``physics.forward_intensities``) runs through torch.compile (one graph per batch size).
    ``object_network``: the deep-image-prior object, whose output replaces the object pixels of every state that
    holds its weights (None: the object is pixels).
    """

    def __init__(self, config: ModelConfig, geometry: Geometry, initial_state: dict[str, Tensor], *,
                 fixed_propagators: bool, device: torch.device | str, real_dtype: torch.dtype, compile: bool = False,
                 object_network: ObjectNetwork | None = None):
        self.config = config
        self.geometry = geometry
        self.object_network = object_network
        self.scan = ScanModel(geometry, config.scan_drift_order, dtype=real_dtype, device=device)
        self.ky, self.kx = frequency_grid(geometry.window_px, geometry.dx_ang, dtype=real_dtype, device=device)
        self._core = torch.compile(forward_intensities, dynamic=False) if compile else forward_intensities
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
        """Probe centres (B, 2) [object px] of the positions ``indices``."""
        return self.scan.centres_px(state, indices)

    def materialise(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The state as the model reads it: with a DIP object, its pixels replaced by the network's output (with
        the graph to the weights); else the state itself."""
        return state if self.object_network is None else self.object_network.materialise(state)

    def store_object(self, state: dict[str, Tensor]) -> None:
        """With a DIP object, write the network's output into the state's object pixels (in place); else nothing."""
        if self.object_network is not None:
            self.object_network.store(state)

    @staticmethod
    def occupancy(state: dict[str, Tensor]) -> Tensor:
        return state["occupancy"].abs() / state["occupancy"].abs().sum()

    def __call__(self, state: dict[str, Tensor], indices: Tensor, *, keep_waves: bool = False,
                 moved_px: Tensor | None = None) -> ForwardOutput:
        """Detected intensities of the positions ``indices``; ``keep_waves`` also keeps the pass's intermediates
        (with the incident wave of every slice) in ``ForwardOutput.waves``, through the same code; ``moved_px``
        (B, 2) moves each probe further by that many pixels (diagnostics: landscapes over a position)."""
        state = self.materialise(state)
        centres = self.centres_px(state, indices)
        crop, shift = split_positions(centres if moved_px is None else centres + moved_px, self.geometry.window_px)
        occupancy = self.occupancy(state)
        args = (state["object_amplitude"], state["object_phase"], state["probe"], crop, shift,
                self.propagators(state, indices), occupancy)
        options = dict(propagate_last=self.config.propagate_last, detector_blur_px=self.config.detector_blur_px)
        if keep_waves:
            waves = multislice_forward(*args, **options, keep_incident=True)
            return ForwardOutput(waves.intensities, occupancy, state, crop, self.geometry.window_px, waves)
        return ForwardOutput(self._core(*args, **options), occupancy, state, crop, self.geometry.window_px)

    def output(self, state: dict[str, Tensor], indices: Tensor, intensities: Tensor) -> ForwardOutput:
        """The batch's ForwardOutput around intensities computed elsewhere (e.g. chunk by chunk)."""
        state = self.materialise(state)
        crop, _ = split_positions(self.centres_px(state, indices).detach(), self.geometry.window_px)
        return ForwardOutput(intensities, self.occupancy(state), state, crop, self.geometry.window_px)
