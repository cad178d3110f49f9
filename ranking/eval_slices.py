"""Evaluation slices of a world's lists: the query's click-entropy bucket and the user's diversity bucket.

Entropy buckets are tertiles over queries, measured on the logs before the validation day only; queries with
too few clicks there are ``UNSEEN``. The diversity bucket comes from the simulator's ``truth/users.parquet``,
read only when ``Slicer.from_logs(..., with_truth=True)`` is asked for it, which only evaluation does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow.parquet as pq

from data.layout import DataLayout
from data.logstats import DIVERSITY_BUCKETS, ENTROPY_BUCKETS, click_counts, query_click_entropy
from ranking.errors import WorldDataError

UNSEEN = "unseen"  # entropy bucket of a query with too few clicks before the validation day


@dataclass(frozen=True)
class Slicer:
    """Per-list evaluation slices: the query's click-entropy bucket and (with truth) the user's diversity."""

    entropy: dict[str, float]  # query -> click entropy in bits, from logs before ``before``
    cuts: tuple[float, float]  # tertile cut points over those queries
    diversity: dict[str, float] | None = None  # user -> truth diversity in [0, 1]; evaluation only

    @classmethod
    def from_logs(
        cls, layout: DataLayout, before: date, min_clicks: int = 10, with_truth: bool = False
    ) -> Slicer:
        """Entropy from impressions and clicks strictly before ``before``; diversity only ``with_truth``."""
        imps = layout.read_events("impressions", end=before, validate_rows=False)
        acts = layout.read_events("interactions", end=before, validate_rows=False)
        counts = click_counts(imps, acts, before=before)
        entropy = {q: e for q, (e, _) in query_click_entropy(counts, min_clicks=min_clicks).items()}
        values = np.array(sorted(entropy.values()))
        cuts = np.quantile(values, [1 / 3, 2 / 3]) if values.size else np.zeros(2)
        diversity = None
        if with_truth:
            users_file = layout.truth / "users.parquet"
            if not users_file.is_file():
                raise WorldDataError(
                    f"{users_file} is missing: slicing by user diversity needs the simulator's truth"
                )
            users = pq.read_table(users_file, columns=["user_id", "diversity"])
            diversity = dict(zip(users["user_id"].to_pylist(), users["diversity"].to_pylist(), strict=True))
        return cls(entropy, (float(cuts[0]), float(cuts[1])), diversity)

    def entropy_buckets(self, queries: np.ndarray) -> np.ndarray:
        out = np.full(len(queries), UNSEEN, dtype=object)
        for i, q in enumerate(queries):
            e = self.entropy.get(q)
            if e is not None:
                out[i] = ENTROPY_BUCKETS[int(np.digitize(e, self.cuts))]
        return out.astype(str)

    def diversity_buckets(self, users: np.ndarray) -> np.ndarray:
        if self.diversity is None:
            raise WorldDataError("this slicer was built without truth: no user diversity")
        out = []
        for u in users:
            d = self.diversity.get(u)
            if d is None:
                raise WorldDataError(f"user '{u}' is not in truth/users.parquet")
            out.append(next(name for name, (lo, hi) in DIVERSITY_BUCKETS.items() if lo <= d < hi))
        return np.array(out)
