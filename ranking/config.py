"""Settings of the ranking stage (``search.settings.Settings`` key ``ranking``); the model configs' base."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from ranking.errors import ParameterError


class RankerConfig(BaseModel):
    """One model type's parameters, their defaults and rules; the ``type`` literal names the model.

    Each ranker's config sits beside its code (``LightGBMConfig`` in ``ranking.lgbm``, ...), as Feast's online
    stores do; its fields are exactly the ranker's constructor arguments, so ``Ranker.get_params`` lists
    them and ``Ranker.from_config`` builds the ranker.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    threads: int = Field(default=1, ge=1, description="torch / LightGBM threads.")

    @classmethod
    def model_type(cls) -> str:
        """The ``type`` literal's value: the model's name in the CLI, manifests and ``models.MODELS``."""
        return str(cls.model_fields["type"].default)

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The constructor's argument names: every field but ``type``."""
        return tuple(name for name in cls.model_fields if name != "type")

    @classmethod
    def validated(cls, params: Mapping[str, Any]) -> Self:
        """``params`` checked against the rules; ``ParameterError`` says what was expected and given."""
        try:
            return cls.model_validate(params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}, got {e['input']!r}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
            raise ParameterError(f"invalid {cls.model_type()} parameters: {problems}") from exc

    def params(self) -> dict[str, Any]:
        """The constructor's keyword arguments (typed values, not JSON)."""
        return {name: getattr(self, name) for name in self.param_names()}


class TorchTrainSettings(BaseModel):
    """How the torch rankers train (shared by linear, MLP, DCN-V2 and DASALC)."""

    # Frozen: rankers share default instances, and a changed copy is made with model_copy(update=...).
    model_config = ConfigDict(extra="forbid", frozen=True)

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
    weight_ema: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Decay of an exponential moving average of the weights, updated every step; early "
        "stopping validates and keeps the average. None: the last step's weights.",
    )
    stop_on: Literal["ndcg", "pa_ndcg", "loss"] = Field(
        default="ndcg",
        description="Early stopping on the validation lists' NDCG@eval_k of the labels, on its policy-aware "
        "form (clicks weighted by their inverse propensity: ranking.evaluate.weighted_dcg), or on their "
        "weighted loss (the training objective).",
    )


#: How DASALC's dense features enter the network (see ``ranking.nn.layers.InputEncoder``).
DenseTransform = Literal["standardize", "log1p_bn", "quantile"]


class DASALCSettings(BaseModel):
    """DASALC's network (also every dasalc-ens member's): the one place its defaults are written.

    ``ranking.torch_rankers.DASALCConfig`` and ``ranking.ensemble.DASALCEnsembleConfig`` extend it with
    training, threads and (for the ensemble) the members; settings keep only the network part.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: tuple[PositiveInt, ...] = Field(default=(64, 32), min_length=1, description="Row tower widths.")
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

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        # Attention splits the last hidden width into equal parts, one per head.
        if self.hidden[-1] % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide the last hidden width ({self.hidden[-1]})")
        return self


class WorldTrainingSettings(BaseModel):
    """How a world's (or a portal's own) logs become training, validation and test lists."""

    model_config = ConfigDict(extra="forbid")

    warmup_days: int = Field(
        default=1,
        ge=0,
        description="First logged days that only feed feature history: every feature is cold on them.",
    )
    valid_days: int = Field(default=1, ge=1, description="Days after training used for early stopping.")
    test_days: int = Field(default=2, ge=1, description="Last days, held out for evaluation only.")
    # The clicks of the logging policy's randomized pages are 8% of the small world's clicks and 74% of their
    # unclipped weight: they are what teaches the order of blocks the policy's own top rarely shows. Clipped
    # at 20 they lost 45% of that weight, and DCN-V2's gain captured fell from 0.338 (200) to 0.324 (20) and
    # 0.212 (5), mean of 3 seeds each (docs/ranking.md). 200 clips none of them there; it stays a guard
    # against a log's near-zero propensities.
    ips_clip: float = Field(
        default=200.0,
        ge=1,
        description="Largest inverse-propensity weight: clipping trades bias for less variance.",
    )
    entropy_min_clicks: int = Field(
        default=10, ge=1, description="Clicks a query needs on the training days to get an entropy bucket."
    )
    cache: bool = Field(default=True, description="Reuse built training sets cached under the world folder.")
    relevance: bool = Field(
        default=True,
        description="Rows carry the rel_* features from a replay of the world's retrieval (needs its "
        "indexes, `smartblock index build`); false: rankers train and serve without them.",
    )
    candidates: int = Field(
        default=24,
        ge=0,
        le=1000,
        description="Unshown retrieval candidates per training list besides the shown page, drawn from the "
        "whole candidate list (0: the page only). They are label 0; clicks are weighted policy-aware "
        "(ranking.feedback).",
    )
    # The small world logs about 100,000 requests over its range and keeps all of them; the large world's 5
    # million, at 34 rows each (the page and 24 candidates), would be about 170 million rows (docs/scale.md).
    # The share applies to every day of the range: training, validation (early stopping) and test (`evaluate
    # --world`, `models validate`) lists are all uniform samples of their days' requests.
    max_requests: int | None = Field(
        default=250_000,
        ge=1,
        description="About how many of the range's requests the training set keeps rows for: above it, a "
        "share of them drawn by request id (the replay still reads every event); null keeps every request.",
    )
    # Click logs hold tens of thousands of lists: bigger batches and steps than the LTR defaults, few epochs.
    # Patience 2: on the small world, DCN-V2 seeds 0-2 kept the same best epoch (3, 3, 2) and the same
    # weights as with 3, one epoch (9 s) sooner (docs/ranking.md). Early stopping reads the policy-aware NDCG,
    # the promotion gate's measure; against the labels' NDCG it moved the served gain by -0.03..+0.03 per
    # seed and +0.001 on average over eight runs of DCN-V2 and DASALC (docs/ranking.md).
    # The weights' moving average (decay 0.995: about 200 steps, an epoch of the small world's 215) lifted
    # DCN-V2's served gain over seeds 0-7 from a mean of 0.345 (0.309..0.368) to 0.372 (0.368..0.379)
    # (docs/ranking.md).
    train: TorchTrainSettings = TorchTrainSettings(
        learning_rate=2e-3,
        lists_per_batch=256,
        max_epochs=20,
        patience=2,
        weight_decay=1e-5,
        stop_on="pa_ndcg",
        weight_ema=0.995,
    )
    # The paper's input transform: world features are counts and rates (long tails, few exact zeros), where
    # log1p + batch norm is what was measured (ndcg@10 on the small world).
    dasalc: DASALCSettings = DASALCSettings()


class RankingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry_dir: Path = Field(
        default=Path("worlds/models"), description="Where versioned model artifacts are kept."
    )
    # The logged clicks' NDCG rewards repeating the logged page. Over nine DCN-V2 models of the small world it
    # ran against what /search gives (Pearson -0.47 with gain captured), and it passed a model 0.04 worse and
    # refused one as good; the policy-aware form ran with it (+0.52) and got both right (docs/ranking.md).
    promotion_metric: str = Field(
        default="pa_ndcg@10",
        pattern=r"^((pa_)?ndcg@\d+|mrr)$",
        description="Metric `models validate` compares (ranking.evaluate).",
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
    trial_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="A version's trial load in a child process (before promote, hot swap, start-up) that "
        "runs longer is refused.",
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
    lgbm_max_weight: float | None = Field(
        default=20.0,
        ge=1,
        description="Cap on the click weights LambdaMART trains on (the torch rankers take them up to "
        "world.ips_clip): larger weights cost it half its gain on the small world. None: no cap.",
    )
    world: WorldTrainingSettings = WorldTrainingSettings()

    def for_world(self) -> RankingSettings:
        """These settings with the world's overrides (training schedule, DASALC inputs) in place."""
        return self.model_copy(update={"train": self.world.train, "dasalc": self.world.dasalc})
