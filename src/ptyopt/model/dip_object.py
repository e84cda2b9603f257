"""The deep-image-prior object (``model.object_parametrisation: dip``): object slices given by a network.

With n = network(z; w) (``model.dip``), C = omode·S, the object on the canvas is
  phase     φ = φ0 + n[0:C]                      [rad]
  amplitude A = A0 · exp(n[C:2C])                (with ``dip.amplitude``; else A stays the state's pixels)
reshaped to (omode, S, Y, X). φ0 and A0 are the initial object of ``model.object_init`` (vacuum: 0 and 1), so at
the initial weights (n = 0) the object is exactly the pixel run's initial object. What the solvers optimise is the
flat weight vector w, state["object_dip_weights"] (``optimize.object_dip``).

``ObjectNetwork.materialise`` replaces the object pixels of a state by the network's output inside the autograd
graph; the forward model calls it on every pass, so gradients reach w. ``store`` writes the output into
state["object_phase"/"object_amplitude"] (the engine does so after every iteration), so results, metrics,
snapshots and ``ptyopt evaluate`` read the object as pixels. A state without "object_dip_weights" (one read from a
result file) is taken as pixels. ``warm_start`` fits the network to the object of an earlier result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ptyopt.errors import ConfigError, DataError
from ptyopt.model.dip import NetworkLayout, input_code, network_output
from ptyopt.model.dip_config import DipConfig
from ptyopt.model.tensors import STATE_KEY

WEIGHTS_KEY = STATE_KEY["object_dip"]


class ObjectNetwork:
    """The object (omode, S, Y, X) as the output of a DIP network on the base object (see the module docstring)."""

    def __init__(self, config: DipConfig, base_amplitude: Tensor, base_phase: Tensor, seed: int):
        omode, n_slices, *canvas = base_phase.shape
        coarsest = min(-(-size // 2**config.levels) for size in canvas)
        if coarsest < 2:
            fits = max(level for level in range(7) if min(-(-size // 2**level) for size in canvas) >= 2)
            raise ConfigError(f"model.dip.levels is {config.levels}, but the {canvas[0]}×{canvas[1]} px object canvas "
                              f"halves to under 2 px; set model.dip.levels <= {fits}")
        self.config = config
        self.shape = tuple(base_phase.shape)
        self.channels = omode * n_slices
        self.layout = NetworkLayout.of(config, self.channels * (2 if config.amplitude else 1))
        generator = torch.Generator().manual_seed(seed)
        self.code = input_code(config, tuple(canvas), generator, base_phase.dtype).to(base_phase.device)
        self._initial = self.layout.initial_weights(generator, base_phase.dtype).to(base_phase.device)
        self.base_amplitude = base_amplitude.detach().clone()
        self.base_phase = base_phase.detach().clone()
        self._cached: tuple[Tensor, int, tuple[Tensor, Tensor]] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The state keys of the pixels the network gives."""
        return ("object_amplitude", "object_phase") if self.config.amplitude else ("object_phase",)

    def initial_weights(self) -> Tensor:
        """The seeded initial weight vector (a fresh copy): the network's output is 0 there."""
        return self._initial.clone()

    def object(self, weights: Tensor, amplitude_pixels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(A, φ), each (omode, S, Y, X), at the weights; A = ``amplitude_pixels`` when the network gives no
        amplitude. Without a graph to build (no grad mode, or frozen weights) the output of unchanged weights is
        computed once (checked by the tensor and its in-place version counter)."""
        graph = torch.is_grad_enabled() and weights.requires_grad
        cached = self._cached
        if not graph and cached is not None and cached[0] is weights and cached[1] == weights._version:
            amplitude, phase = cached[2]
        else:
            n = network_output(self.layout, weights, self.code).reshape(-1, *self.shape)
            phase = self.base_phase + n[0]
            amplitude = self.base_amplitude * torch.exp(n[1]) if self.config.amplitude else None
            if not graph:
                self._cached = (weights, weights._version, (amplitude, phase))
        if amplitude is None:
            amplitude = amplitude_pixels
        return amplitude, phase

    def materialise(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The state with the object pixels replaced by the network's output (a new dict; the state is unchanged);
        a state without weights (read from a result) is returned as it is."""
        weights = state.get(WEIGHTS_KEY)
        if weights is None:
            return state
        amplitude, phase = self.object(weights, state["object_amplitude"])
        return {**state, "object_amplitude": amplitude, "object_phase": phase}

    def store(self, state: dict[str, Tensor]) -> None:
        """Write the network's output at the state's weights into the state's object pixels, in place."""
        with torch.no_grad():
            amplitude, phase = self.object(state[WEIGHTS_KEY], state["object_amplitude"])
            state["object_phase"].copy_(phase)
            state["object_amplitude"].copy_(amplitude)

    def fit(self, weights: Tensor, amplitude: Tensor | None, phase: Tensor, iterations: int,
            lr: float) -> tuple[Tensor, dict[str, float]]:
        """Weights fitted to a target object by Adam over the pixels where the target is finite: phase [rad]
        (omode, S, Y, X) and, when the network gives it and ``amplitude`` is given, amplitude. The loss is each
        part's mean squared error over its variance (so a 2 % amplitude contrast weighs as much as a 1 rad phase).
        Returns the fitted weights (a new tensor) and the RMS errors (``phase_rms_rad``, ``amplitude_rms``)."""
        targets = {"phase": phase}
        if self.config.amplitude and amplitude is not None:
            targets["amplitude"] = amplitude
        masks = {name: torch.isfinite(t) for name, t in targets.items()}
        targets = {name: torch.nan_to_num(t) for name, t in targets.items()}
        # a flat part (vacuum amplitude) has no variance: its floor keeps it fitted, much more than the other part
        scales = {name: 1.0 / max(float(t[masks[name]].var()), 1e-8) for name, t in targets.items()}
        fitted = weights.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([fitted], lr=lr)

        def errors() -> dict[str, Tensor]:
            out_amplitude, out_phase = self.object(fitted, self.base_amplitude)
            outputs = {"phase": out_phase, "amplitude": out_amplitude}
            return {name: ((outputs[name] - targets[name])[masks[name]] ** 2).mean() for name in targets}

        for _ in range(iterations):
            optimizer.zero_grad(set_to_none=True)
            sum(scales[name] * error for name, error in errors().items()).backward()
            optimizer.step()
        with torch.no_grad():
            report = {f"{name}_rms{'_rad' if name == 'phase' else ''}": float(value.sqrt())
                      for name, value in errors().items()}
        return fitted.detach(), report


def fit_target(path: Path, shape: tuple[int, ...], canvas_origin_ang: tuple[float, float],
               dx_ang: float) -> tuple[np.ndarray, np.ndarray]:
    """(amplitude, phase) of a result file's object on this run's canvas, each (omode, S, Y, X) float64, NaN where
    the result does not reach. DataError/ConfigError when the file cannot be read or its slicing differs."""
    from ptyopt.evaluate.phase_metrics import image_on_canvas
    from ptyopt.io.result_file import read_result

    if not Path(path).exists():
        raise ConfigError(f"model.dip.fit_to: no file at {path}; give a result.h5 of a pixel reconstruction "
                          "(or null for no warm start)")
    result = read_result(path)
    omode, n_slices, *canvas = shape
    found = result.object_phase.shape
    if found[1] != n_slices or found[0] not in (1, omode):
        raise DataError(f"model.dip.fit_to: {path} holds {found[0]} object mode(s) × {found[1]} slices, but this "
                        f"model has {omode} × {n_slices}; fit to a result with model.n_slices: {n_slices} (and 1 or "
                        f"{omode} object modes)")

    def on_canvas(stack: np.ndarray) -> np.ndarray:
        placed = np.stack([[image_on_canvas(s, result.dx_ang, result.origin_ang, tuple(canvas), canvas_origin_ang,
                                            dx_ang) for s in mode] for mode in stack])
        return np.broadcast_to(placed, shape)

    return on_canvas(result.object_amplitude), on_canvas(result.object_phase)


def object_network(config: DipConfig, state: dict[str, Tensor], seed: int) -> ObjectNetwork:
    """The network on the state's initial object (its base), with the state's weights set to the initial ones."""
    network = ObjectNetwork(config, state["object_amplitude"], state["object_phase"], seed)
    state[WEIGHTS_KEY] = network.initial_weights()
    return network


def warm_start(network: ObjectNetwork, state: dict[str, Tensor], canvas_origin_ang: tuple[float, float],
               dx_ang: float) -> dict[str, float]:
    """Fit the state's weights to the object of ``dip.fit_to`` and store the output in the state's pixels; returns
    the fit's RMS errors."""
    config = network.config
    amplitude, phase = fit_target(config.fit_to, network.shape, canvas_origin_ang, dx_ang)
    like = state["object_phase"]
    as_tensor = lambda array: torch.as_tensor(np.array(array), device=like.device).to(like.dtype)  # noqa: E731
    weights, report = network.fit(state[WEIGHTS_KEY], as_tensor(amplitude), as_tensor(phase), config.fit_iterations,
                                  config.fit_lr)
    state[WEIGHTS_KEY] = weights
    network.store(state)
    return report
