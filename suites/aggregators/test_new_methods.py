"""The methods added after the paper, against their papers' statements beyond the generic kit."""

import pytest
import torch

from mtlcheck.aggregators import DBMTL, GLS, STCH, ConFIG, FairGrad, NashMTL, SolverError
from mtlcheck.testing import samplers


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("seed", range(3))
def test_fairgrad_with_alpha_one_is_nash_mtl(n, seed):
    """Ban & Ji 2024, §3: α = 1 (proportional fairness) is Nash-MTL's bargaining equation
    α_i (GGᵀα)_i = 1, on the raw Gram in both (Nash-MTL unclipped)."""
    G = samplers.conflicting(n, 12, gen(seed)) * 3.0
    fair = FairGrad(alpha=1.0)(G).weights
    nash = NashMTL(max_norm=None, warm_start=False)(G).weights
    assert torch.allclose(fair, nash, rtol=1e-9, atol=0)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 2.0, 10.0])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_fairgrad_solves_the_alpha_fair_equation_at_any_scale(alpha, scale):
    G = samplers.normal(4, 12, gen(1)) * scale
    w = FairGrad(alpha=alpha)(G).weights
    r = w ** (1 / alpha) * (G @ G.T @ w) - 1
    assert float(r.abs().max()) < 1e-10
    # homogeneity of degree (1 − α)/(1 + α) (the tag claims it only for α = 1)
    d1 = FairGrad(alpha=alpha)(G).direction
    d2 = FairGrad(alpha=alpha)(2.0 * G).direction
    assert torch.allclose(d2, 2.0 ** ((1 - alpha) / (1 + alpha)) * d1, rtol=1e-9, atol=0)


def test_fairgrad_without_a_solution_raises_with_the_certificate():
    g = torch.randn(12, generator=gen(2), dtype=torch.float64)
    with pytest.raises(SolverError, match="vanishes"):
        FairGrad()(torch.stack([g, -g, torch.randn(12, generator=gen(3), dtype=torch.float64)]))


def test_fairgrad_rejects_a_bad_alpha():
    for alpha in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            FairGrad(alpha=alpha)


def test_fairgrad_leaves_a_zero_gradient_out():
    G = samplers.normal(3, 12, gen(4))
    G[1] = 0
    w = FairGrad()(G).weights
    assert float(w[1]) == 0.0 and bool((w[[0, 2]] > 0).all())


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_config_has_equal_cosines_and_the_summed_length(n):
    G = samplers.conflicting(n, 12, gen(n))
    d = ConFIG()(G).direction
    cos = (G @ d) / (G.norm(dim=1) * d.norm())
    assert float(cos.max() - cos.min()) < 1e-12 and float(cos.min()) > 0
    assert abs(float(d.norm()) - float((G @ d).sum() / d.norm())) < 1e-12 * float(d.norm())


def test_config_of_opposite_gradients_is_zero():
    g = torch.randn(12, generator=gen(5), dtype=torch.float64)
    assert float(ConFIG()(torch.stack([g, -g])).direction.norm()) < 1e-12 * float(g.norm())


def test_gls_weights_are_the_gradient_of_the_geometric_mean():
    theta = torch.randn(5, generator=gen(6), dtype=torch.float64, requires_grad=True)
    A = torch.randn(4, 5, generator=gen(7), dtype=torch.float64)
    losses = 0.1 + (A @ theta) ** 2
    (geo,) = torch.autograd.grad(losses.prod() ** (1 / 4), theta, retain_graph=True)
    rows = torch.stack([torch.autograd.grad(L, theta, retain_graph=True)[0] for L in losses])
    w = GLS()(None, losses.detach()).weights
    assert torch.allclose(w @ rows, geo, rtol=1e-12, atol=0)


def test_gls_is_stable_for_many_tiny_losses_and_refuses_a_zero_loss():
    losses = torch.full((60,), 1e-12, dtype=torch.float64)  # Π L_i underflows to 0
    losses[0] = 1e-11
    w = GLS()(None, losses).weights
    assert bool(torch.isfinite(w).all()) and float(w[1]) == pytest.approx(10 ** (1 / 60) / 60, rel=1e-12)
    with pytest.raises(ValueError, match="positive losses"):
        GLS()(None, torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("mu", [0.05, 1.0, 10.0])
def test_stch_weights_are_the_gradient_of_the_smooth_tchebycheff_objective(mu):
    theta = torch.randn(5, generator=gen(8), dtype=torch.float64, requires_grad=True)
    A = torch.randn(3, 5, generator=gen(9), dtype=torch.float64)
    losses = 0.2 + (A @ theta) ** 2
    objective = 3 * mu * torch.logsumexp(losses.log() / mu, dim=0)
    (expected,) = torch.autograd.grad(objective, theta, retain_graph=True)
    rows = torch.stack([torch.autograd.grad(L, theta, retain_graph=True)[0] for L in losses])
    w = STCH(mu=mu)(None, losses.detach()).weights
    assert torch.allclose(w @ rows, expected, rtol=1e-10, atol=0)


def test_stch_warmup_sums_the_log_losses_then_normalises_by_the_nadir():
    agg = STCH(mu=0.5, warmup_steps=2)
    first, second = torch.tensor([1.0, 4.0]), torch.tensor([3.0, 2.0])
    assert torch.allclose(agg(None, first).weights, 1 / first.double())
    assert torch.allclose(agg(None, second).weights, 1 / second.double())
    nadir = torch.tensor([2.0, 3.0], dtype=torch.float64)
    L = torch.tensor([2.0, 3.0], dtype=torch.float64)  # at the nadir: f = 0, softmax = 1/2
    assert torch.allclose(agg(None, L).weights, 1 / L)
    assert torch.allclose(nadir, agg._nadir)


def test_stch_takes_its_nadir_from_the_last_nadir_steps_of_the_warm_up():
    """warmup_steps=4, nadir_steps=2: four log-loss steps, the nadir the mean of the last two (the
    official code's last warm-up epoch), then STCH at that nadir."""
    agg = STCH(mu=0.5, warmup_steps=4, nadir_steps=2)
    steps = [torch.tensor(x, dtype=torch.float64) for x in ([9.0, 9.0], [7.0, 1.0], [1.0, 4.0], [3.0, 2.0])]
    for L in steps:
        assert torch.allclose(agg(None, L).weights, 1 / L)
    L = torch.tensor([2.0, 3.0], dtype=torch.float64)  # the mean of the last two: f = 0
    assert torch.allclose(agg(None, L).weights, 1 / L)
    with pytest.raises(ValueError, match="nadir_steps must be"):
        STCH(warmup_steps=2, nadir_steps=3)


def test_stch_keeps_a_nadir_of_huge_losses_that_fits():
    """Losses of 1e308 over two warm-up steps: their sum overflowed and made the weight 0 silently;
    their mean is 1e308, and at it the weights are 1/L."""
    agg = STCH(warmup_steps=2)
    for _ in range(3):
        w = agg(None, torch.tensor([1e308, 1.0], dtype=torch.float64)).weights
    torch.testing.assert_close(w, torch.tensor([1e-308, 1.0], dtype=torch.float64), rtol=1e-12, atol=0)


def test_an_stch_state_saved_as_a_sum_loads_as_its_mean():
    agg, twin = STCH(warmup_steps=3), STCH(warmup_steps=3)
    for L in ([1.0, 4.0], [3.0, 2.0]):
        agg(None, L)
    state = agg.state_dict()
    old = {**state, "method": {"_sum": torch.tensor([4.0, 6.0], dtype=torch.float64), "_count": 2}}
    twin.load_state_dict(old)
    for L in ([2.0, 2.0], [1.0, 5.0], [2.5, 1.5]):
        assert torch.equal(agg(None, L).weights, twin(None, L).weights)


def test_db_mtl_follows_its_recurrence_over_steps():
    beta, sigma = 0.8, 0.5
    agg = DBMTL(beta=beta, beta_sigma=sigma)
    buffer = torch.zeros(3, 12, dtype=torch.float64)
    for t in range(1, 5):
        G = samplers.normal(3, 12, gen(20 + t))
        losses = 0.5 + torch.rand(3, generator=gen(30 + t), dtype=torch.float64)
        b = beta / t**sigma
        buffer = b * buffer + (1 - b) * G / losses[:, None]
        norms = buffer.norm(dim=1)
        expected = ((norms.max() / norms)[:, None] * buffer).sum(0)
        got = agg(G, losses).direction
        assert torch.allclose(got, expected, rtol=1e-12, atol=0)


def test_db_mtl_refuses_a_change_of_block_shape():
    agg = DBMTL()
    agg(samplers.normal(2, 12, gen()), torch.ones(2))
    with pytest.raises(ValueError, match="changed shape"):
        agg(samplers.normal(2, 10, gen()), torch.ones(2))


def test_db_mtl_resumes_from_a_state_of_plain_ema_rows():
    """A state saved when ĝ was stored as it is (no `_scale`) resumes as ĝ = those rows."""
    beta, sigma = 0.8, 0.5
    rows = samplers.normal(3, 12, gen(90))
    G = samplers.normal(3, 12, gen(91))
    losses = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    agg = DBMTL(beta=beta, beta_sigma=sigma)
    agg(G, losses)
    state = agg.state_dict()
    state["method"] = {"_buffer": (rows.clone(),), "_step": 2}
    agg.load_state_dict(state)
    b = beta / 3**sigma
    buffer = b * rows + (1 - b) * G / losses[:, None]
    norms = buffer.norm(dim=1)
    expected = ((norms.max() / norms)[:, None] * buffer).sum(0)
    assert torch.allclose(agg(G, losses).direction, expected, rtol=1e-12, atol=0)


def test_excess_mtl_resumes_from_a_state_kept_without_eps():
    """A state saved when S was kept without ε (`_sq_sum`) resumes as S."""
    from mtlcheck.aggregators import ExcessMTL

    G1, G2 = samplers.normal(3, 12, gen(92)), samplers.normal(3, 12, gen(93))
    ref = ExcessMTL(eps=1e-3)
    ref(G1)
    expected = ref(G2).direction
    agg = ExcessMTL(eps=1e-3)
    agg(G1)
    state = agg.state_dict()
    method = dict(state["method"])
    method["_sq_sum"] = tuple(s - 1e-3 for s in method.pop("_sq_sum_eps"))
    agg.load_state_dict({**state, "method": method})
    assert torch.allclose(agg(G2).direction, expected, rtol=1e-12, atol=0)


def _blocks(G, widths):
    from mtlcheck.jacobian import Jacobian

    parts = torch.split(G, widths, dim=1)
    names = tuple(f"p{k}" for k in range(len(parts)))
    return Jacobian(tuple(p.clone() for p in parts), tuple(torch.Size([w]) for w in widths), names)


@pytest.mark.parametrize("span", [8, 1 << 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_db_mtl_and_excess_mtl_across_column_spans(monkeypatch, dtype, span):
    """The state is updated and reduced span by span (`_spans`), with scratch spans shared by the
    blocks: with spans of 8 elements or wider than every block, blocks of 1 to 40 columns (the
    narrowest first), each step is the recurrence computed on the whole matrix."""
    from mtlcheck.aggregators import ExcessMTL, _spans

    monkeypatch.setattr(_spans, "SPAN", span)
    widths = [1, 7, 40, 12]
    beta, sigma, eps, eta = 0.8, 0.5, 1e-3, 0.7
    db, ex = DBMTL(beta=beta, beta_sigma=sigma), ExcessMTL(robust_step_size=eta, eps=eps)
    buffer = S = baseline = None
    alpha = torch.full((3,), 1 / 3, dtype=torch.float64)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    for t in range(1, 5):
        G64 = samplers.normal(3, sum(widths), gen(60 + t))
        G = G64.to(dtype)
        losses = 0.5 + torch.rand(3, generator=gen(70 + t), dtype=torch.float64)
        b = beta / t**sigma
        buffer = (1 - b) * G64 / losses[:, None] if buffer is None else b * buffer + (1 - b) * G64 / losses[:, None]
        norms = buffer.norm(dim=1)
        expected = ((norms.max() / norms)[:, None] * buffer).sum(0)
        got = db(_blocks(G, widths), losses).direction.double()
        assert float((got - expected).abs().max()) <= rtol * float(expected.abs().max())
        S = G64**2 if S is None else S + G64**2
        risk = (G64**2 / (S + eps).sqrt()).sum(1)
        baseline = risk if baseline is None else baseline
        alpha = torch.softmax(alpha.log() + eta * risk / baseline, dim=0)
        out = ex(_blocks(G, widths), losses)
        assert torch.allclose(out.weights, alpha, rtol=rtol, atol=0)
        assert float((out.direction.double() - alpha @ G64).abs().max()) <= rtol * float(G64.abs().max())


@pytest.mark.parametrize("scale", [1e-25, 1.0, 1e25])
def test_db_mtl_row_norms_at_float32_extremes(scale):
    """float32 rows whose squares underflow (1e-25) or overflow (1e25) take the scaled Gram's
    diagonal: the direction is the unit-scale one times the scale, a zero row contributes 0."""
    G = samplers.normal(3, 12, gen(80))
    G[2] = 0.0
    losses = torch.tensor([0.5, 1.0, 2.0])
    unit = DBMTL()(G.float(), losses).direction.double()
    got = DBMTL()(G.float() * scale, losses).direction.double() / scale
    assert torch.isfinite(got).all()
    assert torch.allclose(got, unit, rtol=1e-5, atol=0)


@pytest.mark.parametrize("seed", range(20))
def test_simplex_projection_is_the_nearest_point(seed):
    from mtlcheck.aggregators._simplex import project_onto_simplex

    y = torch.randn(6, generator=gen(seed), dtype=torch.float64) * 10 ** (seed % 5 - 2)
    x = project_onto_simplex(y)
    assert bool((x >= 0).all()) and abs(float(x.sum()) - 1) < 1e-12
    # KKT: x = (y − θ)_+ with θ common: y_i − x_i is the same on the support, ≤ it off the support
    support = x > 0
    theta = (y - x)[support]
    assert float(theta.max() - theta.min()) < 1e-12 * max(1.0, float(y.abs().max()))
    assert bool((y[~support] <= theta.mean() + 1e-12).all())
    huge = project_onto_simplex(torch.tensor([1e21, 3.0, -1e21], dtype=torch.float64))
    assert huge.tolist() == [1.0, 0.0, 0.0]


def test_moco_follows_algorithm_1():
    from mtlcheck.aggregators import MoCo
    from mtlcheck.aggregators._simplex import project_onto_simplex

    beta, bs, gamma, gs, rho = 0.5, 0.5, 0.1, 0.5, 0.05
    agg = MoCo(beta=beta, beta_sigma=bs, gamma=gamma, gamma_sigma=gs, rho=rho)
    Y = torch.zeros(3, 12, dtype=torch.float64)
    lam = torch.full((3,), 1 / 3, dtype=torch.float64)
    for k in range(1, 6):
        G = samplers.conflicting(3, 12, gen(40 + k))
        Y = Y - beta / k**bs * (Y - G)
        lam = project_onto_simplex(lam - gamma / k**gs * (Y @ Y.T @ lam + rho * lam))
        assert torch.allclose(agg(G).direction, lam @ Y, rtol=1e-12, atol=1e-14)


def test_cr_mogm_smooths_the_base_weights():
    from mtlcheck.aggregators import CRMOGM, MGDA

    agg = CRMOGM(base="mgda", alpha=0.75)
    lam = None
    for k in range(4):
        G = samplers.conflicting(3, 12, gen(50 + k))
        w = MGDA()(G).weights
        lam = w if lam is None else 0.75 * lam + 0.25 * w
        assert torch.allclose(agg(G).weights, lam, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="weight the task gradients"):
        CRMOGM(base="ew")


def test_stch_with_mu_one_weights_by_the_nadir_only():
    L = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    assert torch.allclose(STCH(mu=1.0)(None, L).weights, torch.full((3,), 3 / float(L.sum()), dtype=torch.float64))
    agg = STCH(mu=1.0, warmup_steps=1)
    nadir = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    agg(None, nadir)
    expected = 3 / nadir / float((L / nadir).sum())
    assert torch.allclose(agg(None, L).weights, expected, rtol=1e-12, atol=0)
    # μ → 0: the Tchebycheff max, the task furthest above its nadir (log L/n largest) takes the weight
    sharp = STCH(mu=1e-3)(None, L).weights * L / 3
    assert float(sharp[1]) == pytest.approx(1.0)
