"""Constraints between iterations: a registry of in-place operations on the state, each with its own window.

All are off unless the config names them. Importing this package registers every constraint.
"""

from ptyopt.objective.constraints.base import (
    CONSTRAINTS,
    EXECUTION_ORDER,
    Constraint,
    ConstraintContext,
    ConstraintWindow,
    apply_constraints,
    build_constraints,
    parse_constraints,
)
from ptyopt.objective.constraints.depth import ObjectZRecenter
from ptyopt.objective.constraints.fourier import KrFilter, KzFilter
from ptyopt.objective.constraints.geometry import PositionRecenter, TiltSmooth
from ptyopt.objective.constraints.object import (
    AmplitudePhaseCoupling,
    AmplitudeThreshold,
    ObjectBlur,
    ObjectZBlur,
    PhasePositive,
)
from ptyopt.objective.constraints.probe import ProbeFixedIntensity, ProbeFourierMask, ProbeOrthogonalize

__all__ = [
    "CONSTRAINTS",
    "EXECUTION_ORDER",
    "AmplitudePhaseCoupling",
    "AmplitudeThreshold",
    "Constraint",
    "ConstraintContext",
    "ConstraintWindow",
    "KrFilter",
    "KzFilter",
    "ObjectBlur",
    "ObjectZBlur",
    "ObjectZRecenter",
    "PhasePositive",
    "PositionRecenter",
    "ProbeFixedIntensity",
    "ProbeFourierMask",
    "ProbeOrthogonalize",
    "TiltSmooth",
    "apply_constraints",
    "build_constraints",
    "parse_constraints",
]
