"""DASALC-ens: DASALC trained with several seeds, scores averaged (Qin et al., ICLR 2021, section 4.3).

Seeds change initial weights, batch order, dropout and the augmentation noise; averaging their scores
reduces the variance of a single network, which matters most on small training sets. With ``refit``, each
member's number of epochs is chosen by early stopping on the validation lists, then the member is trained
again from scratch on the training and validation lists together for exactly that many epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np
from safetensors.torch import load_file, save_file

from ranking.base import Ranker
from ranking.config import DenseTransform, TorchTrainSettings
from ranking.dataset import ListwiseData, Schema
from ranking.errors import ModelFormatError, ParameterError
from ranking.torch_rankers import DASALCRanker

WEIGHTS = "members.safetensors"


class DASALCEnsembleRanker(Ranker):
    """``n_members`` DASALC rankers with seeds ``train.seed + i``; the score is their mean."""

    kind = "dasalc-ens"

    def __init__(
        self,
        n_members: int = 5,
        hidden: tuple[int, ...] = (64, 32),
        dropout: float = 0.2,
        attention_layers: int = 1,
        heads: int = 4,
        noise_std: float = 0.5,
        transform: DenseTransform = "log1p_bn",
        refit: bool = False,
        train: TorchTrainSettings | None = None,
        threads: int = 1,
    ) -> None:
        self.n_members = n_members
        self.refit = refit
        self.hidden = hidden
        self.dropout = dropout
        self.attention_layers = attention_layers
        self.heads = heads
        self.noise_std = noise_std
        self.transform = transform
        self.train = train or TorchTrainSettings()
        self.threads = threads

    def get_params(self) -> dict[str, Any]:
        return {
            "n_members": self.n_members,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "attention_layers": self.attention_layers,
            "heads": self.heads,
            "noise_std": self.noise_std,
            "transform": self.transform,
            "refit": self.refit,
            "train": self.train.model_dump(),
            "threads": self.threads,
        }

    def _member(self, i: int) -> DASALCRanker:
        return DASALCRanker(
            hidden=self.hidden,
            dropout=self.dropout,
            attention_layers=self.attention_layers,
            heads=self.heads,
            noise_std=self.noise_std,
            transform=self.transform,
            train=self.train.model_copy(update={"seed": self.train.seed + i}),
            threads=self.threads,
        )

    def fit(self, train: ListwiseData, valid: ListwiseData | None = None, warm_start: bool = False) -> Self:
        if self.n_members < 1:
            raise ParameterError(f"n_members must be >= 1, got {self.n_members}")
        if warm_start:
            self.check_fitted("warm_start")
            members = self.members_
        else:
            members = [self._member(i) for i in range(self.n_members)]
        # Every member sees the same train/valid split (the first seed's), so they differ only by seed.
        if valid is None and self.train.valid_fraction > 0 and train.n_lists >= 10:
            train, valid = train.split(self.train.valid_fraction, seed=self.train.seed)
        for member in members:
            member.fit(train, valid, warm_start=warm_start)
        if self.refit and valid is not None and not warm_start:
            # Validation chose each member's number of epochs; now learn from every labelled list for exactly
            # that many epochs (no early stopping left to do), with the same seed.
            full = concat_lists(train, valid)
            refitted = []
            for i, member in enumerate(members):
                epochs = max(1, int(member.info_["best_epoch"]))
                fresh = self._member(i)
                fresh.train = fresh.train.model_copy(update={"max_epochs": epochs, "valid_fraction": 0.0})
                refitted.append(fresh.fit(full, None))
                refitted[-1].info_ = {**fresh.info_, "validated": member.info_}
            members = refitted
        self.members_ = members
        self.schema_ = members[0].schema_
        self.info_ = {"members": [m.info_ for m in members], "warm_start": warm_start}
        return self

    def score(self, data: ListwiseData) -> np.ndarray:
        self.check_fitted()
        return np.mean([m.score(data) for m in self.members_], axis=0)

    def _save_weights(self, folder: Path) -> list[str]:
        state = {
            f"m{i}.{k}": v.detach().contiguous()
            for i, m in enumerate(self.members_)
            for k, v in m.net_.state_dict().items()
        }
        save_file(state, str(folder / WEIGHTS), metadata={"model": self.kind})
        return [WEIGHTS]

    @classmethod
    def _load_weights(cls, folder: Path, manifest: dict[str, Any]) -> Self:
        params = dict(manifest["params"])
        params["train"] = TorchTrainSettings(**params["train"])
        ranker = cls(**params)
        schema = Schema.from_json(manifest["schema"])
        state = load_file(str(folder / WEIGHTS))
        members = []
        for i in range(ranker.n_members):
            member = ranker._member(i)
            prefix = f"m{i}."
            net = member.build_net(schema)
            try:
                net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
            except RuntimeError as exc:
                raise ModelFormatError(f"{folder / WEIGHTS}: member {i} does not fit: {exc}") from exc
            member.net_, member.schema_, member.info_ = net, schema, {}
            members.append(member)
        ranker.members_ = members
        return ranker


def concat_lists(a: ListwiseData, b: ListwiseData) -> ListwiseData:
    """The lists of ``a`` followed by those of ``b`` (same schema; slices are dropped)."""
    a.schema.check(b)
    return ListwiseData(
        dense=np.concatenate([a.dense, b.dense]),
        labels=np.concatenate([a.labels, b.labels]),
        offsets=np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]),
        feature_names=a.feature_names,
        weights=np.concatenate([a.weights, b.weights]),
        categorical=np.concatenate([a.categorical, b.categorical]),
        cardinalities=tuple(max(x, y) for x, y in zip(a.cardinalities, b.cardinalities, strict=True)),
        categorical_names=a.categorical_names,
        vectors={k: np.concatenate([v, b.vectors[k]]) for k, v in a.vectors.items()},
    )
