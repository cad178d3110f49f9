"""Daily batch features, computed from the logs strictly before a cutoff time.

Co-query association, query click entropy and long-term user taste change slowly; they are materialized
once a day. A training row for a request on day d uses the snapshot cut at the start of day d, and the
server serves the latest snapshot, so both see the same values and neither sees the future.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.logstats import click_counts, co_query_counts, query_click_entropy
from data.metrics import entropy_bits
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.intent_lift import intent_lifts
from features.keys import Keys
from features.ops import LIFT_FIELD
from features.packing import OVERALL_LIFT_KEY, pack_lifts, pack_profile, whole_blob


@dataclass
class Snapshot:
    """A day's batch hashes: query hashes are replaced whole; user hashes get their ``p`` field set (the same
    hash also holds live and vector fields)."""

    query: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    user: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def get(self, key: str) -> dict | None:
        return self.query.get(key) or self.user.get(key)


def clicks_with_requests(impressions: pa.Table, interactions: pa.Table) -> pa.Table:
    """Click rows joined with their request's user (for long-term taste)."""
    clicks = interactions.filter(pc.equal(interactions["type"], "click")).select(
        ["request_id", "block_id", "doc_id"]
    )
    return clicks.join(impressions.select(["request_id", "user_id"]), "request_id")


def co_queries(impressions: pa.Table, settings: FeatureStoreSettings) -> dict[str, list[tuple[str, float]]]:
    """Per query, its strongest co-queries (other queries of the same sessions) with their PMI (nats)."""
    pairs = co_query_counts(impressions)
    pairs = pairs.filter(
        pc.and_(
            pc.greater_equal(pairs["sessions"], settings.coquery_min_sessions), pc.greater(pairs["pmi"], 0)
        )
    )
    pairs = pairs.sort_by([("query_a", "ascending"), ("sessions", "descending"), ("pmi", "descending")])
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for a, b, pmi in zip(
        pairs["query_a"].to_pylist(), pairs["query_b"].to_pylist(), pairs["pmi"].to_pylist(), strict=True
    ):
        if len(out[a]) < settings.coquery_neighbours:
            out[a].append((b, pmi))
    return dict(out)


def batch_snapshot(
    impressions: pa.Table,
    interactions: pa.Table,
    catalog: BlockAttributes,
    keys: Keys,
    settings: FeatureStoreSettings,
    *,
    assoc_blocks: int = 50,
) -> Snapshot:
    """All batch feature hashes (query ``qd`` and user ``ud`` keys) from the given logs."""
    snapshot = Snapshot()
    counts = click_counts(impressions, interactions)
    for q, (entropy, n_clicks) in query_click_entropy(counts).items():
        h = snapshot.query[keys.query_batch(q)]
        h["ent"] = entropy
        h["nclk"] = float(n_clicks)
    per_query: dict[str, dict[str, int]] = defaultdict(dict)
    clicked = counts.filter(pc.greater(counts["clicks"], 0))
    for q, b, c in zip(
        clicked["query"].to_pylist(),
        clicked["block_id"].to_pylist(),
        clicked["clicks"].to_pylist(),
        strict=True,
    ):
        per_query[q][b] = c
    for q, blocks in per_query.items():
        # Which intents the query's searchers click: a block never shown for the query still inherits its
        # intent's share.
        by_intent: Counter[str] = Counter()
        for b, c in blocks.items():
            row = catalog.index.get(b)
            if row is not None and catalog.intent[row]:
                by_intent[catalog.intent_labels[catalog.intent[row]]] += c
        total = sum(blocks.values())
        h = snapshot.query[keys.query_batch(q)]
        for label, c in by_intent.items():
            h[f"i|{label}"] = c / total
    for q, neighbours in co_queries(impressions, settings).items():
        h = snapshot.query[keys.query_batch(q)]
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
    _user_taste(clicks_with_requests(impressions, interactions), catalog, keys, settings, snapshot)
    _lifts(impressions, interactions, catalog, keys, settings, snapshot)
    snapshot.query = dict(snapshot.query)
    return snapshot


def _lifts(
    impressions: pa.Table,
    interactions: pa.Table,
    catalog: BlockAttributes,
    keys: Keys,
    settings: FeatureStoreSettings,
    snapshot: Snapshot,
) -> None:
    """Intent click lifts: the query's in its batch hash (``l|<label>``), the user's in field ``l``; and each
    intent's population click rate in the catalogue's intent hash."""
    lifts = intent_lifts(
        impressions, interactions, catalog, settings.position_prior, settings.lift_prior_clicks
    )
    snapshot.query[keys.intent_batch] = {catalog.intent_labels[i]: v for i, v in lifts.rate.items()}
    for q, by_intent in lifts.query.items():
        h = snapshot.query[keys.query_batch(q)]
        for i, v in by_intent.items():
            h[f"l|{catalog.intent_labels[i]}"] = v
    if not settings.user_intent_lifts:
        return
    for u, by_intent in lifts.user.items():
        evidence = lifts.evidence_user[u]
        kept = sorted(by_intent, key=lambda i: (-evidence[i], i))[: settings.user_intent_lifts]
        # The user's overall lift first: an intent not kept (little evidence) falls back to it, since every
        # kept lift was shrunk towards it.
        items = [(OVERALL_LIFT_KEY, lifts.user_overall[u])]
        blob = pack_lifts(items + [(catalog.intent_profile_ids[i], by_intent[i]) for i in kept])
        snapshot.user.setdefault(keys.user(u), {}).update(whole_blob(LIFT_FIELD, blob))


def _user_taste(
    clicks: pa.Table, catalog: BlockAttributes, keys: Keys, settings: FeatureStoreSettings, snapshot: Snapshot
) -> None:
    genres: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(catalog.genre_mix.shape[1]))
    words: dict[str, Counter[str]] = defaultdict(Counter)
    intents: dict[str, Counter[int]] = defaultdict(Counter)
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
        if catalog.intent[row]:
            intents[u][int(catalog.intent[row])] += 1
    for u, counts in words.items():
        n_clicks = genres[u].sum()
        total = sum(counts.values())
        distinct = len(counts)
        diversity = (
            entropy_bits(np.fromiter(counts.values(), dtype=float)) / math.log2(distinct)
            if distinct > 1
            else 0.0
        )
        top = [
            (kw, c / total)
            for kw, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: settings.user_keywords]
        ]
        # The intents the user clicked most, as shares of their clicks, ride in the same item list under
        # their own keys (``intent_profile_id``), so the profile keeps one format.
        top_intents = [
            (f"intent:{catalog.intent_labels[i]}", c / max(n_clicks, 1e-12))
            for i, c in sorted(intents[u].items(), key=lambda kv: (-kv[1], kv[0]))[: settings.user_intents]
        ]
        profile = pack_profile(
            list(genres[u] / max(n_clicks, 1e-12)), diversity, int(n_clicks), top + top_intents
        )
        snapshot.user.setdefault(keys.user(u), {}).update(whole_blob("p", profile))
