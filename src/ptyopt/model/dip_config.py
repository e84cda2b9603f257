"""Configuration of the deep-image-prior object (``model.object_parametrisation: dip``, ``model.dip``) and what it
cannot be combined with, checked once when the config is read.

With a DIP object the object pixels are the output of a network (``model.dip``, ``model.dip_object``); what is
optimised are its weights, ``optimize.object_dip``. The pixels the network owns (the phase, and the amplitude unless
``dip.amplitude`` is false) therefore cannot be refined as pixels, edited by a constraint or warped by the scan
search; the solvers that update pixels from exit waves or by Gauss-Newton steps refuse it (``Solver.capabilities``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError

if TYPE_CHECKING:
    from ptyopt.config import ModelConfig, ReconstructionConfig

DIP_SOLVERS_HINT = "use solver.name: adam (or another torch.optim class, e.g. AdamW) or lbfgs"


class DipConfig(StrictModel):
    """The deep-image-prior network: a small untrained CNN from a fixed random code to the object slices
    (``model.dip``; see ``ptyopt.model.dip``). Used only with model.object_parametrisation: dip."""

    channels: int = Field(32, ge=1, le=256, description="feature channels of every 3×3 convolution")
    levels: int = Field(2, ge=0, le=6, description="resolution levels below the canvas, each half the size of the "
                        "one above (average pooling down, bilinear up); 0 = a flat stack at full resolution")
    skip: bool = Field(True, description="add each level's features to the upsampled ones on the way up (U-Net-like: "
                       "keeps atom-scale detail); false = a plain hourglass, a stronger smoothness prior")
    code_channels: int = Field(8, ge=1, le=256, description="channels of the fixed random input code z ~ U(0, 1) "
                               "(drawn once from the seed, never optimised)")
    negative_slope: float = Field(0.2, ge=0, lt=1, description="slope of the LeakyReLU below zero")
    amplitude: bool = Field(True, description="the network also gives the amplitude, A = A0·exp(n_A); false: the "
                            "amplitude stays pixels (optimize.object_amplitude) and the network gives the phase only")
    seed: int | None = Field(None, description="seed of the code z and of the initial weights; null = the run's "
                             "seed")
    fit_to: Path | None = Field(None, description="warm start: a result.h5 (or snapshots/iter_NNNN.h5) of a pixel "
                                "reconstruction with the same n_slices; the network is fitted to its object before "
                                "iteration 1 (relative to the config); null = start from the initial object")
    fit_iterations: int = Field(300, ge=1, description="Adam steps of the warm-start fit (mean squared error of "
                                "phase and amplitude, each over its variance, on the pixels the target covers)")
    fit_lr: float = Field(5e-3, gt=0, description="Adam learning rate of the warm-start fit")


def owned_keys(model: ModelConfig) -> tuple[str, ...]:
    """State keys of the object pixels the network gives (none under pixels)."""
    if model.object_parametrisation != "dip":
        return ()
    return ("object_amplitude", "object_phase") if model.dip.amplitude else ("object_phase",)


def check_object_parametrisation(config: ReconstructionConfig) -> None:
    """ConfigError for the first combination a DIP object cannot have, or for DIP weights refined without one.
    (The solvers' side is ``Solver.capabilities``: a solver that cannot refine optimize.object_dip refuses a
    DIP object.)"""
    from ptyopt.objective.constraints import CONSTRAINTS

    model, optimize = config.model, config.optimize
    if model.object_parametrisation == "pixels":
        if optimize.object_dip.start_iter is not None:
            raise ConfigError("optimize.object_dip refines the weights of a deep-image-prior object, but "
                              "model.object_parametrisation is pixels; set model.object_parametrisation: dip or "
                              "optimize.object_dip.start_iter: null")
        return
    owned = owned_keys(model)
    for key in owned:
        if getattr(optimize, key).start_iter is not None:
            keep = "" if key == "object_phase" else ", or model.dip.amplitude: false to keep the amplitude as pixels"
            raise ConfigError(f"model.object_parametrisation is dip: {key} is the network's output and cannot be "
                              f"refined as pixels; set optimize.{key}.start_iter: null (the network's weights are "
                              f"refined by optimize.object_dip){keep}")
    for name, params in config.constraints.items():
        edited = sorted(CONSTRAINTS.get(name).edited_keys(params) & set(owned))
        if edited:
            raise ConfigError(f"constraint '{name}' edits {' and '.join(edited)}, which a deep-image-prior object "
                              "does not hold as pixels (they are the network's output); remove "
                              f"constraints.{name} or use model.object_parametrisation: pixels")
    if config.solver.scan_search is not None:
        raise ConfigError("solver.scan_search carries the object pixels along with the scan affine, which a "
                          "deep-image-prior object cannot do; remove solver.scan_search or use "
                          "model.object_parametrisation: pixels")


def unused_dip_keys(model: ModelConfig) -> list[str]:
    """A note when model.dip is set although the object is pixels."""
    if model.object_parametrisation == "pixels" and model.dip != DipConfig():
        return ["model.dip is set but model.object_parametrisation is pixels: the network is not used (set "
                "model.object_parametrisation: dip to use it)"]
    return []
