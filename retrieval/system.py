"""Assemble the retrievers a world needs from settings: build their indexes, load them, fuse them.

Index layout under ``settings.index_dir`` (default ``<world>/index/retrieval``): one folder per text
retriever (``splade/``, ``dense/``, ``bm25/``), each with its own fingerprint. The behavioural retriever has
no index: it is fitted from the logs when loaded (seconds), with a cut-off date for evaluation.

``build_world_index`` encodes passages on the engine's workers (``data.engine``, given by the caller) when
that is faster: a running cluster always, a local one from ``engine_min_passages`` passages up and with
more than one worker; otherwise, and with ``engine.workers=1`` (the reference), in this process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from data.days import Progress
from data.engine import EngineSettings, optional_engine_client
from data.layout import DataLayout
from data.threads import all_cores
from retrieval.base import BaseRetriever, Passage
from retrieval.behavioural import BehaviouralRetriever
from retrieval.config import RetrievalSettings
from retrieval.corpus import block_passages
from retrieval.dense import DenseRetriever
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.splade import SpladeEncoder
from retrieval.fusion import FusedRetriever
from retrieval.lucene import Bm25Retriever, SpladeRetriever

if TYPE_CHECKING:
    from distributed import Client

TEXT_MEMBERS = ("bm25", "splade", "dense")
ENCODED_MEMBERS = ("splade", "dense")  # what the engine's workers encode


def index_root(world: Path, settings: RetrievalSettings) -> Path:
    return settings.index_dir if settings.index_dir is not None else Path(world) / "index" / "retrieval"


def text_retriever(name: str, root: Path, settings: RetrievalSettings) -> BaseRetriever:
    """An unbuilt text retriever whose index lives in ``root/<name>``."""
    s = settings
    if name == "splade":
        encoder = SpladeEncoder(s.splade, **_encoder_options(s))
        return SpladeRetriever(root / "splade", encoder, limits=s.query, threads=s.java_threads)
    if name == "dense":
        dense_encoder = DenseEncoder(s.dense, **_encoder_options(s))
        return DenseRetriever(root / "dense", dense_encoder, s.dense, limits=s.query, threads=s.torch_threads)
    if name == "bm25":
        return Bm25Retriever(root / "bm25", s.bm25, limits=s.query, threads=s.java_threads)
    raise ValueError(f"no text retriever named {name!r} (expected one of {', '.join(TEXT_MEMBERS)})")


def _index_threads(settings: RetrievalSettings) -> int:
    return settings.index_threads or all_cores()


def _encoder_options(settings: RetrievalSettings) -> dict:
    """What both transformer encoders take from the shared retrieval settings."""
    return {
        "cache_size": settings.cache_size,
        "threads": settings.torch_threads,
        "index_threads": _index_threads(settings),
        "onnx_cache_dir": settings.onnx_cache_dir,
    }


def build_text_indexes(
    passages: Sequence[Passage],
    root: Path,
    settings: RetrievalSettings,
    names: Sequence[str],
    *,
    overwrite: bool = True,
    progress: Progress | None = None,
    engine: Client | None = None,
) -> tuple[dict[str, BaseRetriever], dict[str, dict]]:
    """Build (or reuse, when the fingerprint matches) each named index; returns retrievers and a report.

    ``engine``: a Dask client whose workers encode the passages; None: this process.
    """
    retrievers: dict[str, BaseRetriever] = {}
    report: dict[str, dict] = {}
    for name in names:
        retriever = text_retriever(name, root, settings)
        started = time.perf_counter()
        was_current = retriever.index_dir is not None and _is_current(retriever, passages)
        retriever.build(passages, overwrite=overwrite, progress=progress, engine=engine)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - started
        report[name] = {
            "status": "up to date" if was_current else "built",
            "path": str(retriever.index_dir),  # type: ignore[attr-defined]
            "passages": len(passages),
            "seconds": round(seconds, 2),
            "passages_per_second": None if was_current else round(len(passages) / max(seconds, 1e-9), 1),
        }
        retrievers[name] = retriever
    return retrievers, report


def _is_current(retriever: BaseRetriever, passages: Sequence[Passage]) -> bool:
    from retrieval import fingerprint

    return fingerprint.read(retriever.index_dir) == retriever.expected_fingerprint(passages)  # type: ignore[attr-defined]


def build_world_index(
    world: Path,
    settings: RetrievalSettings,
    *,
    progress: Progress | None = None,
    engine: EngineSettings | None = None,
) -> dict[str, dict]:
    """Index a world's blocks for every text member; stale indexes are replaced, current ones kept.

    ``engine``: where passages may be encoded (see the module doc); None: in this process. Each report row
    names where its passages were encoded (``engine``).
    """
    passages = block_passages(DataLayout(Path(world)))
    names = [m for m in settings.members if m in TEXT_MEMBERS]
    root = index_root(world, settings)
    stale = [
        n
        for n in names
        if n in ENCODED_MEMBERS and not _is_current(text_retriever(n, root, settings), passages)
    ]
    use_engine = engine is not None and stale and _engine_is_faster(engine, settings, len(passages))
    where = engine.describe() if use_engine and engine is not None else "in-process"
    with optional_engine_client(engine if use_engine else None) as client:
        _, report = build_text_indexes(passages, root, settings, names, progress=progress, engine=client)
    for name, row in report.items():
        row["engine"] = where if name in stale else None
    return report


def _engine_is_faster(engine: EngineSettings, settings: RetrievalSettings, passages: int) -> bool:
    """A running cluster: always. A local one: with 2+ workers, once the passages outweigh its start."""
    if not engine.is_local:
        return True
    return engine.local_cluster_pays(passages, settings.engine_min_passages)


def load_world_retrievers(
    world: Path,
    settings: RetrievalSettings,
    *,
    before: date | datetime | None = None,
    build_missing: bool = False,
    progress: Progress | None = None,
    load_text: bool = True,
) -> dict[str, BaseRetriever]:
    """Every member named in settings plus ``fused``, ready to search.

    Text indexes must match the world's blocks (else StaleIndexError) unless ``build_missing`` is set, in
    which case missing or stale ones are (re)built. The behavioural member learns from logs before ``before``.
    ``load_text`` False leaves the text members unloaded (no index, encoder or JVM) until
    ``load_text_members`` loads them.
    """
    layout = DataLayout(Path(world))
    passages = block_passages(layout)
    root = index_root(world, settings)
    members: dict[str, BaseRetriever] = {}
    for name in settings.members:
        if name == "behavioural":
            imps = layout.read_events("impressions", validate_rows=False)
            acts = layout.read_events("interactions", validate_rows=False)
            members[name] = BehaviouralRetriever(settings.behavioural, limits=settings.query).fit(
                imps, acts, before=before
            )
        elif build_missing:
            members.update(build_text_indexes(passages, root, settings, [name], progress=progress)[0])
        elif not load_text:
            members[name] = text_retriever(name, root, settings)
        else:
            members[name] = text_retriever(name, root, settings).load(passages)  # type: ignore[attr-defined]
    fused = FusedRetriever(members, settings.fusion, limits=settings.query, threads=settings.query_threads)
    return {**members, "fused": fused}


def load_text_members(world: Path, members: Mapping[str, BaseRetriever]) -> None:
    """Load the unloaded text members of ``load_world_retrievers(..., load_text=False)`` in place (each
    refused if its index does not match the world's blocks, as at a full load)."""
    passages = block_passages(DataLayout(Path(world)))
    for name, member in members.items():
        if name in TEXT_MEMBERS and not member.is_built:
            member.load(passages)  # type: ignore[attr-defined]
