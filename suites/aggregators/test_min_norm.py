"""The exact min-norm solver behind MGDA: face enumeration (T ≤ ENUMERATION_MAX_TASKS) and
Wolfe's iteration (beyond, and whenever no enumerated candidate passes the KKT test) must both
give the KKT point, and the same one."""

import numpy as np
import pytest

from mtlcheck.aggregators import _min_norm
from mtlcheck.aggregators._min_norm import _enumerated, kkt_violation, min_norm_weights


@pytest.fixture(params=["default", "wolfe-only"])
def solver(request, monkeypatch):
    """default: face enumeration, Wolfe where no candidate passes the KKT test; wolfe-only: Wolfe."""
    if request.param == "wolfe-only":
        monkeypatch.setattr(_min_norm, "ENUMERATION_MAX_TASKS", 0)
    return request.param


def test_kkt_point_even_when_tasks_outnumber_dimensions(solver):
    """Affinely dependent supports (T >= d + 2) once made Wolfe's loop cycle until its cap."""
    rng = np.random.default_rng(1)
    for _ in range(1500):
        G = rng.normal(size=(rng.integers(2, 9), rng.integers(1, 6)))
        w = min_norm_weights(G @ G.T)
        assert abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
        assert kkt_violation(G @ G.T, w) < 1e-9


@pytest.mark.parametrize("n", [2, 3, 5, 7, 10])
def test_enumeration_and_wolfe_agree_on_independent_gradients(n, monkeypatch):
    rng = np.random.default_rng(n)
    for _ in range(30):
        G = rng.normal(size=(n, 40))
        G[0] -= rng.uniform(0.5, 1.5) * G[1]  # conflict: the optimum is inside a face
        M = G @ G.T
        M = M / np.max(np.diag(M))
        enumerated = _enumerated(M, 1e-12)
        assert enumerated is not None, "independent gradients: some face's candidate must pass KKT"
        with monkeypatch.context() as m:
            m.setattr(_min_norm, "ENUMERATION_MAX_TASKS", 0)
            wolfe = min_norm_weights(M)
        assert np.abs(enumerated - wolfe).max() < 1e-9
        assert kkt_violation(M, enumerated) < 1e-10


def test_zero_in_the_hull_and_duplicates(solver):
    G = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # 0 = (g1 + g2)/2; g3 = g4
    w = min_norm_weights(G @ G.T)
    assert w == pytest.approx([0.5, 0.5, 0.0, 0.0], abs=1e-12)
    assert float(np.linalg.norm(w @ G)) < 1e-12


def test_many_tasks_use_wolfe(monkeypatch):
    calls = []
    monkeypatch.setattr(_min_norm, "_enumerated", lambda M, tol: calls.append(M.shape[0]))
    rng = np.random.default_rng(3)
    n = _min_norm.ENUMERATION_MAX_TASKS + 2
    G = rng.normal(size=(n, 50))
    M = G @ G.T
    w = min_norm_weights(M)
    assert kkt_violation(M, w) < 1e-10
    assert calls == []  # enumeration never tried beyond ENUMERATION_MAX_TASKS
    min_norm_weights(M[:3, :3])
    assert calls == [3]
