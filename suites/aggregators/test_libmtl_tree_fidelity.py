"""Fidelity against LibMTL's methods after the paper, which only its source tree has: PyPI's
LibMTL is still 1.1.5, without DB-MTL, ExcessMTL, FairGrad, MoCo, MoDo, SDMGrad, STCH or UPGrad.
These tests run when MTLCHECK_LIBMTL_TREE names a checkout of
github.com/median-research-group/LibMTL (the directory holding `LibMTL/weighting`; measured at
commit 4336804847eaa5e0b924b743d76beec7ac3fdc97, 2025-05-14), and are skipped otherwise.

LibMTL's weighting classes are driven as its trainer drives them: `backward(losses, **weight_args)`
on a model whose shared parameter θ gets the update in `.grad`. The losses are linear in θ,
L_i + g_iᵀ(θ − θ₀), so at θ₀ their gradients are exactly the rows g_i of the G under test and their
values the losses under test. LibMTL forms its gradient matrix in the default dtype, which is set
to float64 here so that the comparisons resolve 1e-12 (LibMTL's own runs are float32).
Every difference is asserted with its cause: a peer's convention, its epsilon, or its bug.
"""

import contextlib
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mtlcheck.aggregators import get_aggregator
from mtlcheck.aggregators._simplex import project_onto_simplex
from mtlcheck.study.perf import peers
from mtlcheck.testing import identities, samplers

TREE = peers.libmtl_tree()
pytestmark = pytest.mark.skipif(
    not TREE,
    reason=f"set {peers.LIBMTL_TREE_ENV} to a checkout of github.com/median-research-group/LibMTL "
    "(its newer methods are not in the PyPI release 1.1.5)",
)
CLASSES = ("DB_MTL", "ExcessMTL", "FairGrad", "MoCo", "MoDo", "SDMGrad", "STCH", "UPGrad")
TASKS = (2, 3, 5, 7)


@pytest.fixture(scope="module")
def libmtl():
    """The tree's weighting classes, imported as the bench imports them (`mtlcheck bench --peers
    --libmtl-tree`): under a bare `LibMTL` package, sys.modules restored after, so that the
    installed LibMTL 1.1.5 stays what `import LibMTL` gives."""
    weighting, _ = peers._import_libmtl_tree(TREE)
    return {c: getattr(weighting, c) for c in CLASSES}


@contextlib.contextmanager
def _float64():
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


class _Driver:
    """One LibMTL weighting object on a linear toy model with shared parameter θ ∈ R^dim."""

    def __init__(self, cls, n_tasks: int, dim: int, **weight_args):
        class Model(cls):
            def __init__(self):
                super().__init__()
                self.task_num, self.task_name = n_tasks, [f"t{i}" for i in range(n_tasks)]
                self.device, self.rep_grad, self.epoch = torch.device("cpu"), False, 0
                self.theta = nn.Parameter(torch.zeros(dim, dtype=torch.float64))
                self.encoder, self.decoders = nn.Module(), {}

            def get_share_params(self):
                return [self.theta]

            def zero_grad_share_params(self):  # LibMTL's trainer zeroes in place (never None)
                self.theta.grad.zero_()

        with _float64():
            self.model = Model()
            self.model.init_param()
        self.weight_args = weight_args

    def step(self, G: torch.Tensor, losses: torch.Tensor, *, batches: int = 0, epoch: int = 0):
        """θ.grad after LibMTL's backward, and what backward returned. batches=3: the double-
        sampling methods' (3, T) losses, here the same batch three times."""
        m = self.model
        m.epoch = epoch
        with _float64(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.theta.grad = torch.zeros_like(m.theta)
            L = losses.to(torch.float64) + G.to(torch.float64) @ (m.theta - m.theta.detach())
            out = m.backward(torch.stack([L] * batches) if batches else L, **self.weight_args)
        return m.theta.grad.detach().clone(), out


def _rel(a, b):
    scale = float(b.norm())
    return float((a - b).norm()) / scale if scale > 0 else float(a.norm())


def _random_steps(n: int, steps: int = 5, scale: float = 1.0):
    for k in range(steps):
        g = torch.Generator().manual_seed(100 * n + k)
        yield scale * samplers.normal(n, 12, g), 0.5 + torch.rand(n, generator=g, dtype=torch.float64)


def _hard(n: int):
    losses = torch.linspace(0.5, 2.0, n, dtype=torch.float64)
    return [(label, G, losses) for label, G in identities.hard_cases(n).items()]


# ---------------------------------------------------------------------------------- agreements


@pytest.mark.parametrize("n", TASKS)
def test_excess_mtl_is_ours_times_t(libmtl, n):
    """Convention: LibMTL's weights sum to T (ours to 1). Finding: its first call sets ℰ⁰ and keeps
    the weights, as ours does without warm-up; it does not take the raw-risk step TorchJD's
    ExcessMTL takes and attributes to it."""
    peer = _Driver(libmtl["ExcessMTL"], n, 12, robust_step_size=1e-2)
    ours = get_aggregator("excess_mtl", robust_step_size=1e-2)
    for G, L in _random_steps(n):
        got, weights = peer.step(G, L)
        out = ours(G, L)
        assert _rel(got, n * out.direction) < 1e-12
        assert torch.allclose(torch.as_tensor(weights, dtype=torch.float64), n * out.weights, rtol=1e-12)


def _db_mtl_recurrence(cases, beta, beta_sigma, eps):
    """DB-MTL's update step by step: ĝ ← ĝ + β_t (ĝ − ∇log(L + eps)), β_t = β/t^σ, from ĝ = 0;
    d = Σ_i max_j ‖ĝ_j‖ / (‖ĝ_i‖ + eps) · ĝ_i."""
    ema, out = None, []
    for t, (G, L) in enumerate(cases, start=1):
        grads = G / (L + eps)[:, None]
        ema = torch.zeros_like(G) if ema is None else ema
        ema = grads + beta / t**beta_sigma * (ema - grads)
        norms = ema.norm(dim=1)
        out.append((norms.max() / (norms + eps)) @ ema)
    return out


@pytest.mark.parametrize("n", TASKS)
@pytest.mark.parametrize("beta_sigma", [0.0, 0.5])
def test_db_mtl_is_ours_but_for_its_epsilons(libmtl, n, beta_sigma):
    """LibMTL's DB-MTL is the recurrence with log(L + 1e-8) and ‖ĝ_i‖ + 1e-8; ours is the same
    recurrence without them (to 1e-12 both). The epsilons move the update by ≤ 1e-5 relative on
    these cases (a hard case's row norms go down to ~1e-2)."""
    for label, cases in [("random", list(_random_steps(n)))] + [(c[0], [c[1:]] * 3) for c in _hard(n)]:
        peer = _Driver(libmtl["DB_MTL"], n, cases[0][0].shape[1], DB_beta=0.9, DB_beta_sigma=beta_sigma)
        ours = get_aggregator("db_mtl", beta=0.9, beta_sigma=beta_sigma)
        with_eps = _db_mtl_recurrence(cases, 0.9, beta_sigma, 1e-8)
        without = _db_mtl_recurrence(cases, 0.9, beta_sigma, 0.0)
        for (G, L), a, b in zip(cases, with_eps, without):
            got, _ = peer.step(G, L)
            assert _rel(got, a) < 1e-12, label
            assert _rel(ours(G, L).direction, b) < 1e-12, label
            assert _rel(got, b) < 1e-5, label


@pytest.mark.parametrize("n", TASKS)
def test_upgrad_without_regularisation_is_ours(libmtl, n):
    for label, G, L in [("random", *next(_random_steps(n)))] + _hard(n):
        peer = _Driver(libmtl["UPGrad"], n, G.shape[1], UPGrad_norm_eps=0.0, UPGrad_reg_eps=0.0)
        got, _ = peer.step(G, L)
        assert _rel(got, get_aggregator("upgrad")(G, L).direction) < 1e-10, label


def test_upgrad_default_regularisation_moves_the_update_by_up_to_1e_4(libmtl):
    """Convention: LibMTL's defaults (norm_eps = reg_eps = 1e-4, TorchJD's) solve the projection
    on GGᵀ/tr + 1e-4 I, not on GGᵀ: the update moves by up to ~1e-3 relative (8e-4 on these cases)."""
    moved = []
    for n in TASKS:
        for G, L in _random_steps(n):
            peer = _Driver(libmtl["UPGrad"], n, 12, UPGrad_norm_eps=1e-4, UPGrad_reg_eps=1e-4)
            moved.append(_rel(peer.step(G, L)[0], get_aggregator("upgrad")(G, L).direction))
    assert 1e-6 < max(moved) < 1e-3


def _fair_residual(G, w, alpha):
    return float((w ** (1 / alpha) * (G @ G.T @ w) - 1).abs().max())


@pytest.mark.parametrize("n", TASKS)
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_is_ours_where_least_squares_converges(libmtl, n, alpha):
    """LibMTL solves (GGᵀ w)_i = w_i^(-1/α) by scipy's least_squares from 1/T at its default
    tolerances; where its weights satisfy the condition (residual < 1e-6) they are ours."""
    checked = 0
    for label, G, L in [("random", *next(_random_steps(n)))] + _hard(n):
        peer = _Driver(libmtl["FairGrad"], n, G.shape[1], FairGrad_alpha=alpha)
        got, w = peer.step(G, L)
        w = torch.as_tensor(w, dtype=torch.float64)
        if _fair_residual(G, w, alpha) < 1e-6:
            checked += 1
            assert _rel(got, get_aggregator("fairgrad", alpha=alpha)(G, L).direction) < 1e-5, label
    assert checked >= 2


def test_fairgrad_returns_unconverged_weights_silently(libmtl):
    """Finding: on the dominant-task case (norms 1e4 apart) least_squares stops far from the α-fair
    point and LibMTL applies its weights without a word; ours meets the condition to 1e-9."""
    G = identities.hard_cases(2)["dominant task (norms 1e4 apart)"]
    L = torch.ones(2, dtype=torch.float64)
    got, w = _Driver(libmtl["FairGrad"], 2, G.shape[1], FairGrad_alpha=1.0).step(G, L)
    assert _fair_residual(G, torch.as_tensor(w, dtype=torch.float64), 1.0) > 1.0
    ours = get_aggregator("fairgrad", alpha=1.0)(G, L)
    assert _fair_residual(G, ours.weights, 1.0) < 1e-9
    assert _rel(got, ours.direction) > 0.5


@pytest.mark.parametrize("n", TASKS)
def test_modo_fed_one_batch_three_times_is_ours(libmtl, n):
    """LibMTL's MoDo draws three batches (G₁G₂ᵀ for λ, G₃ for d); fed the same batch three times it
    is ours, which sees one batch per step (the defaults differ: LibMTL's γ = 1e-3, ours 0.1)."""
    for label, cases in [("random", list(_random_steps(n)))] + [(c[0], [c[1:]] * 3) for c in _hard(n)]:
        peer = _Driver(libmtl["MoDo"], n, cases[0][0].shape[1], MoDo_gamma=1e-3, MoDo_rho=0.1)
        ours = get_aggregator("modo", gamma=1e-3, rho=0.1)
        for G, L in cases:
            got, _ = peer.step(G, L, batches=3)
            assert _rel(got, ours(G, L).direction) < 1e-10, label


@pytest.mark.parametrize("n", TASKS)
def test_stch_after_its_warm_up_epoch_is_ours(libmtl, n):
    """LibMTL's nadir is the mean loss of the warm-up epoch's steps (epoch == STCH_warmup_epoch);
    ours that of the first `warmup_steps` steps. Three steps of epoch 0, then epoch 1. LibMTL adds
    1e-20 inside the log (negligible here)."""
    peer = _Driver(libmtl["STCH"], n, 12, STCH_mu=0.5, STCH_warmup_epoch=0)
    ours = get_aggregator("stch", mu=0.5, warmup_steps=3)
    for k, (G, L) in enumerate(_random_steps(n, steps=6)):
        with contextlib.redirect_stdout(None):  # LibMTL prints the nadir vector
            got, _ = peer.step(G, L, epoch=0 if k < 3 else 1)
        assert _rel(got, ours(None, L).weights @ G) < 1e-12


@pytest.mark.parametrize("n", TASKS)
def test_stch_after_two_warm_up_epochs_is_ours_with_nadir_steps(libmtl, n):
    """STCH_warmup_epoch=1, three steps per epoch: LibMTL descends the log-losses for epochs 0 and
    1 and takes the nadir from epoch 1's steps only; ours with warmup_steps=6, nadir_steps=3."""
    peer = _Driver(libmtl["STCH"], n, 12, STCH_mu=0.5, STCH_warmup_epoch=1)
    ours = get_aggregator("stch", mu=0.5, warmup_steps=6, nadir_steps=3)
    for k, (G, L) in enumerate(_random_steps(n, steps=9)):
        with contextlib.redirect_stdout(None):
            got, _ = peer.step(G, L, epoch=k // 3)
        assert _rel(got, ours(None, L).weights @ G) < 1e-12, k


# ---------------------------------------------------------------------------------- departures


@pytest.mark.parametrize("n", TASKS)
def test_sdmgrad_is_ours_at_large_scale(libmtl, n):
    """LibMTL's SDMGrad normalises by (mean ‖g_i‖)² + 1e-8; at gradient norms ~1e4 the 1e-8 is
    negligible and it is ours (same inner SGD: lr 5 as LibMTL's, momentum 0.5, 20 steps, a fresh
    momentum buffer per call, warm-started weights)."""
    peer = _Driver(libmtl["SDMGrad"], n, 12, SDMGrad_lamda=0.3, SDMGrad_niter=20)
    ours = get_aggregator("sdmgrad", lr=5.0, lambda_=0.3)
    for G, L in _random_steps(n, steps=6, scale=1e4):
        got, _ = peer.step(G, L, batches=3)
        assert _rel(got, ours(G, L).direction) < 1e-9


def test_sdmgrad_depends_on_the_gradient_scale(libmtl):
    """Finding: at entries ~1e-3 (row norms ~4e-3) LibMTL's + 1e-8 is ~0.07 % of the normalisation
    (mean ‖g_i‖)², and its inner SGD (lr 5 on a Gram whose largest eigenvalue is ~T after
    normalisation: it does not converge, it bounces on the simplex) turns that into another update
    on some steps (here by over 100 % on one step of six, 3 % on another); ours is homogeneous of
    degree 1."""
    peer = _Driver(libmtl["SDMGrad"], 3, 12, SDMGrad_lamda=0.3, SDMGrad_niter=20)
    ours = get_aggregator("sdmgrad", lr=5.0, lambda_=0.3)
    gaps = [_rel(peer.step(G, L, batches=3)[0], ours(G, L).direction) for G, L in _random_steps(3, 6, 1e-3)]
    assert max(gaps) > 0.1


def test_moco_is_another_update_than_algorithm_1(libmtl):
    """Finding: LibMTL's MoCo (from the authors' shared code) tracks ĝ_i = g_i/(‖g_i‖ + 1e-8)·L_i
    instead of g_i and takes λ ← softmax(λ − γ_k(YYᵀ + ρI)λ) instead of the simplex projection.
    Its update is exactly that recurrence. Fed the same ĝ our Y is its Y, and the λ rule alone moves
    the update by 1–3 % on these steps; fed G, as a user feeds both, ours is about 70 % off it."""
    n = 3
    peer = _Driver(
        libmtl["MoCo"], n, 12, MoCo_beta=0.5, MoCo_beta_sigma=0.5, MoCo_gamma=0.1, MoCo_gamma_sigma=0.5, MoCo_rho=0.0
    )
    ours, ours_on_rescaled = get_aggregator("moco"), get_aggregator("moco")
    y, lam = torch.zeros(n, 12, dtype=torch.float64), torch.full((n,), 1 / n, dtype=torch.float64)
    rule_gaps, gaps = [], []
    for k, (G, L) in enumerate(_random_steps(n), start=1):
        got, weights = peer.step(G, L)
        rescaled = G / (G.norm(dim=1, keepdim=True) + 1e-8) * L[:, None]
        y = y - 0.5 / k**0.5 * (y - rescaled)
        lam = torch.softmax(lam - 0.1 / k**0.5 * (y @ y.T) @ lam, 0)
        assert _rel(got, y.T @ lam) < 1e-12
        assert torch.allclose(torch.as_tensor(weights, dtype=torch.float64), lam, rtol=1e-12)
        out = ours_on_rescaled(rescaled, L)
        assert torch.allclose(ours_on_rescaled._y[0], y, rtol=1e-12, atol=0.0)
        assert torch.allclose(project_onto_simplex(ours_on_rescaled._lambda), ours_on_rescaled._lambda)
        rule_gaps.append(_rel(got, out.direction))
        gaps.append(_rel(got, ours(G, L).direction))
    assert 1e-3 < max(rule_gaps) < 0.1
    assert 0.6 < min(gaps) and max(gaps) < 0.8


@pytest.mark.skipif(not np.__version__.startswith("2"), reason="NumPy 2 removed np.alltrue")
@pytest.mark.parametrize("n", [2, 3])
def test_sdmgrad_crashes_on_zero_gradients_under_numpy_2(libmtl, n):
    """Finding: with every task gradient zero its weights stay at 1/T, which sum to exactly 1 (in its
    own float32 when T is a power of two; here in float64, at T = 2 and 3), and its simplex
    projection then calls np.alltrue, removed in NumPy 2.0 (an AttributeError). Ours returns 0."""
    peer = _Driver(libmtl["SDMGrad"], n, 12, SDMGrad_lamda=0.3, SDMGrad_niter=20)
    G, L = torch.zeros(n, 12, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    with pytest.raises(AttributeError, match="alltrue"):
        peer.step(G, L, batches=3)
    assert torch.equal(get_aggregator("sdmgrad", lr=5.0)(G, L).direction, torch.zeros(12, dtype=torch.float64))
