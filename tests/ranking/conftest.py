"""A small listwise problem with a known signal, shared by the ranking tests.

Each list holds 12 items; an item's utility mixes a dense feature, an interaction of two features, a
categorical effect and the dot product of a user and a block vector, so every input kind matters. Grades
0-3 cut the utility; a ranker that learns anything clearly beats a random order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ranking.dataset import ListwiseData


def make_lists(n_lists: int, seed: int, list_size: int = 12) -> ListwiseData:
    rng = np.random.default_rng(seed)
    n = n_lists * list_size
    dense = rng.normal(size=(n, 6)).astype(np.float32)
    cats = rng.integers(0, 5, size=(n, 1))
    user = np.repeat(rng.normal(size=(n_lists, 4)), list_size, axis=0).astype(np.float32)
    block = rng.normal(size=(n, 4)).astype(np.float32)
    cat_effect = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])[cats[:, 0]]
    utility = 1.2 * dense[:, 0] + 0.8 * dense[:, 1] * dense[:, 2] + cat_effect + 0.5 * (user * block).sum(1)
    labels = np.digitize(utility, [0.5, 1.5, 2.5]).astype(np.float32)
    return ListwiseData(
        dense=dense,
        labels=labels,
        offsets=np.arange(0, n + 1, list_size),
        feature_names=tuple(f"x{i}" for i in range(6)),
        weights=rng.uniform(1.0, 2.0, size=n),
        categorical=cats,
        cardinalities=(5,),
        categorical_names=("kind",),
        vectors={"user": user, "block": block},
        list_meta={"bucket": np.array(["low", "high"])[np.arange(n_lists) % 2]},
    )


@pytest.fixture(scope="session")
def synthetic() -> tuple[ListwiseData, ListwiseData, ListwiseData]:
    """(train, valid, test) drawn from the same distribution."""
    return make_lists(160, seed=1), make_lists(40, seed=2), make_lists(60, seed=3)


def write_svmlight(data: ListwiseData, path: Path, inline_qid: bool) -> None:
    """Write ``data``'s dense features as SVMlight, with ``qid:`` inline or a ``.query`` sidecar."""
    lines = []
    for q in range(data.n_lists):
        for r in range(data.offsets[q], data.offsets[q + 1]):
            feats = " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(data.dense[r]) if v != 0)
            qid = f"qid:{q + 100} " if inline_qid else ""
            lines.append(f"{int(data.labels[r])} {qid}{feats}")
    path.write_text("\n".join(lines) + "\n")
    if not inline_qid:
        Path(f"{path}.query").write_text("\n".join(str(s) for s in data.list_sizes) + "\n")


@pytest.fixture(scope="session")
def svmlight_writer() -> Callable[[ListwiseData, Path, bool], None]:
    # A fixture, because conftest modules are not importable under --import-mode=importlib.
    return write_svmlight


@pytest.fixture(scope="session")
def lists_factory() -> Callable[..., ListwiseData]:
    return make_lists
