"""Torch rankers: linear, MLP, DCN-V2 and DASALC behind the ``Ranker`` protocol; weights in safetensors."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args

import numpy as np
from safetensors.torch import load_file, save_file

from ranking.base import Ranker
from ranking.config import TorchTrainSettings
from ranking.dataset import ListwiseData, Schema
from ranking.errors import ModelFormatError, ParameterError
from ranking.nn.layers import DenseTransform, InputEncoder
from ranking.nn.nets import DASALCNet, DCNv2Net, LinearNet, MLPNet, ScoringNet, build_encoder
from ranking.nn.train import TensorLists, predict, torch_threads, train_net

WEIGHTS = "model.safetensors"


class TorchRanker(Ranker):
    """Shared fit / score / save / load of the torch models; subclasses only build their network."""

    #: Names of the model-specific constructor parameters (besides ``train`` and ``threads``).
    param_names: ClassVar[tuple[str, ...]]

    train: TorchTrainSettings
    threads: int

    net_: ScoringNet

    @abstractmethod
    def build_net(self, schema: Schema) -> ScoringNet:
        """A freshly initialised network for inputs of this schema."""

    def _check_params(self) -> None:
        """Subclasses raise ``ParameterError`` for an invalid parameter (checked in fit, as sklearn does)."""
        if self.threads < 1:
            raise ParameterError(f"threads must be >= 1, got {self.threads}")

    def get_params(self) -> dict[str, Any]:
        params = {name: _jsonable(getattr(self, name)) for name in self.param_names}
        params["train"] = self.train.model_dump()
        params["threads"] = self.threads
        return params

    def fit(self, train: ListwiseData, valid: ListwiseData | None = None, warm_start: bool = False) -> Self:
        self._check_params()
        if warm_start:
            self.check_fitted("warm_start")
            self.schema_.check(train)
        cfg = self.train
        if valid is None and cfg.valid_fraction > 0 and train.n_lists >= 10:
            train, valid = train.split(cfg.valid_fraction, seed=cfg.seed)
        if valid is not None:
            train.schema.check(valid)
        with torch_threads(self.threads):
            import torch

            torch.manual_seed(cfg.seed)  # initial weights
            tensors = TensorLists(train, cfg.targets)
            if not warm_start:
                self.schema_ = train.schema
                self.net_ = self.build_net(self.schema_)
                if tensors.dense.shape[1]:
                    self.net_.encoder.set_stats(tensors.dense)
            info = train_net(self.net_, tensors, TensorLists(valid) if valid else None, cfg, cfg.seed)
        self.info_ = {**info, "warm_start": warm_start}
        return self

    def score(self, data: ListwiseData) -> np.ndarray:
        self.check_fitted()
        self.schema_.check(data)
        with torch_threads(self.threads):
            return predict(self.net_, TensorLists(data))

    def _save_weights(self, folder: Path) -> list[str]:
        state = {k: v.detach().contiguous() for k, v in self.net_.state_dict().items()}
        save_file(state, str(folder / WEIGHTS), metadata={"model": self.kind})
        return [WEIGHTS]

    @classmethod
    def _load_weights(cls, folder: Path, manifest: dict[str, Any]) -> Self:
        params = dict(manifest["params"])
        params["train"] = TorchTrainSettings(**params["train"])
        try:
            ranker = cls(**params)
        except TypeError as exc:
            raise ModelFormatError(f"{folder}: parameters do not fit {cls.__name__}: {exc}") from exc
        net = ranker.build_net(Schema.from_json(manifest["schema"]))
        try:
            net.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
        except RuntimeError as exc:
            raise ModelFormatError(f"{folder / WEIGHTS}: weights do not fit the network: {exc}") from exc
        ranker.net_ = net
        return ranker


class LinearRanker(TorchRanker):
    """A linear scorer over standardised features (and embeddings): the baseline."""

    kind = "linear"
    param_names = ()

    def __init__(self, train: TorchTrainSettings | None = None, threads: int = 1) -> None:
        self.train = train or TorchTrainSettings()
        self.threads = threads

    def build_net(self, schema: Schema) -> ScoringNet:
        return LinearNet(_encoder(schema, "standardize", 0.0))


class MLPRanker(TorchRanker):
    """A feed-forward network scoring each row independently."""

    kind = "mlp"
    param_names = ("hidden", "dropout")

    def __init__(
        self,
        hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.1,
        train: TorchTrainSettings | None = None,
        threads: int = 1,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.train = train or TorchTrainSettings()
        self.threads = threads

    def _check_params(self) -> None:
        super()._check_params()
        _check_tower(self.hidden, self.dropout)

    def build_net(self, schema: Schema) -> ScoringNet:
        return MLPNet(_encoder(schema, "standardize", 0.0), self.hidden, self.dropout)


class DCNRanker(TorchRanker):
    """DCN-V2: cross layers (full or low-rank) with a deep tower, stacked or in parallel."""

    kind = "dcn"
    param_names = ("cross_layers", "rank", "hidden", "dropout", "structure")

    def __init__(
        self,
        cross_layers: int = 3,
        rank: int | None = 64,
        hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.1,
        structure: Literal["stacked", "parallel"] = "parallel",
        train: TorchTrainSettings | None = None,
        threads: int = 1,
    ) -> None:
        self.cross_layers = cross_layers
        self.rank = rank
        self.hidden = hidden
        self.dropout = dropout
        self.structure = structure
        self.train = train or TorchTrainSettings()
        self.threads = threads

    def _check_params(self) -> None:
        super()._check_params()
        _check_tower(self.hidden, self.dropout)
        if self.cross_layers < 1:
            raise ParameterError(f"cross_layers must be >= 1, got {self.cross_layers}")
        if self.rank is not None and self.rank < 1:
            raise ParameterError(f"rank must be >= 1 or None (full rank), got {self.rank}")
        if self.structure not in ("stacked", "parallel"):
            raise ParameterError(f"structure must be 'stacked' or 'parallel', got {self.structure!r}")

    def build_net(self, schema: Schema) -> ScoringNet:
        return DCNv2Net(
            _encoder(schema, "standardize", 0.0),
            self.cross_layers,
            self.rank,
            self.hidden,
            self.dropout,
            self.structure,
        )


class DASALCRanker(TorchRanker):
    """DASALC: log1p + batch norm + training noise, a row tower, list self-attention, latent cross."""

    kind = "dasalc"
    param_names = ("hidden", "dropout", "attention_layers", "heads", "noise_std", "transform")

    def __init__(
        self,
        hidden: tuple[int, ...] = (64, 32),
        dropout: float = 0.2,
        attention_layers: int = 1,
        heads: int = 4,
        noise_std: float = 0.5,
        transform: DenseTransform = "log1p_bn",
        train: TorchTrainSettings | None = None,
        threads: int = 1,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.attention_layers = attention_layers
        self.heads = heads
        self.noise_std = noise_std
        self.transform = transform
        self.train = train or TorchTrainSettings()
        self.threads = threads

    def _check_params(self) -> None:
        super()._check_params()
        _check_tower(self.hidden, self.dropout)
        if not self.hidden:
            raise ParameterError("DASALC needs at least one hidden layer for its latent cross")
        if self.attention_layers < 0:
            raise ParameterError(f"attention_layers must be >= 0, got {self.attention_layers}")
        if self.heads < 1 or self.hidden[-1] % self.heads:
            raise ParameterError(
                f"heads ({self.heads}) must divide the last hidden width ({self.hidden[-1]})"
            )
        if self.noise_std < 0:
            raise ParameterError(f"noise_std must be >= 0, got {self.noise_std}")
        if self.transform not in get_args(DenseTransform):
            choices = ", ".join(get_args(DenseTransform))
            raise ParameterError(f"transform must be one of {choices}, got {self.transform!r}")

    def build_net(self, schema: Schema) -> ScoringNet:
        return DASALCNet(
            _encoder(schema, self.transform, self.noise_std),
            self.hidden,
            self.dropout,
            self.attention_layers,
            self.heads,
        )


def _encoder(schema: Schema, transform: DenseTransform, noise_std: float) -> InputEncoder:
    return build_encoder(
        len(schema.feature_names),
        schema.cardinalities,
        sum(dim for _, dim in schema.vector_dims),
        transform,
        noise_std,
    )


def _check_tower(hidden: tuple[int, ...], dropout: float) -> None:
    if any(int(h) < 1 for h in hidden):
        raise ParameterError(f"hidden widths must be >= 1, got {list(hidden)}")
    if not 0 <= dropout < 1:
        raise ParameterError(f"dropout must lie in [0, 1), got {dropout}")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
