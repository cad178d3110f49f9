"""Errors of the retrieval stage, under ``data.errors.SmartblockError`` so callers map them in one place."""

from __future__ import annotations

from data.errors import SmartblockError


class RetrievalError(SmartblockError):
    """Base of every error the retrieval stage raises on purpose."""


class QueryError(RetrievalError):
    """A query the retrievers refuse: empty, too long, or not in a supported language."""


class NotBuiltError(RetrievalError):
    """A retriever was used before ``build``/``fit``/``load`` gave it an index or model."""


class IndexNotFoundError(RetrievalError):
    """No index where one was expected."""


class StaleIndexError(RetrievalError):
    """An index on disk was built from other data or other settings than the ones in use now."""


class ModelLoadError(RetrievalError):
    """An encoder checkpoint could not be found or loaded."""


class JavaError(RetrievalError):
    """No usable Java runtime (Anserini 1.7 needs Java >= 21), or the JVM refused to start."""
