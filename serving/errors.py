"""Errors of the serving stage, under ``SmartblockError`` so the one exception handler maps them."""

from __future__ import annotations

from data.errors import SmartblockError


class ServingError(SmartblockError):
    """Base of the serving stage's errors."""


class NotReady(ServingError):
    """A part the request needs (indexes, model) is not loaded."""


class ModelIncompatible(ServingError):
    """The promoted model asks for inputs the online features cannot give."""
