"""Point-in-time features of chosen candidate blocks (not the shown ones) at every logged request's time."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from data.days import Progress
from data.layout import DataLayout
from data.schemas import TIMESTAMP


def candidate_features(
    layout: DataLayout,
    blocks_of: dict[str, list[str]],
    start: date,
    end: date,
    settings: Any,
    progress: Progress | None = None,
    retrieval: Any = None,
) -> pa.Table:
    """Point-in-time features (as ``features.dataset.build_training_set`` computes them) of the given
    blocks of each request in ``blocks_of``, in the training-set layout ``ranking.world.to_listwise`` reads.

    The replay is the training set's own (live state before the request, batch snapshot of its day); only
    the blocks differ: ``blocks_of[request_id]`` instead of the blocks shown. Position is the block's place
    in that list; propensity and click are placeholders (this table is only scored). ``retrieval`` (a
    ``features.dataset.RetrievalReplay``) gives the rows their ``rel_*`` features, as training did.
    """
    from features.block_attributes import BlockAttributes
    from features.dataset import feature_arrays, point_in_time_rows
    from features.definitions import FEATURES

    catalog = BlockAttributes.from_tables(layout.read_blocks(), layout.read_docs())
    imps = layout.read_events("impressions", end=end, validate_rows=False)
    acts = layout.read_events("interactions", end=end, validate_rows=False)
    rows: list[np.ndarray] = []
    cols: dict[str, list] = defaultdict(list)

    def blocks_for(event: Any) -> tuple[str, ...] | None:
        found = blocks_of.get(event.request_id)
        return tuple(found) if found is not None else None

    for event, blocks, features in point_in_time_rows(
        imps, acts, start, end, catalog, settings, blocks_for, progress=progress, retrieval=retrieval
    ):
        rows.append(features)
        for k, b in enumerate(blocks, start=1):
            cols["request_id"].append(event.request_id)
            cols["ts"].append(event.ts_ms)
            cols["user_id"].append(event.user_id)
            cols["query"].append(event.query)
            cols["block_id"].append(b)
            cols["position"].append(k)
    features = np.concatenate(rows) if rows else np.zeros((0, len(FEATURES)))
    arrays: dict[str, pa.Array] = {k: pa.array(v) for k, v in cols.items()}
    arrays["ts"] = pa.array(cols["ts"], pa.int64()).cast(TIMESTAMP)
    arrays["propensity"] = pa.array(np.ones(len(features)))
    arrays["click"] = pa.array(np.zeros(len(features), np.int8))
    return pa.table({**arrays, **feature_arrays(features)})
