"""Point-in-time training sets of a world's days, cached as Arrow IPC files under ``<world>/.cache/ranking/``.

``features.dataset.build_training_set`` gives one row per shown (impression, block) with its features as of
the request's time. Building it takes about a minute for the small world, so it is cached, keyed by the day
range, a fingerprint of the feature definitions, the feature settings and the features package's code, the
embedding settings, the world's files (names, sizes, modification times), the retrieval replay and
candidates, and the share of requests kept (``ranking.world.max_requests``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.days import Progress, day_start_ms
from data.io import read_arrow, write_arrow_atomic
from data.layout import DataLayout
from data.schemas import TIMESTAMP
from features.config import FeatureStoreSettings
from features.definitions import FEATURES
from features.embeddings.config import EmbeddingSettings

if TYPE_CHECKING:
    from data.engine import EngineSettings
    from features.block_attributes import BlockAttributes
    from features.dataset import RetrievalReplay
    from features.embeddings.asof import DailyVectors

CACHE_DIR = Path(".cache") / "ranking"
#: Cached tables are Arrow IPC files (``data.io.write_arrow_atomic``): on the small world written in about
#: 1 s and read in 0.3-1.8 s, where the zstd Parquet they replaced took 8.3 s and 4.8 s.
CACHE_SUFFIX = ".arrow"

log = logging.getLogger("smartblock.ranking")
# Tables kept per day range (the small world's with candidates: 360 MB): a default and the variants beside it.
CACHE_ENTRIES_PER_RANGE = 3
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
    "stream_impression_wait_s",
}

# Embedding settings that cannot change a point-in-time M3 vector.
_EMBEDDING_IRRELEVANT = {"model_dir", "threads", "engine_ranks"}  # how, not what, M3 trains


def feature_fingerprint(settings: FeatureStoreSettings) -> str:
    """A hash of what decides feature values: the declarations, the value-relevant settings, the code."""
    h = hashlib.sha256()
    h.update(repr(FEATURES).encode())
    relevant = {k: v for k, v in settings.model_dump(mode="json").items() if k not in _CONNECTION_FIELDS}
    h.update(json.dumps(relevant, sort_keys=True).encode())
    import features.definitions

    h.update(package_digest(features.definitions.__file__).encode())
    return h.hexdigest()[:16]


def package_digest(module_file: str) -> str:
    """A hash of every file of the package holding ``module_file``, its data included (the encoders'
    calibration texts): its code decides the values a cached training set holds (the features package's,
    the retrieval package's for the ``rel_*`` columns)."""
    h = hashlib.sha256()
    for path in sorted(Path(module_file).parent.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
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
    retrieval: RetrievalReplay | None = None,
    candidates: int = 0,
    engine: EngineSettings | None = None,
    max_requests: int | None = None,
) -> tuple[pa.Table, bool]:
    """The point-in-time training set of days [start, end] and whether it came from the cache.

    The M3 features come from models trained on earlier days only and user vectors as of each day's start
    (``features.embeddings.asof``; ``embeddings.as_of = False`` leaves them missing). What was trained is
    recorded in the table's schema metadata under ``m3_models``.

    The cache file's name carries the range and a hash of the feature fingerprint, the embedding settings
    and the world's files, so a changed feature definition, setting, features code or world builds afresh;
    a range keeps its ``CACHE_ENTRIES_PER_RANGE`` most recently used entries. With ``retrieval`` (and
    ``candidates``), rows carry the ``rel_*`` features and lists hold unshown candidates
    (``features.dataset``); both enter the key.

    ``engine``: the days are built in parts on the engine (``features.dataset_parts``) when it has more than
    one worker and the range more than one day; the table is the same row for row.

    ``max_requests``: when the range logged more impressions, the rows of a share of them
    (``request_sample``), drawn by request id; the share enters the key and the schema metadata
    (``request_sample``).
    """
    from features.block_attributes import BlockAttributes
    from features.dataset import build_training_set

    embeddings = embeddings or EmbeddingSettings()
    m3 = {k: v for k, v in embeddings.model_dump(mode="json").items() if k not in _EMBEDDING_IRRELEVANT}
    replay = f"{retrieval.key}|{candidates}" if retrieval is not None else "none"
    sample = request_sample(layout, start, end, max_requests)
    if sample < 1.0:  # the key of an unsampled table stays what it was before sampling existed
        replay += f"|sample {sample!r}"
    identity = (feature_fingerprint(settings), json.dumps(m3, sort_keys=True), data_signature(layout), replay)
    key = hashlib.sha256("|".join(identity).encode()).hexdigest()
    folder = layout.root / CACHE_DIR
    path = folder / f"training_{start}_{end}_{key[:16]}{CACHE_SUFFIX}"
    if cache and path.is_file():
        with contextlib.suppress(OSError):  # a read-only world folder: used, but not marked
            os.utime(path)  # marks it used: eviction keeps the most recently used entries of a range
        try:
            seen = path.stat()
            return read_arrow(path), True
        except FileNotFoundError:
            pass  # evicted by another process since: build it again
        except pa.ArrowException as exc:
            # Cut short or changed on disk (a full disk, a copy interrupted): written atomically, so it was
            # whole once. Removed unless another process has replaced it meanwhile; built and written again.
            log.warning("training-set cache %s is unreadable (%s): building it again", path, exc)
            with contextlib.suppress(OSError):
                now = path.stat()
                if (now.st_ino, now.st_mtime_ns) == (seen.st_ino, seen.st_mtime_ns):
                    path.unlink()
        except OSError as exc:  # not readable here (permissions, no memory map): build, keep the file
            log.warning("training-set cache %s cannot be read (%s): building the table", path, exc)
    catalog = BlockAttributes.from_tables(layout.read_blocks(), layout.read_docs())
    vectors = None
    if embeddings.as_of:
        from features.embeddings.asof import train_daily_vectors

        vectors = train_daily_vectors(layout, start, end, catalog.ids, embeddings, progress=progress)
    parts = engine_parts(engine) if engine is not None and end > start else 1
    parts_dir = _parts_folder(path, cache) if parts > 1 else None
    if engine is not None and parts_dir is not None:
        try:
            table = _on_engine(
                engine,
                parts,
                layout,
                start,
                end,
                settings,
                parts_dir,
                catalog=catalog,
                progress=progress,
                vectors=vectors,
                retrieval=retrieval,
                candidates=candidates,
                sample=sample,
            )
        finally:
            if not cache:  # a scratch folder: nothing to resume from
                shutil.rmtree(parts_dir, ignore_errors=True)
    else:
        table = build_training_set(
            layout,
            start,
            end,
            settings,
            catalog=catalog,
            progress=progress,
            vectors=vectors,
            retrieval=retrieval,
            candidates=candidates,
            sample=sample,
        )
    models = json.dumps(vectors.models if vectors else []).encode()
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"m3_models": models, b"request_sample": repr(sample).encode()}
    )
    if cache:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _evict(folder, start, end, keep=CACHE_ENTRIES_PER_RANGE - 1)
            write_arrow_atomic(table, path)  # readers never see a half-written file
        except OSError:
            pass  # a read-only world folder: no cache, same result
        if parts_dir is not None:  # the parts are kept until the whole table is: a failure above resumes
            shutil.rmtree(parts_dir, ignore_errors=True)
    return table, False


def request_sample(layout: DataLayout, start: date, end: date, max_requests: int | None) -> float:
    """The share of the impressions logged on days [start, end] a training set keeps rows for: all of them
    (1.0) up to ``max_requests`` (None: no bound), else ``max_requests`` over their number."""
    if max_requests is None:
        return 1.0
    logged = sum(layout.day_rows("impressions", d) for d in layout.days("impressions") if start <= d <= end)
    return 1.0 if logged <= max_requests else max_requests / logged


def _evict(folder: Path, start: date, end: date, keep: int) -> None:
    """Remove all but the ``keep`` most recently used cached tables of days [start, end].

    A key's table never becomes valid again once its world or code changed, but two settings of the same
    range (24 candidates and 48, say) are both live: compared side by side, each build used to delete the
    other's, and every switch cost a full rebuild.
    """
    for old in folder.glob(f"training_{start}_{end}_*.parquet"):  # the format before CACHE_SUFFIX
        with contextlib.suppress(OSError):
            old.unlink()
    used: list[tuple[float, Path]] = []
    for entry in folder.glob(f"training_{start}_{end}_*{CACHE_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):  # another process evicted it meanwhile
            used.append((entry.stat().st_mtime, entry))
    for _, stale in sorted(used, reverse=True)[keep:]:
        stale.unlink(missing_ok=True)


def rows_between(table: pa.Table, start: date, end: date) -> pa.Table:
    """The rows whose request falls on days [start, end]."""
    lo, hi = day_start_ms(start), day_start_ms(end + timedelta(days=1))
    ts = table["ts"].cast(TIMESTAMP)
    if ts.null_count == 0:
        # A built training set runs in time order: its days are a slice, the same rows without copying
        # every column (a filter of the small world's training days took about 2 s).
        ms = ts.cast(pa.int64()).to_numpy()
        if bool((ms[1:] >= ms[:-1]).all()):
            first, last = np.searchsorted(ms, [lo, hi], side="left")
            return table.slice(int(first), int(last - first))
    lo_ts, hi_ts = pa.scalar(lo, TIMESTAMP), pa.scalar(hi, TIMESTAMP)
    return table.filter(pc.and_(pc.greater_equal(ts, lo_ts), pc.less(ts, hi_ts)))


def engine_parts(engine: EngineSettings) -> int:
    """How many training-set parts may run at once: a running cluster's workers decide; a local cluster
    runs no more than its workers, nor than the free memory holds (``PART_MEMORY_BYTES`` each)."""
    if not engine.is_local:
        return 2**31  # plan_parts takes the cluster's worker count
    import psutil

    from features.dataset_parts import PART_MEMORY_BYTES

    return min(engine.local_workers(), psutil.virtual_memory().available // PART_MEMORY_BYTES)


def _parts_folder(path: Path, cache: bool) -> Path | None:
    """Where the parts go: beside the cache entry (a rerun resumes), else a scratch folder; None when
    neither can be written (a read-only world folder without a cache: the in-process build)."""
    try:
        if not cache:
            return Path(tempfile.mkdtemp(prefix="training-parts-"))
        folder = path.with_suffix(".parts")
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:
        return None


def _on_engine(
    engine: EngineSettings,
    max_parts: int,
    layout: DataLayout,
    start: date,
    end: date,
    settings: FeatureStoreSettings,
    parts: Path,
    *,
    catalog: BlockAttributes,
    progress: Progress | None,
    vectors: DailyVectors | None,
    retrieval: RetrievalReplay | None,
    candidates: int,
    sample: float,
) -> pa.Table:
    """``build_training_set`` in at most ``max_parts`` parts on the engine, into ``parts`` (named by the
    cache key, so a rerun after a failure builds only the missing parts)."""
    from data.engine import engine_client
    from features.dataset_parts import build_training_set_on_engine

    for stale in parts.parent.glob(f"training_{start}_{end}_*.parts"):
        if stale != parts:  # another key's leftovers for this range: never resumable
            shutil.rmtree(stale, ignore_errors=True)
    with engine_client(engine) as client:
        return build_training_set_on_engine(
            client,
            layout,
            start,
            end,
            settings,
            parts,
            catalog=catalog,
            progress=progress,
            vectors=vectors,
            retrieval=retrieval,
            candidates=candidates,
            max_parts=max_parts,
            sample=sample,
        )
