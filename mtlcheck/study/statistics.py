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

Why no moderated variances: an empirical-Bayes prior shared by a column's rows (Smyth 2004) assumes
one additive seed effect common to every method. When methods respond to a seed with different
strength (a per-method loading of the seed effect, as real training shows), the moderated paired
intervals missed 7 % at 95 % in simulation, and the two-way model threw away the seed coupling of
similar methods (PCGrad − Baseline on SS: ± 0.027 moderated against ± 0.0007 paired). The plain
paired t over the seeds two rows share is valid whatever each method's seed response, and it is
what every comparison here uses (suites/claims/test_calibration.py simulates those scenarios).

One-sided paired tests (the comparisons a claim is made of, `mtlcheck.study.paper.comparisons`):
for paired differences d_s with mean d̄, sd s on n seeds, t = d̄ / (s/√n) on n − 1 df;
p₊ = P(T ≥ t) is the evidence that the true mean is > 0, p₋ = P(T ≤ t) that it is < 0. A
difference established at level α on one side has its two-sided 1 − 2α interval on that side of 0.

Equivalence within a margin γ (two one-sided tests, Schuirmann 1987): |δ| < γ is established at
level α when the 1 − 2α interval of d̄ lies inside (−γ, γ).

Predictive probability of deciding (Spiegelhalter, Freedman & Blackburn 1986, "Monitoring clinical
trials: conditional or predictive power?"): with the mean's posterior N(d̄, s²/n) and N − n seeds
still to come, the mean at N seeds is N(d̄, s²(N − n)/(N n)); the test at N decides when
|d̄_N| > t_{N−1, 1−α} · s/√N. A planning figure (s held as observed), used only to stop for futility
and to choose which rows get more seeds; neither costs any error rate.

Probability of improvement (Agarwal et al. 2021, rliable; Bouthillier et al. 2021): the share of
seeds on which a row beats another, P(d_s > 0), with the Wilson score interval; reported from 10
shared seeds on (with 3 seeds it takes 4 values and says little).

Seeds to decide one comparison: the smallest n at which t_{n−1, 1−α/2} · s / √n < |x̄| if the
mean and spread stayed as observed (a planning estimate, not a promise: both move with n).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats

__all__ = [
    "LEVEL",
    "Estimate",
    "bonferroni_level",
    "equivalent",
    "estimate",
    "improvement",
    "one_sided",
    "paired",
    "predictive_decision",
    "seeds_to_decide",
    "t_quantile",
]

LEVEL = 0.95  # two-sided coverage of every interval reported


def t_quantile(level: float, df: float) -> float:
    """t_{df, (1+level)/2}: the half-width factor of a two-sided `level` interval (df may be
    fractional, or infinite: the normal quantile)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not df >= 1:
        raise ValueError(f"a t interval needs df >= 1 (n >= 2 values), got df={df}")
    if math.isinf(df):
        return float(stats.norm.ppf(0.5 + level / 2.0))
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
    def df(self) -> int | None:
        """Degrees of freedom of the interval, n − 1; None for one value."""
        return None if self.n < 2 else self.n - 1

    @property
    def scale(self) -> float | None:
        """The standard deviation the interval uses (the sample sd); None for one value."""
        return self.sd

    @property
    def se(self) -> float | None:
        """Standard error of the mean, s/√n; None for one value."""
        return None if self.n < 2 else self.sd / math.sqrt(self.n)

    @property
    def half_width(self) -> float | None:
        """t_{n−1, (1+level)/2} · s / √n; None for one value."""
        return self.half_width_at(self.level)

    def half_width_at(self, level: float, n: int | None = None) -> float | None:
        """The half-width at `level` with `n` seeds (default: the observed n) at the observed sd;
        None for one observed value or n < 2."""
        m = self.n if n is None else n
        if self.n < 2 or m < 2:
            return None
        return t_quantile(level, m - 1) * self.sd / math.sqrt(m)

    @property
    def model(self) -> str:
        return "Student-t over seeds"

    @property
    def interval(self) -> tuple[float, float] | None:
        h = self.half_width
        return None if h is None else (self.mean - h, self.mean + h)

    def excludes(self, value: float) -> bool:
        """The interval lies strictly on one side of `value` (False without an interval)."""
        iv = self.interval
        return iv is not None and (iv[0] > value or iv[1] < value)

    def only(self, seeds: Iterable[int]) -> Estimate:
        """The estimate over the given seeds (those it has): what a look at those seeds saw."""
        keep = set(seeds)
        pairs = [(s, v) for s, v in zip(self.seeds, self.values) if s in keep]
        return Estimate(tuple(s for s, _ in pairs), tuple(v for _, v in pairs), self.level)

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


def one_sided(e: Estimate) -> tuple[float, float]:
    """(p₊, p₋): one-sided p-values of the paired t test for a true mean > 0 and < 0 (module doc).
    One value: (1, 1), nothing is known. Zero spread: the sign of a non-zero mean is taken as
    known (every seed moved the same way by the same amount), a zero mean decides nothing."""
    if e.n < 2:
        return 1.0, 1.0
    sd = e.sd
    if sd == 0.0:
        m = e.mean
        return (0.0 if m > 0 else 1.0), (0.0 if m < 0 else 1.0)
    t = e.mean / (sd / math.sqrt(e.n))
    return float(stats.t.sf(t, e.n - 1)), float(stats.t.cdf(t, e.n - 1))


def equivalent(e: Estimate, margin: float, alpha: float) -> bool:
    """|true mean| < `margin` established at one-sided level `alpha` by two one-sided tests: the
    1 − 2·alpha interval of the mean lies inside (−margin, margin). Needs two seeds and some spread:
    values identical on every seed (a measure that did not move) are no evidence of equality."""
    if e.n < 2 or margin <= 0 or len(set(e.values)) == 1:
        return False
    h = e.half_width_at(1.0 - 2.0 * alpha)
    return -margin < e.mean - h and e.mean + h < margin


def predictive_decision(e: Estimate, n_final: int, alpha: float, side: int = 0) -> float:
    """Predictive probability that the one-sided test at `alpha` decides at `n_final` seeds (module
    doc; the sd held as observed): on either side (`side` 0), or that the mean is > 0 (+1) or < 0
    (−1). 1 or 0 when nothing can change."""
    if e.n < 2 or n_final < 2:
        return 0.0
    p_pos, p_neg = one_sided(e)
    if n_final <= e.n:
        return float({1: p_pos, -1: p_neg, 0: min(p_pos, p_neg)}[side] <= alpha)
    s = e.sd
    if s == 0.0:
        return float(e.mean != 0.0 and side * e.mean >= 0)
    crit = float(stats.t.ppf(1.0 - alpha, n_final - 1)) * s / math.sqrt(n_final)
    spread = s * math.sqrt((n_final - e.n) / (n_final * e.n))
    up = float(stats.norm.sf((crit - e.mean) / spread))
    down = float(stats.norm.cdf((-crit - e.mean) / spread))
    return {1: up, -1: down, 0: up + down}[side]


@dataclass(frozen=True)
class Improvement:
    """P(d_s > 0): the share of `n` paired seeds on which a row beat the other, with its Wilson
    score interval at `level` (ties count a half)."""

    share: float
    lo: float
    hi: float
    n: int

    def text(self) -> str:
        return f"P(better) {self.share:.0%} [{self.lo:.0%}, {self.hi:.0%}] over {self.n} seeds"


def improvement(e: Estimate, level: float = LEVEL) -> Improvement:
    """Probability of improvement of paired differences `e` (module doc; Wilson 1927)."""
    n = e.n
    share = (sum(v > 0 for v in e.values) + 0.5 * sum(v == 0 for v in e.values)) / n
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return Improvement(share, max(0.0, centre - half), min(1.0, centre + half), n)


def seeds_to_decide(mean: float, sd: float, level: float = LEVEL, max_n: int = 1000) -> int | None:
    """Smallest n ≥ 2 with t_{n − 1,(1+level)/2} · sd / √n < |mean| (mean and sd held as observed);
    None when even `max_n` would not do (e.g. mean 0)."""

    def hw(n: int) -> float:
        return t_quantile(level, n - 1) * sd / math.sqrt(n)

    if sd == 0.0:
        return 2 if mean != 0.0 else None
    if mean == 0.0 or hw(max_n) >= abs(mean):
        return None
    lo, hi = 2, max_n  # the half-width decreases with n: bisect
    while lo < hi:
        mid = (lo + hi) // 2
        if hw(mid) < abs(mean):
            hi = mid
        else:
            lo = mid + 1
    return lo
