"""mtlcheck.study.statistics: Student-t intervals over seeds, paired differences, Bonferroni, planning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtlcheck.study.statistics import Estimate, bonferroni_level, estimate, paired, seeds_to_decide, t_quantile


def test_t_quantiles_are_the_textbook_values():
    assert t_quantile(0.95, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.95, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.95, 30) == pytest.approx(2.0423, abs=1e-4)
    with pytest.raises(ValueError, match="n >= 2"):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError, match="level"):
        t_quantile(1.0, 3)


def test_interval_by_hand():
    e = estimate({2: 3.0, 0: 1.0, 1: 2.0})
    assert e.seeds == (0, 1, 2) and e.values == (1.0, 2.0, 3.0)  # ordered by seed
    assert e.mean == 2.0 and e.sd == 1.0
    assert e.half_width == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    assert e.excludes(-1.0) and not e.excludes(0.0)
    assert e.text(2) == "2.00 ± 2.48"


def test_one_seed_has_no_interval_and_excludes_nothing():
    e = estimate({0: 0.5})
    assert e.sd is None and e.half_width is None and e.interval is None
    assert not e.excludes(0.0) and "no interval" in e.text()


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="seed"):
        estimate({0: 1.0, 3: float("nan")})
    with pytest.raises(ValueError, match="at least one"):
        estimate({})


def test_paired_uses_the_shared_seeds_only():
    a, b = {0: 1.757 + 0.017, 1: 2.737 + 0.015, 2: 2.1 + 0.018, 3: 9.0}, {0: 1.757, 1: 2.737, 2: 2.1}
    d = paired(a, b)
    assert d.seeds == (0, 1, 2) and d.mean == pytest.approx(0.016667, abs=1e-6)
    assert d.interval[0] > 0  # the seed effect (1.76 vs 2.74) cancels
    assert not estimate(a).excludes(estimate(b).mean)
    assert paired({0: 1.0}, {1: 1.0}) is None


def test_t_interval_covers_at_its_level():
    """Seeded simulation: the 95% interval of 3 normal draws covers the mean in 95% ± 1.5%."""
    rng = np.random.default_rng(0)
    hits = sum(estimate(dict(enumerate(rng.normal(1.0, 2.0, size=3)))).excludes(1.0) is False for _ in range(4000))
    assert 0.935 <= hits / 4000 <= 0.965


def test_bonferroni_level():
    assert bonferroni_level(0.95, 1) == pytest.approx(0.95)
    assert bonferroni_level(0.95, 10) == pytest.approx(0.995)
    with pytest.raises(ValueError):
        bonferroni_level(0.95, 0)


def test_seeds_to_decide_is_the_smallest_n_whose_interval_excludes_zero():
    n = seeds_to_decide(1.0, 2.0)
    assert t_quantile(0.95, n - 1) * 2.0 / math.sqrt(n) < 1.0
    assert t_quantile(0.95, n - 2) * 2.0 / math.sqrt(n - 1) >= 1.0
    assert seeds_to_decide(0.0, 1.0) is None  # a tie stays a tie
    assert seeds_to_decide(1e-6, 1.0, max_n=100) is None
    assert seeds_to_decide(0.3, 0.0) == 2 and seeds_to_decide(0.0, 0.0) is None


def test_estimate_is_a_value():
    assert Estimate((0, 1), (1.0, 2.0)) == estimate({0: 1.0, 1: 2.0})


# -- moderated variances (Smyth 2004) -------------------------------------------------------------
def test_fit_prior_recovers_a_scaled_inverse_chi2_prior():
    """Variances drawn from the prior the method assumes (d0 = 6, s0² = 4), each seen on 2 df."""
    from mtlcheck.study.statistics import fit_prior

    rng = np.random.default_rng(3)
    sigma2 = 4.0 * 6.0 / rng.chisquare(6.0, size=20000)
    s2 = sigma2 * rng.chisquare(2.0, size=sigma2.size) / 2.0
    prior = fit_prior((float(v), 2) for v in s2)
    assert prior.df == pytest.approx(6.0, rel=0.15) and prior.scale == pytest.approx(4.0, rel=0.1)
    equal = fit_prior((float(v), 2) for v in rng.chisquare(2.0, size=20000) / 2.0)  # one common σ² = 1
    assert equal.df > 50 and equal.scale == pytest.approx(1.0, rel=0.05)


def test_too_few_variances_keep_the_plain_t():
    from mtlcheck.study.statistics import fit_prior, moderate, moderated_pairs

    assert fit_prior([(1.0, 2), (2.0, 2), (0.0, 2)]) is None  # two positive variances
    es = {k: estimate({0: v, 1: v + 1.0 + k, 2: v - 0.5}) for k, v in enumerate((1.0, 2.0))}
    assert moderate(es) == es and all(e.prior is None for e in moderate(es).values())
    rows = {"base": {0: 1.0, 1: 2.0, 2: 3.0}, "a": {0: 1.5, 1: 2.7, 2: 3.4}}  # two rows: no median of others
    p = moderated_pairs(rows, "base")["a"]
    assert p.prior is None and p.half_width == paired(rows["a"], rows["base"]).half_width


def test_moderated_interval_by_hand():
    """s̃² = max((d0 s0² + d s²)/(d0 + d), s²) with d0 capped at d, on d0 + d df; planning keeps it."""
    from mtlcheck.study.statistics import Prior, Variance

    e = estimate({0: 1.0, 1: 2.0, 2: 3.0})  # mean 2, s² = 1 on 2 df
    prior = Prior(df=10.0, scale=4.0, count=12)
    d0 = min(prior.df, 2.0)
    m = dataclasses_replace(e, variance=Variance((((d0 * 4.0 + 2 * 1.0) / (d0 + 2), d0),), prior))
    assert m.scale == pytest.approx(math.sqrt(2.5)) and m.df == 4.0
    assert m.half_width == pytest.approx(t_quantile(0.95, 4) * math.sqrt(2.5) / math.sqrt(3))
    assert m.half_width_at(0.95, 10) == pytest.approx(t_quantile(0.95, 11) * math.sqrt(2.5) / math.sqrt(10))
    n = seeds_to_decide(m.mean, m.scale, prior_df=2.0)
    assert m.half_width_at(0.95, n) < m.mean <= m.half_width_at(0.95, n - 1)


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def _paired_miss_rate(level: float, noise, reps: int, rows: int = 10, seed: int = 0) -> float:
    """Fraction of paired intervals (row − row 0, 3 seeds, a seed effect 25x the noise) that miss
    the true difference 0 at `level`, per-row noise sd from `noise(rng, rows)`."""
    from mtlcheck.study.statistics import moderated_pairs

    rng = np.random.default_rng(seed)
    miss = total = 0
    for _ in range(reps):
        sd = noise(rng, rows)
        y = 25.0 * rng.normal(size=(1, 3)) + rng.normal(size=(rows, 3)) * sd[:, None]
        pairs = moderated_pairs({g: dict(enumerate(map(float, y[g]))) for g in range(rows)}, 0)
        assert all(p.prior is not None for p in pairs.values())
        for p in pairs.values():
            total += 1
            miss += abs(p.mean) > p.half_width_at(level)
    return miss / total


def _log_normal_with_one_10x(rng, rows):
    sd = np.exp(rng.normal(0.0, 0.6, size=rows))  # 95 % of the sds within a 10x range
    sd[rng.integers(rows)] *= 10.0
    return sd


@pytest.mark.parametrize(
    "noise",
    [lambda rng, g: np.ones(g), lambda rng, g: np.exp(rng.normal(0.0, 0.6, size=g)), _log_normal_with_one_10x],
    ids=["equal", "log-normal", "log-normal-one-10x"],
)
def test_moderated_paired_intervals_keep_their_level(noise):
    """Seeded, 1000 studies x 9 paired cells: the moderated intervals miss 0 at most at their
    nominal rate (plus 0.5 % simulation slack at 95 %; at 99.7 %, the Bonferroni tail the verdicts
    use, at most 0.4 % against 0.3 %), with equal noise, log-normal noise per row, and one row 10x
    noisier on top."""
    assert _paired_miss_rate(0.95, noise, 1000) <= 0.055
    assert _paired_miss_rate(0.997, noise, 1000, seed=1) <= 0.004
