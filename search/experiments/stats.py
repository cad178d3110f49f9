"""Statistics for online experiments: user-level ratio metrics, lifts, sample-ratio mismatch, sign test.

Users are the randomization unit, so a user's impressions are not independent draws: a heavy user who likes
to click moves every one of their impressions together. Every metric here is a ratio of per-user sums,
``R = sum_u Y_u / sum_u N_u`` (e.g. clicked impressions over impressions), and its variance comes from the
delta method over the users (Deng, Knoblich and Lu, "Applying the Delta Method in Metric Analytics", KDD
2018)::

    Var(R) ~= (s_Y^2 - 2 R s_YN + R^2 s_N^2) / (n * mean(N)^2)

with the sample (co)variances of the per-user sums. Why the delta method rather than a user-level bootstrap:
it is exact to first order for the user counts of an A/B test, closed-form (no resampling of thousands of
users x variants x metrics, no seed), and the p-value comes from the same standard error as the lift's
confidence interval, so the two always agree. The bootstrap earns its cost on small or very skewed
samples, which this analysis flags instead (few users make wide intervals).

scipy is installed with LightGBM (a dependency of the project), so the chi-square and binomial tails come
from it rather than from a hand-rolled series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

Z95 = 1.959963984540054  # two-sided 95% normal quantile
SRM_ALPHA = 0.001  # a sample-ratio mismatch is flagged below this p-value (the usual, strict, threshold)


@dataclass(frozen=True)
class Ratio:
    """A ratio metric over users with its delta-method variance and 95% confidence interval."""

    value: float
    variance: float
    users: int

    @property
    def se(self) -> float:
        return math.sqrt(self.variance)

    @property
    def ci(self) -> tuple[float, float]:
        return (self.value - Z95 * self.se, self.value + Z95 * self.se)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> Ratio:
    """``sum(numerator) / sum(denominator)`` over users (one entry per user) with its delta-method variance.

    Users with a zero denominator contribute nothing; fewer than two users give an infinite variance (no
    spread to measure), so the interval is unbounded rather than falsely tight.
    """
    y = np.asarray(numerator, dtype=np.float64)
    n = np.asarray(denominator, dtype=np.float64)
    if y.shape != n.shape:
        raise ValueError(f"numerator {y.shape} and denominator {n.shape} differ in shape")
    users = len(y)
    if users == 0 or n.sum() <= 0:
        return Ratio(math.nan, math.inf, users)
    value = float(y.sum() / n.sum())
    if users < 2:
        return Ratio(value, math.inf, users)
    cov = np.cov(np.vstack([y, n]), ddof=1)
    var_num = cov[0, 0] - 2 * value * cov[0, 1] + value**2 * cov[1, 1]
    variance = float(max(var_num, 0.0) / (users * n.mean() ** 2))
    return Ratio(value, variance, users)


@dataclass(frozen=True)
class Comparison:
    """Treatment vs control: relative lift with its CI, absolute difference, and a two-sided p-value."""

    lift: float  # treatment / control - 1
    lift_ci: tuple[float, float]
    difference: float  # treatment - control
    p_value: float

    def to_json(self) -> dict:
        return {k: _round(v) for k, v in asdict(self).items()}


def compare(treatment: Ratio, control: Ratio) -> Comparison:
    """Delta-method z-test of two independent ratio metrics (separate users, so the covariance is 0).

    The relative lift's variance is the first-order expansion of ``t / c``:
    ``Var(t) / c^2 + t^2 Var(c) / c^4``.
    """
    t, c = treatment.value, control.value
    diff = t - c
    var_diff = treatment.variance + control.variance
    if not (math.isfinite(var_diff) and math.isfinite(diff)):
        return Comparison(math.nan, (math.nan, math.nan), diff, math.nan)
    # No spread at all: identical values are no evidence of a difference, different ones are certain.
    if c == 0:  # no relative lift: test the difference itself
        p = (1.0 if diff == 0 else 0.0) if var_diff == 0 else normal_two_sided(diff / math.sqrt(var_diff))
        return Comparison(math.nan, (math.nan, math.nan), diff, p)
    lift = t / c - 1
    se = math.sqrt(treatment.variance / c**2 + t**2 * control.variance / c**4)
    # The p-value tests the lift with the lift's own standard error, so it is below 0.05 exactly when the
    # 95% CI excludes 0 (a test of t - c with Var(t) + Var(c) can disagree with that CI when t != c).
    p = (1.0 if lift == 0 else 0.0) if se == 0 else normal_two_sided(lift / se)
    return Comparison(lift, (lift - Z95 * se, lift + Z95 * se), diff, p)


def normal_two_sided(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2))


@dataclass(frozen=True)
class SampleRatio:
    """Chi-square goodness of fit of the users per variant against the configured weights."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float
    mismatch: bool

    def to_json(self) -> dict:
        return {
            "observed": self.observed,
            "expected": {k: round(v, 2) for k, v in self.expected.items()},
            "chi2": _round(self.chi2),
            "p_value": _round(self.p_value),
            "mismatch": self.mismatch,
        }


def sample_ratio(
    observed: Mapping[str, int], weights: Mapping[str, float], alpha: float = SRM_ALPHA
) -> SampleRatio:
    """Do the users split as configured? A mismatch means assignment or logging lost users of some variant
    (a crash in one ranker, a redirect, a bot filter): every metric of the experiment is then suspect.

    One variant (nothing to split) gives chi2 0 and p 1.
    """
    names = list(weights)
    total_weight = float(sum(weights.values()))
    n = sum(int(observed.get(v, 0)) for v in names)
    expected = {v: n * weights[v] / total_weight for v in names}
    obs = {v: int(observed.get(v, 0)) for v in names}
    if len(names) < 2 or n == 0:
        return SampleRatio(obs, expected, 0.0, 1.0, False)
    chi2 = sum((obs[v] - expected[v]) ** 2 / expected[v] for v in names)
    p = float(sps.chi2.sf(chi2, df=len(names) - 1))
    return SampleRatio(obs, expected, float(chi2), p, p < alpha)


def sign_test(wins_a: int, wins_b: int) -> float:
    """Exact two-sided sign test: P of a split at least this uneven when each win is a fair coin.

    Ties carry no information on which side is better and are left out by the caller.
    """
    n = wins_a + wins_b
    if n == 0:
        return 1.0
    k = min(wins_a, wins_b)
    # The binomial(n, 1/2) is symmetric: two-sided = twice the smaller tail, capped at 1.
    return float(min(1.0, 2.0 * sps.binom.cdf(k, n, 0.5)))


def _round(value: object, digits: int = 6) -> object:
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_round(v, digits) for v in value]
    return value
