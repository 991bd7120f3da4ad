"""Each method against the defining property of its paper (beyond the generic conformance kit)."""

import math

import numpy as np
import pytest
import torch

from mtlcheck.aggregators import (
    DWA,
    FAMO,
    IMTL,
    MGDA,
    RGW,
    RLW,
    AlignedMTL,
    CAGrad,
    CosReg,
    GradDrop,
    GradNorm,
    GradVac,
    NashMTL,
    PCGrad,
    Uncertainty,
)
from mtlcheck.aggregators._min_norm import kkt_violation
from mtlcheck.aggregators.cosreg import mean_squared_cosine
from mtlcheck.jacobian import Jacobian
from mtlcheck.testing import samplers


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_G(n, d=10, seed=0):
    return samplers.normal(n, d, gen(seed))


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("seed", range(5))
def test_mgda_is_the_min_norm_point_kkt(n, seed):
    G = samplers.conflicting(n, 12, gen(seed)) if seed % 2 else random_G(n, 12, seed)
    w = MGDA()(G).weights
    assert abs(float(w.sum()) - 1) < 1e-12 and bool((w >= 0).all())
    assert kkt_violation((G @ G.T).numpy(), w.numpy()) < 1e-10
    # no point of the hull is shorter: compare with random simplex points
    d = float((w @ G).norm())
    rng = np.random.default_rng(seed)
    for v in rng.dirichlet(np.ones(n), size=200):
        assert float((torch.from_numpy(v) @ G).norm()) >= d - 1e-12


def test_mgda_returns_zero_at_a_pareto_stationary_point():
    G = samplers.strongly_stationary(4, 10, gen(3))
    assert float(MGDA()(G).direction.norm()) < 1e-9 * float(G.norm())


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
def test_mgda_normalized_weights_act_on_normalized_gradients(normalization):
    G, losses = random_G(3, seed=4), torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64)
    agg = MGDA(normalization=normalization)
    n = agg.normalizers(G @ G.T, losses)
    out = agg(G, losses)
    sol = out.weights * n  # weights on the normalised gradients
    Gn = G / n[:, None]
    assert abs(float(sol.sum()) - 1) < 1e-12
    assert kkt_violation((Gn @ Gn.T).numpy(), sol.numpy()) < 1e-10


@pytest.mark.parametrize("n", [2, 3, 4, 6])
@pytest.mark.parametrize("seed", range(4))
def test_imtl_g_equal_projections(n, seed):
    G = random_G(n, 12, seed)
    out = IMTL(loss_balance=False)(G)
    units = G / G.norm(dim=1, keepdim=True)
    proj = units @ out.direction
    assert float(proj.max() - proj.min()) < 1e-9 * float(proj.abs().max())
    assert abs(float(out.weights.sum()) - 1) < 1e-12


def test_imtl_l_scales_move_toward_balanced_losses():
    agg = IMTL(loss_balance=True, lr=0.1, momentum=0.0)
    G, losses = random_G(2, seed=1), torch.tensor([4.0, 0.25], dtype=torch.float64)
    for _ in range(50):
        agg(G, losses)
    s = agg._s
    # stationary point of e^s L - s: s = -log L, so the large loss gets the smaller scale
    assert float(s[0]) < 0 < float(s[1])


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_nash_mtl_bargaining_equations(n, seed):
    G = random_G(n, 12, seed)
    out = NashMTL(max_norm=None)(G)
    alpha, M = out.weights, G @ G.T  # the raw Gram: the official scale
    assert bool((alpha > 0).all())
    assert float((alpha * (M @ alpha) - 1).abs().max()) < 1e-9
    assert float(out.direction.norm()) == pytest.approx(math.sqrt(n), rel=1e-9)


def test_nash_mtl_clips_to_max_norm_and_warm_start_agrees():
    G = random_G(3, seed=2) * 100
    out = NashMTL(max_norm=1.0)(G)
    assert abs(float(out.direction.norm()) - 1.0) < 1e-9
    warm = NashMTL()
    warm(random_G(3, seed=5))
    assert torch.allclose(warm(G).direction, out.direction, rtol=1e-8, atol=1e-10)


def test_nash_mtl_raises_instead_of_equal_weighting():
    G = random_G(2, seed=0)
    G[1] = -G[0]
    with pytest.raises(Exception, match="no bargaining solution"):
        NashMTL()(G)


@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_aligned_mtl_equal_singular_values(mode, n):
    G = random_G(n, 12, n)
    agg = AlignedMTL(scale_mode=mode)
    B = agg.alignment(G @ G.T, torch.finfo(G.dtype).eps)
    sv = torch.linalg.svdvals(B @ G)
    assert float(sv.max() / sv.min()) == pytest.approx(1.0, abs=1e-9)
    lam = torch.linalg.eigvalsh(G @ G.T)
    sigma2 = {"min": lam.min(), "median": lam.median(), "rmse": lam.mean()}[mode]
    assert float(sv[0] ** 2) == pytest.approx(float(sigma2), rel=1e-9)
    assert torch.allclose(agg(G).direction, (B @ G).sum(0), atol=1e-10)


def test_aligned_mtl_handles_rank_deficiency():
    G = random_G(3, seed=1)
    G[2] = G[0] + G[1]
    out = AlignedMTL()(G)
    assert torch.isfinite(out.direction).all() and float(out.direction.norm()) > 0


def test_pcgrad_two_tasks_matches_the_vector_formula():
    G = samplers.conflicting(2, 12, gen(1))
    g1, g2 = G
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    out = PCGrad()(G)
    assert torch.allclose(out.direction, p1 + p2, atol=1e-12)
    assert float(out.direction @ g1) >= 0 and float(out.direction @ g2) >= 0


def test_pcgrad_order_matters_for_three_tasks():
    G = samplers.conflicting(3, 12, gen(2))
    outs = {tuple(PCGrad(seed=s)(G).direction.round(decimals=8).tolist()) for s in range(20)}
    assert len(outs) > 1


def test_gradvac_reaches_its_target_exactly_then_updates_the_ema():
    G1 = samplers.conflicting(2, 12, gen(3))
    agg = GradVac(beta=0.5, eps=0.0)  # eps = 0: the correction formula is exact
    C, targets = agg.surgery(Jacobian.from_matrix(G1))
    g1p = C[0, 0] @ G1
    cos = float(g1p @ G1[1] / (g1p.norm() * G1[1].norm()))
    assert cos == pytest.approx(0.0, abs=1e-12)  # first step: target 0, like PCGrad
    rho = float(G1[0] @ G1[1] / (G1[0].norm() * G1[1].norm()))
    agg(G1)
    assert float(agg._targets[0, 0, 1]) == pytest.approx(0.5 * rho)
    # a later step with a positive target lifts the cosine up to it
    agg._targets.fill_(0.3)
    C, _ = agg.surgery(Jacobian.from_matrix(G1))
    g1p = C[0, 0] @ G1
    assert float(g1p @ G1[1] / (g1p.norm() * G1[1].norm())) == pytest.approx(0.3, abs=1e-12)


def test_cagrad_c0_is_the_sum_and_solves_its_objective():
    G = samplers.conflicting(3, 12, gen(4))
    assert torch.allclose(CAGrad(c=0.0)(G).direction, G.sum(0), atol=1e-12)
    c = 0.5
    A = (G @ G.T).numpy()
    A = A / np.trace(A)
    cc = c * math.sqrt(A.mean())

    def objective(w):
        return w @ A.mean(1) + cc * math.sqrt(w @ A @ w)

    w = CAGrad(c=c)._solve(A, cc)
    rng = np.random.default_rng(0)
    best = min(objective(v) for v in rng.dirichlet(np.ones(3), size=4000))
    assert objective(w) <= best + 1e-9
    # direction formula: T (g0 + λ g_w) / (1 + c²)
    g0 = G.mean(0)
    gw = torch.from_numpy(w) @ G
    lam = c * g0.norm() / gw.norm()
    expected = 3 * (g0 + lam * gw) / (1 + c**2)
    assert torch.allclose(CAGrad(c=c)(G).direction, expected, rtol=1e-7, atol=1e-9)


def test_graddrop_keeps_the_consistent_sign_and_leak_one_is_the_sum():
    G = torch.tensor([[1.0, -2.0, 3.0], [2.0, -1.0, 0.5]], dtype=torch.float64)  # signs agree per column
    assert torch.allclose(GradDrop()(G).direction, G.sum(0))
    Gc = samplers.conflicting(3, 12, gen(5))
    assert torch.allclose(GradDrop(leak=1.0)(Gc).direction, Gc.sum(0))
    # every kept coordinate is the sum of same-signed components
    d = GradDrop(seed=3)(Gc).direction
    pos, neg = Gc.clamp_min(0).sum(0), Gc.clamp_max(0).sum(0)
    assert bool((((d - pos).abs() < 1e-12) | ((d - neg).abs() < 1e-12)).all())


def test_graddrop_feature_level_uses_activation_sign_and_batch_sum():
    T, B, F = 2, 3, 4
    g = torch.randn(T, B, F, generator=gen(6), dtype=torch.float64)
    z = torch.randn(B, F, generator=gen(7), dtype=torch.float64)
    J = Jacobian((g.reshape(T, -1),), (torch.Size([B, F]),), ("z0",), "feature", (z,))
    d = GradDrop(seed=1)(J).direction.reshape(B, F)
    S = (g * torch.sign(z)).sum(1)
    P = 0.5 * (1 + S.sum(0) / S.abs().sum(0))
    U = torch.rand(F, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    M = ((P > U) & (S > 0)) | ((P < U) & (S < 0))
    assert torch.allclose(d, (g * M[:, None, :]).sum(0))


def test_famo_weights_and_logit_update():
    agg = FAMO(w_lr=0.1, gamma=0.0)
    losses = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    w = agg(None, losses).weights
    assert torch.allclose(w, (1 / losses) / (1 / losses).sum())
    agg.after_step(torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64))  # task 0 improved, others not
    logits = agg._logits
    assert float(logits[0]) < float(logits[1]) and float(logits[1]) == pytest.approx(float(logits[2]))


def test_gradnorm_keeps_learning_after_the_first_step():
    G = torch.diag(torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64))
    agg = GradNorm(lr=0.01, momentum=0.0)
    history = []
    for step in range(6):
        losses = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) * (1 - 0.05 * step)
        history.append(agg(G, losses).weights.clone())
    assert torch.equal(history[0], torch.ones(3, dtype=torch.float64))
    for a, b in zip(history[1:], history[2:]):
        assert not torch.allclose(a, b), "GradNorm weights stopped changing"
    assert all(abs(float(h.sum()) - 3) < 1e-12 for h in history)
    assert float(history[-1][0]) < 1 < float(history[-1][2])  # the large gradient is damped


def test_uncertainty_weights_follow_log_variances():
    agg = Uncertainty(lr=0.5, momentum=0.0)
    losses = torch.tensor([4.0, 0.25], dtype=torch.float64)
    assert torch.allclose(agg(None, losses).weights, torch.full((2,), 0.5, dtype=torch.float64))
    for _ in range(300):
        agg(None, losses)
    s = agg._s
    assert torch.allclose(s, losses.log(), atol=1e-3)  # optimum of ½(e^{-s}L + s): s = log L


def test_dwa_window_ratios_by_hand():
    agg = DWA(temperature=2.0, window=1)
    L = [torch.tensor(x, dtype=torch.float64) for x in ([1.0, 1.0], [0.5, 1.0], [0.4, 1.0])]
    assert torch.equal(agg(None, L[0]).weights, torch.ones(2, dtype=torch.float64))
    assert torch.equal(agg(None, L[1]).weights, torch.ones(2, dtype=torch.float64))
    r = torch.tensor([0.5, 1.0], dtype=torch.float64)
    expected = 2 * torch.softmax(r / 2.0, 0)
    assert torch.allclose(agg(None, L[2]).weights, expected)


def test_random_weights_live_on_the_simplex_and_average_uniform():
    G = random_G(4, seed=1)
    ws = torch.stack([RGW(seed=s)(G).weights for s in range(400)])
    assert torch.allclose(ws.sum(1), torch.ones(400, dtype=torch.float64))
    assert torch.allclose(ws.mean(0), torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)
    assert torch.equal(RLW(seed=7)(None, torch.ones(4)).weights, RGW(seed=7)(G).weights)


def test_cosreg_penalty_value():
    G = random_G(3, seed=2)
    cos = torch.nn.functional.cosine_similarity(G[:, None, :], G[None, :, :], dim=-1)
    expected = ((cos**2).sum() - 3) / 6
    assert float(mean_squared_cosine([G])) == pytest.approx(float(expected), rel=1e-10)
    assert float(CosReg(penalty=10.0).penalty_term([G])) == pytest.approx(10 * float(expected), rel=1e-10)
