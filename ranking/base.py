"""The ranker protocol and the JSON manifest every saved model carries.

A ranker is built like a scikit-learn estimator: the constructor only stores keyword parameters;
``fit(train, valid)`` learns (state in attributes ending in ``_``) and returns ``self``; ``score(data)``
gives one score per row (higher ranks first, compared only within a list); ``save(folder)`` writes weights
(safetensors or LightGBM text, never pickle) and ``manifest.json``; ``Ranker.load(folder)`` restores it.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from ranking.dataset import ListwiseData, Schema
from ranking.errors import ModelFormatError, NotFittedError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def package_version() -> str:
    try:
        return version("smartblock")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


class Ranker(ABC):
    """Orders the rows of each list; see the module docstring for the protocol."""

    #: The model type string used by the CLI, manifests and the registry ("dcn", "lgbm", ...).
    kind: ClassVar[str]

    schema_: Schema
    info_: dict[str, Any]

    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-serialisable: ``type(r)(**r.get_params())`` clones r."""

    @abstractmethod
    def fit(self, train: ListwiseData, valid: ListwiseData | None = None, warm_start: bool = False) -> Self:
        """Learn from ``train``; ``valid`` drives early stopping.

        Args:
            train: training lists.
            valid: held-out lists for early stopping; ``None`` lets the model decide (torch models carve
                ``valid_fraction`` of ``train``; LightGBM trains all its trees).
            warm_start: continue from the current fitted (or loaded) state instead of starting afresh,
                e.g. to fine-tune the production model on only the new days.

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
        """Build a fitted ranker from ``folder`` and its parsed manifest."""

    # Shared plumbing -------------------------------------------------------------------------------------

    def is_fitted(self) -> bool:
        return hasattr(self, "schema_")

    def check_fitted(self, action: str = "score") -> None:
        if not self.is_fitted():
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load() before {action}")

    def save(self, folder: Path | str, metadata: dict[str, Any] | None = None) -> Path:
        """Write weights and ``manifest.json`` into ``folder`` (created if needed).

        Args:
            folder: destination.
            metadata: extra manifest entries, e.g. ``{"data_range": ..., "metrics": ...}``.

        Returns:
            the manifest's path.
        """
        self.check_fitted("save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = self._save_weights(folder)
        manifest = {
            "format": FORMAT_VERSION,
            "model": self.kind,
            "params": self.get_params(),
            "schema": self.schema_.to_json(),
            "info": self.info_,
            "files": files,
            "smartblock_version": package_version(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(metadata or {}),
        }
        path = folder / MANIFEST
        path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: Path | str) -> Self:
        """Restore a ranker saved by ``save``; the manifest's model type must match ``cls``."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest["model"] != cls.kind:
            raise ModelFormatError(f"{folder} holds a '{manifest['model']}' model, not '{cls.kind}'")
        for name in manifest.get("files", []):
            if not (folder / name).is_file():
                raise ModelFormatError(f"{folder}: the manifest lists {name}, which is missing")
        ranker = cls._load_weights(folder, manifest)
        ranker.schema_ = Schema.from_json(manifest["schema"])
        ranker.info_ = dict(manifest.get("info", {}))
        return ranker

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelFormatError(f"{folder} is not a saved model: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from exc
    for key in ("format", "model", "params", "schema"):
        if key not in manifest:
            raise ModelFormatError(f"{path}: the manifest lacks '{key}'")
    if manifest["format"] != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: manifest format {manifest['format']}, this code reads {FORMAT_VERSION}"
        )
    return manifest


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
