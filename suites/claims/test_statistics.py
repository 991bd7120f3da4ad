"""mtlcheck.statistics: Student-t intervals over seeds, paired differences, Bonferroni, planning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtlcheck.statistics import Estimate, bonferroni_level, estimate, paired, seeds_to_decide, t_quantile


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
    hits = sum(estimate(dict(enumerate(rng.normal(1.0, 2.0, size=3)))).excludes(1.0) is False
               for _ in range(4000))
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
