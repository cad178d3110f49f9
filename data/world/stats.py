"""Descriptive statistics of a world: counts, CTR by position, query click entropy, and what an oracle
gains from personalization by entropy bucket and by user diversity. Reads ``truth/``: evaluation only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.layout import DataLayout
from data.logstats import (
    DIVERSITY_BUCKETS,
    ENTROPY_BUCKETS,
    MIN_CLICKS_FOR_ENTROPY,
    click_counts,
    query_click_entropy,
)
from data.metrics import ndcg, order_by


def _padded(values: np.ndarray, offsets: np.ndarray, width: int, fill: float) -> np.ndarray:
    out = np.full((len(offsets) - 1, width), fill, dtype=float)
    sizes = np.diff(offsets)
    rows = np.repeat(np.arange(len(sizes)), sizes)
    cols = np.arange(len(values)) - np.repeat(offsets[:-1], sizes)
    out[rows, cols] = values
    return out


def world_stats(root: Path | str, *, min_clicks: int = MIN_CLICKS_FOR_ENTROPY) -> dict:
    layout = DataLayout(Path(root))
    manifest = layout.read_manifest()
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    grades = pq.read_table(layout.truth / "grades")
    users = pq.read_table(layout.truth / "users.parquet", columns=["user_id", "diversity"])

    # CTR by position, overall and on the policy's randomized pages (where position is independent of the
    # block, so the ratio to position 1 estimates the examination curve).
    clicks = acts.filter(pc.equal(acts["type"], "click"))
    page = max(len(manifest.get("truth_theta", [])), int(pc.max(grades["position"]).as_py()))
    shown_per_pos = np.bincount(grades["position"].to_numpy(), minlength=page + 1)[1:]
    clicked_pos = np.bincount(clicks["position"].to_numpy(), minlength=page + 1)[1 : page + 1]
    clicked_keys = set(zip(clicks["request_id"].to_pylist(), clicks["block_id"].to_pylist(), strict=True))
    g_req = grades["request_id"].to_numpy(zero_copy_only=False)
    g_blk = grades["block_id"].to_numpy(zero_copy_only=False)
    g_clicked = np.fromiter(
        ((r, b) in clicked_keys for r, b in zip(g_req, g_blk, strict=True)), dtype=bool, count=len(g_req)
    )
    g_pos = grades["position"].to_numpy()
    rand = grades["randomized"].to_numpy(zero_copy_only=False)
    rand_ctr = np.array(
        [
            g_clicked[rand & (g_pos == k)].mean() if (rand & (g_pos == k)).any() else 0.0
            for k in range(1, page + 1)
        ]
    )

    # Click entropy of queries.
    entropy = {
        q: e for q, (e, _) in query_click_entropy(click_counts(imps, acts), min_clicks=min_clicks).items()
    }
    ent_values = np.array(sorted(entropy.values()))
    cuts = np.quantile(ent_values, [1 / 3, 2 / 3]) if len(ent_values) else np.array([0.0, 0.0])

    # Oracle gain: the personal oracle orders by the user's own grades (NDCG 1 by definition); the best
    # non-personal ranker orders by relevance without taste; the logging policy keeps its positions.
    offsets = np.flatnonzero(np.r_[True, g_req[1:] != g_req[:-1], True])
    width = int(np.diff(offsets).max())
    grade_m = _padded(grades["grade"].to_numpy().astype(float), offsets, width, -1.0)
    rel_m = _padded(grades["relevance"].to_numpy(), offsets, width, -np.inf)
    ndcg_np = ndcg(order_by(rel_m, grade_m), width)
    ndcg_log = ndcg(grade_m, width)
    has_gain = (grade_m > 0).any(axis=1)
    req_ids = g_req[offsets[:-1]]
    imp_index = {r: i for i, r in enumerate(imps["request_id"].to_pylist())}
    imp_rows = np.array([imp_index[r] for r in req_ids])
    req_query = imps["query"].to_numpy(zero_copy_only=False)[imp_rows]
    req_user = imps["user_id"].to_numpy(zero_copy_only=False)[imp_rows]
    req_entropy = np.array([entropy.get(q, np.nan) for q in req_query])
    diversity = dict(zip(users["user_id"].to_pylist(), users["diversity"].to_pylist(), strict=True))
    req_div = np.array([diversity[u] for u in req_user])

    def summary(mask: np.ndarray) -> dict:
        m = mask & has_gain
        return {
            "impressions": int(m.sum()),
            "ndcg@page_logging": _mean(ndcg_log[m]),
            "ndcg@page_nonpersonal_oracle": _mean(ndcg_np[m]),
            "ndcg@page_personal_oracle": 1.0 if m.any() else None,
            "personalization_gain": _mean(1.0 - ndcg_np[m]),
        }

    ent_bucket = np.digitize(req_entropy, cuts)
    lowest, highest = (float(ent_values[0]), float(ent_values[-1])) if len(ent_values) else (0.0, 0.0)
    by_entropy = {
        name: {
            **summary(~np.isnan(req_entropy) & (ent_bucket == i)),
            "entropy_range_bits": [
                float(cuts[i - 1]) if i > 0 else lowest,
                float(cuts[i]) if i < 2 else highest,
            ],
        }
        for i, name in enumerate(ENTROPY_BUCKETS)
    }
    by_diversity = {
        name: summary((req_div >= lo) & (req_div < hi)) for name, (lo, hi) in DIVERSITY_BUCKETS.items()
    }

    n_clicks = clicks.num_rows
    return {
        "world": {k: manifest[k] for k in ("scale", "seed", "start_date", "days")},
        "counts": {
            **manifest["counts"],
            "sessions": pc.count_distinct(imps["session_id"]).as_py(),
            "active_users": pc.count_distinct(imps["user_id"]).as_py(),
            "dwell_events": acts.num_rows - n_clicks,
            "clicks_per_impression": round(n_clicks / max(imps.num_rows, 1), 4),
        },
        "ctr_by_position": [
            round(c / s, 4) if s else 0.0 for c, s in zip(clicked_pos, shown_per_pos, strict=True)
        ],
        "randomized_ctr_ratio_to_top": [
            round(float(c / rand_ctr[0]), 4) if rand_ctr[0] else 0.0 for c in rand_ctr
        ],
        "query_click_entropy_bits": {
            "queries": len(ent_values),
            "min_clicks": min_clicks,
            **{
                f"p{q}": round(float(np.quantile(ent_values, q / 100)), 3) if len(ent_values) else None
                for q in (0, 10, 50, 90, 100)
            },
        },
        "oracle_by_entropy": by_entropy,
        "oracle_by_diversity": by_diversity,
        "oracle_overall": summary(np.ones(len(req_ids), dtype=bool)),
    }


def _mean(x: np.ndarray) -> float | None:
    return round(float(x.mean()), 4) if len(x) else None
