"""Errors of the ranking stage; all are ``SmartblockError`` so the CLI and API map them in one place."""

from __future__ import annotations

# Saved models share one format error (raised by data.artifacts); re-exported for this stage's callers.
from data.errors import ModelFormatError as ModelFormatError
from data.errors import SmartblockError


class RankingError(SmartblockError):
    """Base of the ranking stage's errors."""


class NotFittedError(RankingError):
    """A ranker was asked to score or save before ``fit`` or ``load``."""


class InputError(RankingError):
    """A ranker's input does not match what it was fitted on, or a ``ListwiseData`` breaks its contract."""


class RegistryError(RankingError):
    """A registry operation named an unknown model or version, or the registry folder is inconsistent."""


class PromotionRefused(RegistryError):
    """Promotion was refused: the candidate is unvalidated, or it regresses beyond the tolerance."""


class ModelRefused(ModelFormatError, RankingError):
    """A saved version may not be loaded: its files differ from its manifest, or its trial load in a child
    process crashed, failed or scored nonsense (``ranking.trial``). A ``ModelFormatError`` too: it is one."""


class ParameterError(RankingError):
    """A ranker's constructor parameter is invalid (checked in ``fit``, as scikit-learn does)."""


class WorldDataError(RankingError):
    """A world's logs cannot give the requested lists: too few days, a missing truth table, a bad range."""
