"""The dual-cone projection QP behind UPGrad and DualProj (`_dual_cone`): the enumerated solver,
the NNLS path (T > 10 and where no face is certified) and the failure that is never silent."""

import numpy as np
import pytest
import torch

from mtlcheck.aggregators import DualProj, SolverError, UPGrad
from mtlcheck.aggregators import _dual_cone as dc
from mtlcheck.testing import samplers


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("seed", range(4))
def test_enumeration_and_nnls_agree_and_pass_kkt(n, seed):
    G = samplers.conflicting(n, 12, gen(seed)) if seed % 2 else samplers.normal(n, 12, gen(seed))
    M = (G @ G.T).numpy()
    M = M / M.diagonal().max()
    U = np.eye(n) / n
    W = dc.project_weights(M, U)
    for k in range(n):
        assert dc.kkt_residual(M, U[k], W[k]) <= dc.KKT_TOL
        w2 = dc._nnls(M, U[k])
        assert np.linalg.norm((w2 - W[k]) @ G.numpy()) <= 1e-9 * np.linalg.norm(W[k] @ G.numpy())


def test_more_than_ten_tasks_use_nnls_and_satisfy_the_identity():
    G = samplers.conflicting(12, 16, gen(3))
    M = (G @ G.T).numpy()
    M = M / M.diagonal().max()
    U = np.eye(12) / 12
    for u, w in zip(U, dc.project_weights(M, U)):
        assert dc.kkt_residual(M, u, w) <= dc.KKT_TOL
    d = UPGrad()(G).direction
    assert float((G @ d).min()) >= -1e-12 * float(G.norm() * d.norm())
    d2 = DualProj()(G).direction
    assert float((G @ d2).min()) >= -1e-12 * float(G.norm() * d2.norm())


@pytest.mark.parametrize("case", ["rank_deficient", "zero_row", "opposite_rows"])
def test_degenerate_gram_gives_a_certified_projection(case):
    G = samplers.hard_inputs(4, 12, gen(1))[case]
    M = (G @ G.T).numpy()
    M = M / M.diagonal().max()
    for u in np.eye(4) / 4:
        (w,) = dc.project_weights(M, u[None])
        assert dc.kkt_residual(M, u, w) <= dc.KKT_TOL


def test_opposite_rows_project_to_zero():
    """g and −g: the dual cone is g's orthogonal complement, so both projections vanish."""
    g = torch.randn(12, generator=gen(2), dtype=torch.float64)
    G = torch.stack([g, -g])
    assert float(UPGrad()(G).direction.norm()) < 1e-12 * float(g.norm())
    assert float(DualProj()(G).direction.norm()) < 1e-12 * float(g.norm())


def test_uncertified_answer_raises(monkeypatch):
    """Neither the faces nor NNLS certified: SolverError, never a silent answer."""
    monkeypatch.setattr(dc, "_enumerated", lambda M, U, tol: np.full(U.shape, np.nan))
    monkeypatch.setattr(dc, "_nnls", lambda M, u: u)  # NNLS 'stops at its start'
    with pytest.raises(SolverError, match="no certified optimum"):
        UPGrad()(samplers.conflicting(3, 12, gen()))


def _unequal(case: str, seed: int) -> torch.Tensor:
    """Task gradients whose norms span orders of magnitude: above ten tasks (the NNLS path), with
    a shared component of either sign (conflicting tasks), and more tasks than dimensions."""
    g = gen(seed)
    if case == "conflicting":
        shared = torch.randn(1, 1000, generator=g, dtype=torch.float64)
        signs = torch.randn(11, 1, generator=g, dtype=torch.float64).sign()
        rows = torch.randn(11, 1000, generator=g, dtype=torch.float64) + 3 * shared * signs
        return rows * torch.logspace(-2.5, 2.5, 11, dtype=torch.float64)[:, None]
    n, d, spread = {"T=11": (11, 1000, 3), "T=20": (20, 1000, 4), "T=8, d=3": (8, 3, 2), "T=5, d=3": (5, 3, 1)}[case]
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64)
        * torch.logspace(-spread, spread, n, dtype=torch.float64)[:, None]
    )


@pytest.mark.parametrize("case", ["T=11", "T=20", "conflicting", "T=8, d=3", "T=5, d=3"])
def test_rows_of_unequal_norms_get_a_certified_projection(case):
    """Norms from 1e-3 to 1e3 (T = 11): the NNLS on M's square root, whose conditioning is M's
    squared, stopped ~1e-10 from the optimum and the KKT test refused it (SolverError on 34 of 50
    seeds for UPGrad at norms 1e-2..1e2, all 50 at 1e-3..1e3); T > d, where the dual cone may be
    {0} and the optimal weights are not unique, likewise. Scaled to a unit diagonal and re-solved
    on the face it found, every seed is certified."""
    for seed in range(10):
        G = _unequal(case, seed)
        n = G.shape[0]
        for agg in (UPGrad(), DualProj()):  # no SolverError, weights >= 1/T
            assert np.all(agg(G).weights.numpy() >= 1 / n - 1e-12), (case, seed, agg)
        M = (G @ G.T).numpy()
        M = M / M.diagonal().max()
        for U in (np.eye(n) / n, np.full((1, n), 1 / n)):  # UPGrad's projections, DualProj's
            W = dc.project_weights(M, U)
            assert max(dc.kkt_residual(M, u, w) for u, w in zip(U, W)) <= dc.KKT_TOL, (case, seed)


@pytest.mark.parametrize("case", ["T=11", "T=20", "conflicting"])
def test_projections_of_unequal_rows_are_quadprogs_in_the_primal(case):
    """Against an independent solve of π_C(x) = argmin_{Gy ≥ 0} ‖y − x‖² in the d primal variables
    (quadprog, shipped with the peers extra), for every task's projection. (Not T > d: quadprog's
    dual method calls a cone {0} of redundant constraints inconsistent.)"""
    quadprog = pytest.importorskip("quadprog")
    for seed in range(3):
        G = _unequal(case, seed)
        M = (G @ G.T).numpy()
        W = dc.project_weights(M, np.eye(len(M)))
        for i, w in enumerate(W):
            x = G[i].numpy()
            unit = G.numpy() / np.linalg.norm(G.numpy(), axis=1, keepdims=True)  # same cone, scaled rows
            y = quadprog.solve_qp(np.eye(len(x)), x, unit.T.copy(), np.zeros(len(M)))[0]
            got = w @ G.numpy()
            assert np.linalg.norm(got - y) <= 1e-7 * np.linalg.norm(x), (case, seed, i)
