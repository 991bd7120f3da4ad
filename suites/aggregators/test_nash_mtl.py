"""Nash-MTL: the official step scale, and a certified solve on ill-conditioned Grams.

The defining equation is α_i (G Gᵀ α)_i = 1 on the raw Gram (Navon et al. 2022, Eq. 3 with the
official code's scale), so the unclipped step Σ α_i g_i has norm √T at every scale of G."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from mtlcheck.aggregators import NashMTL, SolverError
from mtlcheck.testing import samplers

UNIT_ROUNDOFF = 2.0**-53


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def exact_residual(M: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """α_i (M α)_i − 1 in exact rational arithmetic (the float64 M and α taken as exact)."""
    n = len(alpha)
    a = [Fraction(float(x)) for x in alpha]
    rows = [[Fraction(float(M[i, j])) for j in range(n)] for i in range(n)]
    return np.array([float(a[i] * sum(rows[i][j] * a[j] for j in range(n)) - 1) for i in range(n)])


def assert_certified(G: torch.Tensor, alpha: np.ndarray) -> np.ndarray:
    """α > 0 and |α_i (Mα)_i − 1| ≤ 1e-9 + 4T·u·α_i (|M| α)_i (exact residual); returns |residual|."""
    M = (G @ G.T).numpy()
    n = M.shape[0]
    assert np.all(alpha > 0)
    residual = np.abs(exact_residual(M, alpha))
    bound = 1e-9 + 4 * n * UNIT_ROUNDOFF * alpha * (np.abs(M) @ alpha)
    assert np.all(residual <= bound), (residual, bound)
    return residual


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e3, 1e6])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_nash_solves_the_bargaining_equation_on_the_raw_gram(scale, n):
    G = samplers.conflicting(n, 16, gen(n)) * scale
    out = NashMTL(max_norm=None)(G)
    alpha, M = out.weights, G @ G.T
    assert bool((alpha > 0).all())
    assert float((alpha * (M @ alpha) - 1).abs().max()) < 1e-9
    # ‖Σ α_i g_i‖² = Σ_i α_i (G Gᵀ α)_i = T
    assert float(out.direction.norm()) == pytest.approx(math.sqrt(n), rel=1e-9)


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e3, 1e6])
def test_nash_default_step_is_clipped_to_norm_one_at_every_scale(scale):
    """The official max_norm=1 clip always applies (√T > 1): the step has norm 1, not a norm
    that follows the gradients' scale (0.021 for gradients at 1e-3 with the Frobenius-normalised
    solve)."""
    G = samplers.conflicting(3, 16, gen(1)) * scale
    out = NashMTL()(G)
    assert float(out.direction.norm()) == pytest.approx(1.0, rel=1e-9)
    unclipped = NashMTL(max_norm=None)(G).direction
    assert torch.allclose(out.direction, unclipped / math.sqrt(3), rtol=1e-9, atol=0)


def nearly_collinear(n, d, delta, seed, opposite):
    """Rows c_i·s_i·b + δ·noise_i: s_i = ±1 alternating (opposite) or +1; cond(G Gᵀ) ~ 1/δ²."""
    g = gen(seed)
    base = torch.randn(d, generator=g, dtype=torch.float64)
    signs = torch.tensor([(-1.0) ** i if opposite else 1.0 for i in range(n)], dtype=torch.float64)
    factors = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return (signs * factors)[:, None] * base + delta * torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("opposite", [False, True], ids=["aligned", "alternating-signs"])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-6, 1e-7])
@pytest.mark.parametrize("n", range(2, 11))
def test_nash_certified_on_ill_conditioned_grams(n, delta, opposite):
    """Nearly collinear G (d = 1000; δ = 1e-7 gives cond(G Gᵀ) ≥ 1e14): a solution exists, and the
    returned α satisfies the equation exactly for a matrix within 4T·u of the Gram, entry by
    entry: |α_i (Mα)_i − 1| ≤ 1e-9 + 4T·u·α_i (|M| α)_i, the residual taken in exact arithmetic."""
    G = nearly_collinear(n, 1000, delta, seed=n, opposite=opposite)
    sv = torch.linalg.svdvals(G)
    cond = float(sv[0] / sv[-1]) ** 2
    assert cond > 0.1 / delta**2
    alpha = NashMTL(max_norm=None)(G).weights.numpy()
    residual = assert_certified(G, alpha)
    if not opposite:  # positive combinations: well-conditioned equation, full accuracy
        assert residual.max() < 1e-9


def test_nash_ill_conditioned_opposite_pair_matches_the_closed_form():
    """T = 2 has a closed form: subtracting the two equations gives α_1² M_11 = α_2² M_22, so
    α_1 = 1/√(M_11 + M_12 √(M_11/M_22)) (and symmetrically α_2), evaluated here with 50 digits
    from the same float64 Gram. Nearly opposite rows (1 + cos ≈ 1e-12): the answer itself is only
    determined to ~u/(1 + cos) ≈ 1e-4 by the float64 Gram."""
    from decimal import Decimal, getcontext

    from mtlcheck.jacobian import Jacobian

    getcontext().prec = 50
    G = nearly_collinear(2, 1000, 1e-6, seed=4, opposite=True)
    M = Jacobian.from_matrix(G).gram().numpy()
    m11, m12, m22 = (Decimal(float(x)) for x in (M[0, 0], M[0, 1], M[1, 1]))
    expected = [1 / (m11 + m12 * (m11 / m22).sqrt()).sqrt(), 1 / (m22 + m12 * (m22 / m11).sqrt()).sqrt()]
    alpha = NashMTL(max_norm=None)(G).weights.numpy()
    assert float(1 + M[0, 1] / math.sqrt(M[0, 0] * M[1, 1])) < 1e-10
    assert alpha == pytest.approx([float(e) for e in expected], rel=1e-3)


def test_nash_exactly_opposite_rows_raise_with_the_certificate():
    G = samplers.normal(2, 12, gen(0))
    G[1] = -G[0]
    with pytest.raises(SolverError, match=r"no bargaining solution.*w = \[0\.5, 0\.5\]"):
        NashMTL()(G)


def test_nash_zero_in_the_hull_of_three_rows_raises_but_a_perturbation_solves():
    # g_1 + g_2 + g_3 = 0 exactly (small integers: exact in float64)
    G = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    with pytest.raises(SolverError, match="no bargaining solution"):
        NashMTL(max_norm=None)(G)
    G[2, 0] += 1e-4
    assert_certified(G, NashMTL(max_norm=None)(G).weights.numpy())


def test_nash_warm_start_gives_the_cold_answer_at_another_scale():
    G = samplers.conflicting(4, 16, gen(3))
    cold = NashMTL(max_norm=None)(G).weights
    warm = NashMTL(max_norm=None)
    warm(samplers.conflicting(4, 16, gen(8)) * 1e5)
    assert torch.allclose(warm(G).weights, cold, rtol=1e-9, atol=0)


def test_nash_random_degenerate_grams_solve_or_certify_that_none_exists():
    """Rank-deficient G plus noise of 1e-8..1 relative, rows rescaled over six decades: every call
    returns a certified α, or raises only when 0 lies in the hull of the unit gradients to within
    rounding (checked independently with the exact min-norm solver)."""
    from mtlcheck.aggregators._min_norm import min_norm_weights

    rng = np.random.default_rng(0)
    solved = 0
    for _ in range(150):
        n = int(rng.integers(2, 11))
        d = int(rng.choice([n + 1, 20, 300]))
        base = rng.standard_normal((int(rng.integers(1, n + 1)), d))
        G = rng.standard_normal((n, base.shape[0])) @ base + 10.0 ** rng.uniform(-8, 0) * rng.standard_normal((n, d))
        G = torch.from_numpy(G * 10.0 ** rng.uniform(-3, 3, size=(n, 1)))
        try:
            alpha = NashMTL(max_norm=None)(G).weights.numpy()
        except SolverError as exc:
            assert "no bargaining solution" in str(exc)
            M = (G @ G.T).numpy()
            norms = np.sqrt(np.diag(M))
            C = M / np.outer(norms, norms)
            w = min_norm_weights(C)
            assert abs(float(w @ C @ w)) < 1e-14
            continue
        assert_certified(G, alpha)
        solved += 1
    assert solved >= 140
