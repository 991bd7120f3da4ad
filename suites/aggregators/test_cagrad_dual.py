"""CAGrad's dual min_{w∈Δ} wᵀb + c√(wᵀAw): the closed-form support enumeration against its
KKT conditions, against SLSQP, and on the cases where g_w = 0 is reachable (0 in the hull)."""

import math

import numpy as np
import pytest

from mtlcheck.aggregators.cagrad import ENUMERATION_MAX_TASKS, CAGrad, solve_dual, solve_dual_slsqp


def objective(A, c, w):
    return float(w @ A.mean(1) + c * math.sqrt(max(w @ A @ w, 0.0)))


def normalised_gram(G):
    A = G @ G.T
    return A / np.trace(A)


def random_case(rng, n, dim):
    G = rng.standard_normal((n, dim))
    G[0] -= rng.uniform(0.2, 1.5) * G[1]  # conflict
    A = normalised_gram(G)
    return A, rng.uniform(0.1, 2.0) * math.sqrt(max(A.mean(), 0.0))


@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_solution_satisfies_kkt_on_full_rank_grams(n):
    rng = np.random.default_rng(n)
    for _ in range(50):
        A, c = random_case(rng, n, 20)
        w = solve_dual(A, c)
        assert abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
        grad = A.mean(1) + c * (A @ w) / math.sqrt(w @ A @ w)
        level = grad @ w
        assert grad.min() >= level - 1e-9  # no vertex direction descends
        assert np.abs(grad - level)[w > 1e-12].max() <= 1e-9  # stationary on the support


@pytest.mark.parametrize("dim", [1, 2, 4, 30])  # dim < T: rank-deficient Grams, singular faces
def test_never_worse_than_slsqp_or_random_simplex_points(dim):
    rng = np.random.default_rng(dim)
    worst = -np.inf
    for trial in range(150):
        n = int(rng.integers(2, 8))
        G = rng.standard_normal((n, dim))
        if trial % 3 == 0:
            G[-1] = -rng.uniform(0.1, 3.0) * G[0]  # opposite rows: 0 in the hull
        if trial % 4 == 0:
            G[-1] = G[0]  # duplicated task
        A = normalised_gram(G)
        c = rng.uniform(0.1, 2.0) * math.sqrt(max(A.mean(), 0.0))
        if c <= 1e-12:
            continue
        w = solve_dual(A, c)
        assert abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
        ours = objective(A, c, w)
        samples = rng.dirichlet(np.ones(n), size=500)
        assert ours <= min(objective(A, c, v) for v in samples) + 1e-12
        try:
            reference = objective(A, c, solve_dual_slsqp(A, c))
        except Exception:  # SLSQP's line search fails on some degenerate Grams; the samples still bound us
            continue
        worst = max(worst, ours - reference)
    assert worst <= 1e-9, f"enumeration above SLSQP by {worst:.2e}"


def test_zero_in_the_hull_gives_the_min_norm_point():
    # g1 = e1, g2 = −e1, g3 = e2: F ≥ 0 with F = 0 exactly where g_w = 0 (w1 = w2, w3 = 0)
    G = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    A = normalised_gram(G)
    c = 0.5 * math.sqrt(A.mean())
    w = solve_dual(A, c)
    assert objective(A, c, w) == pytest.approx(0.0, abs=1e-12)
    assert w == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)


def test_orthogonal_equal_norm_gradients_get_uniform_weights():
    A = np.eye(4) / 4  # F = a/T + c√(a Σw²): minimised by w = 1/T
    assert solve_dual(A, 0.3) == pytest.approx(np.full(4, 0.25), abs=1e-12)


def test_many_tasks_use_slsqp_and_agree_with_the_enumeration():
    n = ENUMERATION_MAX_TASKS + 1
    rng = np.random.default_rng(11)
    A, c = random_case(rng, n, 40)
    w_slsqp = CAGrad()._solve(A, c)  # T > ENUMERATION_MAX_TASKS: the SLSQP path
    w_enum = solve_dual(A, c)
    assert objective(A, c, w_enum) <= objective(A, c, w_slsqp) + 1e-10
    assert objective(A, c, w_slsqp) <= objective(A, c, w_enum) + 1e-8


def test_a_tiny_task_gradient_cannot_certify_a_wrong_candidate():
    """0 lies in the hull of g1, g2; g3 is 1e-6 long, so ∇F is ~1e-13 everywhere: an absolute
    KKT tolerance accepted w = e3 (F = 2.5e-13) over the optimum w = (½, ½, 0) (F = 0)."""
    G = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1e-6]])
    A = normalised_gram(G)
    c = 0.5 * math.sqrt(A.mean())
    w = solve_dual(A, c)
    assert w == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)
    assert objective(A, c, w) <= 1e-20


def test_direction_is_g0_where_g_w_vanishes():
    """g2 = −(1 + 1e-4) g1: 0 is in the hull, ‖g_w‖ is rounding noise, and λ = c'/‖g_w‖ must not
    blow up; the step is T g0 / (1 + c²) (the official code's ‖g_w‖ + 1e-4 denominator does the same)."""
    import torch

    G = torch.tensor([[1.0, 2.0, 0.5], [-1.0001, -2.0002, -0.50005]], dtype=torch.float64)
    out = CAGrad(c=2.0)(G)
    assert float(out.weights.abs().max()) <= 1.0
    assert torch.allclose(out.direction, 2 * G.mean(0) / 5, rtol=1e-9, atol=1e-15)


def test_the_slsqp_path_is_the_one_used_for_many_tasks(monkeypatch):
    import mtlcheck.aggregators.cagrad as cagrad

    calls = []
    monkeypatch.setattr(cagrad, "solve_dual_slsqp", lambda A, c: calls.append(A.shape[0]) or solve_dual(A, c))
    A, c = random_case(np.random.default_rng(5), ENUMERATION_MAX_TASKS + 1, 30)
    CAGrad()._solve(A, c)
    A, c = random_case(np.random.default_rng(5), ENUMERATION_MAX_TASKS, 30)
    CAGrad()._solve(A, c)
    assert calls == [ENUMERATION_MAX_TASKS + 1]
