"""Every ranking feature, declared once: what it is, which entity it belongs to, its default, and how it is
read from the stored state. Training sets (``features.dataset``) and serving (``features.store``) both call
``plan`` to know what to fetch and ``compute_many`` (serving through ``compute``, its one-request case) to
turn the fetched hashes into feature rows, so a feature's value cannot differ between the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from data.days import DAY_MS
from features.block_attributes import MIXED_GENRE, BlockAttributes
from features.config import FeatureStoreSettings
from features.interest import click_interest, query_interest_many, shown_interest
from features.keys import Keys, digest
from features.ops import CLICKS_FIELD, LIFT_FIELD, QUERY_FIELD, SHOWN_FIELD, STATS_WIDTH
from features.packing import (
    OVERALL_LIFT_KEY,
    chunk_fields,
    join_blob,
    read_recent,
    unpack_lifts,
    unpack_profile,
)
from features.relevance import RELEVANCE_MEMBERS, UNRANKED, RetrievalScores, relevance_columns_many

Entity = Literal[
    "query_block", "block", "query", "user", "user_block", "session", "session_block", "request_block"
]
Source = Literal["stream", "batch", "static", "request"]  # request: what retrieval said of it

# The user hash: recent interest and long-term profile (each in chunks), the M3 vector and its model version.
VECTOR_FIELD, VERSION_FIELD = "v", "m"
VECTOR_DTYPE = np.dtype("<f2")  # stored user and block vectors: little-endian float16
USER_FIELDS = [
    *chunk_fields("r"),
    *chunk_fields("p"),
    *chunk_fields(VECTOR_FIELD),
    VERSION_FIELD,
    *chunk_fields(CLICKS_FIELD),
    *chunk_fields(LIFT_FIELD),
]
SESSION_FIELDS = [*chunk_fields("r"), *chunk_fields(CLICKS_FIELD), *chunk_fields(SHOWN_FIELD), QUERY_FIELD]
COEC_PRIOR_MEAN = 0.2  # attractiveness a block has before any evidence
COEC_PRIOR_WEIGHT = 5.0  # worth this many examinations
UCB_Z = 1.0
LIFT_FLOOR = 1 / 64  # log lifts are bounded below: a lift of 0 (stored rounding) is "never clicks it"


@dataclass(frozen=True)
class Feature:
    name: str
    entity: Entity
    source: Source
    default: float
    description: str
    categorical: int = 0  # number of categories when the feature is a categorical id, else 0


FEATURES: tuple[Feature, ...] = (
    Feature("qb_impressions_log", "query_block", "stream", 0.0, "log(1 + times shown for this query)"),
    Feature("qb_clicks_log", "query_block", "stream", 0.0, "log(1 + clicks for this query)"),
    Feature(
        "qb_coec", "query_block", "stream", COEC_PRIOR_MEAN, "clicks over expected examinations, smoothed"
    ),
    Feature("qb_skip_rate", "query_block", "stream", 0.0, "skipped above a click / shown"),
    Feature("qb_dwell_log_s", "query_block", "stream", 0.0, "log(1 + mean dwell seconds)"),
    Feature("qb_missing", "query_block", "stream", 1.0, "1 when never shown for this query"),
    Feature("bandit_mean", "query_block", "stream", 0.5, "Beta(1 + clicks, 1 + non-clicks) mean"),
    Feature("bandit_ucb", "query_block", "stream", 0.5 + UCB_Z * math.sqrt(1 / 12), "mean + z * sd"),
    Feature("bandit_thompson", "request_block", "stream", 0.5, "one Beta draw, seeded by the request id"),
    Feature("block_impressions_log", "block", "stream", 0.0, "log(1 + times shown for any query)"),
    Feature("block_coec", "block", "stream", COEC_PRIOR_MEAN, "block clicks over expected examinations"),
    Feature("block_skip_rate", "block", "stream", 0.0, "block skipped above a click / shown"),
    Feature("block_dwell_log_s", "block", "stream", 0.0, "log(1 + mean dwell seconds) for any query"),
    Feature("block_missing", "block", "stream", 1.0, "1 when never shown"),
    Feature("query_impressions_log", "query", "stream", 0.0, "log(1 + searches of this query)"),
    Feature("query_clicks_per_search", "query", "stream", 0.0, "clicks / (searches + 1)"),
    Feature("query_click_entropy", "query", "batch", 0.0, "entropy (bits) of the query's clicked blocks"),
    Feature("query_entropy_missing", "query", "batch", 1.0, "1 when the query has no clicks yet"),
    Feature("coquery_assoc", "query_block", "batch", 0.0, "click share of the block among the co-queries"),
    Feature(
        "query_intent_share", "query_block", "batch", 0.0, "share of the query's clicks on the block's intent"
    ),
    Feature(
        "query_intent_lift", "query_block", "batch", 0.0, "log click lift of the block's intent for the query"
    ),
    Feature("coquery_count_log", "query", "batch", 0.0, "log(1 + co-queries kept)"),
    Feature("coquery_missing", "query", "batch", 1.0, "1 when the query has no co-queries"),
    Feature("user_genre_affinity", "user_block", "batch", 0.0, "user's click share in the block's genres"),
    Feature(
        "user_keyword_affinity", "user_block", "batch", 0.0, "user's click share on the block's keywords"
    ),
    Feature(
        "user_intent_share", "user_block", "batch", 0.0, "share of the user's clicks on the block's intent"
    ),
    Feature(
        "user_intent_lift", "user_block", "batch", 0.0, "log of the user's click lift on the block's intent"
    ),
    Feature("user_diversity", "user", "batch", 0.0, "normalized entropy of the user's clicked keywords"),
    Feature("user_clicks_log", "user", "batch", 0.0, "log(1 + the user's clicks)"),
    Feature("user_missing", "user", "batch", 1.0, "1 when the user has no click history"),
    Feature(
        "rt_keyword_score", "user_block", "stream", 0.0, "decayed recent-query interest in block keywords"
    ),
    Feature("rt_keyword_share", "user_block", "stream", 0.0, "rt_keyword_score / all recent interest"),
    Feature("rt_missing", "user", "stream", 1.0, "1 when the user searched nothing recently"),
    Feature(
        "rt_click_score", "user_block", "stream", 0.0, "decayed recent clicks x keyword overlap with block"
    ),
    Feature("rt_click_missing", "user", "stream", 1.0, "1 when the user clicked nothing recently"),
    Feature(
        "rt_intent_click", "user_block", "stream", 0.0, "decayed recent clicks on blocks of the same intent"
    ),
    Feature("rt_intent_click_share", "user_block", "stream", 0.0, "rt_intent_click / all recent clicks"),
    Feature(
        "rt_intent_query", "user_block", "stream", 0.0, "share of recent-query interest in the intent's words"
    ),
    # The same tallies for this session alone (the request's session_id): what this session is after.
    Feature("session_searches_log", "session", "stream", 0.0, "log(1 + earlier searches in this session)"),
    Feature("session_missing", "session", "stream", 1.0, "1 when this session searched nothing before"),
    Feature("session_keyword_score", "session_block", "stream", 0.0, "session query words in block keywords"),
    Feature("session_keyword_share", "session_block", "stream", 0.0, "session_keyword_score / all its words"),
    Feature(
        "session_intent_query", "session_block", "stream", 0.0, "share of session query words on the intent"
    ),
    Feature("session_click_score", "session_block", "stream", 0.0, "session clicks x keyword overlap"),
    Feature("session_click_missing", "session", "stream", 1.0, "1 when this session clicked nothing yet"),
    Feature("session_intent_click", "session_block", "stream", 0.0, "session clicks on blocks of the intent"),
    Feature(
        "session_intent_click_share", "session_block", "stream", 0.0, "session_intent_click / its clicks"
    ),
    Feature("session_block_shown", "session_block", "stream", 0.0, "times this session was shown the block"),
    Feature(
        "session_intent_shown", "session_block", "stream", 0.0, "blocks of the intent this session was shown"
    ),
    Feature(
        "m3_similarity", "user_block", "batch", 0.0, "cosine of the user's M3 vector and the block's vector"
    ),
    Feature("m3_score", "user_block", "batch", 0.0, "dot product of the two vectors: M3's next-block logit"),
    Feature("m3_missing", "user_block", "batch", 1.0, "1 when user or block has no vector of one model"),
    Feature(
        "intent_click_rate",
        "block",
        "batch",
        COEC_PRIOR_MEAN,
        "everyone's clicks per examination of the intent",
    ),
    Feature("block_age_log_days", "block", "static", 0.0, "log(1 + days since the block was created)"),
    Feature("block_docs", "block", "static", 0.0, "number of docs in the block"),
    Feature("block_kind", "block", "static", 0.0, "0 topic, 1 genre", categorical=2),
    Feature("block_genre", "block", "static", float(MIXED_GENRE), "main genre id, 6 = mixed", categorical=7),
    # Query-block relevance as retrieval scored it (features.relevance): the one signal of what the query
    # means for blocks that were never shown for it.
    Feature("rel_missing", "request_block", "request", 1.0, "1 when retrieval did not return the block"),
    Feature("rel_fused", "request_block", "request", 0.0, "fused retrieval score"),
    Feature("rel_fused_share", "request_block", "request", 0.0, "fused score / the list's best"),
    Feature("rel_rank_log", "request_block", "request", UNRANKED, "log(1 + rank by fused score), 0 = best"),
    *(
        feature
        for m in RELEVANCE_MEMBERS
        for feature in (
            Feature(f"rel_{m}", "request_block", "request", 0.0, f"raw {m} score (0 when not returned)"),
            Feature(f"rel_{m}_share", "request_block", "request", 0.0, f"{m} score / its list's best"),
            Feature(f"rel_{m}_missing", "request_block", "request", 1.0, f"1 when {m} did not return it"),
        )
    ),
)
NAMES = [f.name for f in FEATURES]
INDEX = {n: i for i, n in enumerate(NAMES)}
DENSE = [f.name for f in FEATURES if not f.categorical]
CATEGORICAL = [f.name for f in FEATURES if f.categorical]
DEFAULTS = np.array([f.default for f in FEATURES], dtype=np.float64)


@dataclass(frozen=True)
class Request:
    request_id: str
    ts_ms: int
    user_id: str
    query: str
    block_ids: tuple[str, ...]
    # What retrieval scored each block (None: no retrieval behind the request, the rel_* defaults).
    retrieval: RetrievalScores | None = None
    session_id: str = ""  # "" = the client named no session: the session_* defaults


USER_SLOT = 2  # position of the user hash in ``plan``'s list


def plan(keys: Keys, req: Request) -> list[tuple[str, list[str] | None]]:
    """The hashes (and fields; None = all) to fetch for one request, in the order ``compute`` reads them:
    the query's counters, its batch hash (all of it: co-query and intent fields), the user hash, the
    intents' batch hash, the session hash when the request names a session, then the block-counter shards."""
    shards: dict[str, list[str]] = {}
    for b in req.block_ids:
        shards.setdefault(keys.block_stats(b), []).append(b)
    return [
        (keys.query_blocks(req.query), [*req.block_ids, QUERY_FIELD]),
        (keys.query_batch(req.query), None),
        (keys.user(req.user_id), USER_FIELDS),
        (keys.intent_batch, None),
        *([(keys.session(req.session_id), SESSION_FIELDS)] if req.session_id else []),
        *shards.items(),
    ]


def _counters(
    hash_lists: Sequence[Sequence[dict]], reqs: Sequence[Request], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n, STATS_WIDTH) packed counters of each request's blocks, found in that request's hashes (the first
    that has the block), and which rows had any."""
    blobs = []
    for hashes, req in zip(hash_lists, reqs, strict=True):
        for b in req.block_ids:
            blob = None
            for h in hashes:
                blob = h.get(b)
                if blob is not None:
                    break
            blobs.append(blob)
    found = np.array([b is not None for b in blobs], dtype=bool)
    out = np.zeros((n, STATS_WIDTH))
    if found.any():
        out[found] = np.frombuffer(b"".join(b for b in blobs if b is not None), dtype="<f8").reshape(
            -1, STATS_WIDTH
        )
    return out, found


@dataclass(frozen=True)
class _Fetched:
    """One request's hashes in ``plan``'s order."""

    qb: dict
    qd: dict
    user: dict
    intent_rates: dict
    session: dict
    shards: list[dict]

    @classmethod
    def of(cls, req: Request, fetched: list[dict]) -> _Fetched:
        qb, qd, user, intent_rates, *shards = fetched
        session = shards.pop(0) if req.session_id else {}
        return cls(qb, qd, user, intent_rates, session, shards)


def compute(
    req: Request, fetched: list[dict], catalog: BlockAttributes, settings: FeatureStoreSettings
) -> np.ndarray:
    """Feature rows (n_blocks, len(FEATURES)) for one request from the hashes ``plan`` named."""
    return compute_many([req], [fetched], catalog, settings)


def compute_many(
    reqs: Sequence[Request],
    fetched: Sequence[list[dict]],
    catalog: BlockAttributes,
    settings: FeatureStoreSettings,
) -> np.ndarray:
    """``compute`` of many requests at once: their rows stacked in request order.

    Every step is element-wise or per request, so a request's rows are the ones it gets alone; a training
    set's replay hands its requests over in chunks and pays numpy's per-call cost once per chunk, not per
    request.
    """
    parts = [_Fetched.of(req, f) for req, f in zip(reqs, fetched, strict=True)]
    sizes = [len(r.block_ids) for r in reqs]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(bounds[-1])
    owner = np.repeat(np.arange(len(reqs), dtype=np.int64), sizes)
    owners = owner.tolist()
    block_ids = [b for r in reqs for b in r.block_ids]
    out = np.tile(DEFAULTS, (n, 1))
    rows = catalog.rows(block_ids)
    col = INDEX

    # Query-block and block click feedback, and the bandit's Beta posterior.
    stats, seen = _counters([[p.qb] for p in parts], reqs, n)
    shown, exam, clicks, skips, dwell, dwells = stats.T
    alpha, beta = 1.0 + clicks, 1.0 + np.maximum(shown - clicks, 0.0)
    for r, req in enumerate(reqs):  # drawn for every candidate, in request order, seeded by the request
        lo, hi = bounds[r], bounds[r + 1]
        rng = np.random.default_rng(int(digest(req.request_id), 16))
        out[lo:hi, col["bandit_thompson"]] = rng.beta(alpha[lo:hi], beta[lo:hi])
    mean = alpha / (alpha + beta)
    sd = np.sqrt(alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {
            "qb_impressions_log": np.log1p(shown),
            "qb_clicks_log": np.log1p(clicks),
            "qb_coec": _coec(clicks, exam),
            "qb_skip_rate": skips / shown,
            "qb_dwell_log_s": np.where(dwells > 0, np.log1p(dwell / np.maximum(dwells, 1) / 1000), 0.0),
            "qb_missing": np.zeros(n),
            "bandit_mean": mean,
            "bandit_ucb": mean + UCB_Z * sd,
        }
        for name, v in values.items():
            out[seen, col[name]] = v[seen]
        stats, seen = _counters([p.shards for p in parts], reqs, n)
        shown, exam, clicks, skips, dwell, dwells = stats.T
        values = {
            "block_impressions_log": np.log1p(shown),
            "block_coec": _coec(clicks, exam),
            "block_skip_rate": skips / shown,
            "block_dwell_log_s": np.where(dwells > 0, np.log1p(dwell / np.maximum(dwells, 1) / 1000), 0.0),
            "block_missing": np.zeros(n),
        }
        for name, v in values.items():
            out[seen, col[name]] = v[seen]

    # Per-request scalars go through math.log1p, as /search computed them before requests were batched
    # (numpy's log1p can differ in the last bit).
    query_counts = np.array(
        [np.frombuffer(p.qb[QUERY_FIELD], dtype="<f8") if QUERY_FIELD in p.qb else (0.0, 0.0) for p in parts]
    ).reshape(-1, 2)
    out[:, col["query_impressions_log"]] = np.array([math.log1p(c) for c in query_counts[:, 0]])[owner]
    query_counts = query_counts[owner]
    out[:, col["query_clicks_per_search"]] = query_counts[:, 1] / (query_counts[:, 0] + 1)
    qds = [p.qd for p in parts]
    out[:, col["coquery_assoc"]] = [
        float(qds[r].get(f"a|{b}", 0.0)) for r, b in zip(owners, block_ids, strict=True)
    ]
    intents = catalog.intent[rows].tolist()
    labels = catalog.intent_labels
    out[:, col["query_intent_share"]] = [
        float(qds[r].get(f"i|{labels[i]}", 0.0)) if i else 0.0 for r, i in zip(owners, intents, strict=True)
    ]
    out[:, col["query_intent_lift"]] = [
        math.log(max(float(qds[r].get(f"l|{labels[i]}", 1.0)), LIFT_FLOOR)) if i else 0.0
        for r, i in zip(owners, intents, strict=True)
    ]
    decoded: dict[int, dict[str, float]] = {}  # requests of one day share one intent hash: decoded once
    for p in parts:
        if id(p.intent_rates) not in decoded:
            decoded[id(p.intent_rates)] = {
                k.decode() if isinstance(k, bytes) else k: float(v) for k, v in p.intent_rates.items()
            }
    rates = [decoded[id(p.intent_rates)] for p in parts]
    out[:, col["intent_click_rate"]] = [
        rates[r].get(labels[i], COEC_PRIOR_MEAN) if i else COEC_PRIOR_MEAN
        for r, i in zip(owners, intents, strict=True)
    ]
    has_entropy = np.array(["ent" in q for q in qds], dtype=bool)[owner]
    entropy = np.array([float(q.get("ent", 0.0)) for q in qds])[owner]
    out[has_entropy, col["query_click_entropy"]] = entropy[has_entropy]
    out[has_entropy, col["query_entropy_missing"]] = 0.0
    n_coq = np.array([float(q.get("ncoq", 0.0)) for q in qds])
    out[:, col["coquery_count_log"]] = np.array([math.log1p(c) for c in n_coq])[owner]
    n_coq = n_coq[owner]
    out[:, col["coquery_missing"]] = np.where(n_coq > 0, 0.0, 1.0)

    # Long-term user taste (daily batch): genre and keyword click shares, diversity.
    profile_ids = catalog.intent_profile_ids
    profiles = [unpack_profile(blob) if (blob := join_blob(p.user, "p")) else None for p in parts]
    has_profile = np.array([pr is not None for pr in profiles], dtype=bool)[owner]
    if has_profile.any():
        affinity = np.zeros(n)
        for r, profile in enumerate(profiles):  # one product per request: the same sums whatever the batch
            if profile is not None:
                lo, hi = bounds[r], bounds[r + 1]
                affinity[lo:hi] = catalog.genre_mix[rows[lo:hi]] @ np.array(profile.genre_share)
        keyword_affinity, intent_share = np.zeros(n), np.zeros(n)
        for j, (r, row, i) in enumerate(zip(owners, rows.tolist(), intents, strict=True)):
            profile = profiles[r]
            if profile is not None:
                words = profile.keyword_share
                keyword_affinity[j] = sum(words.get(k, 0.0) for k in catalog.keyword_ids[row])
                intent_share[j] = words.get(profile_ids[i], 0.0)
        diversity = np.array([pr.diversity if pr is not None else 0.0 for pr in profiles])[owner]
        clicks_log = np.array([math.log1p(pr.clicks) if pr is not None else 0.0 for pr in profiles])[owner]
        m = has_profile
        out[m, col["user_genre_affinity"]] = affinity[m]
        out[m, col["user_keyword_affinity"]] = keyword_affinity[m]
        out[m, col["user_intent_share"]] = intent_share[m]
        out[m, col["user_diversity"]] = diversity[m]
        out[m, col["user_clicks_log"]] = clicks_log[m]
        out[m, col["user_missing"]] = 0.0

    lifts = [unpack_lifts(join_blob(p.user, LIFT_FIELD)) for p in parts]
    if any(lifts):
        has_lifts = np.array([bool(x) for x in lifts], dtype=bool)[owner]
        out[has_lifts, col["user_intent_lift"]] = [
            math.log(max(lifts[r].get(profile_ids[i], lifts[r].get(OVERALL_LIFT_KEY, 1.0)), LIFT_FLOOR))
            if i
            else 0.0
            for r, i in zip(owners, intents, strict=True)
            if lifts[r]
        ]

    # Short-range interest: the user's recent query words and clicks (decayed over hours), and the same
    # tallies of this session alone.
    ts_ms = np.array([req.ts_ms for req in reqs], dtype=np.int64)
    for prefix, states, half_life_s in (
        ("rt", [p.user for p in parts], settings.interest_half_life_hours * 3600),
        ("session", [p.session for p in parts], settings.session_half_life_minutes * 60),
    ):
        tau = half_life_s / math.log(2)
        recent = [
            read_recent(join_blob(state, "r"), req.ts_ms / 1000.0, tau)
            for state, req in zip(states, reqs, strict=True)
        ]
        queried, active = query_interest_many(recent, catalog, rows, owner)
        if active.any():
            for name, values in queried.items():
                out[active, col[f"{prefix}_{name}"]] = values[active]
            out[active, col[f"{prefix}_missing"]] = 0.0
        for r, (state, req) in enumerate(zip(states, reqs, strict=True)):
            lo, hi = bounds[r], bounds[r + 1]
            clicked = click_interest(
                read_recent(join_blob(state, CLICKS_FIELD), req.ts_ms / 1000.0, tau), catalog, rows[lo:hi]
            )
            if clicked:
                for name, values in clicked.items():
                    out[lo:hi, col[f"{prefix}_{name}"]] = values
                out[lo:hi, col[f"{prefix}_click_missing"]] = 0.0
    session_tau = settings.session_half_life_minutes * 60 / math.log(2)
    for r, (p, req) in enumerate(zip(parts, reqs, strict=True)):
        lo, hi = bounds[r], bounds[r + 1]
        seen_before = shown_interest(
            read_recent(join_blob(p.session, SHOWN_FIELD), req.ts_ms / 1000.0, session_tau),
            catalog,
            rows[lo:hi],
        )
        for name, values in seen_before.items():
            out[lo:hi, col[f"session_{name}"]] = values
        if p.user.get(VECTOR_FIELD) is not None:
            _m3(out[lo:hi], p.user, catalog, rows[lo:hi])
    out[:, col["session_searches_log"]] = np.array(
        [
            math.log1p(np.frombuffer(p.session[QUERY_FIELD], dtype="<f8")[0])
            if QUERY_FIELD in p.session
            else 0.0
            for p in parts
        ]
    )[owner]

    scores = [req.retrieval for req in reqs if req.retrieval is not None]
    if scores:
        has_scores = np.array([req.retrieval is not None for req in reqs], dtype=bool)
        relevance = relevance_columns_many(scores, [n for n, ok in zip(sizes, has_scores, strict=True) if ok])
        m = has_scores[owner]
        for name, values in relevance.items():
            out[m, col[name]] = values

    age_days = np.maximum(ts_ms[owner] - catalog.created_ms[rows], 0) / DAY_MS
    out[:, col["block_age_log_days"]] = np.log1p(age_days)
    out[:, col["block_docs"]] = catalog.n_docs[rows]
    out[:, col["block_kind"]] = catalog.kind[rows]
    out[:, col["block_genre"]] = catalog.main_genre[rows]
    return out


def _m3(out: np.ndarray, user: dict, catalog: BlockAttributes, rows: np.ndarray) -> None:
    """M3 similarity of the user's stored vector with each block's vector of the same model version.

    The user hash names the version its vector came from; the catalogue holds block vectors per version.
    A user vector whose version has no block vectors (a model not loaded, or replaced) leaves the
    defaults: comparing vectors of two different models would be noise.
    """
    raw = join_blob(user, VECTOR_FIELD)
    version = user.get(VERSION_FIELD)
    if raw is None or version is None or len(raw) % VECTOR_DTYPE.itemsize:
        return
    blocks = catalog.vectors.get(version.decode() if isinstance(version, bytes) else str(version))
    vec = np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)
    if blocks is None or blocks.matrix.shape[1] != len(vec):
        return
    user_norm = np.float32(np.linalg.norm(vec))
    has = blocks.present[rows]
    if user_norm <= 0 or not has.any():
        return
    dots = blocks.matrix[rows] @ vec  # (n,) float32, the same arithmetic offline and online
    norms = np.where(has, blocks.norms[rows] * user_norm, np.float32(1.0))
    out[has, INDEX["m3_similarity"]] = (dots / norms)[has]
    out[has, INDEX["m3_score"]] = dots[has]
    out[has, INDEX["m3_missing"]] = 0.0


def _coec(clicks: np.ndarray, examinations: np.ndarray) -> np.ndarray:
    return (clicks + COEC_PRIOR_MEAN * COEC_PRIOR_WEIGHT) / (examinations + COEC_PRIOR_WEIGHT)
