"""Errors of the user-embedding stage; all are ``SmartblockError`` so the CLI maps them in one place."""

from __future__ import annotations

# Saved models share one format error (raised by data.artifacts); re-exported for this stage's callers.
from data.errors import ModelFormatError as ModelFormatError
from data.errors import SmartblockError


class EmbeddingError(SmartblockError):
    """Base of the user-embedding stage's errors."""


class NotEnoughData(EmbeddingError):
    """The logs are too short or too sparse for the requested train / validation / test days."""


class VectorFormatError(EmbeddingError):
    """A stored vector has the wrong byte length or a model version other than the one expected."""
