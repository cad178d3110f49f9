"""The query vocabulary: intent keys (broad, entity x facet, entity x genre, single-intent specials) and
the surface strings users type for each, with a head/tail spread of variants."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from data.world.sim_catalog import GENRE, N_FACETS, N_GENRES, TOPIC, SimCatalog
from data.world.taxonomy import DOMAINS, GENRE_QUERY_WORDS, GENRES

BROAD, TOPIC_Q, GENRE_Q, SPECIAL = 0, 1, 2, 3
KIND_NAMES = ("broad", "topic", "genre", "special")

# Relevance of a block to a query by how the block relates to the query's intent (same entity only).
# Rows: query kind; columns: block matches the intent / topic block of another facet / genre block of
# another genre / block of the other kind.
_REL = {
    BROAD: {"topic": 0.75, "genre": 0.65},
    TOPIC_Q: {"match": 1.0, "same_kind": 0.25, "other_kind": 0.35},
    GENRE_Q: {"match": 1.0, "same_kind": 0.2, "other_kind": 0.3},
    SPECIAL: {"match": 1.0, "same_kind": 0.1, "other_kind": 0.15},
}
# How much personal taste moves utility: a query that names its intent leaves less room for taste.
AFFINITY_WEIGHT = np.array([1.0, 0.4, 0.4, 0.2])


@dataclass
class QueryBook:
    key_entity: np.ndarray  # (K,)
    key_kind: np.ndarray  # (K,)
    key_facet: np.ndarray  # (K,) -1 unless topic/special
    key_genre: np.ndarray  # (K,) -1 unless genre
    broad_key: np.ndarray  # (E,)
    topic_key: np.ndarray  # (E, F)
    genre_key: np.ndarray  # (E, G)
    special_keys: list[np.ndarray]  # per domain
    strings: list[str]  # every surface query
    string_key: np.ndarray  # (S,)
    key_offsets: np.ndarray  # (K+1,) strings of key k are strings[key_offsets[k]:key_offsets[k+1]]
    string_cdf: np.ndarray  # (S,) cumulative variant weight within its key, last one = 1

    @property
    def n_keys(self) -> int:
        return len(self.key_entity)

    def relevance(self, key: int, cat: SimCatalog, blocks: np.ndarray) -> np.ndarray:
        """Intent relevance in [0, 1] of ``blocks`` (all of the key's entity) to query key ``key``."""
        kind = self.key_kind[key]
        b_kind = cat.block_kind[blocks]
        if kind == BROAD:
            return np.where(b_kind == TOPIC, _REL[BROAD]["topic"], _REL[BROAD]["genre"])
        table = _REL[kind]
        if kind == GENRE_Q:
            match = cat.block_genre[blocks] == self.key_genre[key]
            same_kind = b_kind == GENRE
        else:
            match = cat.block_facet[blocks] == self.key_facet[key]
            same_kind = b_kind == TOPIC
        return np.where(match, table["match"], np.where(same_kind, table["same_kind"], table["other_kind"]))

    def sample_strings(self, keys: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Pick a surface string index for each key from uniforms ``u`` (head variants more often)."""
        lo, hi = self.key_offsets[keys], self.key_offsets[keys + 1]
        out = lo.copy()
        # Variants per key are few (<= 6): a short loop beats a ragged searchsorted.
        for step in range(int((hi - lo).max())):
            cand = lo + step
            advance = (cand < hi - 1) & (self.string_cdf[np.minimum(cand, len(self.string_cdf) - 1)] < u)
            out = np.where(advance, cand + 1, out)
        return out


def build_query_book(cat: SimCatalog) -> QueryBook:
    n_ent = len(cat.entity_names)
    key_entity, key_kind, key_facet, key_genre, variants = [], [], [], [], []

    def add(entity: int, kind: int, facet: int, genre: int, texts: list[str]) -> int:
        key_entity.append(entity)
        key_kind.append(kind)
        key_facet.append(facet)
        key_genre.append(genre)
        variants.append(texts)
        return len(key_entity) - 1

    broad = np.zeros(n_ent, dtype=np.int64)
    topic = np.zeros((n_ent, N_FACETS), dtype=np.int64)
    genre = np.zeros((n_ent, N_GENRES), dtype=np.int64)
    specials: list[list[int]] = [[] for _ in DOMAINS]
    for e, name in enumerate(cat.entity_names):
        domain = DOMAINS[cat.entity_domain[e]]
        broad[e] = add(e, BROAD, -1, -1, [name, f"{name} {domain.hint}"])
        for f, facet in enumerate(domain.facets):
            texts = [f"{name} {facet}"] + [f"{name} {a}" for a in domain.facet_aliases[facet]]
            topic[e, f] = add(e, TOPIC_Q, f, -1, [*texts, f"best {name} {facet}"])
        for g, gname in enumerate(GENRES):
            genre[e, g] = add(e, GENRE_Q, -1, g, [f"{name} {w}" for w in GENRE_QUERY_WORDS[gname]])
    entity_index = {name: e for e, name in enumerate(cat.entity_names)}
    typed = {t for texts in variants for t in texts}
    for d, domain in enumerate(DOMAINS):
        for text, entity, facet in domain.specials:
            # Small scales keep only the most famous entities; a special that reads like a topic query
            # is that topic query already.
            if entity in entity_index and text not in typed:
                specials[d].append(add(entity_index[entity], SPECIAL, domain.facets.index(facet), -1, [text]))

    strings: list[str] = []
    string_key: list[int] = []
    cdf: list[float] = []
    offsets = [0]
    seen: set[str] = set()
    for k, texts in enumerate(variants):
        # A string belongs to one intent only, so truth can map every logged query to its key.
        kept = [t for t in dict.fromkeys(texts) if t not in seen]
        if not kept:
            raise ValueError(f"query key {k} has no surface string of its own: {texts}")
        seen.update(kept)
        weights = 1.0 / np.arange(1, len(kept) + 1) ** 1.3
        strings.extend(kept)
        string_key.extend([k] * len(kept))
        cdf.extend(np.cumsum(weights) / weights.sum())
        offsets.append(len(strings))
    return QueryBook(
        key_entity=np.array(key_entity),
        key_kind=np.array(key_kind),
        key_facet=np.array(key_facet),
        key_genre=np.array(key_genre),
        broad_key=broad,
        topic_key=topic,
        genre_key=genre,
        special_keys=[np.array(s, dtype=np.int64) for s in specials],
        strings=strings,
        string_key=np.array(string_key),
        key_offsets=np.array(offsets),
        string_cdf=np.array(cdf),
    )


def truth_queries(book: QueryBook, cat: SimCatalog) -> pa.Table:
    keys = book.string_key
    ents = book.key_entity[keys]
    return pa.table(
        {
            "query": pa.array(book.strings, pa.string()),
            "intent_kind": pa.array([KIND_NAMES[k] for k in book.key_kind[keys]], pa.string()),
            "intent_key": pa.array(keys, pa.int64()),
            "entity": pa.array([cat.entity_names[e] for e in ents], pa.string()),
            "domain": pa.array([DOMAINS[cat.entity_domain[e]].name for e in ents], pa.string()),
            "facet": pa.array(
                [
                    DOMAINS[cat.entity_domain[e]].facets[f] if f >= 0 else None
                    for e, f in zip(ents, book.key_facet[keys], strict=True)
                ],
                pa.string(),
            ),
            "genre": pa.array([GENRES[g] if g >= 0 else None for g in book.key_genre[keys]], pa.string()),
        }
    )
