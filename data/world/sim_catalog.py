"""The simulated catalogue: entities, topic and genre blocks, and their docs, with latent block quality.

Latent attributes (entity, facet, genre, quality) stay in numpy arrays for the simulator and go to
``truth/``; the public docs and blocks carry only text, keywords and timestamps, as a portal's would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from data.contracts import Block, Doc
from data.days import DAY_MS
from data.schemas import TIMESTAMP, arrow_schema
from data.world.scales import WorldScale
from data.world.taxonomy import ANGLES, DOMAINS, GENRE_LABELS, GENRES

TOPIC, GENRE = 0, 1
N_FACETS = max(len(d.facets) for d in DOMAINS)
N_GENRES = len(GENRES)


def epoch_ms(scale: WorldScale, day: int) -> int:
    start = datetime.fromisoformat(scale.start_date + "T00:00:00+00:00")
    return int(start.timestamp() * 1000) + day * DAY_MS


@dataclass
class SimCatalog:
    """Everything the traffic simulator needs to know about entities and blocks, as parallel arrays."""

    entity_names: list[str]
    entity_domain: np.ndarray  # (E,) domain index
    entity_rank: np.ndarray  # (E,) popularity rank within its domain, 0 = most famous
    block_entity: np.ndarray  # (B,)
    block_kind: np.ndarray  # (B,) TOPIC or GENRE
    block_facet: np.ndarray  # (B,) facet index within the domain, -1 for genre blocks
    block_genre: np.ndarray  # (B,) genre index, -1 for topic blocks
    block_quality: np.ndarray  # (B,) latent quality in [0.5, 1]
    block_prior: np.ndarray  # (B,) the logging policy's noisy estimate of quality
    block_created_day: np.ndarray  # (B,) day index of creation; negative = before the logs start
    block_created_ms: np.ndarray  # (B,) epoch milliseconds
    block_angle: np.ndarray  # (B,) index into ANGLES
    doc_offsets: np.ndarray  # (B+1,) docs of block b are doc ids doc_offsets[b]:doc_offsets[b+1]
    doc_genre: np.ndarray  # (N,)
    entity_blocks: list[np.ndarray]  # per entity, its block indices

    @property
    def n_blocks(self) -> int:
        return len(self.block_entity)

    def block_ids(self) -> np.ndarray:
        return np.array([f"b{i:06d}" for i in range(self.n_blocks)], dtype=object)

    def doc_ids(self) -> np.ndarray:
        return np.array([f"d{i:07d}" for i in range(len(self.doc_genre))], dtype=object)


def build_catalog(scale: WorldScale, rng: np.random.Generator) -> SimCatalog:
    names: list[str] = []
    domain_of: list[int] = []
    rank_of: list[int] = []
    for d, domain in enumerate(DOMAINS):
        for r, name in enumerate(domain.entities[: scale.entities_per_domain]):
            names.append(name)
            domain_of.append(d)
            rank_of.append(r)
    n_ent = len(names)
    intents_per_entity = N_FACETS + N_GENRES
    # One block per (entity, intent, edition); intent < N_FACETS is a facet, the rest are genres.
    ent = np.repeat(np.arange(n_ent), intents_per_entity * scale.editions)
    intent = np.tile(np.repeat(np.arange(intents_per_entity), scale.editions), n_ent)
    kind = np.where(intent < N_FACETS, TOPIC, GENRE)
    facet = np.where(kind == TOPIC, intent, -1)
    genre = np.where(kind == GENRE, intent - N_FACETS, -1)
    n_blocks = len(ent)
    # Distinct angles within one intent so that the editions' titles differ.
    angle = np.concatenate(
        [rng.permutation(len(ANGLES))[: scale.editions] for _ in range(n_ent * intents_per_entity)]
    )
    quality = 0.5 + 0.5 * rng.beta(4.0, 2.0, n_blocks)
    is_new = rng.random(n_blocks) < scale.new_block_share
    created_day = np.where(is_new, rng.integers(1, scale.days, n_blocks), -rng.integers(1, 365, n_blocks))
    # New blocks appear in the first hour of their day, before any traffic of that day.
    created_ms = epoch_ms(scale, 0) + created_day * DAY_MS + rng.integers(0, 3_600_000, n_blocks)
    # The policy knows established blocks' quality roughly and new blocks' not at all (cold start).
    prior = np.where(is_new, 0.75, quality) + rng.normal(0.0, 0.08, n_blocks)
    n_docs = rng.integers(3, 11, n_blocks)
    offsets = np.concatenate([[0], np.cumsum(n_docs)])
    doc_block = np.repeat(np.arange(n_blocks), n_docs)
    topic_doc_genre = rng.integers(0, N_GENRES, len(doc_block))
    doc_genre = np.where(kind[doc_block] == GENRE, genre[doc_block], topic_doc_genre)
    order = np.argsort(ent, kind="stable")
    bounds = np.searchsorted(ent[order], np.arange(n_ent + 1))
    return SimCatalog(
        entity_names=names,
        entity_domain=np.array(domain_of),
        entity_rank=np.array(rank_of),
        block_entity=ent,
        block_kind=kind,
        block_facet=facet,
        block_genre=genre,
        block_quality=quality,
        block_prior=prior,
        block_created_day=created_day,
        block_created_ms=created_ms,
        block_angle=angle,
        doc_offsets=offsets,
        doc_genre=doc_genre,
        entity_blocks=[order[bounds[e] : bounds[e + 1]] for e in range(n_ent)],
    )


def _intent_phrase(cat: SimCatalog, b: int) -> tuple[str, list[str]]:
    """The block's intent as text, and the topical words that describe it."""
    domain = DOMAINS[cat.entity_domain[cat.block_entity[b]]]
    if cat.block_kind[b] == TOPIC:
        facet = domain.facets[cat.block_facet[b]]
        return facet, list(domain.facet_words[facet])
    words = sorted({w for ws in domain.facet_words.values() for w in ws})
    return GENRE_LABELS[GENRES[cat.block_genre[b]]], words


def text_tables(cat: SimCatalog, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """Docs and blocks as Arrow tables with generated English titles, bodies and keywords."""
    block_ids, doc_ids = cat.block_ids(), cat.doc_ids()
    b_title, b_keywords, b_docs = [], [], []
    d_title, d_body, d_keywords = [], [], []
    doc_age_ms = rng.integers(0, 30 * DAY_MS, len(doc_ids))
    word_draws = rng.random((len(doc_ids), 4))
    for b in range(cat.n_blocks):
        entity = cat.entity_names[cat.block_entity[b]]
        domain = DOMAINS[cat.entity_domain[cat.block_entity[b]]]
        phrase, words = _intent_phrase(cat, b)
        angle = ANGLES[cat.block_angle[b]]
        b_title.append(f"{entity.capitalize()} {phrase}: {angle}")
        lo, hi = cat.doc_offsets[b], cat.doc_offsets[b + 1]
        keywords = [entity, phrase, domain.name]
        for i in range(lo, hi):
            # Four draws, the first two distinct (they name the doc), the last two free (body sentences).
            first = int(word_draws[i, 0] * len(words))
            second = (first + 1 + int(word_draws[i, 1] * (len(words) - 1))) % len(words)
            w = [words[first], words[second]] + [words[int(x * len(words))] for x in word_draws[i, 2:]]
            s1 = domain.sentences[int(word_draws[i, 0] * len(domain.sentences))]
            s2 = domain.sentences[int(word_draws[i, 1] * len(domain.sentences))]
            d_title.append(f"{entity.capitalize()} {phrase}: {w[0]} and {w[1]} ({GENRES[cat.doc_genre[i]]})")
            d_body.append(
                s1.format(entity=entity, facet=phrase, word=w[2])
                + " "
                + s2.format(entity=entity, facet=phrase, word=w[3])
            )
            d_keywords.append(list(dict.fromkeys([entity, phrase, w[0], w[1]])))
            keywords.extend(w[:2])
        b_keywords.append(list(dict.fromkeys(keywords)))
        b_docs.append(list(doc_ids[lo:hi]))
    doc_block = np.repeat(np.arange(cat.n_blocks), np.diff(cat.doc_offsets))
    d_created = cat.block_created_ms[doc_block] - doc_age_ms
    docs = pa.Table.from_arrays(
        [
            pa.array(doc_ids, pa.string()),
            pa.array(d_title, pa.string()),
            pa.array(d_body, pa.string()),
            pa.array([GENRES[g] for g in cat.doc_genre], pa.string()),
            pa.array(d_keywords, arrow_schema(Doc).field("keywords").type),
            pa.array(d_created, pa.int64()).cast(TIMESTAMP),
        ],
        schema=arrow_schema(Doc),
    )
    blocks = pa.Table.from_arrays(
        [
            pa.array(block_ids, pa.string()),
            pa.array(b_title, pa.string()),
            pa.array(np.where(cat.block_kind == TOPIC, "topic", "genre"), pa.string()),
            pa.array(b_keywords, arrow_schema(Block).field("keywords").type),
            pa.array(b_docs, arrow_schema(Block).field("doc_ids").type),
            pa.array(cat.block_created_ms, pa.int64()).cast(TIMESTAMP),
        ],
        schema=arrow_schema(Block),
    )
    return docs, blocks


def truth_blocks(cat: SimCatalog) -> pa.Table:
    domain_names = [d.name for d in DOMAINS]
    return pa.table(
        {
            "block_id": pa.array(cat.block_ids(), pa.string()),
            "entity": pa.array([cat.entity_names[e] for e in cat.block_entity], pa.string()),
            "domain": pa.array([domain_names[cat.entity_domain[e]] for e in cat.block_entity], pa.string()),
            "facet": pa.array(
                [
                    DOMAINS[cat.entity_domain[e]].facets[f] if f >= 0 else None
                    for e, f in zip(cat.block_entity, cat.block_facet, strict=True)
                ],
                pa.string(),
            ),
            "genre": pa.array([GENRES[g] if g >= 0 else None for g in cat.block_genre], pa.string()),
            "quality": pa.array(cat.block_quality, pa.float64()),
            "created_day": pa.array(cat.block_created_day, pa.int64()),
        }
    )
