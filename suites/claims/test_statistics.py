"""mtlcheck.study.statistics: Student-t intervals over seeds, paired differences, one-sided tests,
equivalence, predictive probability, probability of improvement, Bonferroni, planning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtlcheck.study.statistics import (
    Estimate,
    bonferroni_level,
    equivalent,
    estimate,
    improvement,
    one_sided,
    paired,
    predictive_decision,
    seeds_to_decide,
    t_quantile,
)


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


# -- one-sided tests, equivalence, prediction, improvement --------------------------------------------
def test_the_paired_t_sees_what_two_rows_share():
    """PCGrad − Baseline on SS of the default study's store: −0.0015, −0.0017, −0.0021 on the three
    seeds. Taken directly between the two rows the difference is known to ± 0.0007 and excludes 0 (a
    variance model shared across the column's methods had made it ± 0.027)."""
    d = estimate({0: -0.0015, 1: -0.0017, 2: -0.0021})
    assert d.half_width == pytest.approx(0.00076, abs=2e-5) and d.excludes(0.0)
    p_pos, p_neg = one_sided(d)
    assert p_neg < 0.025 < p_pos and p_pos + p_neg == pytest.approx(1.0)


def test_one_sided_p_values_by_hand_and_at_ties():
    d = estimate({0: 1.0, 1: 2.0, 2: 3.0})  # t = 2 / (1/√3) = 3.464 on 2 df
    p_pos, p_neg = one_sided(d)
    assert p_pos == pytest.approx(0.03709, abs=1e-5) and p_neg == pytest.approx(1 - 0.03709, abs=1e-5)
    assert one_sided(estimate({0: 0.0, 1: 0.0})) == (1.0, 1.0)  # a tie decides nothing
    assert one_sided(estimate({0: 0.2, 1: 0.2})) == (0.0, 1.0)  # every seed moved alike
    assert one_sided(estimate({0: 1.0})) == (1.0, 1.0)


def test_one_sided_tests_keep_their_level():
    rng = np.random.default_rng(5)
    p = np.array([one_sided(estimate(dict(enumerate(rng.normal(0.0, 1.0, size=4)))))[0] for _ in range(4000)])
    assert 0.04 <= (p <= 0.05).mean() <= 0.06


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    close = estimate({0: 0.001, 1: -0.001, 2: 0.0005, 3: 0.0})
    assert equivalent(close, 0.01, 0.025) and not equivalent(close, 0.001, 0.025)
    assert not equivalent(estimate({0: 0.0, 1: 0.0, 2: 0.0}), 0.01, 0.025)  # no spread: no evidence
    assert not equivalent(estimate({0: 0.02, 1: 0.021, 2: 0.019}), 0.01, 0.025)


def test_predictive_decision_by_hand_and_in_simulation():
    e = estimate({0: 1.0, 1: 1.5, 2: 0.5})  # mean 1, sd 0.5
    assert predictive_decision(e, 3, 0.025) == float(min(one_sided(e)) <= 0.025)
    p = predictive_decision(e, 12, 0.025)
    assert 0.9 < p <= 1.0
    assert predictive_decision(estimate({0: 0.1, 1: -0.1, 2: 0.0}), 12, 0.0001) < 0.1
    # its definition: the mean at 12 seeds drawn from the posterior predictive, the sd held fixed
    rng = np.random.default_rng(0)
    mu = rng.normal(1.0, 0.5 / np.sqrt(3), size=20000)
    future = rng.normal(mu, 0.5 / np.sqrt(9))
    m12 = (3 * 1.0 + 9 * future) / 12
    crit = t_quantile(0.95, 11) * 0.5 / np.sqrt(12)
    assert p == pytest.approx(float(np.mean(np.abs(m12) > crit)), abs=0.01)


def test_probability_of_improvement_with_its_wilson_interval():
    imp = improvement(estimate(dict(enumerate([0.1] * 8 + [-0.1] * 2))))
    assert imp.share == pytest.approx(0.8) and imp.n == 10
    assert imp.lo == pytest.approx(0.490, abs=1e-3) and imp.hi == pytest.approx(0.943, abs=1e-3)  # 8/10, textbook
    assert "P(better) 80%" in imp.text()
    assert improvement(estimate(dict(enumerate([0.1] * 8 + [-0.1, 0.0])))).share == pytest.approx(0.85)  # a tie: ½
