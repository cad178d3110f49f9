"""An index built from other data is rebuilt or refused, never searched as if it were current."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.base import Passage
from retrieval.config import DenseSettings
from retrieval.dense import DenseRetriever
from retrieval.encoders.dense import DenseEncoder
from retrieval.errors import IndexNotFoundError, StaleIndexError
from retrieval.lucene import Bm25Retriever

PASSAGES = [Passage("a", "jeju island restaurants"), Passage("b", "iphone 16 battery")]
CHANGED = [Passage("a", "jeju island restaurants"), Passage("b", "galaxy s25 camera")]


@pytest.fixture(scope="module")
def encoder() -> DenseEncoder:
    return DenseEncoder(DenseSettings()).load()


def test_dense_index_is_reused_refused_then_rebuilt(tmp_path: Path, encoder: DenseEncoder) -> None:
    folder = tmp_path / "dense"
    DenseRetriever(folder, encoder).build(PASSAGES)
    stamp = (folder / "index.faiss").stat().st_mtime_ns
    DenseRetriever(folder, encoder).build(PASSAGES)  # same data: kept
    assert (folder / "index.faiss").stat().st_mtime_ns == stamp

    with pytest.raises(StaleIndexError, match="corpus_sha256"):
        DenseRetriever(folder, encoder).load(CHANGED)
    with pytest.raises(StaleIndexError, match="overwrite"):
        DenseRetriever(folder, encoder).build(CHANGED)
    rebuilt = DenseRetriever(folder, encoder).build(CHANGED, overwrite=True)
    assert rebuilt.search("samsung phone camera", 1)[0].id == "b"
    DenseRetriever(folder, encoder).load(CHANGED)


def test_settings_that_shape_the_index_are_part_of_the_fingerprint(
    tmp_path: Path, encoder: DenseEncoder
) -> None:
    DenseRetriever(tmp_path / "d", encoder).build(PASSAGES)
    other = DenseRetriever(tmp_path / "d", encoder, DenseSettings(flat_max_vectors=1))
    with pytest.raises(StaleIndexError, match="encoder"):
        other.load(PASSAGES)


def test_large_catalogues_switch_to_hnsw(encoder: DenseEncoder) -> None:
    retriever = DenseRetriever(None, encoder, DenseSettings(flat_max_vectors=1)).build(PASSAGES)
    assert retriever.index_type == "IndexHNSWFlat"
    assert retriever.search("jeju food", 1)[0].id == "a"


def test_missing_half_built_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="index build"):
        Bm25Retriever(tmp_path / "none").load()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not an index")
    with pytest.raises(StaleIndexError, match="refusing"):
        Bm25Retriever(foreign).build(PASSAGES, overwrite=True)
    assert (foreign / "notes.txt").exists()


def test_lucene_index_is_refused_when_stale(tmp_path: Path) -> None:
    Bm25Retriever(tmp_path / "bm25").build(PASSAGES)
    with pytest.raises(StaleIndexError):
        Bm25Retriever(tmp_path / "bm25").load(CHANGED)
    hits = Bm25Retriever(tmp_path / "bm25").build(CHANGED, overwrite=True).search("galaxy camera", 5)
    assert [h.id for h in hits] == ["b"]
