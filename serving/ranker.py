"""The promoted ranker as served: loaded from the registry, with its input columns resolved once.

Online feature rows (``features.definitions.FEATURES`` order) become the ``ListwiseData`` the model was
fitted on by picking columns by name from the model's recorded schema, so a retrained model with another
feature set needs no serving change. A model asking for inputs the store cannot give is refused at load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.definitions import FEATURES, INDEX
from ranking.base import Ranker
from ranking.dataset import ListwiseData
from ranking.registry import ModelRegistry
from serving.errors import ModelIncompatible

_CARDINALITY = {f.name: f.categorical for f in FEATURES if f.categorical}


@dataclass(frozen=True)
class ServedModel:
    """One immutable (ranker, version, columns) triple; swapped whole, never mutated."""

    ranker: Ranker
    line: str
    version: str
    dense_cols: np.ndarray  # (F,) columns of the feature rows, in the model's order
    cat_cols: np.ndarray  # (C,)

    @classmethod
    def from_registry(
        cls, registry: ModelRegistry, line: str, version: str | None = None, *, threads: int = 1
    ) -> ServedModel:
        """The version (default: current) as a worker serves it: scoring on the worker's ``threads``, not the
        training run's (two OpenMP threads per request on a shared core stalled the ranking stage's tail)."""
        version = version or registry.current(line)
        ranker = registry.load(line, version).set_params(threads=threads)
        return cls.wrap(ranker, line, str(version))

    @classmethod
    def wrap(cls, ranker: Ranker, line: str, version: str) -> ServedModel:
        schema = ranker.schema_
        unknown = [n for n in (*schema.feature_names, *schema.categorical_names) if n not in INDEX]
        if unknown:
            raise ModelIncompatible(
                f"{line}/{version} needs features the store does not serve: {unknown[:5]}"
            )
        if schema.vector_dims:
            raise ModelIncompatible(
                f"{line}/{version} needs vectors {dict(schema.vector_dims)}: not assembled online yet"
            )
        for name, card in zip(schema.categorical_names, schema.cardinalities, strict=True):
            if _CARDINALITY.get(name, 0) > card:
                raise ModelIncompatible(
                    f"{line}/{version}: categorical '{name}' has {card} ids, the store uses more"
                )
        return cls(
            ranker=ranker,
            line=line,
            version=version,
            dense_cols=np.array([INDEX[n] for n in schema.feature_names], dtype=np.int64),
            cat_cols=np.array([INDEX[n] for n in schema.categorical_names], dtype=np.int64),
        )

    def score(self, rows: np.ndarray) -> np.ndarray:
        """(n,) scores for one request's feature rows (n, len(FEATURES))."""
        n = rows.shape[0]
        schema = self.ranker.schema_
        data = ListwiseData(
            dense=rows[:, self.dense_cols],
            labels=np.zeros(n, np.float32),
            offsets=np.array([0, n]),
            feature_names=schema.feature_names,
            categorical=rows[:, self.cat_cols].astype(np.int64) if self.cat_cols.size else None,
            cardinalities=schema.cardinalities,
            categorical_names=schema.categorical_names,
        )
        return np.asarray(self.ranker.score(data), dtype=np.float64)
