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
