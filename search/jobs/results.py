"""Typed results of the stages' jobs that the roof prints: world statistics, the online-feature build and a
user-embedding training run.

Each stage returns a JSON-ready dict (what ``--json`` prints and docs show). These models parse it once, so
a reader names fields (a renamed key fails at the parse, naming the field) and ``to_json()`` gives back the
same dict: the keys that were there, in their order. Keys that are not Python names (``ndcg@page_logging``)
are aliases; keys these models do not know pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


class JobResult(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The dict this was read from (only the keys it had, under their own names)."""
        return self.model_dump(by_alias=True, exclude_unset=True)


# World statistics (data.world.stats.world_stats) ----------------------------------------------------------


class WorldInfo(JobResult):
    scale: str
    seed: int
    start_date: str
    days: int


class OracleBucket(JobResult):
    """NDCG over a page of the logging policy and of two oracles on one bucket of impressions."""

    impressions: int
    ndcg_logging: float | None = Field(alias="ndcg@page_logging")
    ndcg_nonpersonal_oracle: float | None = Field(alias="ndcg@page_nonpersonal_oracle")
    ndcg_personal_oracle: float | None = Field(alias="ndcg@page_personal_oracle")
    personalization_gain: float | None
    entropy_range_bits: list[float] | None = None  # query-entropy buckets only


class EntropySummary(JobResult):
    """Quantiles (``p0`` .. ``p100``, extra keys) of the queries' click entropy in bits."""

    queries: int
    min_clicks: int


class WorldStats(JobResult):
    world: WorldInfo
    counts: dict[str, int | float]
    ctr_by_position: list[float]
    randomized_ctr_ratio_to_top: list[float]
    query_click_entropy_bits: EntropySummary
    oracle_by_entropy: dict[str, OracleBucket]
    oracle_by_diversity: dict[str, OracleBucket]
    oracle_overall: OracleBucket


# The online-feature build (features.build.build_online_features) -----------------------------------------


class BuildSeconds(JobResult):
    load: float
    replay: float
    batch: float
    write: float
    total: float


class FeatureBuild(JobResult):
    data: str
    manifest: dict[str, Any] | None
    as_of: str | None
    events: int
    live_keys: int
    batch_keys: int
    seconds: BuildSeconds
    replay_events_per_s: int
    build_events_per_s: int


# A user-embedding training run (features.embeddings.pipeline.train_user_embeddings) ----------------------


class MethodScores(BaseModel):
    """One method's next-block prediction on the held-out clicks: recall@k, MRR and the clicks scored.

    Logged as ``{"recall@<k>": .., "mrr": .., "events": ..}``: k is read from (and written back to) the key.
    """

    model_config = ConfigDict(frozen=True)

    k: int
    recall: float
    mrr: float
    events: int

    @model_validator(mode="before")
    @classmethod
    def _recall_at_k(cls, data: Any) -> Any:
        return _split_at_k(data, "recall")

    @model_serializer
    def _as_logged(self) -> dict[str, Any]:
        return {f"recall@{self.k}": self.recall, "mrr": self.mrr, "events": self.events}


class DataRange(JobResult):
    """Inclusive first and last ISO day of each part (``data.days.DaySplit.to_json``)."""

    train: list[str]
    valid: list[str]
    test: list[str]


class EmbeddingRun(JobResult):
    version: str
    folder: str
    metrics: dict[str, MethodScores]
    metrics_before_request: dict[str, MethodScores]
    train: dict[str, Any]
    engine: dict[str, Any] | None = None  # the ranks, when M3 trained on the engine
    baseline_train: dict[str, Any] | None
    data_range: DataRange
    written: int


# A closed-loop traffic run (search.experiments.traffic.simulate_traffic) ----------------------------------


class VariantTraffic(BaseModel):
    """One experiment variant's share of a traffic run; per search: clicks, the share of searches with a
    click, the true utility of the top ``k`` shown blocks and the utility of the blocks examined.

    Logged with ``utility@<k>`` as the key of ``utility``: k is read from (and written back to) the key.
    """

    model_config = ConfigDict(frozen=True)

    experiment: str
    variant: str
    ranker_versions: list[str]
    searches: int
    clicks: int
    ctr: float
    clicked_share: float
    k: int
    utility: float
    examined_utility: float
    # The best k blocks of the catalogue for the same sessions (client-side truth), the share of it the
    # variant's pages got, and the gain captured against a retrieval-order variant of the same experiment.
    oracle_utility: float | None = None
    oracle_share: float | None = None
    gain_captured: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _utility_at_k(cls, data: Any) -> Any:
        return _split_at_k(data, "utility")

    @model_serializer
    def _as_logged(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in type(self).model_fields if name not in ("k", "utility")}
        # utility@k sits between clicked_share and examined_utility, as logged.
        examined = out.pop("examined_utility")
        return {**out, f"utility@{self.k}": self.utility, "examined_utility": examined}


class Latency(JobResult):
    p50: float | None
    p99: float | None


class TrafficReport(JobResult):
    url: str
    run_id: str
    users: int
    concurrency: int
    page_size: int
    elapsed_s: float
    sessions: int
    searches: int
    clicks: int
    events_sent: int
    events_retried: int  # /events batches sent again after a 503 (the store away, nothing accepted)
    errors: int
    error_samples: list[str]
    unknown_blocks: int
    unknown_queries: int
    searches_per_s: float
    search_latency_ms: Latency
    variants: list[VariantTraffic]


# An experiment analysis (search.experiments.analysis.analyze) -----------------------------------------------


class SampleRatio(JobResult):
    """Users per variant against the configured split: a chi-square test and whether it flags a mismatch."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float | None
    p_value: float | None
    mismatch: bool


class InterleavingCredit(JobResult):
    """Team-draft credit of an interleaving variant's pages: wins of ranker ``a`` and ``b``, ties, the share
    of decided pages ``b`` won and sign tests over pages and over users."""

    a: str
    b: str
    impressions: int
    wins_a: int
    wins_b: int
    ties: int
    preference_b: float | None
    preference_b_ci: list[float | None]
    p_value: float | None
    users_a: int
    users_b: int
    user_p_value: float | None


class VariantAnalysis(JobResult):
    name: str
    kind: str
    weight: float
    users: int
    impressions: int
    # metric -> value and CI, plus lift, its CI and p-value against the control (see table_rows)
    metrics: dict[str, dict[str, Any]]
    interleaving: InterleavingCredit | None = None  # interleaving variants only


class ExperimentAnalysis(JobResult):
    experiment: str
    control: str
    users: int
    impressions: int
    mixed_users: int  # users seen in two variants: left out
    unknown_variants: dict[str, int]  # impressions of variants the config does not name
    srm: SampleRatio
    variants: list[VariantAnalysis]


class Analysis(JobResult):
    events: str
    impressions: int
    experiments: list[ExperimentAnalysis]


def _split_at_k(data: Any, metric: str) -> Any:
    """``{"<metric>@<k>": v, ...}`` as logged -> ``{"k": k, "<metric>": v, ...}`` (other input unchanged)."""
    if not isinstance(data, dict) or metric in data:
        return data
    keys = [key for key in data if isinstance(key, str) and key.startswith(f"{metric}@")]
    if len(keys) != 1:
        raise ValueError(f"expected one {metric}@k key, got {sorted(data)}")
    rest = {key: v for key, v in data.items() if key != keys[0]}
    return {**rest, "k": int(keys[0].removeprefix(f"{metric}@")), metric: data[keys[0]]}
