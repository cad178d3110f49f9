"""Dense retrieval: block vectors in a FAISS inner-product index (cosine, as the vectors are unit length).

Exact search (``IndexFlatIP``) up to ``flat_max_vectors`` blocks; above that an HNSW graph, whose search time
grows about logarithmically with the catalogue instead of linearly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.days import Progress
from retrieval import fingerprint
from retrieval.base import BaseRetriever, Hit, Passage
from retrieval.config import DenseSettings, QueryLimits
from retrieval.encoders.dense import DenseEncoder
from retrieval.errors import RetrievalError

if TYPE_CHECKING:
    from distributed import Client


# A flat index scores a large batch of queries with one matrix product, whose rounding depends on the batch: a
# query's scores then differ in the last bits with its batch-mates and from ``search`` (measured: batches of
# up to 64 queries score as each query alone, one of 1,100 does not). Batches go in chunks this small, so a
# query scores the same in any batch and in ``search``: training sets built in day parts, or warmed on other
# queries, equal the whole build, and training sees the scores /search serves.
_SCORED_ALONE = 16


class DenseRetriever(BaseRetriever):
    name = "dense"
    kind = "dense-faiss"

    def __init__(
        self,
        index_dir: Path | str | None,
        encoder: DenseEncoder,
        settings: DenseSettings = DenseSettings(),
        *,
        limits: QueryLimits = QueryLimits(),
        threads: int = 1,
    ) -> None:
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self.encoder = encoder
        self.settings = settings
        self.limits = limits
        self.threads = threads
        self._index: Any = None
        self.ids_: list[str] = []
        self.fingerprint_: dict | None = None

    @property
    def is_built(self) -> bool:
        return self._index is not None

    @property
    def index_type(self) -> str:
        return "none" if self._index is None else type(self._index).__name__

    def expected_fingerprint(self, passages: Sequence[Passage]) -> dict:
        s = self.settings
        layout = f"flat<={s.flat_max_vectors};hnsw(m={s.hnsw_m},efc={s.hnsw_ef_construction})"
        return fingerprint.fingerprint(self.kind, f"{self.encoder.identity()};{layout}", passages)

    def _make_index(self, vectors: np.ndarray) -> Any:
        import faiss

        faiss.omp_set_num_threads(self.threads)
        n, dim = vectors.shape
        s = self.settings
        if n <= s.flat_max_vectors:
            index = faiss.IndexFlatIP(dim)
        else:
            index = faiss.IndexHNSWFlat(dim, s.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = s.hnsw_ef_construction
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self._tune(index)
        return index

    def _tune(self, index: Any) -> None:
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = self.settings.hnsw_ef_search

    def from_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> DenseRetriever:
        """Index precomputed unit vectors (N, H) in memory; nothing is written."""
        if len(ids) != len(vectors):
            raise RetrievalError(f"{len(ids)} ids but {len(vectors)} vectors")
        if len(set(ids)) != len(ids):
            raise RetrievalError("passage ids must be unique")
        if not self.encoder.is_loaded:
            self.encoder.load()
        self.ids_ = list(ids)
        self._index = self._make_index(vectors)
        return self

    def build(
        self,
        passages: Sequence[Passage],
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
        engine: Client | None = None,
    ) -> DenseRetriever:
        """Encode and index ``passages``; saved to ``index_dir`` when it is set (and reused if up to date).

        ``engine``: a Dask client whose workers encode the passages (``data.engine``); None: this process.
        """
        if not self.encoder.is_loaded:
            self.encoder.load()
        expected = self.expected_fingerprint(passages)
        if self.index_dir is not None and not fingerprint.prepare(
            self.index_dir, expected, overwrite=overwrite, what=self.name
        ):
            return self.load(passages)
        vectors = self.encoder.encode_documents([p.text for p in passages], progress, engine)
        self.from_vectors([p.id for p in passages], vectors)
        if self.index_dir is not None:
            import faiss

            faiss.write_index(self._index, str(self.index_dir / "index.faiss"))
            (self.index_dir / "ids.json").write_text(json.dumps(self.ids_), encoding="utf-8")
            fingerprint.finish(self.index_dir, expected)
        self.fingerprint_ = expected
        return self

    def load(self, passages: Sequence[Passage] | None = None) -> DenseRetriever:
        """Read the index from ``index_dir``; with ``passages``, refuse it unless built from exactly them."""
        import faiss

        if self.index_dir is None:
            raise RetrievalError("this DenseRetriever has no index_dir to load from")
        expected = self.expected_fingerprint(passages) if passages is not None else None
        self.fingerprint_ = fingerprint.check(self.index_dir, expected, what=self.name)
        if not self.encoder.is_loaded:
            self.encoder.load()
        faiss.omp_set_num_threads(self.threads)
        self._index = faiss.read_index(str(self.index_dir / "index.faiss"))
        self._tune(self._index)
        self.ids_ = json.loads((self.index_dir / "ids.json").read_text(encoding="utf-8"))
        return self

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        return [Hit(self.ids_[r], float(s)) for s, r in zip(scores, rows, strict=True) if r >= 0]

    def _search(self, query: str, k: int) -> list[Hit]:
        vector = self.encoder.encode_query(query)[None, :]  # (1, H)
        scores, rows = self._index.search(vector, min(k, len(self.ids_)))
        return self._hits(scores[0], rows[0])

    def _batch_search(self, queries: list[str], k: int) -> list[list[Hit]]:
        vectors = np.stack([self.encoder.encode_query(q) for q in queries])  # (Q, H)
        out: list[list[Hit]] = []
        for start in range(0, len(vectors), _SCORED_ALONE):
            chunk = vectors[start : start + _SCORED_ALONE]
            scores, rows = self._index.search(chunk, min(k, len(self.ids_)))
            out += [self._hits(s, r) for s, r in zip(scores, rows, strict=True)]
        return out
