"""Data-parallel training of a ``ScoringNet``: one rank of a ``torch.distributed`` group (gloo on CPU).

Every rank holds a full copy of the network and its own shard of the training lists (whole lists: one list
is never split, the listwise loss compares its rows). A training step:

1. Each rank takes its part of the step's lists (its shard, shuffled each epoch, cut into as many parts as
   one process would take batches over all the lists), and computes the mean listwise loss over them and
   its gradients.
2. One ``all_reduce`` sums every rank's gradients, each times its number of lists, together with those
   numbers. Divided by the total, that is the gradient of the mean loss over the step's lists on all ranks:
   what one process computes for a batch of those lists. While it runs, the rank gathers its next step's
   lists into tensors.
3. Each rank applies it with its own Adam. Identical gradients and an identical start (the driver ships
   one network to every rank) keep the copies identical, step after step.

After each epoch the batch-norm running statistics (the only state a rank updates from its own data) are
averaged over the ranks, and the validation score is the sum over the ranks' validation shards, so every
rank sees the same number and stops at the same epoch.

Why ``all_reduce`` rather than ``DistributedDataParallel``: DDP averages the ranks' mean losses with equal
weight, while the ranks' parts of a step hold different numbers of lists (the shards differ by one list,
and the last step of an epoch is short); a rank whose part is empty would also need a dummy forward pass to
join DDP's collective. These networks are small (DCN-V2 has about 10^5 weights), so one flat
``all_reduce`` per step costs what DDP's buckets would.

What differs from one process, and why results are close but not equal: dropout and the noise draw other
random numbers (each rank has its own seed), the lists meet in other batches, and batch norm normalises
with each rank's part of the batch.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from data.torch_optim import adam
from data.torch_ranks import all_sum, flat_gradients, set_gradients
from ranking.config import TorchTrainSettings
from ranking.nn.nets import ScoringNet
from ranking.nn.train import (
    Batch,
    BestEpoch,
    TensorLists,
    fit_info,
    listwise_softmax_loss,
    stop_metric,
    validation_totals,
    weight_average,
)


def train_rank(
    net: ScoringNet, train: TensorLists, valid: TensorLists | None, cfg: TorchTrainSettings, seed: int
) -> dict:
    """Fit ``net`` in place as this process's rank of the default process group; every rank must call it.

    ``train``/``valid`` are this rank's shards (``valid`` None when the rank has no validation lists; the
    group validates when any rank has some). Returns ``train_net``'s report, with ``train_lists`` and
    ``lists_per_second`` counted over all ranks.
    """
    rank = dist.get_rank()
    torch.manual_seed(seed + rank)  # dropout and noise: other draws on each rank, as on other lists
    rng = np.random.default_rng([seed, rank])
    optimiser = adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sums = np.add.reduceat(train.data.labels, train.data.offsets[:-1])
    lists = np.flatnonzero(sums > 0)
    sizes = train.data.list_sizes
    total, validated = all_sum([lists.size, valid is not None])
    # As many steps per epoch as one process takes over all the lists: the same schedule for Adam.
    steps = max(1, math.ceil(total / cfg.lists_per_batch))
    metric = stop_metric(cfg)
    best = BestEpoch(cfg.patience)
    averaged = weight_average(net, cfg)  # every rank steps the same weights, so averages the same
    scored = net if averaged is None else averaged.module
    params = [p for p in net.parameters() if p.requires_grad]
    started = time.perf_counter()
    epoch_seconds: list[float] = []
    seen = 0
    epoch = 0
    waited = 0.0  # seconds in the gradients' all_reduce beyond the next batch's gathering (waiting on it)

    def batch_of(part: np.ndarray) -> Batch | None:
        # Batch norm needs 2 rows or more; a smaller part only joins the all_reduce.
        return train.batch(part) if part.size and sizes[part].sum() >= 2 else None

    for epoch in range(1, cfg.max_epochs + 1):
        epoch_started = time.perf_counter()
        net.train()
        parts = np.array_split(rng.permutation(lists), steps)
        b = batch_of(parts[0])
        for i, part in enumerate(parts):
            optimiser.zero_grad(set_to_none=True)
            n = 0
            if b is not None:
                scores = net(b.dense, b.cats, b.vecs, b.mask)  # (B, L)
                listwise_softmax_loss(scores, b.labels, b.weights, b.mask).backward()
                n = int(part.size)
            before = time.perf_counter()
            reduced = _sum_gradients(params, n)
            waited += time.perf_counter() - before
            # The next step's lists are gathered while the gradients travel: the batch does not depend on
            # the weights, so the steps are the same, and a rank's share of the wait for the other is used.
            b = batch_of(parts[i + 1]) if i + 1 < len(parts) else None
            before = time.perf_counter()
            step_lists = reduced.apply()
            waited += time.perf_counter() - before
            if step_lists:  # the same on every rank: all step, or none
                optimiser.step()
                if averaged is not None:
                    averaged.update_parameters(net)
                seen += step_lists
        _average_batch_norm(net)
        if scored is not net:
            _average_batch_norm(scored)  # its running statistics average each rank's own
        stop = False
        if validated:
            local = validation_totals(scored, valid, cfg) if valid is not None else (0.0, 0)
            value_sum, count = all_sum(local)
            stop = best.update(value_sum / count if count > 0 else 0.0, epoch, scored)
        epoch_seconds.append(time.perf_counter() - epoch_started)
        if stop:
            break
    if scored is not net:
        net.load_state_dict(scored.state_dict())
    best.restore(net)
    seconds = time.perf_counter() - started
    info = fit_info(epoch, best, bool(validated), metric, cfg, int(total), seen, seconds, epoch_seconds)
    return {**info, "steps_per_epoch": steps, "allreduce_seconds_per_epoch": round(waited / epoch, 4)}


class _Reduction:
    """An ``all_reduce`` of the flat gradients under way; ``apply`` waits for it and sets the mean."""

    def __init__(self, params: list[nn.Parameter], flat: Tensor, work: dist.Work) -> None:
        self.params, self.flat, self.work = params, flat, work

    def apply(self) -> int:
        """Replace each rank's gradients by the mean over every rank's lists; returns the number of lists
        of the step on all ranks (0: nobody had one, no step)."""
        self.work.wait()
        lists = round(self.flat[-1].item())
        if lists == 0:
            return 0
        set_gradients(self.params, self.flat[:-1] / lists)
        return lists


def _sum_gradients(params: list[nn.Parameter], n: int) -> _Reduction:
    """Start summing every rank's gradients (each of its mean loss over ``n`` lists) times its lists."""
    flat = flat_gradients(params, 1.0) * n  # (P + 1,) last: n
    return _Reduction(params, flat, dist.all_reduce(flat, async_op=True))


def _average_batch_norm(net: nn.Module) -> None:
    """Running means and variances over the ranks: each rank updated its own from its own batches."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            world = dist.get_world_size()
            for buffer in (module.running_mean, module.running_var):
                if buffer is not None:
                    dist.all_reduce(buffer)
                    buffer.div_(world)
