"""Clicks as training signal for whole candidate lists: policy-aware inverse propensity weights.

A list holds a logged request's shown blocks and the candidates retrieval returned that the page did not
show (``position`` 0). A click is evidence about a block only where the logging policy could show it and the
reader could see it, so each clicked row is weighted by one over the chance of that, the policy-aware
estimator of Oosterhuis and de Rijke (SIGIR 2020): with examination probability theta_k at position k,

    rho(d) = sum_k P(policy puts d at k) * theta_k,    weight(d) = click(d) / rho(d).

Its expectation over the policy's randomization is d's attractiveness for every block the policy shows with
a positive probability; an unshown candidate contributes 0, which is also that expectation's estimate from
this request. The logs carry P(d at its shown position k) (``propensity``), not the other positions, so the
placement probability is taken as the same at every position of the page, ``page_size * propensity`` capped
at 1: exact for a block only a randomized page shows (uniform over positions), and 1 (shown for sure) for a
block the policy's deterministic top holds. theta_k comes from the feature store's examination prior (the
same one clicks-over-expected-clicks uses); weights are clipped to keep the variance bounded.

In: arrays over the rows of a training set. Out: per-row weights (> 0) for ``ListwiseData.weights``; rows
without a click keep weight 1 (their label is 0 either way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def policy_aware_weights(
    click: np.ndarray,
    position: np.ndarray,
    propensity: np.ndarray,
    *,
    examination: Sequence[float],
    page_size: int,
    clip: float,
) -> np.ndarray:
    """(N,) weights: 1 / (P(shown) * theta_position) for clicked rows, clipped to ``clip``; 1 elsewhere."""
    click = np.asarray(click) > 0
    position = np.asarray(position, dtype=np.int64)
    propensity = np.asarray(propensity, dtype=np.float64)
    theta = np.asarray(examination, dtype=np.float64)
    shown = position > 0
    if (click & ~shown).any():
        raise ValueError("a clicked row has no position: clicks need the shown position")
    at = theta[np.clip(position, 1, len(theta)) - 1]
    placed = np.minimum(propensity * page_size, 1.0)
    rho = np.where(shown, placed * at, 1.0)
    weights = np.where(click & (rho > 0), 1.0 / np.maximum(rho, 1e-12), 1.0)
    return np.minimum(weights, clip).astype(np.float32)
