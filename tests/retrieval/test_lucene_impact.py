"""SPLADE's Lucene search against Anserini's own ``SimpleImpactSearcher`` on the tiny world's real index."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest

from data.layout import DataLayout
from retrieval.base import BaseRetriever
from retrieval.java import JAVA_CALLS, start_jvm
from retrieval.lucene import Bm25Retriever, SpladeRetriever, _ties_apart


def _anserini_top(
    retriever: SpladeRetriever, searcher: object, query: str, k: int
) -> list[tuple[str, float]]:
    """What the retriever returned before it searched Lucene itself: Anserini's searcher, integer weights."""
    autoclass = start_jvm()
    weights = autoclass("java.util.HashMap")()
    for term, weight in retriever.encoder.encode_query(query).items():
        weights.put(term, autoclass("java.lang.Integer")(weight))
    return [(str(h.docid), float(h.score)) for h in searcher.search(weights, k)]  # type: ignore[attr-defined]


def test_splade_ranks_and_scores_as_anserini_does(
    world_retrievers: dict[str, BaseRetriever], tiny_world: Path
) -> None:
    splade = world_retrievers["splade"]
    assert isinstance(splade, SpladeRetriever)
    queries = sorted(pc.unique(DataLayout(tiny_world).read_events("impressions")["query"]).to_pylist())
    assert len(queries) > 100
    searcher = start_jvm()("io.anserini.search.SimpleImpactSearcher")(str(splade.index_dir / "lucene"))
    equal = nudged = 0
    try:
        for query in queries[::3]:
            ours = [(h.id, h.score) for h in splade.search(query, 200)]
            assert ours == _anserini_top(splade, searcher, query, 200), query
            equal += sum(a[1] == b[1] for a, b in itertools.pairwise(ours))
            nudged += sum(0 < a[1] - b[1] < 1e-4 for a, b in itertools.pairwise(ours))
    finally:
        searcher.close()
    # Both kinds of tie were there to get right: equal sums kept equal, and ties nudged apart.
    assert equal > 0 and nudged > 0


def test_ties_are_nudged_apart_as_anserini_does() -> None:
    # Rounded to 1e-4, each tie lowered by 1e-6 per tie so far in float64, then float32: at 96 the first
    # three nudges round back to 96, the fourth lands one float32 step below; a large score keeps its value.
    scores = _ties_apart([222072.0, 96.0, 96.0, 96.0, 96.0, 96.0, 96.0, 48.00004, 48.0, 48.0, 1.23456789])
    assert scores[:5] == [222072.0, 96.0, 96.0, 96.0, 96.0]
    assert scores[5] == float(np.float32(96 - 4e-6)) == scores[6] < 96.0
    assert scores[7:10] == [48.0, 48.0, float(np.float32(48 - 2e-6))] and scores[9] < 48.0
    assert scores[10] == float(np.float32(1.2346))
    # Gaps are float32 differences, as in Java: 3.0002 - 3.0001 is just over 1e-4 (no tie), 3.0001 - 3.0
    # just under it (a tie, nudged once).
    f32 = np.float32
    assert f32(3.0002) - f32(3.0001) > f32(1e-4) > f32(3.0001) - f32(3.0)
    assert _ties_apart([3.0002, 3.0001, 3.0]) == [
        float(f32(3.0002)),
        float(f32(3.0001)),
        float(f32(3.0) - f32(1e-6) * f32(1)),
    ]


def test_splade_searched_from_many_threads_answers_each_query_as_alone(
    world_retrievers: dict[str, BaseRetriever], tiny_world: Path
) -> None:
    # pyjnius runs a method on whichever object of its class it was last looked up on (retrieval.java,
    # JAVA_CALLS): request threads each filling their own query map filled each other's, a few searches in
    # a thousand, and those queries ranked by another query's terms.
    from concurrent.futures import ThreadPoolExecutor

    splade = world_retrievers["splade"]
    queries = sorted(pc.unique(DataLayout(tiny_world).read_events("impressions")["query"]).to_pylist())

    def top(query: str) -> list[tuple[str, float]]:
        return [(h.id, h.score) for h in splade.search(query, 200)]

    alone = {q: top(q) for q in queries}  # also caches every query's encoding: the rounds below are Java
    with ThreadPoolExecutor(8) as pool:
        for _ in range(2):  # 2,500 searches: without the lock, about 8 wrong ones were expected
            wrong = [q for q, hits in zip(queries, pool.map(top, queries), strict=True) if hits != alone[q]]
            assert not wrong, wrong[:5]


class _Guarded:
    """A Java object or class whose every call checks that the caller holds ``JAVA_CALLS``."""

    def __init__(self, target: object) -> None:
        self._target = target

    def _checked(self, call: Any, name: str) -> Any:
        def run(*args: Any) -> Any:
            assert JAVA_CALLS._is_owned(), f"{name} called outside JAVA_CALLS"  # type: ignore[attr-defined]
            return call(*args)

        return run

    def __call__(self, *args: Any) -> Any:
        return self._checked(self._target, "a constructor")(*args)  # type: ignore[operator]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        return self._checked(attr, name) if callable(attr) else attr


def test_every_java_call_of_a_search_holds_the_lock(
    world_retrievers: dict[str, BaseRetriever], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deterministic side of the test above: a Java call moved out of the lock fails here every time.
    splade, bm25 = world_retrievers["splade"], world_retrievers["bm25"]
    for name in ("_map", "_float", "_query", "_scored"):  # (its searcher is also an argument: left as is)
        monkeypatch.setattr(splade, name, _Guarded(getattr(splade, name)))
    monkeypatch.setattr(bm25, "_searcher", _Guarded(bm25._searcher))  # type: ignore[attr-defined]
    monkeypatch.setattr(bm25, "_list", _Guarded(bm25._list))  # type: ignore[attr-defined]
    assert splade.search("jeju travel food", 50) and bm25.search("jeju travel food", 50)
    assert bm25.batch_search(["seoul", "busan beach"], 20)


@pytest.mark.parametrize("member", ["splade", "bm25"])
def test_a_reload_that_cannot_read_the_index_keeps_the_searcher_in_use(
    world_retrievers: dict[str, BaseRetriever], tmp_path: Path, member: str
) -> None:
    served = world_retrievers[member]
    assert isinstance(served, SpladeRetriever | Bm25Retriever)
    shutil.copytree(served.index_dir, tmp_path / "index")
    if isinstance(served, SpladeRetriever):
        retriever: SpladeRetriever | Bm25Retriever = SpladeRetriever(tmp_path / "index", served.encoder)
    else:
        retriever = Bm25Retriever(tmp_path / "index", served.settings)
    retriever.load()
    before = retriever.search("jeju travel food", 50)
    assert before == served.search("jeju travel food", 50)

    from jnius import JavaException  # after start_jvm (the retrievers' load): it configures the JVM

    # A good reload lets the old searcher go: its index files and maps are released, not leaked.
    old = retriever._searcher  # type: ignore[attr-defined]
    retriever.load()
    with pytest.raises(JavaException, match="AlreadyClosed"), JAVA_CALLS:
        if isinstance(retriever, SpladeRetriever):
            old.getIndexReader().getContext()
        else:
            old.search("jeju", 10)
    assert retriever.search("jeju travel food", 50) == before

    # The index truncated under it (the bytes cut, for real): the reload fails and says so, and the searcher
    # already open keeps answering as before.
    [commit] = (tmp_path / "index" / "lucene").glob("segments_*")
    commit.write_bytes(commit.read_bytes()[: commit.stat().st_size // 2])
    with pytest.raises(JavaException):
        retriever.load()
    assert retriever.search("jeju travel food", 50) == before
    with JAVA_CALLS:
        retriever._close(retriever._searcher)  # type: ignore[attr-defined]


_OPEN_AND_LOG = """
import sys
from retrieval.java import JAVA_CALLS, start_jvm
autoclass = start_jvm()
with JAVA_CALLS:
    path = autoclass("java.io.File")(sys.argv[1]).toPath()
    folder = autoclass("org.apache.lucene.store.FSDirectory").open(path)
    reader = autoclass("org.apache.lucene.index.DirectoryReader").open(folder)
    print(reader.numDocs())
    autoclass("org.slf4j.LoggerFactory").getLogger("smartblock").warn("a warning still prints")
    reader.close()
"""


def test_a_fresh_jvm_opens_an_index_without_notices_a_user_cannot_act_on(
    world_retrievers: dict[str, BaseRetriever],
) -> None:
    # The JVM starts once per process: a new one, as every CLI command starts it. Before, it wrote Lucene's
    # sun.misc.Unsafe warning (4 lines, Java >= 24), its advice to update Lucene (Java >= 22) and SLF4J's
    # provider line to stderr.
    import subprocess
    import sys

    splade = world_retrievers["splade"]
    assert isinstance(splade, SpladeRetriever)
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_LOG, str(splade.index_dir / "lucene")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert int(done.stdout.splitlines()[0]) > 0  # the index was opened and read
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert not [line for line in lines if "sun.misc.Unsafe" in line or "MMapDirectory" in line], lines
    assert not [line for line in lines if line.startswith("SLF4J")], lines
    # Warnings are not all gone: Anserini's log4j still prints them (on stdout, where it sends its log).
    assert "a warning still prints" in done.stdout + done.stderr, (done.stdout, lines)
