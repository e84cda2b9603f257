"""Pure, device- and dtype-agnostic physics of multislice electron ptychography.

Everything here is a function of tensors: no state, no globals; device and dtype follow the inputs.
"""

from ptyopt.physics.aberrations import ABERRATION_SYMBOLS, aberration_phase, canonical_aberrations
from ptyopt.physics.constants import interaction_constant, wavelength_ang
from ptyopt.physics.detector import DetectorResponse, detector_blur
from ptyopt.physics.grids import frequency_grid
from ptyopt.physics.multislice import (
    MultisliceWaves,
    far_field_intensity,
    forward_intensities,
    gather_patches,
    gather_slices,
    multislice,
    multislice_exit_waves,
    multislice_far_field,
    multislice_forward,
    propagate,
    shift_probes,
    slice_propagator,
    split_positions,
    transmission,
    window_coverage,
)
from ptyopt.physics.probe import add_aberrations, make_probe, orthogonalize_modes, probe_modes
from ptyopt.physics.propagators import PROPAGATORS, propagator, tilt_ramp
from ptyopt.physics.shift import fourier_shift

__all__ = [
    "add_aberrations",
    "ABERRATION_SYMBOLS",
    "PROPAGATORS",
    "DetectorResponse",
    "MultisliceWaves",
    "detector_blur",
    "multislice",
    "multislice_forward",
    "propagate",
    "slice_propagator",
    "aberration_phase",
    "canonical_aberrations",
    "far_field_intensity",
    "forward_intensities",
    "fourier_shift",
    "frequency_grid",
    "gather_patches",
    "gather_slices",
    "interaction_constant",
    "make_probe",
    "multislice_exit_waves",
    "multislice_far_field",
    "shift_probes",
    "split_positions",
    "orthogonalize_modes",
    "probe_modes",
    "propagator",
    "tilt_ramp",
    "transmission",
    "wavelength_ang",
    "window_coverage",
]
