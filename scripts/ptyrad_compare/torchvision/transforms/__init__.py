"""Stand-in ``torchvision.transforms``: only ``functional.gaussian_blur`` exists."""

from . import functional  # noqa: F401
