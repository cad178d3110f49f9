"""``ListwiseData``: the one input every ranker trains on and scores.

Rows are (list, item) pairs stored flat and grouped by ``offsets``: the rows of list ``q`` are
``offsets[q]:offsets[q + 1]``. A list is one search impression (its shown blocks) or one LTR query.

Contract (N rows, Q lists; the feature store's adapter and the LTR loader both build exactly this):

=============== ================= ======== ==========================================================
field           shape             dtype    meaning
=============== ================= ======== ==========================================================
dense           (N, F)            float32  numeric features, finite; named by ``feature_names`` (F)
labels          (N,)              float32  graded relevance >= 0, or click = 1 / no click = 0
offsets         (Q + 1,)          int64    list boundaries: 0 = offsets[0] < ... < offsets[Q] = N
weights         (N,)              float32  per-row loss weight > 0, e.g. 1 / propensity (IPS); 1 if unset
categorical     (N, C)            int64    ids in [0, cardinality); 0 may mean "unknown" by convention
cardinalities   (C,)              int      embedding table sizes, one per categorical column
categorical_names (C,)            str      one name per categorical column
vectors         {name: (N, D_k)}  float32  e.g. "user" and "block" embeddings, concatenated as inputs
list_meta       {name: (Q,)}      any      per-list slices for evaluation, e.g. "entropy_bucket"
=============== ================= ======== ==========================================================

``categorical``/``vectors``/``list_meta`` are optional (empty). A ranker records the feature names,
categorical names and cardinalities, and vector names and widths it was fitted on, and refuses data that
differs (``InputError``), because a silently reordered feature column ranks garbage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ranking.errors import InputError


@dataclass(frozen=True)
class Schema:
    """The input layout a ranker was fitted on; stored in its manifest and checked at score time."""

    feature_names: tuple[str, ...]
    categorical_names: tuple[str, ...] = ()
    cardinalities: tuple[int, ...] = ()
    vector_dims: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict:
        return {
            "feature_names": list(self.feature_names),
            "categorical_names": list(self.categorical_names),
            "cardinalities": list(self.cardinalities),
            "vector_dims": {name: dim for name, dim in self.vector_dims},
        }

    @classmethod
    def from_json(cls, raw: dict) -> Schema:
        return cls(
            feature_names=tuple(raw["feature_names"]),
            categorical_names=tuple(raw.get("categorical_names", ())),
            cardinalities=tuple(int(c) for c in raw.get("cardinalities", ())),
            vector_dims=tuple((str(k), int(v)) for k, v in raw.get("vector_dims", {}).items()),
        )

    def check(self, data: ListwiseData) -> None:
        """Raise ``InputError`` naming the first difference between this schema and ``data``'s."""
        other = data.schema
        if other.feature_names != self.feature_names:
            missing = [f for f in self.feature_names if f not in other.feature_names]
            extra = [f for f in other.feature_names if f not in self.feature_names]
            detail = f"missing {missing[:5]}, unexpected {extra[:5]}" if missing or extra else "order differs"
            raise InputError(f"dense features differ from the ones the model was fitted on: {detail}")
        if other.categorical_names != self.categorical_names:
            raise InputError(
                f"categorical columns {list(other.categorical_names)} differ from the fitted "
                f"{list(self.categorical_names)}"
            )
        if any(c > f for c, f in zip(other.cardinalities, self.cardinalities, strict=True)):
            raise InputError(
                f"categorical cardinalities {list(other.cardinalities)} exceed the fitted "
                f"{list(self.cardinalities)}: ids beyond the embedding tables"
            )
        if other.vector_dims != self.vector_dims:
            raise InputError(
                f"vectors {dict(other.vector_dims)} differ from the fitted {dict(self.vector_dims)}"
            )


@dataclass(frozen=True)
class ListwiseData:
    """Lists of items with features and labels; see the module docstring for the exact contract."""

    dense: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    feature_names: tuple[str, ...]
    weights: np.ndarray | None = None
    categorical: np.ndarray | None = None
    cardinalities: tuple[int, ...] = ()
    categorical_names: tuple[str, ...] = ()
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    list_meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise dtypes once so every ranker can rely on them, then check the contract.
        set_ = object.__setattr__
        set_(self, "dense", np.ascontiguousarray(self.dense, dtype=np.float32))
        set_(self, "labels", np.ascontiguousarray(self.labels, dtype=np.float32))
        set_(self, "offsets", np.ascontiguousarray(self.offsets, dtype=np.int64))
        set_(self, "feature_names", tuple(self.feature_names))
        n = self.dense.shape[0] if self.dense.ndim == 2 else -1
        weights = np.ones(max(n, 0), np.float32) if self.weights is None else self.weights
        set_(self, "weights", np.ascontiguousarray(weights, dtype=np.float32))
        cats = np.zeros((max(n, 0), 0), np.int64) if self.categorical is None else self.categorical
        set_(self, "categorical", np.ascontiguousarray(cats, dtype=np.int64))
        set_(self, "cardinalities", tuple(int(c) for c in self.cardinalities))
        names = self.categorical_names or tuple(f"cat{i}" for i in range(self.categorical.shape[1]))
        set_(self, "categorical_names", tuple(names))
        set_(self, "vectors", {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.vectors.items()})
        set_(self, "list_meta", {k: np.asarray(v) for k, v in self.list_meta.items()})
        self._validate()

    def _validate(self) -> None:
        if self.dense.ndim != 2:
            raise InputError(f"dense must be 2-D (N, F), got shape {self.dense.shape}")
        n, f = self.dense.shape
        if len(self.feature_names) != f:
            raise InputError(f"{len(self.feature_names)} feature names for {f} dense columns")
        if len(set(self.feature_names)) != f:
            raise InputError("feature names must be unique")
        if not np.isfinite(self.dense).all():
            row = int(np.argwhere(~np.isfinite(self.dense))[0][0])
            raise InputError(f"dense features must be finite; row {row} has NaN or inf")
        for name, arr in (("labels", self.labels), ("weights", self.weights)):
            if arr.shape != (n,):
                raise InputError(f"{name} must have shape ({n},), got {arr.shape}")
        if (self.labels < 0).any() or not np.isfinite(self.labels).all():
            raise InputError("labels must be finite and >= 0")
        if not (np.isfinite(self.weights).all() and (self.weights > 0).all()):
            raise InputError("weights must be finite and > 0 (inverse propensities are >= 1)")
        off = self.offsets
        if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != n:
            raise InputError(f"offsets must be 1-D, start at 0 and end at N={n}; got {off[:3]}...{off[-3:]}")
        if (np.diff(off) <= 0).any():
            raise InputError("offsets must be strictly increasing (no empty lists)")
        if self.categorical.ndim != 2 or self.categorical.shape[0] != n:
            raise InputError(f"categorical must have shape ({n}, C), got {self.categorical.shape}")
        c = self.categorical.shape[1]
        if len(self.cardinalities) != c or len(self.categorical_names) != c:
            raise InputError(
                f"{c} categorical columns need {c} cardinalities and names, got "
                f"{len(self.cardinalities)} and {len(self.categorical_names)}"
            )
        for j, card in enumerate(self.cardinalities):
            col = self.categorical[:, j]
            if col.size and (col.min() < 0 or col.max() >= card):
                raise InputError(
                    f"categorical column '{self.categorical_names[j]}' has ids outside [0, {card})"
                )
        for name, vec in self.vectors.items():
            if vec.ndim != 2 or vec.shape[0] != n or not np.isfinite(vec).all():
                raise InputError(f"vector '{name}' must be finite with shape ({n}, D), got {vec.shape}")
        for name, meta in self.list_meta.items():
            if meta.shape != (self.n_lists,):
                raise InputError(f"list_meta '{name}' must have shape ({self.n_lists},), got {meta.shape}")

    @property
    def n_rows(self) -> int:
        return int(self.dense.shape[0])

    @property
    def n_lists(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def list_sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def schema(self) -> Schema:
        return Schema(
            feature_names=self.feature_names,
            categorical_names=self.categorical_names,
            cardinalities=self.cardinalities,
            vector_dims=tuple((k, int(v.shape[1])) for k, v in sorted(self.vectors.items())),
        )

    def list_ids(self) -> np.ndarray:
        """(N,) the list index of every row."""
        return np.repeat(np.arange(self.n_lists), self.list_sizes)

    def subset(self, lists: np.ndarray) -> ListwiseData:
        """The lists at the given indices (in that order), as a new ``ListwiseData``."""
        lists = np.asarray(lists, dtype=np.int64)
        if lists.size == 0:
            raise InputError("a subset needs at least one list")
        if lists.min() < 0 or lists.max() >= self.n_lists:
            raise InputError(f"list indices must lie in [0, {self.n_lists})")
        sizes = self.list_sizes[lists]
        rows = np.concatenate([np.arange(self.offsets[q], self.offsets[q + 1]) for q in lists])
        return ListwiseData(
            dense=self.dense[rows],
            labels=self.labels[rows],
            offsets=np.concatenate([[0], np.cumsum(sizes)]),
            feature_names=self.feature_names,
            weights=self.weights[rows],
            categorical=self.categorical[rows],
            cardinalities=self.cardinalities,
            categorical_names=self.categorical_names,
            vectors={k: v[rows] for k, v in self.vectors.items()},
            list_meta={k: v[lists] for k, v in self.list_meta.items()},
        )

    def split(self, valid_fraction: float, seed: int) -> tuple[ListwiseData, ListwiseData]:
        """Random split by list (never inside a list) into (train, valid)."""
        if not 0 < valid_fraction < 1:
            raise InputError(f"valid_fraction must lie in (0, 1), got {valid_fraction}")
        if self.n_lists < 2:
            raise InputError("cannot split fewer than 2 lists")
        order = np.random.default_rng(seed).permutation(self.n_lists)
        n_valid = min(self.n_lists - 1, max(1, round(self.n_lists * valid_fraction)))
        return self.subset(np.sort(order[n_valid:])), self.subset(np.sort(order[:n_valid]))

    def padded_index(self, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For a batch of lists: row indices (B, L) padded with 0, and a mask (B, L), True on real rows."""
        sizes = self.list_sizes[lists]
        width = int(sizes.max())
        pos = np.arange(width)[None, :]  # (1, L)
        mask = pos < sizes[:, None]  # (B, L)
        index = np.where(mask, self.offsets[lists][:, None] + pos, 0)  # (B, L)
        return index, mask
