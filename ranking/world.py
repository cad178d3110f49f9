"""From a world's logs to ``ListwiseData``: day split, cached point-in-time training sets, the adapter.

``features.dataset.build_training_set`` gives one row per shown (impression, block) with its features as of
the request's time. This module turns such a table into lists (one impression = one list):

- labels: the click (1/0); weights: inverse propensity of the logged placement, clipped at ``ips_clip``;
- dense: the non-categorical ``FEATURES`` in declaration order; categorical: ``block_kind``, ``block_genre``;
- ``personalized=False`` drops every user-dependent feature (``user_*``, ``rt_*``, ``m3_*``);
- list slices for evaluation: the query's click-entropy bucket (tertiles over queries, measured on the logs
  before the validation day only) and, from ``truth/users.parquet``, the user's diversity bucket. Truth is
  read only when ``Slicer.from_logs(..., with_truth=True)`` is asked for it, which only evaluation does.

Training sets take about a minute to build for the small world, so they are cached as Parquet under
``<world>/.cache/ranking/``, keyed by the day range, a fingerprint of the feature definitions, the feature
settings and the features package's code, and the world's files (names, sizes, modification times).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.days import DaySplit, NotEnoughDays, Progress, day_start_ms, split_days
from data.layout import DataLayout
from data.logstats import DIVERSITY_BUCKETS, ENTROPY_BUCKETS, click_counts, query_click_entropy
from data.schemas import TIMESTAMP
from features.config import FeatureStoreSettings
from features.definitions import FEATURES
from features.embeddings.config import EmbeddingSettings
from features.groups import PERSONAL_GROUPS
from ranking.config import WorldSettings
from ranking.dataset import ListwiseData
from ranking.errors import WorldDataError

#: Feature-name prefixes that depend on the user; the non-personalized variants drop them.
# The same groups an A/B variant with personalized: false switches off in serving.
USER_PREFIXES = tuple(f"{g}_" for g in PERSONAL_GROUPS)
UNSEEN = "unseen"  # entropy bucket of a query with too few clicks before the validation day
CACHE_DIR = Path(".cache") / "ranking"
# Feature-store settings that only say how to connect: they cannot change a feature's value.
_CONNECTION_FIELDS = {
    "redis_url",
    "cluster",
    "embedded_dir",
    "namespace",
    "socket_timeout_s",
    "stream_batch",
    "stream_claim_idle_ms",
    "stream_max_deliveries",
}

# Embedding settings that cannot change a point-in-time M3 vector.
_EMBEDDING_IRRELEVANT = {"model_dir", "threads"}



# Day split --------------------------------------------------------------------------------------------------


def day_split(layout: DataLayout, cfg: WorldSettings) -> DaySplit:
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


# Cached training sets ---------------------------------------------------------------------------------------


def feature_fingerprint(settings: FeatureStoreSettings) -> str:
    """A hash of what decides feature values: the declarations, the value-relevant settings, the code."""
    h = hashlib.sha256()
    h.update(repr(FEATURES).encode())
    relevant = {k: v for k, v in settings.model_dump(mode="json").items() if k not in _CONNECTION_FIELDS}
    h.update(json.dumps(relevant, sort_keys=True).encode())
    import features.definitions

    for path in sorted(Path(features.definitions.__file__).parent.rglob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def data_signature(layout: DataLayout) -> str:
    """A hash of the world's files (relative name, size, modification time): a rewritten world changes it."""
    h = hashlib.sha256()
    root = layout.root
    files = [root / "world.json", *root.glob("blocks.*"), *root.glob("docs.*")]
    files += sorted((root / "events").rglob("*")) if (root / "events").is_dir() else []
    for path in files:
        if path.is_file():
            st = path.stat()
            h.update(f"{path.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def training_table(
    layout: DataLayout,
    start: date,
    end: date,
    settings: FeatureStoreSettings,
    *,
    cache: bool = True,
    progress: Progress | None = None,
    embeddings: EmbeddingSettings | None = None,
) -> tuple[pa.Table, bool]:
    """The point-in-time training set of days [start, end] and whether it came from the cache.

    The M3 features come from models trained on earlier days only and user vectors as of each day's start
    (``features.embeddings.asof``; ``embeddings.as_of = False`` leaves them missing). What was trained is
    recorded in the table's schema metadata under ``m3_models``.

    The cache file's name carries the range and a hash of the feature fingerprint, the embedding settings
    and the world's files, so a changed feature definition, setting, features code or world builds afresh;
    older entries for the same range are removed then.
    """
    from features.catalog import BlockCatalog
    from features.dataset import build_training_set

    embeddings = embeddings or EmbeddingSettings()
    m3 = {k: v for k, v in embeddings.model_dump(mode="json").items() if k not in _EMBEDDING_IRRELEVANT}
    key = hashlib.sha256(
        f"{feature_fingerprint(settings)}|{json.dumps(m3, sort_keys=True)}|{data_signature(layout)}".encode()
    ).hexdigest()
    folder = layout.root / CACHE_DIR
    path = folder / f"training_{start}_{end}_{key[:16]}.parquet"
    if cache and path.is_file():
        return pq.read_table(path), True
    catalog = BlockCatalog.from_tables(layout.read_blocks(), layout.read_docs())
    vectors = None
    if embeddings.as_of:
        from features.embeddings.asof import train_daily_vectors

        vectors = train_daily_vectors(layout, start, end, catalog.ids, embeddings, progress=progress)
    table = build_training_set(
        layout, start, end, settings, catalog=catalog, progress=progress, vectors=vectors
    )
    models = json.dumps(vectors.models if vectors else []).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"m3_models": models})
    if cache:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(f"training_{start}_{end}_*.parquet"):
                stale.unlink()
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)  # readers never see a half-written file
        except OSError:
            pass  # a read-only world folder: no cache, same result
    return table, False


def rows_between(table: pa.Table, start: date, end: date) -> pa.Table:
    """The rows whose request falls on days [start, end]."""
    lo = pa.scalar(_midnight(start), TIMESTAMP)
    hi = pa.scalar(_midnight(end + timedelta(days=1)), TIMESTAMP)
    ts = table["ts"].cast(TIMESTAMP)
    return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))


def _midnight(day: date) -> int:

    return day_start_ms(day)


# Slices for evaluation --------------------------------------------------------------------------------------


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


# The adapter ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldLists:
    """Impressions as lists, plus what evaluation needs beside the features (never model inputs)."""

    data: ListwiseData  # labels = clicks, weights = clipped inverse propensities
    request_ids: np.ndarray  # (Q,) str
    block_ids: np.ndarray  # (N,) str
    positions: np.ndarray  # (N,) int, the logged position (the logging policy's order)


def feature_columns(personalized: bool = True) -> tuple[list[str], list[tuple[str, int]]]:
    """(dense names, [(categorical name, cardinality)]) in ``FEATURES`` order."""
    keep = [f for f in FEATURES if personalized or not f.name.startswith(USER_PREFIXES)]
    return [f.name for f in keep if not f.categorical], [
        (f.name, f.categorical) for f in keep if f.categorical
    ]


def to_listwise(
    table: pa.Table, *, personalized: bool = True, ips_clip: float = 20.0, slicer: Slicer | None = None
) -> WorldLists:
    """Lists (one per impression) from a training-set table; see the module docstring.

    Args:
        table: rows of ``features.dataset.build_training_set`` (any day range).
        personalized: False drops the user-dependent features.
        ips_clip: largest weight 1 / propensity.
        slicer: adds ``list_meta`` "entropy_bucket" and, if it carries truth, "diversity_bucket".
    """
    if table.num_rows == 0:
        raise WorldDataError("the training set has no rows for these days")
    if ips_clip < 1:
        raise WorldDataError(f"ips_clip must be >= 1 (inverse propensities are), got {ips_clip}")
    dense_names, cats = feature_columns(personalized)
    missing = [
        n for n in [*dense_names, *(c for c, _ in cats), "propensity", "click"] if n not in table.schema.names
    ]
    if missing:
        raise WorldDataError(
            f"the training set lacks columns {missing}: rebuild it with this code's features"
        )
    # Group each impression's rows together, in the logged order.
    table = table.sort_by([("ts", "ascending"), ("request_id", "ascending"), ("position", "ascending")])
    req = table["request_id"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])
    offsets = np.r_[starts, len(req)]
    if starts.size != len(set(req[starts].tolist())):
        raise WorldDataError("a request id appears at two different times in the training set")
    propensity = table["propensity"].to_numpy().astype(np.float64)
    if not ((propensity > 0) & (propensity <= 1)).all():
        raise WorldDataError("propensities must lie in (0, 1]")
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
        weights=np.minimum(1.0 / propensity, ips_clip),
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
        positions=table["position"].to_numpy().astype(np.int64),
    )


# One world, split -------------------------------------------------------------------------------------------


class WorldSource:
    """A world's training set (built once, cached) and its train / valid / test lists."""

    def __init__(
        self,
        root: Path | str,
        world: WorldSettings,
        features: FeatureStoreSettings,
        progress: Progress | None = None,
        embeddings: EmbeddingSettings | None = None,
    ) -> None:
        self.layout = DataLayout(Path(root))
        self.world = world
        self.features = features
        self.embeddings = embeddings or EmbeddingSettings()
        self.progress = progress
        self.split = day_split(self.layout, world)
        self._table: pa.Table | None = None
        self._slicers: dict[bool, Slicer] = {}
        self.from_cache: bool | None = None

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
    ) -> WorldLists:
        """The impressions of days [start, end] as lists; ``slices`` adds entropy (and truth) buckets."""
        lo, hi = days
        if lo < self.split.first or hi > self.split.last or hi < lo:
            raise WorldDataError(
                f"days {lo}..{hi} lie outside the world's usable range {self.split.first}..{self.split.last}"
            )
        return to_listwise(
            rows_between(self.table(), lo, hi),
            personalized=personalized,
            ips_clip=self.world.ips_clip,
            slicer=self.slicer(with_truth) if slices else None,
        )
