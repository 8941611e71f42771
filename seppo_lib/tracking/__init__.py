"""Experiment tracking: a small logger interface, in-memory and MLflow implementations."""

from seppo_lib.tracking.base import InMemoryLogger, NullLogger, RunLogger, flatten

__all__ = ["InMemoryLogger", "NullLogger", "RunLogger", "flatten"]
