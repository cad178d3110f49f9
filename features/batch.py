"""Daily batch features, computed from the logs strictly before a cutoff time.

Co-query association, query click entropy and long-term user taste change slowly; they are materialized
once a day. A training row for a request on day d uses the snapshot cut at the start of day d, and the
server serves the latest snapshot, so both see the same values and neither sees the future.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.catalog import BlockCatalog
from features.config import FeatureStoreSettings
from features.keys import Keys
from search.metrics import entropy_bits

Snapshot = dict[str, dict[str, float]]


def clicks_with_requests(impressions: pa.Table, interactions: pa.Table) -> pa.Table:
    """Click rows joined with their request's query, session and user."""
    clicks = interactions.filter(pc.equal(interactions["type"], "click")).select(
        ["request_id", "block_id", "doc_id"]
    )
    return clicks.join(impressions.select(["request_id", "query", "session_id", "user_id"]), "request_id")


def query_click_counts(clicks: pa.Table) -> dict[str, Counter[str]]:
    grouped = clicks.group_by(["query", "block_id"]).aggregate([("request_id", "count")])
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for q, b, n in zip(
        grouped["query"].to_pylist(),
        grouped["block_id"].to_pylist(),
        grouped["request_id_count"].to_pylist(),
        strict=True,
    ):
        out[q][b] = n
    return out


def co_queries(impressions: pa.Table, settings: FeatureStoreSettings) -> dict[str, list[tuple[str, float]]]:
    """Per query, its strongest co-queries (other queries of the same sessions) with their PMI (nats)."""
    pairs_seen = impressions.select(["session_id", "query"]).group_by(["session_id", "query"]).aggregate([])
    sessions: dict[str, list[str]] = defaultdict(list)
    for s, q in zip(pairs_seen["session_id"].to_pylist(), pairs_seen["query"].to_pylist(), strict=True):
        sessions[s].append(q)
    n_sessions = len(sessions)
    per_query: Counter[str] = Counter()
    pair: Counter[tuple[str, str]] = Counter()
    for qs in sessions.values():
        per_query.update(qs)
        if len(qs) > 1:
            for a in qs:
                for b in qs:
                    if a != b:
                        pair[(a, b)] += 1
    neighbours: dict[str, list[tuple[str, float, int]]] = defaultdict(list)
    for (a, b), n in pair.items():
        if n < settings.coquery_min_sessions:
            continue
        pmi = math.log(n * n_sessions / (per_query[a] * per_query[b]))
        if pmi > 0:
            neighbours[a].append((b, pmi, n))
    k = settings.coquery_neighbours
    return {
        a: [(b, pmi) for b, pmi, _ in sorted(items, key=lambda t: (-t[2], -t[1], t[0]))[:k]]
        for a, items in neighbours.items()
    }


def batch_snapshot(
    impressions: pa.Table,
    interactions: pa.Table,
    catalog: BlockCatalog,
    keys: Keys,
    settings: FeatureStoreSettings,
    *,
    assoc_blocks: int = 50,
) -> Snapshot:
    """All batch feature hashes (query ``qd`` and user ``ud`` keys) from the given logs."""
    clicks = clicks_with_requests(impressions, interactions)
    snapshot: Snapshot = defaultdict(dict)
    per_query = query_click_counts(clicks)
    for q, counts in per_query.items():
        h = snapshot[keys.query_batch(q)]
        h["ent"] = entropy_bits(np.fromiter(counts.values(), dtype=float))
        h["nclk"] = float(sum(counts.values()))
    for q, neighbours in co_queries(impressions, settings).items():
        h = snapshot[keys.query_batch(q)]
        h["ncoq"] = float(len(neighbours))
        assoc: Counter[str] = Counter()
        weight = sum(pmi for _, pmi in neighbours)
        for other, pmi in neighbours:
            counts = per_query.get(other)
            if counts:
                total = sum(counts.values())
                for b, c in counts.items():
                    assoc[b] += pmi / weight * c / total
        for b, v in assoc.most_common(assoc_blocks):
            h[f"a|{b}"] = v
    _user_taste(clicks, catalog, keys, settings, snapshot)
    return dict(snapshot)


def _user_taste(
    clicks: pa.Table, catalog: BlockCatalog, keys: Keys, settings: FeatureStoreSettings, snapshot: Snapshot
) -> None:
    genres: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(catalog.genre_mix.shape[1]))
    words: dict[str, Counter[str]] = defaultdict(Counter)
    for u, b, d in zip(
        clicks["user_id"].to_pylist(),
        clicks["block_id"].to_pylist(),
        clicks["doc_id"].to_pylist(),
        strict=True,
    ):
        row = catalog.index.get(b)
        if row is None:
            continue
        if d is not None and d in catalog.doc_genre:
            genres[u][catalog.doc_genre[d]] += 1
        else:
            genres[u] += catalog.genre_mix[row]
        words[u].update(catalog.keywords[row])
    for u, counts in words.items():
        h = snapshot[keys.user_batch(u)]
        n_clicks = genres[u].sum()
        for g, share in enumerate(genres[u] / max(n_clicks, 1e-12)):
            if share > 0:
                h[f"g|{g}"] = float(share)
        total = sum(counts.values())
        for kw, c in counts.most_common(settings.user_keywords):
            h[f"k|{kw}"] = c / total
        distinct = len(counts)
        h["div"] = (
            entropy_bits(np.fromiter(counts.values(), dtype=float)) / math.log2(distinct)
            if distinct > 1
            else 0.0
        )
        h["n"] = float(n_clicks)
