"""Uncertainty over seeds: Student-t intervals of a mean, paired differences, simultaneous levels.

Runs that share a seed share their initialisation and data order, so "method − baseline on the
same seed" is a paired difference: the seed-to-seed spread common to both runs cancels in it.

Student-t interval of a mean (Student 1908; e.g. Casella & Berger, Statistical Inference, §9.2):
for n ≥ 2 values with mean x̄ and sample standard deviation s (divisor n − 1),

    x̄ ± t_{n−1, 1−α/2} · s / √n

covers the true mean with probability 1 − α when the values are independent draws of one normal
distribution. One value (n = 1) gives no interval at all: nothing about its spread is known.

Simultaneous intervals (Bonferroni): K intervals, each at level 1 − α/K, all cover their true
values at once with probability ≥ 1 − α, whatever their dependence.

Seeds to decide one comparison: the smallest n at which t_{n−1, 1−α/2} · s / √n < |x̄| if the
mean and spread stayed as observed (a planning estimate, not a promise: both move with n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from scipy import stats

__all__ = ["LEVEL", "Estimate", "bonferroni_level", "estimate", "paired", "seeds_to_decide", "t_quantile"]

LEVEL = 0.95  # two-sided coverage of every interval reported


def t_quantile(level: float, df: int) -> float:
    """t_{df, (1+level)/2}: the half-width factor of a two-sided `level` interval."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if df < 1:
        raise ValueError(f"a t interval needs df >= 1 (n >= 2 values), got df={df}")
    return float(stats.t.ppf(0.5 + level / 2.0, df))


def bonferroni_level(level: float, k: int) -> float:
    """Per-interval level so that k intervals cover simultaneously with probability ≥ `level`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return 1.0 - (1.0 - level) / k


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds of one quantity, with its Student-t interval (none for a single seed)."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    level: float = LEVEL

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / self.n

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (divisor n − 1); None for one value."""
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(math.fsum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def half_width(self) -> float | None:
        """t_{n−1, (1+level)/2} · sd / √n; None for one value (no interval)."""
        if self.n < 2:
            return None
        return t_quantile(self.level, self.n - 1) * self.sd / math.sqrt(self.n)

    @property
    def interval(self) -> tuple[float, float] | None:
        h = self.half_width
        return None if h is None else (self.mean - h, self.mean + h)

    def excludes(self, value: float) -> bool:
        """The interval lies strictly on one side of `value` (False without an interval)."""
        iv = self.interval
        return iv is not None and (iv[0] > value or iv[1] < value)

    def text(self, decimals: int = 4) -> str:
        h = self.half_width
        return f"{self.mean:.{decimals}f}" + (" (n=1, no interval)" if h is None else f" ± {h:.{decimals}f}")


def estimate(values: Mapping[int, float] | Iterable[tuple[int, float]], level: float = LEVEL) -> Estimate:
    """Estimate from {seed: value} (or (seed, value) pairs), ordered by seed; values must be finite."""
    items = sorted(dict(values).items())
    if not items:
        raise ValueError("estimate needs at least one value")
    bad = [s for s, v in items if not math.isfinite(float(v))]
    if bad:
        raise ValueError(f"non-finite value(s) for seed(s) {bad}")
    return Estimate(tuple(s for s, _ in items), tuple(float(v) for _, v in items), level)


def paired(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Estimate | None:
    """Estimate of a − b over the seeds both have (same seed = same initialisation and data order);
    None when they share no seed."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return estimate({s: float(a[s]) - float(b[s]) for s in common}, level)


def seeds_to_decide(mean: float, sd: float, level: float = LEVEL, max_n: int = 1000) -> int | None:
    """Smallest n ≥ 2 with t_{n−1,(1+level)/2} · sd / √n < |mean| (mean and sd held as observed);
    None when even `max_n` would not do (e.g. mean 0)."""
    if sd == 0.0:
        return 2 if mean != 0.0 else None
    if mean == 0.0 or t_quantile(level, max_n - 1) * sd / math.sqrt(max_n) >= abs(mean):
        return None
    lo, hi = 2, max_n  # the half-width decreases with n: bisect
    while lo < hi:
        mid = (lo + hi) // 2
        if t_quantile(level, mid - 1) * sd / math.sqrt(mid) < abs(mean):
            hi = mid
        else:
            lo = mid + 1
    return lo
