"""CAGrad (Liu et al. 2021): conflict-averse gradient descent.

With A = G Gᵀ, g0 = mean_i g_i and c' = c ‖g0‖, solve on the simplex
    w* = argmin_w  wᵀ A 1/T + c' √(wᵀ A w)        (SLSQP, scipy)
and take d = g0 + (c' / ‖g_w‖) g_w with g_w = Σ_i w*_i g_i. Like the official code the
direction is multiplied by T ("to match the sum loss"), and `rescale` divides it by
1 (0), 1 + c² (1, the official default) or 1 + c (2). c = 0 gives the plain sum Σ_i g_i;
c ≥ 1 makes the direction non-conflicting.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize

from mtlcheck.aggregators._base import AggregatorTags, SolverError, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("cagrad")
class CAGrad(WeightingAggregator):
    def __init__(self, *, c: float = 0.5, rescale: int = 1, seed: int = 0):
        super().__init__(seed=seed)
        if not c >= 0:
            raise ValueError(f"CAGrad: c must be >= 0, got {c!r}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"CAGrad: rescale must be 0, 1 or 2, got {rescale!r}")
        self.c, self.rescale = c, rescale

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            family="solver",
            nonneg_weights=True,
            reduction="other",
            non_conflicting=self.c >= 1,
            requires_solver="scipy" if self.c > 0 else None,
        )

    def identical_rows_scale(self, n_tasks):
        return n_tasks * (1 + self.c) / self._divisor()

    def _divisor(self) -> float:
        return {0: 1.0, 1: 1 + self.c**2, 2: 1 + self.c}[self.rescale]

    def _solve(self, A: np.ndarray, c: float) -> np.ndarray:
        """w* on the simplex for the normalised Gram A (trace-scaled)."""
        n = A.shape[0]
        b = A.mean(1)
        smooth = 1e-14  # keeps √ differentiable where g_w = 0; A is scaled to unit trace

        def f(w):
            return float(w @ b + c * math.sqrt(max(w @ A @ w, 0.0) + smooth))

        def grad(w):
            return b + c * (A @ w) / math.sqrt(max(w @ A @ w, 0.0) + smooth)

        res = minimize(
            f, np.full(n, 1.0 / n), jac=grad, method="SLSQP", bounds=[(0.0, 1.0)] * n,
            constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},),
            options={"ftol": 1e-13, "maxiter": 500},
        )
        if not res.success:
            raise SolverError(f"{self!r}: SLSQP failed: {res.message}")
        w = np.clip(res.x, 0.0, None)
        return w / w.sum()

    def _weights(self, J, losses):
        A = J.gram()
        n = A.shape[0]
        trace = float(A.trace())
        if trace <= 0:
            return torch.zeros(n, dtype=torch.float64)
        An = A / trace
        g0_norm = math.sqrt(max(float(An.mean()), 0.0))
        cc = self.c * g0_norm
        w = torch.from_numpy(self._solve(An.numpy(), cc)) if cc > 0 else torch.full((n,), 1.0 / n, dtype=torch.float64)
        gw_norm = math.sqrt(max(float(w @ An @ w), 0.0))
        lam = cc / gw_norm if gw_norm > 0 else 0.0
        weights = torch.full((n,), 1.0 / n, dtype=torch.float64) + lam * w
        return weights * n / self._divisor()
