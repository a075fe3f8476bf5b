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


class TrainingInterrupted(InspectnetError):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint to resume from.

    Attributes:
        signum: The signal that stopped it (``signal.SIGINT`` or ``signal.SIGTERM``).
        run_dir: The run folder that ``inspectnet train --resume`` continues.
        exit_code: The shell convention ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int, run_dir: str = "") -> None:
        super().__init__(message)
        self.signum = signum
        self.run_dir = run_dir
        self.exit_code = 128 + int(signum)
