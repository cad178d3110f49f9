"""A world's logs as ``ListwiseData``: the day split, the adapter from training-set rows to lists, the source.

The training set (``ranking.training_cache.training_table``) has one row per shown (impression, block) with
its features as of the request's time, and, with a retrieval replay and ``candidates`` > 0, one per unshown
retrieval candidate (``position`` 0). ``to_listwise`` turns it into lists (one impression = one list):

- labels: the click (1/0); weights: inverse propensity of the logged placement, clipped at ``ips_clip``; on
  lists with unshown candidates, the policy-aware weights of ``ranking.feedback`` instead;
- dense: the non-categorical ``FEATURES`` in declaration order; categorical: ``block_kind``, ``block_genre``;
- ``personalized=False`` drops every user-dependent feature (``user_*``, ``rt_*``, ``m3_*``);
- list slices for evaluation (``ranking.eval_slices.Slicer``): the query's click-entropy bucket and the
  user's diversity bucket.

``WorldSource`` holds one world: its day split, its training set (built once, cached) and the lists of any
days in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.days import DaySplit, NotEnoughDays, Progress, split_days
from data.layout import DataLayout
from features.config import FeatureStoreSettings
from features.definitions import FEATURES
from features.embeddings.config import EmbeddingSettings
from features.groups import PERSONAL_GROUPS
from ranking.config import WorldTrainingSettings
from ranking.dataset import ListwiseData
from ranking.errors import WorldDataError
from ranking.eval_slices import Slicer
from ranking.feedback import policy_aware_weights
from ranking.training_cache import rows_between, training_table

if TYPE_CHECKING:
    from data.engine import EngineSettings
    from features.dataset import RetrievalReplay

RELEVANCE_PREFIX = "rel_"
UNSHOWN_ORDER = 1_000_000  # sorts unshown candidates after every shown position

#: Feature-name prefixes that depend on the user; the non-personalized variants drop them.
# The same groups an A/B variant with personalized: false switches off in serving.
USER_PREFIXES = tuple(f"{g}_" for g in PERSONAL_GROUPS)


# Day split --------------------------------------------------------------------------------------------------


def day_split(layout: DataLayout, cfg: WorldTrainingSettings) -> DaySplit:
    """The split of the world's logged days: ``warmup_days`` skipped, then train, valid, test (the last)."""
    try:
        return split_days(
            layout.days("impressions"),
            valid_days=cfg.valid_days,
            test_days=cfg.test_days,
            warmup_days=cfg.warmup_days,
        )
    except NotEnoughDays as exc:
        raise WorldDataError(f"{layout.root}: {exc.reason}") from exc


# The adapter ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldLists:
    """Impressions as lists, plus what evaluation needs beside the features (never model inputs)."""

    data: ListwiseData  # labels = clicks, weights = clipped inverse propensities
    request_ids: np.ndarray  # (Q,) str
    block_ids: np.ndarray  # (N,) str
    positions: np.ndarray  # (N,) int, the logged position (the logging policy's order)


def feature_columns(
    personalized: bool = True, relevance: bool = True
) -> tuple[list[str], list[tuple[str, int]]]:
    """(dense names, [(categorical name, cardinality)]) in ``FEATURES`` order; ``relevance=False`` drops the
    ``rel_*`` features (a training set built without a retrieval replay holds only their defaults)."""
    keep = [
        f
        for f in FEATURES
        if (personalized or not f.name.startswith(USER_PREFIXES))
        and (relevance or not f.name.startswith(RELEVANCE_PREFIX))
    ]
    return [f.name for f in keep if not f.categorical], [
        (f.name, f.categorical) for f in keep if f.categorical
    ]


def in_list_order(table: pa.Table, order: pa.ChunkedArray | pa.Array) -> bool:
    """Whether the rows already run by (ts, request_id, ``order``) ascending, where a stable sort by those
    keys (Arrow's) would leave them as they are. Nulls: False (the sort decides where they go)."""
    n = table.num_rows
    if n < 2:
        return True
    columns = [table["ts"], table["request_id"], order]
    if any(c.null_count for c in columns):
        return False
    ts = table["ts"].cast(pa.int64()).to_numpy()
    requests = table["request_id"].combine_chunks()
    rank = np.asarray(pc.cast(order, pa.int64()).to_numpy())
    before, after = requests.slice(0, n - 1), requests.slice(1)
    later = ts[1:] > ts[:-1]
    same_ts = ts[1:] == ts[:-1]
    request_up = pc.greater(after, before).to_numpy(zero_copy_only=False)
    same_request = pc.equal(after, before).to_numpy(zero_copy_only=False)
    return bool((later | (same_ts & (request_up | (same_request & (rank[1:] >= rank[:-1]))))).all())


def to_listwise(
    table: pa.Table,
    *,
    personalized: bool = True,
    ips_clip: float = WorldTrainingSettings().ips_clip,
    slicer: Slicer | None = None,
    examination: tuple[float, ...] = FeatureStoreSettings().position_prior,
    relevance: bool = True,
) -> WorldLists:
    """Lists (one per impression) from a training-set table; see the module docstring.

    Args:
        table: rows of ``features.dataset.build_training_set`` (any day range).
        personalized: False drops the user-dependent features.
        ips_clip: largest weight 1 / propensity.
        slicer: adds ``list_meta`` "entropy_bucket" and, if it carries truth, "diversity_bucket".
        examination: theta by position, for the policy-aware weights of candidate lists.
        relevance: False drops the ``rel_*`` features.
    """
    if table.num_rows == 0:
        raise WorldDataError("the training set has no rows for these days")
    if ips_clip < 1:
        raise WorldDataError(f"ips_clip must be >= 1 (inverse propensities are), got {ips_clip}")
    dense_names, cats = feature_columns(personalized, relevance)
    missing = [
        n for n in [*dense_names, *(c for c, _ in cats), "propensity", "click"] if n not in table.schema.names
    ]
    if missing:
        raise WorldDataError(
            f"the training set lacks columns {missing}: rebuild it with this code's features"
        )
    # Group each impression's rows together, in the logged order; unshown candidates (position 0) last.
    shown_last = pc.if_else(pc.equal(table["position"], 0), UNSHOWN_ORDER, table["position"])
    if not in_list_order(table, shown_last):  # a built training set already is (the sort took 4.5 s)
        table = table.append_column("_order", shown_last)
        table = table.sort_by([("ts", "ascending"), ("request_id", "ascending"), ("_order", "ascending")])
        table = table.drop_columns(["_order"])
    req = table["request_id"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])
    offsets = np.r_[starts, len(req)]
    if starts.size != len(set(req[starts].tolist())):
        raise WorldDataError("a request id appears at two different times in the training set")
    propensity = table["propensity"].to_numpy().astype(np.float64)
    positions = table["position"].to_numpy().astype(np.int64)
    clicks = table["click"].to_numpy()
    shown = positions > 0
    if not ((propensity[shown] > 0) & (propensity[shown] <= 1)).all():
        raise WorldDataError("propensities of shown blocks must lie in (0, 1]")
    if (clicks[~shown] > 0).any():
        raise WorldDataError("a block the page did not show (position 0) has a click")
    if shown.all():
        weights = np.minimum(1.0 / propensity, ips_clip)
    else:
        weights = policy_aware_weights(
            clicks,
            positions,
            propensity,
            examination=examination,
            page_size=int(positions.max(initial=1)),
            clip=ips_clip,
        )
    dense = np.column_stack([table[n].to_numpy().astype(np.float32) for n in dense_names])
    meta: dict[str, np.ndarray] = {}
    if slicer is not None:
        meta["entropy_bucket"] = slicer.entropy_buckets(table["query"].to_numpy(zero_copy_only=False)[starts])
        if slicer.diversity is not None:
            users = table["user_id"].to_numpy(zero_copy_only=False)[starts]
            meta["diversity_bucket"] = slicer.diversity_buckets(users)
    data = ListwiseData(
        dense=dense,
        labels=table["click"].to_numpy().astype(np.float32),
        offsets=offsets,
        feature_names=tuple(dense_names),
        weights=weights,
        categorical=np.column_stack([table[c].to_numpy().astype(np.int64) for c, _ in cats])
        if cats
        else None,
        cardinalities=tuple(card for _, card in cats),
        categorical_names=tuple(c for c, _ in cats),
        list_meta=meta,
    )
    return WorldLists(
        data=data,
        request_ids=req[starts].astype(str),
        block_ids=table["block_id"].to_numpy(zero_copy_only=False).astype(str),
        positions=positions,
    )


# One world, split -------------------------------------------------------------------------------------------


class WorldSource:
    """A world's training set (built once, cached) and its train / valid / test lists."""

    def __init__(
        self,
        root: Path | str,
        world: WorldTrainingSettings,
        features: FeatureStoreSettings,
        progress: Progress | None = None,
        embeddings: EmbeddingSettings | None = None,
        retrieval: RetrievalReplay | None = None,
        engine: EngineSettings | None = None,
    ) -> None:
        """``retrieval`` (an as-of replay, ``retrieval.asof.AsOfRetrieval``) gives the rows their ``rel_*``
        features and, with ``world.candidates`` > 0, the lists their unshown candidates. ``engine``: the
        training set is built in day parts on it (``features.dataset_parts``); None: in this process. Over
        ``world.max_requests``, every day's lists (training, validation, test) sample its requests."""
        self.layout = DataLayout(Path(root))
        self.retrieval = retrieval
        self.engine = engine
        self.world = world
        self.features = features
        self.embeddings = embeddings or EmbeddingSettings()
        self.progress = progress
        self.split = day_split(self.layout, world)
        self._table: pa.Table | None = None
        self._slicers: dict[bool, Slicer] = {}
        self.from_cache: bool | None = None

    @property
    def candidate_lists(self) -> bool:
        """Whether training lists hold unshown retrieval candidates besides the shown page."""
        return self.retrieval is not None and self.world.candidates > 0

    def table(self) -> pa.Table:
        if self._table is None:
            self._table, self.from_cache = training_table(
                self.layout,
                self.split.first,
                self.split.last,
                self.features,
                cache=self.world.cache,
                progress=self.progress,
                embeddings=self.embeddings,
                retrieval=self.retrieval,
                candidates=self.world.candidates if self.candidate_lists else 0,
                engine=self.engine,
                max_requests=self.world.max_requests,
            )
        return self._table

    def slicer(self, with_truth: bool) -> Slicer:
        if with_truth not in self._slicers:
            self._slicers[with_truth] = Slicer.from_logs(
                self.layout, self.split.valid[0], self.world.entropy_min_clicks, with_truth=with_truth
            )
        return self._slicers[with_truth]

    def lists(
        self,
        days: tuple[date, date],
        personalized: bool = True,
        slices: bool = False,
        with_truth: bool = False,
        candidates: bool = True,
    ) -> WorldLists:
        """The impressions of days [start, end] as lists; ``slices`` adds entropy (and truth) buckets;
        ``candidates=False`` keeps the shown pages only (what truth grades and logged clicks judge)."""
        lo, hi = days
        if lo < self.split.first or hi > self.split.last or hi < lo:
            raise WorldDataError(
                f"days {lo}..{hi} lie outside the world's usable range {self.split.first}..{self.split.last}"
            )
        rows = rows_between(self.table(), lo, hi)
        if not candidates or with_truth:
            rows = rows.filter(pc.greater(rows["position"], 0))
        elif self.candidate_lists:
            # Candidate lists hold what serving can rank: a shown block retrieval did not return (the
            # logging policy's own candidates reach further) is never a served candidate.
            rows = rows.filter(pc.equal(rows["rel_missing"], 0.0))
        return to_listwise(
            rows,
            personalized=personalized,
            ips_clip=self.world.ips_clip,
            slicer=self.slicer(with_truth) if slices else None,
            examination=self.features.position_prior,
            relevance=self.retrieval is not None,
        )
