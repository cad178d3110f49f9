"""Torch rankers: linear, MLP, DCN-V2 and DASALC behind the ``Ranker`` protocol; weights in safetensors.

Each model's parameters are one config here (``LinearConfig``, ``MLPConfig``, ``DCNConfig``, ``DASALCConfig``,
all ``TorchConfig``s); a ranker's constructor takes the same names, with the config's defaults.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import numpy as np
from pydantic import Field, PositiveInt
from safetensors.torch import load_file, save_file

from data.threads import torch_threads
from ranking.base import Ranker
from ranking.config import DASALCSettings, RankerConfig, TorchTrainSettings
from ranking.dataset import ListwiseData, Schema
from ranking.errors import ModelFormatError, ParameterError
from ranking.nn.layers import DenseTransform, InputEncoder
from ranking.nn.nets import DASALCNet, DCNv2Net, LinearNet, MLPNet, ScoringNet, build_encoder
from ranking.nn.train import TensorLists, predict, train_net

if TYPE_CHECKING:
    from distributed import Client

WEIGHTS = "model.safetensors"

#: ``train`` as a constructor takes it: the settings, or their JSON form (from ``get_params`` or a manifest).
TrainArg = TorchTrainSettings | Mapping[str, Any]


class TorchConfig(RankerConfig):
    """What every torch ranker's config holds: how it trains, besides ``threads``."""

    train: TorchTrainSettings = TorchTrainSettings()


class LinearConfig(TorchConfig):
    type: Literal["linear"] = "linear"


class MLPConfig(TorchConfig):
    type: Literal["mlp"] = "mlp"
    hidden: tuple[PositiveInt, ...] = Field(default=(256, 128), description="Tower widths.")
    dropout: float = Field(default=0.1, ge=0, lt=1)


class DCNConfig(TorchConfig):
    type: Literal["dcn"] = "dcn"
    cross_layers: int = Field(default=3, ge=1)
    rank: PositiveInt | None = Field(default=64, description="Low-rank cross weights; None: full rank.")
    hidden: tuple[PositiveInt, ...] = Field(default=(256, 128), description="Deep tower widths.")
    dropout: float = Field(default=0.1, ge=0, lt=1)
    structure: Literal["stacked", "parallel"] = "parallel"


class DASALCConfig(DASALCSettings, TorchConfig):
    """The network's parameters and defaults come from ``DASALCSettings`` (the settings' ``dasalc`` key)."""

    type: Literal["dasalc"] = "dasalc"


TC = TypeVar("TC", bound=TorchConfig)


class TorchRanker(Ranker[TC]):
    """Shared fit / score / save / load of the torch models; subclasses only build their network."""

    train: TrainArg
    threads: int

    net_: ScoringNet

    @abstractmethod
    def build_net(self, schema: Schema, config: TC) -> ScoringNet:
        """A freshly initialised network for inputs of this schema."""

    def fit(
        self,
        train: ListwiseData,
        valid: ListwiseData | None = None,
        warm_start: bool = False,
        *,
        client: Client | None = None,
    ) -> Self:
        """Train in this process or, given a Dask ``client``, data-parallel on its workers, one
        ``torch.distributed`` rank each (``ranking.torch_dask``).

        The client is where the fit runs, not a parameter of the model: ``get_params`` and the saved model
        are the same either way (the manifest's ``info.engine`` records the ranks), and ``threads`` only
        applies in process (a rank uses its worker's threads).
        """
        config = self.config()
        if warm_start:
            self.check_fitted("warm_start")
            self.schema_.check(train)
        cfg = config.train
        if valid is None and cfg.valid_fraction > 0 and train.n_lists >= 10:
            train, valid = train.split(cfg.valid_fraction, seed=cfg.seed)
        if valid is not None:
            train.schema.check(valid)
        with torch_threads(config.threads):
            import torch

            torch.manual_seed(cfg.seed)  # initial weights
            tensors = TensorLists(train, cfg.targets)
            if not warm_start:
                self.schema_ = train.schema
                self.net_ = self.build_net(self.schema_, config)
                if tensors.dense.shape[1]:
                    self.net_.encoder.set_stats(tensors.dense)
            if client is None:
                info = train_net(self.net_, tensors, TensorLists(valid) if valid else None, cfg, cfg.seed)
            else:
                info = self._fit_on_engine(client, train, valid, cfg)
        self.info_ = {**info, "warm_start": warm_start}
        return self

    def _fit_on_engine(
        self, client: Client, train: ListwiseData, valid: ListwiseData | None, cfg: TorchTrainSettings
    ) -> dict[str, Any]:
        from data.torch_ranks import load_numpy_state
        from ranking.torch_dask import fit_on_engine

        state, info, run = fit_on_engine(client, self.net_, train, valid, cfg)
        load_numpy_state(self.net_, state)
        return {**info, "engine": run}

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
        try:
            ranker = cls(**manifest["params"])
            config = ranker.config()
        except (TypeError, ParameterError) as exc:
            raise ModelFormatError(f"{folder}: parameters do not fit {cls.__name__}: {exc}") from exc
        net = ranker.build_net(Schema.from_json(manifest["schema"]), config)
        try:
            net.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
        except RuntimeError as exc:
            raise ModelFormatError(f"{folder / WEIGHTS}: weights do not fit the network: {exc}") from exc
        ranker.net_ = net
        return ranker


_LINEAR, _MLP, _DCN, _DASALC = LinearConfig(), MLPConfig(), DCNConfig(), DASALCConfig()


class LinearRanker(TorchRanker[LinearConfig]):
    """A linear scorer over standardised features (and embeddings): the baseline."""

    config_class = LinearConfig
    kind = LinearConfig.model_type()

    def __init__(self, train: TrainArg = _LINEAR.train, threads: int = _LINEAR.threads) -> None:
        self.train = train
        self.threads = threads

    def build_net(self, schema: Schema, config: LinearConfig) -> ScoringNet:
        return LinearNet(_encoder(schema, "standardize", 0.0))


class MLPRanker(TorchRanker[MLPConfig]):
    """A feed-forward network scoring each row independently."""

    config_class = MLPConfig
    kind = MLPConfig.model_type()

    def __init__(
        self,
        hidden: tuple[int, ...] = _MLP.hidden,
        dropout: float = _MLP.dropout,
        train: TrainArg = _MLP.train,
        threads: int = _MLP.threads,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.train = train
        self.threads = threads

    def build_net(self, schema: Schema, config: MLPConfig) -> ScoringNet:
        return MLPNet(_encoder(schema, "standardize", 0.0), config.hidden, config.dropout)


class DCNRanker(TorchRanker[DCNConfig]):
    """DCN-V2: cross layers (full or low-rank) with a deep tower, stacked or in parallel."""

    config_class = DCNConfig
    kind = DCNConfig.model_type()

    def __init__(
        self,
        cross_layers: int = _DCN.cross_layers,
        rank: int | None = _DCN.rank,
        hidden: tuple[int, ...] = _DCN.hidden,
        dropout: float = _DCN.dropout,
        structure: Literal["stacked", "parallel"] = _DCN.structure,
        train: TrainArg = _DCN.train,
        threads: int = _DCN.threads,
    ) -> None:
        self.cross_layers = cross_layers
        self.rank = rank
        self.hidden = hidden
        self.dropout = dropout
        self.structure = structure
        self.train = train
        self.threads = threads

    def build_net(self, schema: Schema, config: DCNConfig) -> ScoringNet:
        return DCNv2Net(
            _encoder(schema, "standardize", 0.0),
            config.cross_layers,
            config.rank,
            config.hidden,
            config.dropout,
            config.structure,
        )


class DASALCRanker(TorchRanker[DASALCConfig]):
    """DASALC: log1p + batch norm + training noise, a row tower, list self-attention, latent cross."""

    config_class = DASALCConfig
    kind = DASALCConfig.model_type()

    def __init__(
        self,
        hidden: tuple[int, ...] = _DASALC.hidden,
        dropout: float = _DASALC.dropout,
        attention_layers: int = _DASALC.attention_layers,
        heads: int = _DASALC.heads,
        noise_std: float = _DASALC.noise_std,
        transform: DenseTransform = _DASALC.transform,
        train: TrainArg = _DASALC.train,
        threads: int = _DASALC.threads,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.attention_layers = attention_layers
        self.heads = heads
        self.noise_std = noise_std
        self.transform = transform
        self.train = train
        self.threads = threads

    def build_net(self, schema: Schema, config: DASALCConfig) -> ScoringNet:
        return DASALCNet(
            _encoder(schema, config.transform, config.noise_std),
            config.hidden,
            config.dropout,
            config.attention_layers,
            config.heads,
        )


def _encoder(schema: Schema, transform: DenseTransform, noise_std: float) -> InputEncoder:
    return build_encoder(
        len(schema.feature_names),
        schema.cardinalities,
        sum(dim for _, dim in schema.vector_dims),
        transform,
        noise_std,
    )
