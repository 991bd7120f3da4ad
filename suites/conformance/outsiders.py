"""Correct methods as an outside researcher writes them from the papers and the README's protocol
alone (public members only): the kit must pass them (`test_outsiders.py`). Each is a textbook
implementation with an ordinary solver at its ordinary settings; none is tuned to the kit.

    SlsqpCAGrad   CAGrad's dual (Liu et al. 2021, Eq. 7 of the official code) by scipy's SLSQP
    FrankWolfeMGDA  MGDA's min-norm weights by Frank-Wolfe (Sener & Koltun 2018, Alg. 2), run
                    until the step γ falls below `tol` (the official MinNormSolver's 1e-5)
    PinvIMTLG     IMTL-G's closed form (Liu et al. 2021, Eq. 12) with a pseudo-inverse
    WarningNash   Nash-MTL's weights that says so with a RuntimeWarning when its solver fails
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.optimize import minimize

from mtlcheck.aggregators import AggregatorTags, WeightingAggregator


# ---- the textbook solvers, shared with the planted-bug versions of `suites/meta` ------------------
def cagrad_dual_slsqp(A, cc, *, eps: float, ftol: float, maxiter: int, x0=None):
    """SLSQP on CAGrad's dual min_{w∈Δ} wᵀA1/T + cc√(wᵀAw + eps), from x0 (default 1/T): scipy's result."""
    n = A.shape[0]
    return minimize(
        lambda w: float(w @ A.mean(1) + cc * math.sqrt(max(w @ A @ w, 0.0) + eps)),
        np.full(n, 1.0 / n) if x0 is None else x0,
        method="SLSQP",
        bounds=[(0, 1)] * n,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1},),
        options={"ftol": ftol, "maxiter": maxiter},
    )


def frank_wolfe_min_norm(M, max_iter: int, tol: float | None = None) -> torch.Tensor:
    """Sener & Koltun's Algorithm 2 on the Gram M from w = 1/T: `max_iter` steps, or fewer when the
    step γ falls below `tol`."""
    w = torch.full((M.shape[0],), 1.0 / M.shape[0], dtype=torch.float64)
    for _ in range(max_iter):
        t = int(torch.argmin(M @ w))
        a, b, c = float(w @ M[:, t]), float(w @ M @ w), float(M[t, t])
        gamma = 1.0 if c <= a else (0.0 if b <= a else (b - a) / (b + c - 2 * a))
        w = (1 - gamma) * w
        w[t] += gamma
        if tol is not None and gamma < tol:
            break
    return w


def nash_lbfgs(M):
    """Nash-MTL's argmin_α ½αᵀMα − Σ log α by L-BFGS-B from α = 1: scipy's result."""
    n = M.shape[0]
    return minimize(
        lambda a: 0.5 * a @ M @ a - np.log(a).sum(),
        np.ones(n),
        jac=lambda a: M @ a - 1 / a,
        method="L-BFGS-B",
        bounds=[(1e-9, None)] * n,
        options={"gtol": 1e-12, "ftol": 1e-15},
    )


class SlsqpCAGrad(WeightingAggregator):
    """w* = argmin_{w∈Δ} wᵀA1/T + c‖g0‖√(wᵀAw) on the trace-normalised Gram A, by SLSQP (ftol 1e-12,
    its usual tight setting); direction g0 + c‖g0‖/‖g_w‖ g_w, i.e. weights 1/T + c‖g0‖/‖g_w‖ w*.
    A failed solve raises."""

    implements = "cagrad"

    def __init__(self, *, c: float = 0.5, seed: int = 0):
        super().__init__(seed=seed)
        self.c = c

    def tags(self):
        # SLSQP's ftol is on the objective: the optimum w* is known to about √ftol, and the
        # objective (what the defining property compares) to ftol, relative
        return AggregatorTags(family="solver", nonneg_weights=True, reduction="other", solver_tol=1e-6)

    def identical_rows_scale(self, n_tasks):
        return None

    def _weights(self, J, losses):
        A = J.gram().numpy()
        n = A.shape[0]
        if np.trace(A) == 0:  # G = 0: any weights give the zero direction
            return torch.full((n,), 1.0 / n, dtype=torch.float64)
        A = A / np.trace(A)
        cc = self.c * math.sqrt(max(A.mean(), 0.0))
        res = cagrad_dual_slsqp(A, cc, eps=1e-20, ftol=1e-12, maxiter=500)
        if not res.success:
            raise RuntimeError(f"SLSQP failed: {res.message}")
        w = res.x
        gw = math.sqrt(max(float(w @ A @ w), 1e-300))
        return torch.from_numpy(1.0 / n + cc / gw * w)


class FrankWolfeMGDA(WeightingAggregator):
    """Sener & Koltun's Algorithm 2 on the Gram matrix, stopped when the step γ < tol (the official
    MinNormSolver's 1e-5), with room for the O(1/k) convergence (max_iter 10 000: on the kit's
    cond-1e3 case 250 steps end before γ < 1e-5, the gap bound below then does not hold).
    γ < tol bounds the duality gap: ‖d‖² − ⟨g_t, d⟩ < tol·‖d − g_t‖² ≤ 4·tol·max_i‖g_i‖², so it
    declares solver_tol = 4·tol."""

    implements = "mgda"

    def __init__(self, *, tol: float = 1e-5, max_iter: int = 10_000, seed: int = 0):
        super().__init__(seed=seed)
        self.tol, self.max_iter = tol, max_iter

    def tags(self):
        return AggregatorTags(
            family="solver", nonneg_weights=True, reduction="mean", non_conflicting=True, solver_tol=4 * self.tol
        )

    def _weights(self, J, losses):
        return frank_wolfe_min_norm(J.gram(), self.max_iter, self.tol)


class PinvIMTLG(WeightingAggregator):
    """α_{2:T} = g_1 Uᵀ (D Uᵀ)⁺ with D = g_1 − g_{2:T}, U = u_1 − u_{2:T} (u_i = g_i/‖g_i‖),
    α_1 = 1 − Σ α_{2:T}; direction Σ α_i g_i."""

    implements = "imtl_g"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="solver", reduction="mean")

    def _weights(self, J, losses):
        G = J.matrix().to(torch.float64)
        n = G.shape[0]
        if n == 1:
            return torch.ones(1, dtype=torch.float64)
        U = G / G.norm(dim=1, keepdim=True).clamp_min(1e-300)
        D, Ud = G[:1] - G[1:], U[:1] - U[1:]
        rest = (G[:1] @ Ud.T) @ torch.linalg.pinv(D @ Ud.T)
        return torch.cat([1 - rest.sum(1), rest[0]])


class ScaleFreeSolverWeighting(WeightingAggregator):
    """Non-negative weights from a solver, at a scale of their own (Nash-MTL's, FairGrad's): no
    homogeneity and no fixed scale on identical rows are claimed."""

    def tags(self):
        return AggregatorTags(family="solver", nonneg_weights=True, reduction="other", homogeneity=None)

    def identical_rows_scale(self, n_tasks):
        return None


class WarningNash(ScaleFreeSolverWeighting):
    """Nash-MTL's bargaining weights (Navon et al. 2022): argmin_α ½αᵀMα − Σ log α by L-BFGS-B on
    the normalised Gram; when the solver fails it warns (a RuntimeWarning, as numpy and scipy
    do) and returns equal weights. (No `implements`: its fallback is documented, not Nash's.)"""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def _weights(self, J, losses):
        M = J.gram().numpy()
        n = M.shape[0]
        if not np.linalg.norm(M) > 0:
            return torch.ones(n, dtype=torch.float64)
        M = M / np.linalg.norm(M)
        res = nash_lbfgs(M)
        if not res.success:
            warnings.warn(f"L-BFGS-B failed ({res.message}); equal weights this step", RuntimeWarning, stacklevel=2)
            return torch.ones(n, dtype=torch.float64)
        return torch.from_numpy(res.x)
