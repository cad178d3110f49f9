"""The ranker protocol and the JSON manifest every saved model carries.

A ranker is built like a scikit-learn estimator: the constructor only stores keyword parameters;
``fit(train, valid)`` learns (state in attributes ending in ``_``) and returns ``self``; ``score(data)``
gives one score per row (higher ranks first, compared only within a list); ``save(folder)`` writes weights
(safetensors or LightGBM text, never pickle) as a ``data.artifacts`` version, whose manifest's ``metadata``
holds ``params``, ``schema`` and ``info``; ``Ranker.load(folder)`` checks every file's checksum and restores
it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

import numpy as np
from pydantic import BaseModel

from data import artifacts
from data.artifacts import MANIFEST, Artifact
from ranking.config import RankerConfig
from ranking.dataset import ListwiseData, Schema
from ranking.errors import ModelFormatError, NotFittedError, ParameterError

if TYPE_CHECKING:
    from distributed import Client

C = TypeVar("C", bound=RankerConfig)


class Ranker(ABC, Generic[C]):
    """Orders the rows of each list; see the module docstring for the protocol."""

    #: The model type string used by the CLI, manifests and the registry ("dcn", "lgbm", ...).
    kind: ClassVar[str]
    #: The parameters' names, defaults and rules: its fields are the constructor's keyword arguments.
    config_class: type[C]

    schema_: Schema
    info_: dict[str, Any]

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments as JSON values: ``type(r)(**r.get_params())`` is an equal,
        unfitted copy of r (so a constructor also takes a nested config, e.g. ``train``, as a mapping)."""
        return {name: _json_value(getattr(self, name)) for name in self.config_class.param_names()}

    def set_params(self, **params: Any) -> Self:
        """Change constructor parameters in place (scikit-learn's ``set_params``); returns ``self``.

        For execution parameters of a fitted model, e.g. the ``threads`` a served copy scores on: the
        training-time value is kept in the manifest, a serving worker owns fewer cores.
        """
        unknown = set(params) - set(self.config_class.param_names())
        if unknown:
            raise ParameterError(f"{type(self).__name__} has no parameters {sorted(unknown)}")
        self.config_class.validated({**self.get_params(), **params})  # refused before anything changes
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def config(self) -> C:
        """The parameters, validated (``ParameterError`` if one breaks its rule); ``fit`` works from this."""
        return self.config_class.validated(self.get_params())

    @classmethod
    def from_config(cls, config: C) -> Self:
        """An unfitted ranker with ``config``'s parameters."""
        return cls(**config.params())

    @abstractmethod
    def fit(
        self,
        train: ListwiseData,
        valid: ListwiseData | None = None,
        warm_start: bool = False,
        *,
        client: Client | None = None,
    ) -> Self:
        """Learn from ``train``; ``valid`` drives early stopping.

        Args:
            train: training lists.
            valid: held-out lists for early stopping; ``None`` lets the model decide (torch models carve
                ``valid_fraction`` of ``train``; LightGBM trains all its trees).
            warm_start: continue from the current fitted (or loaded) state instead of starting afresh,
                e.g. to fine-tune the production model on only the new days.
            client: a Dask client: train on its workers (docs/scale.md) instead of in this process. Where
                the fit ran is not part of the model: ``get_params`` and the saved model do not change.

        Returns:
            self
        """

    @abstractmethod
    def score(self, data: ListwiseData) -> np.ndarray:
        """(N,) float64 scores, one per row of ``data``; raises ``NotFittedError`` before fit/load."""

    @abstractmethod
    def _save_weights(self, folder: Path) -> list[str]:
        """Write the learned state into ``folder``; return the file names written."""

    @classmethod
    @abstractmethod
    def _load_weights(cls, folder: Path, manifest: dict[str, Any]) -> Self:
        """Build a fitted ranker from ``folder`` (its files already checked) and its manifest's ``metadata``
        (``params``, ``schema``, ``info`` and what ``save`` was given)."""

    # Shared plumbing -------------------------------------------------------------------------------------

    def is_fitted(self) -> bool:
        return hasattr(self, "schema_")

    def check_fitted(self, action: str = "score") -> None:
        if not self.is_fitted():
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load() before {action}")

    def save(self, folder: Path | str, metadata: dict[str, Any] | None = None) -> Path:
        """Write weights and ``manifest.json`` into ``folder`` atomically (a model saved there is replaced).

        Args:
            folder: destination.
            metadata: extra manifest entries, e.g. ``{"data_range": ..., "metrics": ...}``.

        Returns:
            the manifest's path.
        """
        folder = Path(folder)
        artifacts.write_version(folder, self.artifact(metadata), replace=True)
        return folder / MANIFEST

    def artifact(self, metadata: dict[str, Any] | None = None) -> Artifact:
        """This fitted ranker as a version to write (``save``, ``ModelRegistry.register``): its weights, and
        ``params``, ``schema``, ``info`` and ``metadata`` for the manifest."""
        self.check_fitted("save")
        meta = {"params": self.get_params(), "schema": self.schema_.to_json(), "info": self.info_}
        return Artifact(self.kind, self._save_weights, {**meta, **(metadata or {})})

    @classmethod
    def load(cls, folder: Path | str) -> Self:
        """Restore a ranker saved by ``save``: its files must match their checksums, its type ``cls``."""
        folder = Path(folder)
        metadata = read_manifest(folder, cls.kind, verified=True)["metadata"]
        ranker = cls._load_weights(folder, metadata)
        ranker.schema_ = Schema.from_json(metadata["schema"])
        ranker.info_ = dict(metadata.get("info", {}))
        return ranker

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def read_manifest(folder: Path, kind: str | None = None, *, verified: bool = False) -> dict[str, Any]:
    """The manifest of the ranker saved in ``folder`` (format: ``data.artifacts``); ``verified`` also checks
    every file's size and checksum, as loading does."""
    manifest = artifacts.verify(folder, kind) if verified else artifacts.read_manifest(folder, kind)
    for key in ("params", "schema"):
        if key not in manifest["metadata"]:
            raise ModelFormatError(f"{folder} holds no ranker: its manifest's metadata lacks '{key}'")
    return manifest


def _json_value(value: Any) -> Any:
    """A parameter as JSON: configs as mappings, tuples as lists, numpy scalars as Python numbers."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
