"""ptyopt: multislice electron ptychography by automatic differentiation."""

from importlib.metadata import PackageNotFoundError, version

from ptyopt.errors import ConfigError, DataError, PtyoptError

try:
    __version__ = version("ptyopt")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["ConfigError", "DataError", "PtyoptError", "__version__"]
