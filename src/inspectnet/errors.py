"""Typed errors: each says what was wrong, what was received and what is allowed.

The CLI prints these as one red line (no traceback); the Python API raises them.
"""

from __future__ import annotations


class InspectnetError(Exception):
    """Base class of every error meant for the user, not for a developer."""


class DataError(InspectnetError):
    """The data set cannot be used as given (bad files, empty classes, bad CSV...)."""


class ConfigError(InspectnetError):
    """An option or config file holds a value that is not allowed."""


class ModelError(InspectnetError):
    """A model name, weights file or bundle cannot be used."""
