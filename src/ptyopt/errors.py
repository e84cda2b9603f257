"""Exceptions a user can cause. The CLI prints their message and exits with code 2."""


class PtyoptError(Exception):
    """Base class of every error caused by user input (files, shapes, values, config)."""


class ConfigError(PtyoptError, ValueError):
    """A configuration value or key is invalid."""


class DataError(PtyoptError, ValueError):
    """Input data cannot be used as given (bad file, shape, values or metadata)."""
