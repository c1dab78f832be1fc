"""Typed errors raised by pi2lab.

Every error names the file, tensor, field or value at fault and what was expected.
All derive from :class:`Pi2labError` (itself a ``ValueError``), so callers can catch
one type; the CLI prints the message on one line and exits with status 2.
"""

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ConfigError",
    "MissingExtraError",
    "Pi2labError",
    "PromptError",
    "StorageError",
    "TrainingError",
]


class Pi2labError(ValueError):
    """Base class of every error pi2lab raises on bad input."""


class ConfigError(Pi2labError):
    """A model config is missing a field, names an unknown architecture, or is inconsistent;
    or a setting (sampling knob, engine, count, size) is unknown or out of range."""


class CheckpointError(Pi2labError):
    """A checkpoint file is missing, truncated, not safetensors, or disagrees with its config."""


class PromptError(Pi2labError):
    """A prompt is empty or does not fit in the model's context."""


class TrainingError(Pi2labError):
    """Training was asked for with unusable settings or data."""


class StorageError(Pi2labError):
    """A flash layout is missing, truncated, corrupted, from another format version, or a read
    failed; the message names the file, layer and byte offset."""


class BudgetError(Pi2labError):
    """A memory budget cannot hold what must stay resident; the message gives the minimum."""


class MissingExtraError(Pi2labError):
    """An optional dependency group is not installed; the message says how to install it."""
