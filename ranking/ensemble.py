"""DASALC-ens: DASALC trained with several seeds, scores averaged (Qin et al., ICLR 2021, section 4.3).

Seeds change initial weights, batch order, dropout and the augmentation noise; averaging their scores
reduces the variance of a single network, which matters most on small training sets. With ``refit``, each
member's number of epochs is chosen by early stopping on the validation lists, then the member is trained
again from scratch on the training and validation lists together for exactly that many epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
from pydantic import Field
from safetensors.torch import load_file, save_file

from ranking.base import Ranker
from ranking.config import DASALCSettings, DenseTransform
from ranking.dataset import ListwiseData, Schema
from ranking.errors import ModelFormatError, ParameterError
from ranking.torch_rankers import DASALCConfig, DASALCRanker, TorchConfig, TrainArg

if TYPE_CHECKING:
    from distributed import Client

WEIGHTS = "members.safetensors"


class DASALCEnsembleConfig(DASALCSettings, TorchConfig):
    """Every member's DASALC network (``DASALCSettings``) and training, the number of members and refit."""

    type: Literal["dasalc-ens"] = "dasalc-ens"
    n_members: int = Field(default=5, ge=1, description="Seeds averaged: train.seed, train.seed + 1, ...")
    refit: bool = Field(
        default=False, description="Retrain each member on train + valid for its early-stopped epochs."
    )

    def member(self, i: int, **train_updates: Any) -> DASALCConfig:
        """Member ``i``'s config: the shared network, seed ``train.seed + i`` and ``train_updates``."""
        network = self.model_dump(include=set(DASALCSettings.model_fields))
        train = self.train.model_copy(update={"seed": self.train.seed + i, **train_updates})
        return DASALCConfig(**network, train=train, threads=self.threads)


_ENS = DASALCEnsembleConfig()


class DASALCEnsembleRanker(Ranker[DASALCEnsembleConfig]):
    """``n_members`` DASALC rankers with seeds ``train.seed + i``; the score is their mean."""

    config_class = DASALCEnsembleConfig
    kind = DASALCEnsembleConfig.model_type()

    def __init__(
        self,
        n_members: int = _ENS.n_members,
        hidden: tuple[int, ...] = _ENS.hidden,
        dropout: float = _ENS.dropout,
        attention_layers: int = _ENS.attention_layers,
        heads: int = _ENS.heads,
        noise_std: float = _ENS.noise_std,
        transform: DenseTransform = _ENS.transform,
        refit: bool = _ENS.refit,
        train: TrainArg = _ENS.train,
        threads: int = _ENS.threads,
    ) -> None:
        self.n_members = n_members
        self.refit = refit
        self.hidden = hidden
        self.dropout = dropout
        self.attention_layers = attention_layers
        self.heads = heads
        self.noise_std = noise_std
        self.transform = transform
        self.train = train
        self.threads = threads

    def set_params(self, **params: Any) -> Self:
        super().set_params(**params)
        if "threads" in params:  # the members score on the ensemble's threads
            for member in getattr(self, "members_", []):
                member.set_params(threads=params["threads"])
        return self

    def fit(
        self,
        train: ListwiseData,
        valid: ListwiseData | None = None,
        warm_start: bool = False,
        *,
        client: Client | None = None,
    ) -> Self:
        """Fit every member in this process, one after the other, or, given a Dask ``client``, one member
        per task on its workers (``ranking.ensemble_dask``). As with the single torch rankers, where the
        members ran is not part of the model: each member's ``info_["engine"]`` records it."""
        config = self.config()
        if warm_start:
            self.check_fitted("warm_start")
            members = self.members_
        else:
            members = [DASALCRanker.from_config(config.member(i)) for i in range(config.n_members)]
        # Every member sees the same train/valid split (the first seed's), so they differ only by seed.
        if valid is None and config.train.valid_fraction > 0 and train.n_lists >= 10:
            train, valid = train.split(config.train.valid_fraction, seed=config.train.seed)
        members = _fit_members(members, train, valid, warm_start, client)
        if config.refit and valid is not None and not warm_start:
            # Validation chose each member's number of epochs; now learn from every labelled list for exactly
            # that many epochs (no early stopping left to do), with the same seed.
            fresh = [
                DASALCRanker.from_config(
                    config.member(i, max_epochs=max(1, int(m.info_["best_epoch"])), valid_fraction=0.0)
                )
                for i, m in enumerate(members)
            ]
            refitted = _fit_members(fresh, concat_lists(train, valid), None, False, client)
            for member, validated in zip(refitted, members, strict=True):
                member.info_ = {**member.info_, "validated": validated.info_}
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
        try:
            ranker = cls(**manifest["params"])
            config = ranker.config()
        except (TypeError, ParameterError) as exc:
            raise ModelFormatError(f"{folder}: parameters do not fit {cls.__name__}: {exc}") from exc
        schema = Schema.from_json(manifest["schema"])
        state = load_file(str(folder / WEIGHTS))
        members = []
        for i in range(config.n_members):
            member_config = config.member(i)
            member = DASALCRanker.from_config(member_config)
            prefix = f"m{i}."
            net = member.build_net(schema, member_config)
            try:
                net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
            except RuntimeError as exc:
                raise ModelFormatError(f"{folder / WEIGHTS}: member {i} does not fit: {exc}") from exc
            member.net_, member.schema_, member.info_ = net, schema, {}
            members.append(member)
        ranker.members_ = members
        return ranker


def _fit_members(
    members: list[DASALCRanker],
    train: ListwiseData,
    valid: ListwiseData | None,
    warm_start: bool,
    client: Client | None,
) -> list[DASALCRanker]:
    if client is not None:
        from ranking.ensemble_dask import fit_members_on_engine

        return fit_members_on_engine(client, members, train, valid, warm_start)
    return [member.fit(train, valid, warm_start=warm_start) for member in members]


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
