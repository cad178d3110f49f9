"""M3 vectors as of each day's start, for point-in-time ranker training sets.

A training row for a request on day d may only use what was known when day d began. For the M3 features
that means two things:

- the user vector is computed from the user's consumed blocks strictly before day d's start (as of that
  instant), like the daily batch snapshot the server would have served that day;
- the model (its block vectors and encoder) was trained only on days before d, so a click never shaped the
  vectors its own row is scored with.

Models are retrained on an expanding window: the first one once ``as_of_first_days`` logged days exist
(all but the last of them for training, the last for early stopping), then every ``as_of_retrain_days``
days, each for at most ``as_of_epochs`` epochs (an epoch bound, unlike a time cap, keeps the training set
reproducible). Day d uses the newest model whose cutoff is <= d's start; days before the first cutoff get
no vectors (their rows say ``m3_missing = 1``), as a portal that has not trained M3 yet would serve them.

The vectors go through the online encoding (float16 bytes in the user hash under ``v``/``m``, float16 block
vectors widened to float32), so ``features.definitions.compute`` reads the same numbers as at serving time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import torch

from data.days import DAY_MS, Progress, day_start_ms
from data.layout import DataLayout
from features.block_attributes import BlockVectors
from features.definitions import VECTOR_DTYPE, VECTOR_FIELD, VERSION_FIELD
from features.embeddings.config import EmbeddingSettings
from features.embeddings.encode import latest_user_vectors
from features.embeddings.errors import NotEnoughData
from features.embeddings.evaluate import held_out_targets
from features.embeddings.sequences import Sequences, build_sequences
from features.embeddings.train import fit
from features.keys import Keys
from features.packing import split_blob


@dataclass
class DailyVectors:
    """Per-model block vectors and, per day, the user vectors as of that day's start (float16 bytes)."""

    blocks: dict[str, BlockVectors] = field(default_factory=dict)  # version -> catalogue-ordered vectors
    users: dict[date, tuple[str, dict[str, bytes]]] = field(default_factory=dict)  # day -> (version, vecs)
    models: list[dict] = field(default_factory=list)  # what was trained, for reports

    def user_hashes(self, day: date, keys: Keys) -> dict[str, dict[str, bytes]]:
        """The user-hash fields (``v`` chunks and ``m``) of every user with a vector on ``day``."""
        if day not in self.users:
            return {}
        version, vecs = self.users[day]
        tag = version.encode()
        return {
            keys.user(u): {**split_blob(VECTOR_FIELD, raw), VERSION_FIELD: tag} for u, raw in vecs.items()
        }


def cutoffs(days: list[date], start: date, end: date, settings: EmbeddingSettings) -> list[date]:
    """Logged days at which a model is trained (on the days before it), for rows on days [start, end]."""
    first = settings.as_of_first_days
    out = [d for i, d in enumerate(days) if i >= first and (i - first) % settings.as_of_retrain_days == 0]
    # A model whose cutoff is after ``end`` serves no row; the one before ``start`` serves the first days.
    before = [d for d in out if d <= start]
    return ([before[-1]] if before else []) + [d for d in out if start < d <= end]


def block_vectors(
    version: str, model_block_ids: np.ndarray, table: np.ndarray, catalog_ids: list[str]
) -> BlockVectors:
    """A model's item table in catalogue order, rounded through the stored float16 encoding."""
    index = {b: i for i, b in enumerate(model_block_ids.tolist())}
    rows = np.array([index.get(b, -1) for b in catalog_ids], dtype=np.int64)
    present = rows >= 0
    matrix = np.zeros((len(catalog_ids), table.shape[1]), dtype=np.float32)
    matrix[present] = table[rows[present]].astype(VECTOR_DTYPE).astype(np.float32)
    return BlockVectors.from_rows(version, matrix, present)


def train_daily_vectors(
    layout: DataLayout,
    start: date,
    end: date,
    catalog_ids: list[str],
    settings: EmbeddingSettings,
    *,
    progress: Progress | None = None,
) -> DailyVectors:
    """Train the point-in-time models for rows on days [start, end] and compute each day's user vectors.

    Nothing from day d or later enters day d's vectors: sequences are cut at the model's cutoff for
    training and at d's start for the user vectors.
    """
    out = DailyVectors()
    days = [d for d in layout.days("impressions") if d <= end]
    plan = cutoffs(days, start, end, settings)
    if not settings.as_of or not plan:
        return out
    torch.set_num_threads(settings.threads)
    block_ids = np.array(layout.read_blocks(validate_rows=False)["id"].to_pylist(), dtype=object)
    full = build_sequences(layout, block_ids, before_ms=day_start_ms(end) + DAY_MS, validate_rows=False)
    capped = settings.model_copy(
        update={"max_train_seconds": settings.as_of_max_train_seconds, "epochs": settings.as_of_epochs}
    )
    for n, cutoff in enumerate(plan):
        until = plan[n + 1] if n + 1 < len(plan) else None
        served = [d for d in days if d >= max(cutoff, start) and (until is None or d < until)]
        t0 = time.perf_counter()
        try:
            model, report = _fit_before(full, days, cutoff, capped, progress)
        except NotEnoughData as exc:
            out.models.append({"cutoff": cutoff.isoformat(), "skipped": str(exc)})
            continue
        version = f"m3-asof-{cutoff.isoformat()}"
        table = model.item_vectors().detach().numpy()
        out.blocks[version] = block_vectors(version, block_ids, table, catalog_ids)
        for d in served:
            as_of = day_start_ms(d)
            out.users[d] = (version, _user_vectors(model, full.before(as_of), as_of, settings))
        out.models.append(
            {
                "cutoff": cutoff.isoformat(),
                "version": version,
                "days": [d.isoformat() for d in served],
                "train_seconds": report.seconds,
                "epochs": report.epochs,
                "best_epoch": report.best_epoch,
                "stopped": report.stopped,
                "valid": report.history[report.best_epoch - 1] if report.history else None,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    return out


def _fit_before(
    full: Sequences, days: list[date], cutoff: date, settings: EmbeddingSettings, progress: Progress | None
) -> tuple[torch.nn.Module, object]:
    """Train on the logged days before ``cutoff`` but the last, early-stop on that last day."""
    earlier = [d for d in days if d < cutoff]
    if len(earlier) < 2:
        raise NotEnoughData(f"fewer than 2 logged days before {cutoff}")
    valid_start, cutoff_ms = day_start_ms(earlier[-1]), day_start_ms(cutoff)
    train, valid = full.before(valid_start), full.before(cutoff_ms)
    targets = held_out_targets(valid, valid_start, cutoff_ms, settings.as_of_valid_events, settings.seed)
    if len(targets) == 0:
        raise NotEnoughData(f"no validation click on {earlier[-1]} with an earlier click of the same user")
    return fit(train, valid, targets, settings, progress=progress, label=f"m3 before {cutoff}")


def _user_vectors(
    model: torch.nn.Module, seqs: Sequences, as_of_ms: int, settings: EmbeddingSettings
) -> dict[str, bytes]:
    """user id -> float16 vector bytes from each user's whole history in ``seqs`` (cut before as_of_ms)."""
    if len(seqs.user_ids) == 0:
        return {}
    users = np.arange(len(seqs.user_ids))
    vecs, _ = latest_user_vectors(model, seqs, users, as_of_ms, settings.max_history)  # type: ignore[arg-type]
    raw = vecs.astype(VECTOR_DTYPE)
    return {u: raw[i].tobytes() for i, u in enumerate(seqs.user_ids.tolist())}
