"""Typed errors: each says what was wrong, what was received and what is allowed.

The CLI prints these as one red line (no traceback; ``inspectnet --debug`` shows it) and
exits with the error's ``exit_code``; the Python API raises them.

======  =============================================================================
status  meaning
======  =============================================================================
0       success
1       a data, model or storage problem (:class:`DataError`, :class:`ModelError`,
        :class:`StorageError`, ``DecodeError``); also an internal error (a bug)
2       a usage error (:class:`ConfigError`: a bad option, value or config file)
130     interrupted (Ctrl-C); :class:`TrainingInterrupted` gives ``128 + signal``
======  =============================================================================
"""

from __future__ import annotations


class InspectnetError(Exception):
    """Base class of every error meant for the user, not for a developer."""

    #: The process exit status the CLI ends with for this kind of error.
    exit_code = 1


class DataError(InspectnetError):
    """The data set cannot be used as given (bad files, empty classes, bad CSV...)."""


class ConfigError(InspectnetError):
    """An option or config file holds a value that is not allowed (a usage error).

    Attributes:
        key: The config field at fault, when one is (the CLI then names its flag).
    """

    exit_code = 2

    def __init__(self, message: str = "", key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ModelError(InspectnetError):
    """A model name, weights file or bundle cannot be used."""


class StorageError(InspectnetError):
    """A file or folder cannot be written: full disk, no permission, read-only file system,
    a file where a folder is expected. The message names the path (and, for a full disk,
    the space needed and free)."""


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
