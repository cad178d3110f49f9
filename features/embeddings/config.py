"""Settings of the user-embedding stage; for ``search.settings.Settings`` under the key ``embeddings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from data.torch_ranks import RankPlacement

#: Above this many blocks the item table trains sparsely by default. One step of 256 histories, one thread:
#: dense 27 ms and sparse 31 ms on 6,048 blocks; dense 221 ms and sparse 43 ms on 241,920 (a dense step
#: reads and writes every row). They cross near 11,000; the small world keeps the dense path it was tuned on.
SPARSE_FROM_ITEMS = 20_000


class EmbeddingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(default="m3", pattern="^m3$", description="The user-embedding model.")
    dim: int = Field(default=64, ge=4, le=1024, description="Width of user and block vectors.")
    short_items: int = Field(default=1, ge=1, description="Most recent items the short-range encoder reads.")
    mid_items: int = Field(default=10, ge=2, description="Recent items the mid-range GRU reads.")
    max_history: int = Field(default=50, ge=2, description="Items the long-range attention reads.")
    # The K-window baseline (what M3 replaces): one mean vector per window, in days; 0 = the whole history.
    windows_days: tuple[float, ...] = Field(default=(1.0, 7.0, 0.0), min_length=1)
    baseline_table: Literal["trained", "m3"] = Field(
        default="trained",
        description="Item vectors of the average / multi baselines: their own table trained with a mean "
        "encoder and the same loss, or M3's table.",
    )
    epochs: int = Field(default=20, ge=1, description="Upper bound; early stopping on validation recall.")
    patience: int = Field(default=3, ge=1, description="Epochs without better validation recall@k.")
    max_train_seconds: float | None = Field(
        default=None, gt=0, description="Stop training after this wall time (large worlds)."
    )
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    sparse_items: bool | None = Field(
        default=None,
        description="Update the item table row by row (sparse gradients, SparseAdam), so a step's cost "
        "follows its batch rather than the catalogue; unset: when the catalogue has more than "
        "SPARSE_FROM_ITEMS blocks and no weight_decay (SparseAdam has none).",
    )
    dropout: float = Field(default=0.1, ge=0, lt=1)
    negatives: int = Field(default=512, ge=1, description="Shared sampled-softmax negatives per batch.")
    negative_power: float = Field(
        default=0.75, ge=0, le=1, description="Negatives drawn by popularity**power (0 = uniform)."
    )
    valid_days: int = Field(default=2, ge=1, description="Days after training used for early stopping.")
    test_days: int = Field(default=2, ge=1, description="Last days, held out for the reported metrics.")
    eval_k: int = Field(default=10, ge=1)
    eval_max_events: int = Field(
        default=50_000, ge=1, description="Held-out clicks scored (a seeded sample when there are more)."
    )
    # One thread: on the shared 2-core machines a second torch thread made a training step 15x slower
    # (spin-waiting on a busy core), measured here under load.
    threads: int = Field(default=1, ge=1, le=64, description="torch threads.")
    # On one 2-core machine, 2 workers trained 2 epochs of the small world 1.27x faster than 1 as two gloo
    # ranks (summing a 6,049-row table's gradients every step took 3.1-3.5 s of 19.4), and one process on
    # both cores 1.66x faster (docs/scale.md): gloo pays off only between machines.
    engine_ranks: RankPlacement = Field(
        default="host",
        description="M3 on the engine: one data-parallel rank per host, on all its workers' cores ('host'), "
        "or one per worker ('worker').",
    )
    seed: int = Field(default=0, ge=0)
    # Point-in-time M3 for ranker training sets (features.embeddings.asof): models retrained on an expanding
    # window of days, each giving user vectors as of the start of the days up to the next retraining.
    # Off by default: on the small world the M3 features lowered LightGBM's ndcg@10 (0.860 -> 0.849; high
    # entropy 0.767 -> 0.748), see docs/features.md. Off, training rows have m3_missing = 1 throughout.
    as_of: bool = Field(
        default=False, description="Give ranker training sets M3 features (off: rankers do not use them)."
    )
    as_of_first_days: int = Field(
        default=2, ge=2, description="Logged days before the first model (its training and validation days)."
    )
    as_of_retrain_days: int = Field(default=4, ge=1, description="A new model every this many days.")
    # Epochs, not wall time, bound these models: a training set must not depend on how busy the machine
    # was. The time cap is a safety net for large logs (a run that hits it is no longer reproducible).
    as_of_epochs: int = Field(default=4, ge=1, description="Most epochs of each point-in-time model.")
    as_of_max_train_seconds: float | None = Field(
        default=900.0, gt=0, description="Safety cap on the training time of each point-in-time model."
    )
    as_of_valid_events: int = Field(
        default=5000, ge=1, description="Validation clicks (a seeded sample) for each model's early stopping."
    )
    model_dir: Path = Field(default=Path("worlds/models/m3"), description="Where trained versions are saved.")

    def sparse_table(self, n_items: int) -> bool:
        """Whether an item table of ``n_items`` rows (the blocks and the padding row) trains sparsely."""
        if self.sparse_items is not None:
            return self.sparse_items
        return n_items - 1 > SPARSE_FROM_ITEMS and self.weight_decay == 0  # n_items counts the padding row

    @model_validator(mode="after")
    def _consistent(self) -> EmbeddingSettings:
        if self.sparse_items and self.weight_decay > 0:
            raise ValueError(
                "weight_decay > 0 needs sparse_items false or unset (SparseAdam has no weight decay)"
            )
        if self.short_items > self.mid_items or self.mid_items > self.max_history:
            raise ValueError(
                f"expected short_items <= mid_items <= max_history, got "
                f"{self.short_items}, {self.mid_items}, {self.max_history}"
            )
        return self
