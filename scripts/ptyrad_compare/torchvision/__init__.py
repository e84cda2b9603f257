"""Minimal local stand-in for ``torchvision``, for running PtyRAD 1.0 on a torch build without a matching
torchvision wheel. It provides only ``torchvision.transforms.functional.gaussian_blur`` (the one function
PtyRAD imports). Put the folder that holds this package on PYTHONPATH for PtyRAD runs only.

Written for the ptyopt/PtyRAD timing comparison; not torchvision's code.
"""

__version__ = "0.0.0+ptyopt-standin"

from . import transforms  # noqa: F401,E402
