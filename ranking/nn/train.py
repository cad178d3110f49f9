"""Listwise training of a ``ScoringNet``: softmax cross-entropy per list, IPS weights, early stopping.

Loss of one list with scores s, labels y and row weights w (e.g. 1 / propensity):
``-sum_i w_i (y_i / sum_j y_j) log softmax(s)_i``. Lists without any positive label carry no signal under
this loss and are skipped. The epoch whose validation value (``stop_on``) is best is kept: its weights, or
with ``weight_ema`` its moving average of the weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from data.torch_optim import adam
from ranking.config import TorchTrainSettings
from ranking.dataset import ListwiseData
from ranking.evaluate import per_list_metrics, weighted_dcg
from ranking.nn.nets import ScoringNet


@dataclass
class Batch:
    dense: Tensor  # (B, L, F)
    cats: Tensor  # (B, L, C)
    vecs: Tensor  # (B, L, D)
    labels: Tensor  # (B, L)
    weights: Tensor  # (B, L)
    mask: Tensor  # (B, L)
    index: np.ndarray  # (B, L) row of each cell in the flat data


class TensorLists:
    """``ListwiseData`` as torch tensors once, gathered into padded batches of lists on demand."""

    def __init__(self, data: ListwiseData, targets: str = "labels") -> None:
        self.data = data
        self.dense = torch.from_numpy(data.dense)  # (N, F)
        self.cats = torch.from_numpy(data.categorical)  # (N, C)
        vecs = [data.vectors[k] for k in sorted(data.vectors)]
        flat = np.concatenate(vecs, axis=1) if vecs else np.zeros((data.n_rows, 0), np.float32)
        self.vecs = torch.from_numpy(np.ascontiguousarray(flat))  # (N, D)
        labels = np.exp2(data.labels) - 1.0 if targets == "gains" else data.labels
        self.labels = torch.from_numpy(labels.astype(np.float32))  # (N,) softmax targets before normalising
        self.weights = torch.from_numpy(data.weights)  # (N,)

    def batch(self, lists: np.ndarray) -> Batch:
        index, mask = self.data.padded_index(lists)  # (B, L)
        idx = torch.from_numpy(index)
        m = torch.from_numpy(mask)
        return Batch(
            dense=self.dense[idx],
            cats=self.cats[idx],
            vecs=self.vecs[idx],
            labels=self.labels[idx] * m,
            weights=self.weights[idx] * m,
            mask=m,
            index=index,
        )


def listwise_softmax_loss(scores: Tensor, labels: Tensor, weights: Tensor, mask: Tensor) -> Tensor:
    """Mean over lists with a positive label of the weighted softmax cross-entropy (see module docstring).

    Example:
        >>> s = torch.tensor([[2.0, 0.0, 5.0]])
        >>> y = torch.tensor([[1.0, 0.0, 0.0]])
        >>> m = torch.tensor([[True, True, False]])
        >>> round(listwise_softmax_loss(s, y, torch.ones(1, 3), m).item(), 4)  # -log(e^2 / (e^2 + 1))
        0.1269
    """
    logp = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)  # (B, L)
    logp = logp.masked_fill(~mask, 0.0)  # 0 * -inf would be NaN
    total = labels.sum(-1, keepdim=True)  # (B, 1)
    target = labels / total.clamp_min(1e-12)  # (B, L)
    per_list = -(weights * target * logp).sum(-1)  # (B,)
    has_signal = total.squeeze(-1) > 0  # (B,)
    return per_list[has_signal].sum() / has_signal.sum().clamp_min(1)


@torch.inference_mode()
def predict(net: ScoringNet, data: TensorLists, lists_per_batch: int = 512) -> np.ndarray:
    """(N,) scores of every row, in eval mode (no noise, no dropout, running batch-norm statistics)."""
    if net.training:  # eval() walks every module: a tenth of a served request's ranking time when repeated
        net.eval()
    out = np.zeros(data.data.n_rows, np.float64)
    for start in range(0, data.data.n_lists, lists_per_batch):
        b = data.batch(np.arange(start, min(start + lists_per_batch, data.data.n_lists)))
        scores = net(b.dense, b.cats, b.vecs, b.mask)  # (B, L)
        out[b.index[b.mask.numpy()]] = scores[b.mask].double().numpy()
    return out


@torch.no_grad()
def _validation_score(net: ScoringNet, valid: TensorLists, cfg: TorchTrainSettings) -> float:
    """Higher is better: NDCG@eval_k of the labels, its policy-aware form, or minus the weighted loss."""
    total, count = validation_totals(net, valid, cfg)
    return total / count if count > 0 else 0.0


@torch.no_grad()
def validation_totals(net: ScoringNet, valid: TensorLists, cfg: TorchTrainSettings) -> tuple[float, float]:
    """(sum, count) with ``sum / count`` = ``_validation_score``: shards of the validation lists add up.

    For ``pa_ndcg`` the pair is (DCG, ideal DCG) summed over the lists: the ratio of sums is the metric.
    """
    if cfg.stop_on == "ndcg":
        per_list = _per_list_ndcg(net, valid, cfg.eval_k)
        return float(per_list.sum()), int(per_list.size)
    if cfg.stop_on == "pa_ndcg":
        actual, ideal = weighted_dcg(valid.data, predict(net, valid), (cfg.eval_k,))[cfg.eval_k]
        return float(actual.sum()), float(ideal.sum())
    total, lists = _loss_totals(net, valid)
    return -total, lists


def _per_list_ndcg(net: ScoringNet, valid: TensorLists, k: int) -> np.ndarray:
    return per_list_metrics(valid.data, predict(net, valid), ks=[k])[f"ndcg@{k}"]


def _loss_totals(net: ScoringNet, valid: TensorLists) -> tuple[float, int]:
    net.eval()
    total, lists = 0.0, 0
    for start in range(0, valid.data.n_lists, 512):
        chunk = np.arange(start, min(start + 512, valid.data.n_lists))
        b = valid.batch(chunk)
        loss = listwise_softmax_loss(net(b.dense, b.cats, b.vecs, b.mask), b.labels, b.weights, b.mask)
        total += float(loss) * chunk.size
        lists += chunk.size
    return total, lists


class BestEpoch:
    """Early stopping: keeps the weights of the best validation score, and says when to stop."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.value, self.epoch, self.state, self.stale = -np.inf, 0, None, 0

    def update(self, value: float, epoch: int, net: ScoringNet) -> bool:
        """Record the score of ``epoch``; True when ``patience`` epochs in a row did not beat the best."""
        if value > self.value + 1e-6:
            self.value, self.epoch, self.stale = value, epoch, 0
            self.state = copy.deepcopy(net.state_dict())
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self, net: ScoringNet) -> None:
        """Load the best epoch's weights into ``net`` (no-op without a validation score)."""
        if self.state is not None:
            net.load_state_dict(self.state)


def train_net(
    net: ScoringNet, train: TensorLists, valid: TensorLists | None, cfg: TorchTrainSettings, seed: int
) -> dict:
    """Fit ``net`` in place; returns what happened (epochs, best epoch and metric, seconds, lists/s)."""
    torch.manual_seed(seed)  # dropout, noise and initial weights of lazily built layers
    rng = np.random.default_rng(seed)
    optimiser = adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sums = np.add.reduceat(train.data.labels, train.data.offsets[:-1])
    lists = np.flatnonzero(sums > 0)
    metric = stop_metric(cfg)
    best = BestEpoch(cfg.patience)
    averaged = weight_average(net, cfg)
    scored = net if averaged is None else averaged.module  # the weights validated and kept
    started = time.perf_counter()
    epoch_seconds: list[float] = []
    seen = 0
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):
        epoch_started = time.perf_counter()
        net.train()
        order = rng.permutation(lists)
        for start in range(0, order.size, cfg.lists_per_batch):
            chunk = order[start : start + cfg.lists_per_batch]
            if chunk.size < 2 and order.size >= 2:
                continue  # a 1-list batch gives batch norm too few rows to be meaningful
            b = train.batch(chunk)
            loss = listwise_softmax_loss(net(b.dense, b.cats, b.vecs, b.mask), b.labels, b.weights, b.mask)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if averaged is not None:
                averaged.update_parameters(net)
            seen += chunk.size
        stop = valid is not None and best.update(_validation_score(scored, valid, cfg), epoch, scored)
        epoch_seconds.append(time.perf_counter() - epoch_started)
        if stop:
            break
    if scored is not net:
        net.load_state_dict(scored.state_dict())  # the last average, when nothing was validated
    best.restore(net)
    seconds = time.perf_counter() - started
    validated = valid is not None
    return fit_info(epoch, best, validated, metric, cfg, int(lists.size), seen, seconds, epoch_seconds)


def weight_average(net: ScoringNet, cfg: TorchTrainSettings) -> AveragedModel | None:
    """A moving average of ``net``'s weights and batch-norm statistics (``cfg.weight_ema``), or None.

    Updated after every step; early stopping validates and keeps the average instead of the last step's
    weights, which a few noisy epochs leave far apart from seed to seed. The average weighs step i of n by
    decay^(n - i), normalised: the plain recursion started from the first step's weights would keep
    decay^(n-1) of them, over half of the model after a short log's 120 steps at 0.995.
    """
    if cfg.weight_ema is None:
        return None
    return AveragedModel(net, multi_avg_fn=_decaying_mean(cfg.weight_ema), use_buffers=True)


def _decaying_mean(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        # The n+1-th step's share of a normalised exponential mean: (1 - d) / (1 - d^(n+1)).
        share = (1.0 - decay) / (1.0 - decay ** (int(n_averaged) + 1))
        for mean, now in zip(averaged, current, strict=True):
            if torch.is_floating_point(mean):
                mean.lerp_(now, share)
            else:  # a counter (batch norm's num_batches_tracked): the live model's, not a truncated mean
                mean.copy_(now)

    return update


def stop_metric(cfg: TorchTrainSettings) -> str:
    """The name early stopping reports its validation value under."""
    return "loss" if cfg.stop_on == "loss" else f"{cfg.stop_on}@{cfg.eval_k}"


def fit_info(
    epochs: int,
    best: BestEpoch,
    validated: bool,
    metric: str,
    cfg: TorchTrainSettings,
    train_lists: int,
    seen: int,
    seconds: float,
    epoch_seconds: list[float],
) -> dict:
    """What a training run reports (the ranker's ``info_``, saved in its manifest); an epoch's seconds
    count its training steps and its validation."""
    # Reported as measured: the loss is minimised, the score maximised its negative.
    value = -best.value if cfg.stop_on == "loss" else best.value
    return {
        "epochs": epochs,
        "best_epoch": best.epoch if validated else epochs,
        f"valid_{metric}": round(value, 6) if validated else None,
        "train_lists": train_lists,
        "seconds": round(seconds, 3),
        "lists_per_second": round(seen / seconds, 1) if seconds > 0 else None,
        "epoch_seconds_p50": round(float(np.median(epoch_seconds)), 4) if epoch_seconds else None,
    }
