"""Errors a user can fix; the CLI prints these as one line instead of a traceback."""

from __future__ import annotations


class SeppoError(RuntimeError):
    """Base of every error whose message tells the user what to fix."""


class DataError(SeppoError):
    """Bad or missing input data."""


class CheckpointError(SeppoError):
    """A checkpoint is missing, unreadable or fails its integrity check."""


class ModelError(SeppoError):
    """A model folder cannot be loaded or is not supported."""


class ConfigError(SeppoError, ValueError):
    """A configuration problem, with a one-line message that says how to fix it."""


class TrainingError(SeppoError):
    """Training diverged (a non-finite loss, gradient norm or weight); the round commits nothing."""


def user_errors() -> tuple[type[BaseException], ...]:
    from seppo_lib.storage.base import StorageError

    return (SeppoError, ConfigError, StorageError, FileNotFoundError)
