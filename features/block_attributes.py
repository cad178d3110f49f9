"""Static block attributes the features need, held in memory: kind, genre mix, keywords, age, size.

Built from the public docs and blocks tables only (never from ``truth/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy import sparse

from data.contracts import Genre
from data.errors import DataError
from features.packing import keyword_id

GENRES = [g.value for g in Genre]
MIXED_GENRE = len(GENRES)  # categorical id of a block whose docs span several genres


def intent_label(keywords: list[str]) -> str:
    """The block's intent (its topic or genre label, e.g. "restaurants", "videos"), shared by the blocks of
    that intent across entities. By the blocks table's convention (docs/data.md) the keywords list the entity
    first and the intent second; a block with fewer keywords has no intent ("")."""
    return keywords[1].lower() if len(keywords) > 1 else ""


def intent_profile_id(label: str) -> int:
    """The key of an intent's click share in the user's long-term profile (apart from keyword keys)."""
    return keyword_id(f"intent:{label}")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; the one tokenizer for queries and keywords alike."""
    return [t for t in "".join(c if c.isalnum() else " " for c in text.lower()).split() if len(t) > 1]


@dataclass(frozen=True)
class BlockVectors:
    """One embedding model's block vectors, in catalogue row order, as the online store holds them (float16
    values widened to float32), so offline and online similarities are computed from the same numbers."""

    version: str
    matrix: np.ndarray  # (B, D) float32, zeros where absent
    norms: np.ndarray  # (B,) float32 L2 norms (0 where absent)
    present: np.ndarray  # (B,) bool: the block has a vector of this version
    complete: bool  # every catalogue block has one (a partial load may be retried later)

    @classmethod
    def from_rows(cls, version: str, matrix: np.ndarray, present: np.ndarray) -> BlockVectors:
        matrix = np.asarray(matrix, dtype=np.float32)
        present = np.asarray(present, dtype=bool)
        norms = np.linalg.norm(matrix, axis=1).astype(np.float32)
        return cls(version, matrix, norms, present & (norms > 0), bool(present.all()))


@dataclass(frozen=True)
class BlockTokens:
    """Each block's keyword tokens as rows of a 0/1 sparse matrix: overlaps of many blocks in one product."""

    matrix: sparse.csr_matrix  # (B, T) 1 where the block has the token
    column: dict[int, int]  # token hash -> column
    counts: np.ndarray  # (B,) tokens per block

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``rows``, token column) of every token of ``rows``, row after row.

        Read straight from the CSR arrays: scipy's fancy row indexing builds a new matrix per call, which
        cost more than the overlaps themselves on a request's 24-100 candidates.
        """
        indptr, indices = self.matrix.indptr, self.matrix.indices
        starts = indptr[rows]
        lengths = indptr[rows + 1] - starts
        flat_starts = np.cumsum(lengths) - lengths
        owner = np.repeat(np.arange(len(rows)), lengths)
        cols = indices[np.repeat(starts - flat_starts, lengths) + np.arange(int(lengths.sum()))]
        return owner, cols

    def weigh(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(n,) sum of ``weights`` (one per token column) over each row's tokens: ``matrix[rows] @ weights``,
        added in the same order."""
        owner, cols = self.gather(rows)
        return np.bincount(owner, weights=weights[cols], minlength=len(rows))

    def overlaps(self, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
        """(n, k) tokens each of ``rows`` shares with each of ``others``: ``matrix[rows] @ matrix[others].T``
        as a dense array."""
        owner_o, cols_o = self.gather(others)
        shared, column = np.unique(cols_o, return_inverse=True)
        theirs = np.zeros((len(others), len(shared)))
        theirs[owner_o, column] = 1.0
        owner_r, cols_r = self.gather(rows)
        at = np.minimum(np.searchsorted(shared, cols_r), max(len(shared) - 1, 0))
        hit = shared[at] == cols_r if len(shared) else np.zeros(len(cols_r), dtype=bool)
        mine = np.zeros((len(rows), len(shared)))
        mine[owner_r[hit], at[hit]] = 1.0
        return mine @ theirs.T

    @classmethod
    def of(cls, token_ids: list[frozenset[int]]) -> BlockTokens:
        column: dict[int, int] = {}
        indices = [column.setdefault(t, len(column)) for ids in token_ids for t in sorted(ids)]
        indptr = np.concatenate([[0], np.cumsum([len(ids) for ids in token_ids])])
        data = np.ones(len(indices))
        matrix = sparse.csr_matrix((data, indices, indptr), shape=(len(token_ids), len(column)))
        return cls(matrix, column, np.diff(indptr).astype(np.float64))


@dataclass
class BlockAttributes:
    ids: list[str]
    index: dict[str, int]
    kind: np.ndarray  # (B,) 0 topic, 1 genre
    genre_mix: np.ndarray  # (B, G) share of the block's docs in each genre
    main_genre: np.ndarray  # (B,) categorical: a genre id, or MIXED_GENRE
    keywords: list[list[str]]  # the block's keyword phrases
    keyword_ids: list[tuple[int, ...]]  # hashes of the keyword phrases (long-term profile matches)
    token_ids: list[frozenset[int]]  # hashes of the keywords' word tokens (recent-query interest matches)
    created_ms: np.ndarray  # (B,)
    n_docs: np.ndarray  # (B,)
    doc_genre: dict[str, int]
    intent: np.ndarray  # (B,) id of the block's intent label (index into intent_labels; 0 = none)
    intent_labels: list[str]  # "" first
    intent_token_ids: list[frozenset[int]]  # per intent id: hashes of its label's word tokens
    intent_profile_ids: list[int]  # per intent id: its key in the user profile
    # Block vectors by embedding model version (M3). Filled by the training-set builder with the models it
    # trained, and online by ``RedisFeatureStore`` from the store, once per version a user vector names.
    vectors: dict[str, BlockVectors] = field(default_factory=dict)
    # Catalogue row by the hash of a block id (how the user hash keeps recent clicks); filled on first use.
    hashed_rows: dict[int, int] = field(default_factory=dict)
    _tokens: BlockTokens | None = field(default=None, init=False, repr=False)

    @property
    def tokens(self) -> BlockTokens:
        """``token_ids`` as a sparse block x token matrix (built on first use)."""
        if self._tokens is None:
            self._tokens = BlockTokens.of(self.token_ids)
        return self._tokens

    def row_of_hash(self, block_hash: int) -> int | None:
        if not self.hashed_rows:
            self.hashed_rows.update({keyword_id(b): i for i, b in enumerate(self.ids)})
        return self.hashed_rows.get(block_hash)

    @classmethod
    def from_tables(cls, blocks: pa.Table, docs: pa.Table) -> BlockAttributes:
        doc_genre = {
            d: GENRES.index(g) for d, g in zip(docs["id"].to_pylist(), docs["genre"].to_pylist(), strict=True)
        }
        ids = blocks["id"].to_pylist()
        doc_lists = blocks["doc_ids"].to_pylist()
        mix = np.zeros((len(ids), len(GENRES)))
        for i, doc_ids in enumerate(doc_lists):
            for d in doc_ids:
                if d in doc_genre:
                    mix[i, doc_genre[d]] += 1
        n_docs = np.array([len(d) for d in doc_lists])
        mix /= np.maximum(mix.sum(axis=1, keepdims=True), 1)
        main = np.where(mix.max(axis=1) >= 0.999, mix.argmax(axis=1), MIXED_GENRE)
        keywords = blocks["keywords"].to_pylist()
        created = blocks["created_at"].cast(pa.int64()).to_numpy()
        labels = ["", *sorted({intent_label(kws) for kws in keywords} - {""})]
        label_index = {label: i for i, label in enumerate(labels)}
        return cls(
            ids=ids,
            index={b: i for i, b in enumerate(ids)},
            kind=np.array([0 if k == "topic" else 1 for k in blocks["kind"].to_pylist()]),
            genre_mix=mix,
            main_genre=main,
            keywords=keywords,
            keyword_ids=[tuple(dict.fromkeys(keyword_id(kw) for kw in kws)) for kws in keywords],
            token_ids=[frozenset(keyword_id(t) for kw in kws for t in tokens(kw)) for kws in keywords],
            created_ms=created,
            n_docs=n_docs,
            doc_genre=doc_genre,
            intent=np.array([label_index[intent_label(kws)] for kws in keywords], dtype=np.int64),
            intent_labels=labels,
            intent_token_ids=[frozenset(keyword_id(t) for t in tokens(label)) for label in labels],
            intent_profile_ids=[intent_profile_id(label) for label in labels],
        )

    def rows(self, block_ids: list[str]) -> np.ndarray:
        try:
            return np.array([self.index[b] for b in block_ids], dtype=np.int64)
        except KeyError as exc:
            raise DataError(f"unknown block id {exc.args[0]!r}", field="block_id") from None
