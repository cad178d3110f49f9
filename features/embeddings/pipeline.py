"""Train M3 and its baselines on a data folder, evaluate them on held-out days, save the model and write
vectors to the feature store; refresh active users' vectors later without retraining."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import date
from typing import Any

import numpy as np
import torch

from data.days import NotEnoughDays, Progress, day_start_ms, split_days
from data.engine import EngineSettings, engine_client
from data.layout import DataLayout
from features.embeddings.baselines import average_scorer, multi_scorer, popular_scorer
from features.embeddings.config import EmbeddingSettings
from features.embeddings.encode import latest_user_vectors
from features.embeddings.errors import EmbeddingError, ModelFormatError, NotEnoughData
from features.embeddings.evaluate import ends_before_request, evaluate, held_out_targets
from features.embeddings.model import M3
from features.embeddings.persist import load_current, save_model
from features.embeddings.sequences import Sequences, build_sequences
from features.embeddings.store import read_refresh_state, write_refresh_state, write_vectors
from features.embeddings.train import fit, m3_scorer, mean_encoder
from features.store import RedisFeatureStore

METHODS = ("m3", "popular", "average", "multi")


def vocabulary(layout: DataLayout, *, validate_rows: bool = True) -> np.ndarray:
    return np.array(layout.read_blocks(validate_rows=validate_rows)["id"].to_pylist(), dtype=object)


def compare(
    model: M3,
    baseline_vecs: np.ndarray,
    seqs: Sequences,
    targets: np.ndarray,
    popular_before_ms: int,
    settings: EmbeddingSettings,
    methods: tuple[str, ...] = METHODS,
    ends: np.ndarray | None = None,
) -> dict:
    """recall@k and MRR of M3 and every baseline on the same target clicks, ranking all blocks; the
    average and multi baselines score with ``baseline_vecs`` (B, D) as the item vectors."""
    scorers = {
        "m3": lambda: m3_scorer(model, seqs, settings.max_history),
        "popular": lambda: popular_scorer(seqs.item_counts(popular_before_ms)),
        "average": lambda: average_scorer(seqs, baseline_vecs),
        "multi": lambda: multi_scorer(seqs, baseline_vecs, settings.windows_days),
    }
    return {name: evaluate(scorers[name](), seqs, targets, settings.eval_k, ends) for name in methods}


def train_user_embeddings(
    layout: DataLayout,
    settings: EmbeddingSettings,
    store: RedisFeatureStore | None = None,
    *,
    until: date | None = None,
    validate_rows: bool = True,
    progress: Progress | None = None,
    engine: EngineSettings | None = None,
) -> dict[str, Any]:
    """Train on the first days, early-stop on the next ``valid_days``, report on the last ``test_days``;
    save the model (made current) and, with a store, write every user's and block's vector.

    Args:
        until: ignore days from this one on (as if the logs ended the day before).
        engine: train M3 data-parallel on this engine's workers (``features.embeddings.ddp``), the
            cluster up only while M3 trains; the baselines' own table still trains here.

    Returns:
        {"version", "folder", "metrics": {method: {"recall@k", "mrr", "events"}}, "train": {...},
        "data_range": {...}, "written": keys written, "engine": the ranks (None: in process)}
    """
    torch.set_num_threads(settings.threads)
    days = [d for d in layout.days("impressions") if until is None or d < until]
    try:
        split = split_days(days, valid_days=settings.valid_days, test_days=settings.test_days)
    except NotEnoughDays as exc:
        raise NotEnoughData(exc.reason) from exc
    block_ids = vocabulary(layout, validate_rows=validate_rows)
    full = build_sequences(layout, block_ids, before_ms=split.end_ms, validate_rows=validate_rows)
    train, valid = full.before(split.valid_start_ms), full.before(split.test_start_ms)
    valid_targets = held_out_targets(
        valid, split.valid_start_ms, split.test_start_ms, settings.eval_max_events, settings.seed
    )
    test_targets = held_out_targets(
        full, split.test_start_ms, split.end_ms, settings.eval_max_events, settings.seed
    )
    if len(valid_targets) == 0 or len(test_targets) == 0:
        raise NotEnoughData(
            f"no validation or test click with an earlier click of the same user ({split.to_json()})"
        )
    ranks = None
    if engine is not None:
        from features.embeddings.ddp import fit_on_engine

        with engine_client(engine) as client:
            model, report, ranks = fit_on_engine(client, train, valid, valid_targets, settings)
    else:
        model, report = fit(train, valid, valid_targets, settings, progress=progress)
    m3_table = model.item_vectors().detach().numpy()
    baseline_report = None
    if settings.baseline_table == "trained":
        mean, baseline_report = fit(
            train, valid, valid_targets, settings, progress=progress, build=mean_encoder, label="mean"
        )
        baseline_vecs = mean.item_vectors().detach().numpy()
    else:
        baseline_vecs = m3_table
    t0 = time.perf_counter()
    metrics = compare(model, baseline_vecs, full, test_targets, split.test_start_ms, settings)
    if settings.baseline_table == "trained":  # also on M3's own table, for the record
        also = compare(
            model, m3_table, full, test_targets, split.test_start_ms, settings, ("average", "multi")
        )
        metrics["average_m3_table"], metrics["multi_m3_table"] = also["average"], also["multi"]
    # Stricter: histories cut at the target's request time (no clicks from the same page), as a ranker sees.
    ends = ends_before_request(full, test_targets)
    keep = ends > full.offsets[full.user[test_targets]]
    before_request = compare(
        model, baseline_vecs, full, test_targets[keep], split.test_start_ms, settings, ends=ends[keep]
    )
    eval_seconds = round(time.perf_counter() - t0, 2)
    as_of = int(full.ts_ms.max())
    users = np.arange(len(full.user_ids))
    vecs, gates = latest_user_vectors(model, full, users, as_of, settings.max_history)
    folder = save_model(
        model,
        block_ids,
        settings.model_dir,
        settings,
        extra={
            "data_range": {**split.to_json(), "vectors_as_of_ms": as_of},
            "metrics": metrics,
            "metrics_before_request": before_request,
            "train": asdict(report),
            "engine": ranks,
            "baseline_table": settings.baseline_table,
            "baseline_train": asdict(baseline_report) if baseline_report else None,
            "eval_seconds": eval_seconds,
            "mean_gate": dict(zip(("short", "mid", "long"), gates.mean(0).round(4).tolist(), strict=True)),
        },
    )
    version = folder.name
    written = 0
    if store is not None:
        written = write_vectors(
            store,
            version,
            users=dict(zip(full.user_ids.tolist(), vecs, strict=True)),
            blocks=dict(zip(block_ids.tolist(), m3_table, strict=True)),
        )
        write_refresh_state(store, version, as_of + 1)
    return {
        "version": version,
        "folder": str(folder),
        "metrics": metrics,
        "metrics_before_request": before_request,
        "train": asdict(report),
        "engine": ranks,
        "baseline_train": asdict(baseline_report) if baseline_report else None,
        "data_range": split.to_json(),
        "written": written,
    }


def refresh_user_vectors(
    layout: DataLayout,
    store: RedisFeatureStore,
    settings: EmbeddingSettings,
    *,
    since: date | int | None = None,
    validate_rows: bool = True,
) -> dict[str, Any]:
    """Recompute, with the current model and no training, the vectors of users who consumed a block at or
    after ``since`` (a day, epoch ms, or by default where the last training or refresh stopped), from
    their whole history as of the newest event, and write them."""
    torch.set_num_threads(settings.threads)
    saved = load_current(settings.model_dir)
    if since is None:
        state = read_refresh_state(store)
        if state is None:
            raise EmbeddingError(
                "no earlier refresh or training recorded in this feature store; pass --since YYYY-MM-DD"
            )
        since_ms = int(state["until_ms"])
    else:
        since_ms = day_start_ms(since) if isinstance(since, date) else int(since)
    seqs = build_sequences(layout, saved.block_ids, validate_rows=validate_rows)
    active = np.unique(seqs.user[seqs.ts_ms >= since_ms])
    if len(active) == 0:
        return {"version": saved.version, "since_ms": since_ms, "users": 0}
    as_of = int(seqs.ts_ms.max())
    length = saved.settings.max_history
    vecs, _ = latest_user_vectors(saved.model, seqs, active, as_of, length)
    write_vectors(store, saved.version, users=dict(zip(seqs.user_ids[active].tolist(), vecs, strict=True)))
    write_refresh_state(store, saved.version, as_of + 1)
    return {"version": saved.version, "since_ms": since_ms, "until_ms": as_of + 1, "users": len(active)}


def write_current_vectors(
    layout: DataLayout, store: RedisFeatureStore, settings: EmbeddingSettings, *, validate_rows: bool = True
) -> dict[str, Any] | None:
    """Write every user's (as of the newest event) and every block's vector of the current saved model, when
    it was trained over this data's block vocabulary; None when there is no such model. For a feature store
    rebuilt from scratch (``features build`` clears it) without retraining."""
    torch.set_num_threads(settings.threads)
    try:
        saved = load_current(settings.model_dir)
    except ModelFormatError:
        return None
    block_ids = vocabulary(layout, validate_rows=validate_rows)
    if saved.block_ids.tolist() != block_ids.tolist():
        return None  # trained on other data
    seqs = build_sequences(layout, saved.block_ids, validate_rows=validate_rows)
    as_of = int(seqs.ts_ms.max()) if seqs.n_events else 0
    users = np.arange(len(seqs.user_ids))
    length = saved.settings.max_history
    vecs, _ = latest_user_vectors(saved.model, seqs, users, as_of, length)
    table = saved.model.item_vectors().detach().numpy()
    written = write_vectors(
        store,
        saved.version,
        users=dict(zip(seqs.user_ids.tolist(), vecs, strict=True)),
        blocks=dict(zip(saved.block_ids.tolist(), table, strict=True)),
    )
    write_refresh_state(store, saved.version, as_of + 1)
    return {"version": saved.version, "written": written}
