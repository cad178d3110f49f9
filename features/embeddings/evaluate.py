"""Next-block evaluation: for each held-out click, rank every block in the vocabulary by a method's scores
and report recall@k and MRR over the clicks.

Ties are broken by their mean rank (a block tied with n others ranks in the middle of them), so a scorer
that gives many blocks the same score gains nothing from the tie order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from features.embeddings.sequences import USER_SHIFT, Sequences

# Scores every real block (B = n_items - 1 columns) for a chunk of target events (global indices), each
# from its user's history up to an exclusive end index (the target itself, or its request time).
Scorer = Callable[[np.ndarray, np.ndarray], torch.Tensor]


def held_out_targets(seqs: Sequences, start_ms: int, end_ms: int, max_events: int, seed: int) -> np.ndarray:
    """Global indices of clicks in [start_ms, end_ms) whose user has an earlier consumed block, sorted;
    a seeded sample of ``max_events`` when there are more."""
    in_range = (seqs.ts_ms >= start_ms) & (seqs.ts_ms < end_ms) & (seqs.position() >= 1)
    idx = np.flatnonzero(in_range)
    if len(idx) > max_events:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_events, replace=False))
    return idx


def ends_before_request(seqs: Sequences, targets: np.ndarray) -> np.ndarray:
    """(n,) history ends that keep only clicks made before each target's request: what a ranker could
    know when it ranked that page (clicks on the same page come later)."""
    key = seqs.user * USER_SHIFT + seqs.ts_ms  # sorted, as events are sorted by (user, time)
    users = seqs.user[targets]
    ends = np.searchsorted(key, users * USER_SHIFT + seqs.req_ms[targets], side="left")
    return np.clip(ends, seqs.offsets[users], targets)


def ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(n,) 1-based mean-tie rank of each row's target column in ``scores`` (n, B)."""
    own = scores.gather(1, targets[:, None])  # (n, 1)
    above = (scores > own).sum(1).double()  # (n,)
    ties = (scores == own).sum(1).double() - 1  # (n,) the target itself excluded
    return above + 1 + ties / 2


def evaluate(
    scorer: Scorer, seqs: Sequences, targets: np.ndarray, k: int, ends: np.ndarray | None = None
) -> dict[str, float]:
    """recall@k and MRR of ``scorer`` over the target events, scoring all blocks; each target's history
    ends at ``ends`` (default: right before the target click)."""
    ends = targets if ends is None else ends
    n_blocks = seqs.n_items - 1
    chunk = max(16, int(2e7 // max(n_blocks, 1)))  # keeps a score chunk near 80 MB
    found: list[torch.Tensor] = []
    for lo in range(0, len(targets), chunk):
        idx = targets[lo : lo + chunk]
        truth = torch.from_numpy(seqs.item[idx] - 1)  # 0-based block column
        found.append(ranks(scorer(idx, ends[lo : lo + chunk]).float(), truth))
    if not found:
        return {f"recall@{k}": 0.0, "mrr": 0.0, "events": 0}
    r = torch.cat(found)
    return {f"recall@{k}": float((r <= k).double().mean()), "mrr": float((1.0 / r).mean()), "events": len(r)}
