"""Settings of the ranking stage; part of ``search.settings.Settings`` (key ``ranking``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TorchTrainSettings(BaseModel):
    """How the torch rankers train (shared by linear, MLP, DCN-V2 and DASALC)."""

    model_config = ConfigDict(extra="forbid")

    # Defaults picked on a validation split carved from the LightGBM example's training lists (small data:
    # small steps, small batches, weight decay); large click logs will want bigger batches.
    learning_rate: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=1e-3, ge=0)
    max_epochs: int = Field(default=200, ge=1)
    lists_per_batch: int = Field(default=8, ge=1)
    patience: int = Field(
        default=15, ge=1, description="Epochs without a better validation NDCG before training stops."
    )
    eval_k: int = Field(default=10, ge=1, description="Validation metric for early stopping: NDCG@eval_k.")
    valid_fraction: float = Field(
        default=0.15,
        ge=0,
        lt=1,
        description="Share of training lists held out for early stopping when no validation set is given.",
    )
    seed: int = Field(default=0, ge=0)
    targets: Literal["labels", "gains"] = Field(
        default="labels",
        description="Softmax targets: the labels, or NDCG gains 2^label - 1 (puts more mass on top grades).",
    )


#: How DASALC's dense features enter the network (see ``ranking.nn.layers.InputEncoder``).
DenseTransform = Literal["standardize", "log1p_bn", "quantile"]


class DASALCSettings(BaseModel):
    """DASALC's network (also every dasalc-ens member's)."""

    model_config = ConfigDict(extra="forbid")

    hidden: tuple[int, ...] = Field(default=(64, 32), min_length=1, description="Row tower widths.")
    dropout: float = Field(default=0.2, ge=0, lt=1)
    attention_layers: int = Field(default=1, ge=0, description="Self-attention blocks across the list.")
    heads: int = Field(default=4, ge=1, description="Attention heads; must divide the last hidden width.")
    noise_std: float = Field(
        default=0.5, ge=0, description="Gaussian noise on the transformed dense features in training."
    )
    transform: DenseTransform = Field(
        default="log1p_bn",
        description="log1p_bn: the paper's sign(x) log1p(|x|) + batch norm; quantile: rank-Gauss with the "
        "training CDF (bounded inputs for sparse features); standardize: z-scores.",
    )


class WorldSettings(BaseModel):
    """How a world's (or a portal's own) logs become training, validation and test lists."""

    model_config = ConfigDict(extra="forbid")

    warmup_days: int = Field(
        default=1,
        ge=0,
        description="First logged days that only feed feature history: every feature is cold on them.",
    )
    valid_days: int = Field(default=1, ge=1, description="Days after training used for early stopping.")
    test_days: int = Field(default=2, ge=1, description="Last days, held out for evaluation only.")
    ips_clip: float = Field(
        default=20.0,
        ge=1,
        description="Largest inverse-propensity weight: clipping trades a little bias for less variance.",
    )
    entropy_min_clicks: int = Field(
        default=10, ge=1, description="Clicks a query needs on the training days to get an entropy bucket."
    )
    cache: bool = Field(default=True, description="Reuse built training sets cached under the world folder.")
    # Click logs hold tens of thousands of lists: bigger batches and steps than the LTR defaults, few epochs.
    train: TorchTrainSettings = TorchTrainSettings(
        learning_rate=2e-3, lists_per_batch=256, max_epochs=20, patience=3, weight_decay=1e-5
    )
    # The paper's input transform: world features are counts and rates (long tails, few exact zeros), where
    # log1p + batch norm is what was measured (ndcg@10 on the small world).
    dasalc: DASALCSettings = DASALCSettings()


class RankingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry_dir: Path = Field(
        default=Path("worlds/models"), description="Where versioned model artifacts are kept."
    )
    promotion_metric: str = Field(
        default="ndcg@10", pattern=r"^(ndcg@\d+|mrr)$", description="Metric `models validate` compares."
    )
    tolerance: float = Field(
        default=0.005,
        ge=0,
        description="Largest absolute drop of the promotion metric a promoted candidate may show.",
    )
    threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="torch / LightGBM threads; the machines here are small and shared.",
    )
    train: TorchTrainSettings = TorchTrainSettings()
    # Picked by 5-fold cross-validation over the LightGBM example's *training* lists (early stopping on lists
    # carved from each fold's training part; rank.test never used): its 300 features are mostly 0 with thin
    # tails in [0, 1], where log1p does nothing and batch norm turns rare values into huge inputs that 171
    # training lists overfit within a few epochs. Rank-Gauss inputs with more noise and dropout gave the
    # flattest validation curve and the best NDCG@5 (0.65 -> 0.68 for one network).
    dasalc: DASALCSettings = DASALCSettings(transform="quantile", noise_std=1.0, dropout=0.3)
    ensemble_size: int = Field(default=5, ge=1, description="Seeds averaged by dasalc-ens.")
    ensemble_refit: bool = Field(
        default=False,
        description="dasalc-ens: retrain each member on train + valid for its early-stopped epochs.",
    )
    lgbm_trees: int = Field(default=300, ge=1)
    lgbm_learning_rate: float = Field(default=0.05, gt=0)
    lgbm_leaves: int = Field(default=31, ge=2)
    world: WorldSettings = WorldSettings()

    def for_world(self) -> RankingSettings:
        """These settings with the world's overrides (training schedule, DASALC inputs) in place."""
        return self.model_copy(update={"train": self.world.train, "dasalc": self.world.dasalc})
