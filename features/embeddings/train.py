"""Train M3 to predict each next consumed block with a sampled softmax, early-stopped on later days.

Negatives: ``negatives`` blocks per batch, shared by its rows, drawn by (training count + 1) ** power; the
logits are corrected by log Q (Bengio & Senecal; Yi et al. 2019) so the learned scores estimate the full
softmax rather than penalizing popular blocks for being sampled often. A negative equal to a row's positive
is masked out.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from data.days import Progress
from data.torch_optim import adam
from data.torch_ranks import all_sum
from features.embeddings.config import EmbeddingSettings
from features.embeddings.encode import model_inputs, user_vectors
from features.embeddings.errors import NotEnoughData
from features.embeddings.evaluate import Scorer, evaluate
from features.embeddings.model import M3, MeanEncoder
from features.embeddings.sequences import Sequences

Encoder = M3 | MeanEncoder


@dataclass
class TrainReport:
    epochs: int = 0
    best_epoch: int = 0
    seconds: float = 0.0
    examples: int = 0
    examples_seen: int = 0
    stopped: str = "max_epochs"
    history: list[dict[str, float]] = field(default_factory=list)


def mean_encoder(n_items: int, settings: EmbeddingSettings) -> MeanEncoder:
    return MeanEncoder(n_items=n_items, dim=settings.dim, sparse=settings.sparse_table(n_items))


def m3_scorer(model: Encoder, seqs: Sequences, length: int) -> Scorer:
    """Scores of every block for each target event's history, as of its request time."""

    def score(idx: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        vecs, _ = user_vectors(model, seqs, seqs.user[idx], ends, seqs.req_ms[idx], length)
        with torch.no_grad():
            return model.score(torch.from_numpy(vecs))  # (n, B)

    return score


def build_model(n_items: int, settings: EmbeddingSettings) -> M3:
    """The M3 model the settings describe."""
    return M3(
        n_items=n_items,
        dim=settings.dim,
        short_items=settings.short_items,
        mid_items=settings.mid_items,
        dropout=settings.dropout,
        sparse=settings.sparse_table(n_items),
    )


def training_events(train: Sequences) -> np.ndarray:
    """The events of ``train`` a model learns from: clicks with an earlier click of the same user."""
    events = np.flatnonzero(train.position() >= 1)
    if len(events) == 0:
        raise NotEnoughData("no training click has an earlier click of the same user to learn from")
    return events


def optimisers_for(model: Encoder, settings: EmbeddingSettings) -> list[torch.optim.Optimizer]:
    """Adam for the dense weights; for a sparse item table, SparseAdam (Adam's moments and update on the
    rows a step used). A dense step reads and writes every row: on the large world's 241,920 blocks its
    backward and Adam step took 207 ms of 221, against 27 ms in all for the small world's 6,048."""
    table = model.items.weight
    dense = [p for p in model.parameters() if not (model.items.sparse and p is table)]
    out: list[torch.optim.Optimizer] = []
    if dense:
        out.append(adam(dense, lr=settings.lr, weight_decay=settings.weight_decay))
    if model.items.sparse:
        out.append(torch.optim.SparseAdam([table], lr=settings.lr))
    return out


class NegativeSampler:
    """Draws a batch's shared negatives by (training count + 1) ** power, with each block's log expected
    draws per batch (the log Q correction)."""

    def __init__(self, train: Sequences, settings: EmbeddingSettings) -> None:
        q = torch.from_numpy((train.item_counts()[1:] + 1.0) ** settings.negative_power)
        self.q = q / q.sum()  # (B,) sampling distribution over real blocks
        self.log_q = torch.log(self.q * settings.negatives).float()  # (B,)
        self.k = settings.negatives
        self.gen = torch.Generator().manual_seed(settings.seed)

    def draw(self) -> torch.Tensor:
        return torch.multinomial(self.q, self.k, replacement=True, generator=self.gen)  # (K,)


def training_step(
    model: Encoder,
    optimisers: list[torch.optim.Optimizer],
    train: Sequences,
    idx: np.ndarray,
    negatives: NegativeSampler,
    settings: EmbeddingSettings,
    *,
    batch: int | None = None,
    sync: Callable[[Encoder], None] | None = None,
) -> float:
    """One sampled-softmax step on the events ``idx`` of ``train``; returns their mean loss.

    Data-parallel ranks (``features.embeddings.ddp``) each pass their part of a batch of ``batch`` events
    and a ``sync`` that sums the ranks' gradients before the step: each part's loss is its share of the
    batch's mean. A rank with no events still draws the negatives and joins the sum."""
    negs = negatives.draw()
    for opt in optimisers:
        opt.zero_grad()
    loss = torch.zeros(())
    if len(idx):
        items, gaps, ctx = model_inputs(train, train.user[idx], idx, train.req_ms[idx], settings.max_history)
        target = torch.from_numpy(train.item[idx] - 1)  # (n,) 0-based block
        log_q = negatives.log_q
        user, _ = model(items, gaps, ctx)  # (n, D)
        pos = (user * model.item_rows(target)).sum(1) - log_q[target]  # (n,)
        neg = user @ model.item_rows(negs).T - log_q[negs][None, :]  # (n, K)
        neg = neg.masked_fill(negs[None, :] == target[:, None], float("-inf"))
        logits = torch.cat([pos[:, None], neg], dim=1)  # (n, 1 + K)
        loss = F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long))
        (loss * (len(idx) / (batch or len(idx)))).backward()
    if sync is not None:
        sync(model)
    for opt in optimisers:
        opt.step()
    return float(loss.detach())


class GradientSync(Protocol):
    """What a data-parallel rank gives ``run_epochs``: a sum of gradients over the ranks after each backward
    that also agrees on stopping (each rank sets ``out_of_time`` before the step, all read ``stop`` after)."""

    out_of_time: bool
    stop: bool

    def __call__(self, model: Encoder) -> None: ...


def run_epochs(
    model: Encoder,
    train: Sequences,
    settings: EmbeddingSettings,
    validate: Callable[[Encoder], float],
    *,
    rank: int = 0,
    world: int = 1,
    sync: GradientSync | None = None,
    progress: Progress | None = None,
    label: str = "m3",
) -> TrainReport:
    """The epochs of one process (``fit``) or of one data-parallel rank (``features.embeddings.ddp``):
    batches of every event with a history in a seeded order, ``validate`` after each epoch, early stopping,
    and the best epoch's weights restored into ``model``.

    A rank takes every ``world``-th event of each batch from ``rank`` on and passes ``sync``; its loss
    totals are summed over the ranks, so every rank writes the same report."""
    report_progress = progress or (lambda stage, done, total: None)
    rng = np.random.default_rng(settings.seed)  # the same order of events on every rank
    examples = training_events(train)
    optimisers = optimisers_for(model, settings)
    negatives = NegativeSampler(train, settings)
    metric = f"recall@{settings.eval_k}"
    report = TrainReport(examples=len(examples))
    best, best_state, waited = -1.0, copy.deepcopy(model.state_dict()), 0
    start = time.perf_counter()
    n_batches = (len(examples) + settings.batch_size - 1) // settings.batch_size

    def out_of_time() -> bool:
        limit = settings.max_train_seconds
        return limit is not None and time.perf_counter() - start > limit

    stop = False
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = rng.permutation(examples)
        total_loss, seen = 0.0, 0
        for b in range(n_batches):
            batch = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            mine = batch[rank::world]
            if sync is not None:  # carried in the step's sum: all ranks stop after the same step
                sync.out_of_time = out_of_time()
            loss = training_step(
                model, optimisers, train, mine, negatives, settings, batch=len(batch), sync=sync
            )
            total_loss += loss * len(mine)
            seen += len(mine)
            report_progress(f"{label} epoch {epoch}", b + 1, n_batches)
            # Large logs: an epoch may not fit the budget; validate what was learned.
            stop = sync.stop if sync is not None else out_of_time()
            if stop:
                break
        if sync is not None:
            total_loss, seen = all_sum([total_loss, seen])
        value = validate(model)
        report.history.append({"epoch": epoch, "loss": total_loss / max(seen, 1), metric: value})
        report.examples_seen += int(seen)
        report.epochs = epoch
        if value > best:
            best, best_state, waited, report.best_epoch = value, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            waited += 1
        if waited >= settings.patience:
            report.stopped = "patience"
            break
        # Time may run out during validation too; ranks agree on it through one more sum.
        late = all_sum([float(out_of_time())])[0] > 0 if sync is not None else out_of_time()
        if stop or late:
            report.stopped = "max_train_seconds"
            break
    report.seconds = round(time.perf_counter() - start, 2)
    model.load_state_dict(best_state)
    return report


def fit(
    train: Sequences,
    valid: Sequences,
    valid_targets: np.ndarray,
    settings: EmbeddingSettings,
    *,
    progress: Progress | None = None,
    build: Callable[[int, EmbeddingSettings], Encoder] = build_model,
    label: str = "m3",
) -> tuple[Encoder, TrainReport]:
    """Train on every event of ``train`` that has a history; keep the epoch with the best validation
    recall@k on ``valid_targets`` (events of ``valid``, which must not be in ``train``).

    ``build(n_items, settings)`` makes the encoder: M3 by default, ``mean_encoder`` for the baselines'
    own item table.
    """
    torch.manual_seed(settings.seed)
    training_events(train)  # before the model is built: no data, no model
    model = build(train.n_items, settings)
    metric = f"recall@{settings.eval_k}"

    def validate(m: Encoder) -> float:
        return evaluate(m3_scorer(m, valid, settings.max_history), valid, valid_targets, settings.eval_k)[
            metric
        ]

    report = run_epochs(model, train, settings, validate, progress=progress, label=label)
    model.eval()
    return model, report
