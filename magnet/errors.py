"""User-facing errors.

Every error a user can cause (a missing file, a corrupt HDF5, NaN in a sequence, a wrong dimension, an unknown
name) is raised as a :class:`MagnetError` whose message is one line: what went wrong, where, and what to do.
Entry points catch it, print ``error: <message>`` to stderr and exit with code 2.
"""

from __future__ import annotations


class MagnetError(Exception):
    """Base class of every user-facing error (one-line message)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DataError(MagnetError):
    """A dataset, raw sequence or split file is missing, corrupt or inconsistent."""


class ConfigError(MagnetError):
    """A configuration value is unknown or inconsistent."""


class BodyModelError(MagnetError):
    """A body model file is missing or malformed."""


class CheckpointError(MagnetError):
    """A checkpoint is missing, corrupt or incompatible."""
