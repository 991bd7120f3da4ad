"""FairGrad (Ban & Ji 2024, "Fair Resource Allocation in Multi-Task Learning", ICML,
arXiv:2402.15638, Eq. 4 and Algorithm 1): the step d = Σ_i w_i g_i whose per-task improvements
⟨g_i, d⟩ are α-fair, i.e. the weights w > 0 solve

    (G Gᵀ w)_i = w_i^{−1/α}   for every task i      (α > 0; α = 1 is Nash-MTL's bargaining).

On the raw Gram, as the paper (and TorchJD's version, adapted from github.com/OptMN-Lab/fairgrad). They are
the stationarity conditions of the strictly convex
    f(w) = ½ wᵀMw − φ(w),  φ = Σ log w_i (α = 1),  φ = α/(α−1) Σ w_i^{(α−1)/α} (α ≠ 1),
solved here by damped Newton in relative coordinates (w ← w ⊙ (1 + t s), (DHD) s = −D∇f,
D = diag(w), H = M + (1/α) diag(w^{−1/α−1})) with an Armijo backtracking on f that keeps
w > 0 (full steps once the Newton decrement −∇fᵀDs < 1e-2),
until max_i |w_i^{1/α}(Mw)_i − 1| ≤ `tol`, or, where rounding makes that unreachable, full steps
stop halving it while |r_i| ≤ 2T·u·w_i^{1/α}(|M|w)_i (u = 2⁻⁵³; as Nash-MTL's solver) and
|r_i| ≤ 1e-6, or above 1e-6 only where the min-norm certificate below shows that a solution
exists (a rounding level that large is either w running off along a vanishing combination, or
cancellation in (Mw)_i for tasks of norms far apart: α = 0.25, norms 1e-3 to 1e3, floor ~7e-5,
weights mpmath's root to 1e-13).
The solve reads the scaled Gram Ĝ = M/4^S: if ŵ solves it, w = 2^{−2Sα/(1+α)} ŵ solves M's.
Then ⟨g_i, d⟩ = w_i^{−1/α} > 0: the step conflicts with no task.

No solution exists when a non-negative, non-zero combination of the gradients vanishes (f is
then unbounded below or does not attain its infimum): SolverError with the min-norm certificate,
never a silent fall back (TorchJD returns scipy's least_squares result without checking it).
Tasks with a zero gradient get w = 0.

Peers: TorchJD 0.18 (`torchjd.aggregation.FairGrad(alpha)`, scipy least_squares from w = 1/T
with bounds (0, ∞)) solves the same equation; so does LibMTL's current tree (not in 1.1.5), with
the same silent acceptance of an unconverged result (README findings;
suites/aggregators/test_libmtl_tree_fidelity.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtlcheck.aggregators._base import AggregatorTags, SolverError, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.aggregators.nash_mtl import UNIT_ROUNDOFF, no_solution_certificate

RESOLVED = 1e-6  # a rounding-level residual above this is no solution (w diverging along a vanishing combination)


class FairGradNotConverged(Exception):
    """No certified w; `settled`: a w whose residual stopped at its rounding level above RESOLVED
    (a solution where one exists, cancellation in (Mw)_i for tasks of norms far apart), or None."""

    def __init__(self, message: str, settled: np.ndarray | None = None):
        super().__init__(message)
        self.settled = settled


def fair_newton(M: np.ndarray, alpha: float, *, tol: float = 1e-12, max_iter: int = 200) -> np.ndarray:
    """w > 0 with (Mw)_i = w_i^{−1/α} (M symmetric PSD with a positive diagonal)."""
    n = M.shape[0]
    p = 1.0 / alpha

    def phi(w):
        return float(np.log(w).sum()) if alpha == 1 else alpha / (alpha - 1) * float((w ** ((alpha - 1) / alpha)).sum())

    def f(w):
        return 0.5 * float(w @ M @ w) - phi(w)

    w = np.diag(M) ** (-alpha / (1 + alpha))  # the solution for orthogonal gradients
    q = float(w @ M @ w)
    if not q > 0:  # a positive combination of the gradients vanishes: f is unbounded below along w
        raise FairGradNotConverged(f"wᵀMw = {q:.3g} at the start w > 0")
    c = (float((w ** (1 - p)).sum()) / q) ** (alpha / (1 + alpha))  # argmin_c f(c w)
    w = w * c
    last_full = None  # (w, max|r|, r, rounding bound) before the latest full Newton step
    settled = None
    for _ in range(max_iter):
        Mw = M @ w
        r = w**p * Mw - 1.0
        err = float(np.abs(r).max())
        if err <= tol:
            return w
        if last_full is not None and err > 0.5 * last_full[1]:  # a full step no longer halved r:
            before, err_before, r_before, bound = last_full  # rounding, if r was at its level and
            if np.all(np.abs(r_before) <= bound):  # that level resolves it
                if err_before <= RESOLVED:
                    return before
                settled = before
        grad = w * Mw - w ** (1 - p)  # D ∇f
        H = w[:, None] * M * w[None, :]
        H.flat[:: n + 1] += p * w ** (1 - p)
        try:
            s = -np.linalg.solve(H, grad)
        except np.linalg.LinAlgError as exc:
            raise FairGradNotConverged(f"Newton system singular: {exc}", settled) from None
        decrement = -float(grad @ s)
        shrink = s < 0
        t = min(1.0, 0.99 / float(np.max(-s[shrink]))) if shrink.any() else 1.0
        if decrement < 1e-2 and t == 1.0:  # near the solution: full Newton steps (quadratic convergence;
            # f's decrease is then below its rounding, so no line search decides)
            last_full = (w, err, r, 2 * n * UNIT_ROUNDOFF * w**p * (np.abs(M) @ w))
            w = w * (1.0 + s)
            continue
        last_full = None
        f0 = f(w)
        while t > 1e-12 and not f(w * (1.0 + t * s)) <= f0 - 0.25 * t * decrement:
            t *= 0.5
        if t <= 1e-12:
            raise FairGradNotConverged("the line search found no decrease", settled)
        w = w * (1.0 + t * s)
        if not np.all(np.isfinite(w)) or float(w.max()) > 1e150:
            raise FairGradNotConverged(f"w diverged (max w_i = {float(w.max()):.3g})", settled)
    raise FairGradNotConverged(f"no certified solution after {max_iter} Newton steps", settled)


@register_aggregator("fairgrad", paper_name="FairGrad")
class FairGrad(WeightingAggregator):
    implements = "fairgrad"

    def __init__(self, *, alpha: float = 1.0, tol: float = 1e-12, max_iter: int = 200, seed: int = 0):
        super().__init__(seed=seed)
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"FairGrad: alpha must be a finite number > 0, got {alpha!r}")
        if not 0 < tol < 1:  # a relative residual: 1 accepts any w
            raise ValueError(f"FairGrad: tol must be in (0, 1), got {tol!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"FairGrad: max_iter must be an int >= 1, got {max_iter!r}")
        self.alpha, self.tol, self.max_iter = alpha, tol, max_iter

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            family="solver",
            nonneg_weights=True,
            reduction="other",  # identical rows: d = T (T‖g‖²)^{−α/(1+α)} g
            homogeneity=0 if self.alpha == 1 else None,  # degree (1 − α)/(1 + α)
            non_conflicting=True,
            requires_solver="newton",
        )

    def _solve(self, M: np.ndarray) -> np.ndarray:
        try:
            return fair_newton(M, self.alpha, tol=self.tol, max_iter=self.max_iter)
        except FairGradNotConverged as exc:
            norms = np.sqrt(np.diag(M))
            certificate = no_solution_certificate(M / np.outer(norms, norms))
            if certificate is not None:
                w, value, level = certificate
                raise SolverError(
                    f"{self!r}: no α-fair solution: (GGᵀw)_i = w_i^(−1/α) has no positive solution because a "
                    f"non-negative combination of the task gradients vanishes up to rounding — w = "
                    f"{np.round(w, 6).tolist()} gives ‖Σ w_i g_i/‖g_i‖‖² = {value:.3g} ≤ {level:.3g} (e.g. opposite "
                    f"gradients)"
                ) from None
            if exc.settled is not None:  # a solution exists, and the residual is at its rounding level
                return exc.settled
            raise SolverError(
                f"{self!r}: Newton failed although a solution exists ({exc}); Gram = {M.tolist()}"
            ) from None

    def _weights(self, J, losses):
        gram = J.scaled_gram().numpy()
        n = gram.shape[0]
        active = np.diag(gram) > 0
        w = np.zeros(n)
        if active.any():
            M = gram if active.all() else gram[np.ix_(active, active)]
            w[active] = self._solve(M)
        # w · 2^exponent, a power past a float's range (gradients of 1e-300 at α = 2) as inf weights,
        # which the call refuses as such (2.0**exponent raised OverflowError)
        exponent = -2 * J.gram_exponent * self.alpha / (1 + self.alpha)
        whole = math.floor(exponent)
        with np.errstate(over="ignore"):
            return torch.from_numpy(np.ldexp(w * 2.0 ** (exponent - whole), whole))
