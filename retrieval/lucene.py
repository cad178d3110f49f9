"""Lucene indexes through Anserini, built and searched in-process on the JVM from ``retrieval.java``.

- ``SpladeRetriever``: SPLADE term weights in a Lucene *impact* index (scores are sums of query weight x
  document impact), searched with our own query encoder.
- ``Bm25Retriever``: a plain BM25 index of the text, the lexical baseline.

We call Anserini directly rather than pyserini's Python wrappers: those import torch-based encoders we do not
need, and ``LuceneImpactSearcher`` silently drops query terms whose idf is below ``min_idf`` (0 by default),
i.e. terms present in every block. BM25 goes through ``SimpleSearcher``; SPLADE runs the search
``SimpleImpactSearcher`` runs (Anserini's query generator and impact similarity on Lucene's
``IndexSearcher``) and reads its hits back in bulk.
"""

from __future__ import annotations

import json
import math
import shutil
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.days import Progress
from retrieval import fingerprint
from retrieval.base import BaseRetriever, Hit, Passage
from retrieval.config import Bm25Settings, QueryLimits
from retrieval.encoders.splade import SparseVector, SpladeEncoder
from retrieval.java import JAVA_CALLS, index_collection, release_heap, start_jvm

if TYPE_CHECKING:
    from distributed import Client

_SHARD_DOCS = 50_000
# The fields Anserini's indexer writes a document's id and text to (``io.anserini.index.Constants``).
_ID = "id"
_CONTENTS = "contents"
# Batches at least this large end with a full JVM collection (retrieval.java.release_heap): a collection
# costs tens of milliseconds, a few thousand queries cost seconds.
_RELEASE_AFTER = 1_000


def _hits(scored: Any) -> list[Hit]:
    return [Hit(str(h.docid), float(h.score)) for h in scored]


def _write_jsonl(folder: Path, rows: Sequence[dict]) -> None:
    # Several files let Anserini index with several threads.
    folder.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, len(rows), _SHARD_DOCS)):
        with (folder / f"part-{n:04d}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows[start : start + _SHARD_DOCS]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# Anserini's tie threshold and step, as the float32 values Java compares and subtracts.
_TIE_GAP = array("f", [1e-4])[0]
_TIE_STEP = array("f", [1e-6])[0]


def _ties_apart(scores: Sequence[float]) -> list[float]:
    """Scores as Anserini's searchers return them (its ``ScoreTiesAdjusterReranker``): each rounded to 1e-4 in
    double precision and kept as float32; then, in float32, each score within 1e-4 of the one above it lowered
    by 1e-6 per tie so far, so that the scores alone give the rank order. ``array('f')`` rounds to float32."""
    out = array("f", (math.floor(s * 1e4 + 0.5) / 1e4 for s in scores))
    f32 = array("f", [0.0])  # a float32 register: Java's float arithmetic rounds every step
    ties = 0
    for i in range(1, len(out)):
        f32[0] = out[i - 1] - out[i]
        if f32[0] > _TIE_GAP:
            ties = 0
        else:
            ties += 1
            f32[0] = _TIE_STEP * ties
            out[i] = out[i] - f32[0]
    return out.tolist()


class _LuceneRetriever(BaseRetriever):
    kind = "lucene"

    def __init__(
        self, index_dir: Path | str, *, limits: QueryLimits = QueryLimits(), threads: int = 1
    ) -> None:
        self.index_dir = Path(index_dir)
        self.limits = limits
        self.threads = threads
        self._searcher: Any = None
        self.fingerprint_: dict | None = None

    @property
    def is_built(self) -> bool:
        return self._searcher is not None

    def encoder_identity(self) -> str:
        raise NotImplementedError

    def expected_fingerprint(self, passages: Sequence[Passage]) -> dict:
        return fingerprint.fingerprint(self.kind, self.encoder_identity(), passages)

    def _collection_rows(
        self, passages: Sequence[Passage], progress: Progress | None, engine: Client | None
    ) -> list[dict]:
        raise NotImplementedError

    def _indexer_args(self) -> list[str]:
        raise NotImplementedError

    def _open(self) -> Any:
        raise NotImplementedError

    def _close(self, searcher: Any) -> None:
        """Release a searcher ``_open`` returned (its reader's files and maps); under ``JAVA_CALLS``."""
        raise NotImplementedError

    def build(
        self,
        passages: Sequence[Passage],
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
        engine: Client | None = None,
    ) -> _LuceneRetriever:
        """Index ``passages`` into ``index_dir`` (kept as is when its fingerprint already matches).

        ``engine``: a Dask client whose workers encode the passages (``data.engine``); None: this process.
        """
        expected = self.expected_fingerprint(passages)
        if fingerprint.prepare(self.index_dir, expected, overwrite=overwrite, what=self.name):
            rows = self._collection_rows(passages, progress, engine)
            collection = self.index_dir / "collection"
            _write_jsonl(collection, rows)
            if progress:
                progress(f"{self.name} index", 0, 1)
            index_collection(
                "-input", str(collection), "-index", str(self.index_dir / "lucene"),
                "-threads", str(self.threads), *self._indexer_args(),
            )  # fmt: skip
            shutil.rmtree(collection)
            fingerprint.finish(self.index_dir, expected)
            if progress:
                progress(f"{self.name} index", 1, 1)
        return self.load(passages)

    def batch_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        hits = super().batch_search(queries, k)
        if len(queries) >= _RELEASE_AFTER:  # the batch's Java objects are unreferenced once it returns
            release_heap()
        return hits

    def load(self, passages: Sequence[Passage] | None = None) -> _LuceneRetriever:
        """Open the index; with ``passages``, refuse it unless it was built from exactly them."""
        expected = self.expected_fingerprint(passages) if passages is not None else None
        checked = fingerprint.check(self.index_dir, expected, what=self.name)
        with JAVA_CALLS:
            # A reload opens the new index before it lets the old one go: when the new one cannot be read (a
            # truncated segment, a folder being rebuilt), the error reaches the caller and the searcher in
            # use keeps answering. Searches hold the same lock, so none runs on a searcher being closed.
            previous, self._searcher = self._searcher, self._open()
            if previous is not None:
                self._close(previous)
        self.fingerprint_ = checked  # after the swap: a failed reload reports the index still searched
        return self


class SpladeRetriever(_LuceneRetriever):
    name = "splade"
    kind = "splade-impact"

    def __init__(
        self,
        index_dir: Path | str,
        encoder: SpladeEncoder,
        *,
        limits: QueryLimits = QueryLimits(),
        threads: int = 1,
    ) -> None:
        super().__init__(index_dir, limits=limits, threads=threads)
        self.encoder = encoder

    def encoder_identity(self) -> str:
        return self.encoder.identity()

    def load(self, passages: Sequence[Passage] | None = None) -> SpladeRetriever:
        if not self.encoder.is_loaded:  # ONNX (or an export), before the index is opened under JAVA_CALLS
            self.encoder.load()
        super().load(passages)
        return self

    def _collection_rows(
        self, passages: Sequence[Passage], progress: Progress | None, engine: Client | None
    ) -> list[dict]:
        if not self.encoder.is_loaded:
            self.encoder.load()
        vectors = self.encoder.encode_documents([p.text for p in passages], progress, engine)
        return [{"id": p.id, "contents": "", "vector": v} for p, v in zip(passages, vectors, strict=True)]

    def _indexer_args(self) -> list[str]:
        return ["-collection", "JsonVectorCollection", "-impact", "-pretokenized"]

    def _open(self) -> Any:
        """The index's own ``IndexSearcher`` under Anserini's ``ImpactSimilarity``: the search
        ``SimpleImpactSearcher.search`` runs, with its hits read back in bulk (see ``_search``). Anserini
        skips the tie-break by id on Lucene 8 indexes; every index here is built by its Lucene 9."""
        autoclass = start_jvm()
        from jnius import cast

        self._map = autoclass("java.util.HashMap")
        self._float = autoclass("java.lang.Float")
        folder = autoclass("org.apache.lucene.store.FSDirectory").open(
            autoclass("java.io.File")(str(self.index_dir / "lucene")).toPath()
        )
        reader = autoclass("org.apache.lucene.index.DirectoryReader").open(folder)
        # The reader type by name: pyjnius would otherwise pick the IndexReaderContext constructor.
        searcher = autoclass("org.apache.lucene.search.IndexSearcher")(
            cast("org.apache.lucene.index.IndexReader", reader)
        )
        searcher.setSimilarity(autoclass("io.anserini.search.similarity.ImpactSimilarity")())
        self._query = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        field = autoclass("org.apache.lucene.search.SortField")
        string = autoclass("org.apache.lucene.search.SortField$Type").STRING_VAL
        # Anserini's order: score, then the collection id for ties, so equal scores rank alike on every
        # index built from the same blocks.
        self._order = autoclass("org.apache.lucene.search.Sort")(field.FIELD_SCORE, field(_ID, string))
        self._scored = autoclass("io.anserini.search.ScoredDocs")
        return searcher

    def _close(self, searcher: Any) -> None:
        searcher.getIndexReader().close()

    def _java_query(self, vector: SparseVector) -> Any:
        """Anserini's query for these term weights; under ``JAVA_CALLS`` (the map is filled call by call)."""
        weights = self._map()
        for term, weight in vector.items():
            weights.put(term, self._float(float(weight)))
        return self._query.buildQuery(_CONTENTS, weights)

    def _search(self, query: str, k: int) -> list[Hit]:
        """The top ``k`` as ``SimpleImpactSearcher.search`` ranks and scores them (a test holds them equal).

        Its results come back as an array of Java objects, and reading each hit's id and score through
        pyjnius took 1.3 of its 2.5 ms per query (k = 200, small world), where Lucene's search took 0.4.
        Anserini's ``ScoredDocs`` hands the ids and scores over as two arrays, each one call. A batch runs
        the queries one after the other (the base class), as Anserini's batch did on one Java thread (the
        default ``java_threads``), 1.8x faster on 3,000 small-world queries; ``threads`` now only sets the
        indexer's.
        """
        vector = self.encoder.encode_query(query)  # ONNX, outside the JVM's lock
        if not vector:
            return []
        with JAVA_CALLS:
            jquery = self._java_query(vector)
            found = self._searcher.search(jquery, k, self._order, True)
            top = self._scored.fromTopDocs(found, self._searcher)
            ids, scores = list(top.docids), list(top.scores)
        return [Hit(str(i), s) for i, s in zip(ids, _ties_apart(scores), strict=True)]


class Bm25Retriever(_LuceneRetriever):
    name = "bm25"
    kind = "bm25"

    def __init__(
        self,
        index_dir: Path | str,
        settings: Bm25Settings = Bm25Settings(),
        *,
        limits: QueryLimits = QueryLimits(),
        threads: int = 1,
    ) -> None:
        super().__init__(index_dir, limits=limits, threads=threads)
        self.settings = settings

    def encoder_identity(self) -> str:
        return "lucene-default-analyzer"  # k1 and b are search-time settings: not part of the index

    def _collection_rows(
        self, passages: Sequence[Passage], progress: Progress | None, engine: Client | None
    ) -> list[dict]:  # plain text: nothing to encode, so no engine
        return [{"id": p.id, "contents": p.text} for p in passages]

    def _indexer_args(self) -> list[str]:
        return [
            "-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
            "-storePositions", "-storeDocvectors", "-storeRaw",
        ]  # fmt: skip

    def _open(self) -> Any:
        autoclass = start_jvm()
        self._list = autoclass("java.util.ArrayList")
        searcher = autoclass("io.anserini.search.SimpleSearcher")(str(self.index_dir / "lucene"))
        searcher.set_bm25(self.settings.k1, self.settings.b)
        return searcher

    def _close(self, searcher: Any) -> None:
        searcher.close()

    def _search(self, query: str, k: int) -> list[Hit]:
        with JAVA_CALLS:
            return _hits(self._searcher.search(query, k))

    def _batch_search(self, queries: list[str], k: int) -> list[list[Hit]]:
        with JAVA_CALLS:
            qs, ids = self._list(), self._list()
            for i, q in enumerate(queries):
                qs.add(q)
                ids.add(str(i))
            results = self._searcher.batch_search(qs, ids, k, self.threads)
            return [_hits(results.get(str(i))) for i in range(len(queries))]
