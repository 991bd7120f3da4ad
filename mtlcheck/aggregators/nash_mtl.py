"""Nash-MTL (Navon et al. 2022): the Nash bargaining solution of the task gradients.

Find α > 0 with (M α)_i = 1/α_i, M = G Gᵀ / ‖G Gᵀ‖_F (the official code's normalisation);
direction = Σ_i α_i g_i, clipped to norm `max_norm` (1.0, as the official code; None = off).
The equations are the stationarity conditions of the strictly convex
    f(α) = ½ αᵀ M α − Σ_i log α_i,
solved here by damped Newton steps (warm-started from the last solution). f is unbounded below,
so no solution exists, exactly when a non-negative, non-zero combination of the gradients
vanishes (e.g. g and −g): then a SolverError is raised — never a silent fall back to equal
weighting (peers return EW when their ECOS solver is missing or fails). Tasks whose gradient is
zero get α = 0 and are left out of the bargaining. `update_weights_every` reuses α for k steps.
"""

from __future__ import annotations

import numpy as np
import torch

from mtlcheck.aggregators._base import Aggregation, AggregatorTags, Aggregator, SolverError
from mtlcheck.aggregators._registry import register_aggregator


def nash_newton(M: np.ndarray, alpha0: np.ndarray, *, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Solve M α = 1/α (α > 0) by Newton's method on f(α) = ½αᵀMα − Σ log α."""
    alpha = alpha0.astype(np.float64).copy()

    def f(a):
        return 0.5 * a @ M @ a - np.log(a).sum()

    def residual(a):  # scale-free: max_i |α_i (Mα)_i − 1|
        return float(np.abs(a * (M @ a) - 1.0).max())

    for _ in range(max_iter):
        r0 = residual(alpha)
        if r0 < tol:
            return alpha
        grad = M @ alpha - 1.0 / alpha
        H = M + np.diag(1.0 / alpha**2)
        try:
            step = -np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        neg = step < 0
        if neg.any():
            t = min(1.0, 0.99 * float(np.min(-alpha[neg] / step[neg])))
        f0, slope = f(alpha), float(grad @ step)
        # Armijo on f, or (near the solution, where f is flat to rounding) a smaller residual
        while t > 1e-12 and f(alpha + t * step) > f0 + 1e-4 * t * slope and residual(alpha + t * step) > 0.9 * r0:
            t *= 0.5
        alpha = alpha + t * step
        if not np.all(np.isfinite(alpha)) or alpha.max() > 1e12:
            break
    raise SolverError(
        "Nash-MTL: no bargaining solution found (M α = 1/α diverged or did not converge); this happens when "
        "a non-negative combination of the task gradients vanishes, e.g. two exactly opposite gradients"
    )


@register_aggregator("nash_mtl")
class NashMTL(Aggregator):
    implements = "nash_mtl"
    _state_attrs = ('_alpha', '_step')

    def __init__(self, *, max_norm: float | None = 1.0, update_weights_every: int = 1, warm_start: bool = True,
                 tol: float = 1e-10, max_iter: int = 100, seed: int = 0):
        super().__init__(seed=seed)
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"NashMTL: max_norm must be > 0 or None, got {max_norm!r}")
        if not (isinstance(update_weights_every, int) and update_weights_every >= 1):
            raise ValueError(f"NashMTL: update_weights_every must be an int >= 1, got {update_weights_every!r}")
        self.max_norm, self.update_weights_every, self.warm_start = max_norm, update_weights_every, warm_start
        self.tol, self.max_iter = tol, max_iter
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            family="solver",
            nonneg_weights=True,
            stateful=self.warm_start or self.update_weights_every > 1,
            reduction="sum" if self.max_norm is None else "other",
            homogeneity=1 if self.max_norm is None else None,
            requires_solver="newton",
        )

    def identical_rows_scale(self, n_tasks):
        return float(n_tasks) if self.max_norm is None else None

    def _solve(self, M: np.ndarray, alpha0: np.ndarray) -> np.ndarray:
        return nash_newton(M, alpha0, tol=self.tol, max_iter=self.max_iter)

    def solve_weights(self, gram: torch.Tensor) -> torch.Tensor:
        n = gram.shape[0]
        active = (gram.diagonal() > 0).numpy()
        alpha = np.zeros(n)
        if active.any():
            M = gram.numpy()[np.ix_(active, active)]
            M = M / np.linalg.norm(gram.numpy())
            start = np.ones(active.sum())
            if self.warm_start and self._alpha is not None and np.all(self._alpha[active] > 0):
                start = self._alpha[active]
            alpha[active] = self._solve(M, start)
        return torch.from_numpy(alpha)

    def _aggregate(self, J, losses):
        step = self._step or 0
        if self._alpha is None or step % self.update_weights_every == 0:
            alpha = self.solve_weights(J.gram())
        else:
            alpha = torch.from_numpy(self._alpha)
        self._step = step + 1
        if self.warm_start or self.update_weights_every > 1:
            self._alpha = alpha.numpy().copy()
        weights = alpha
        if self.max_norm is not None:
            norm = float(alpha @ J.gram() @ alpha) ** 0.5
            if norm > self.max_norm:
                weights = alpha * (self.max_norm / norm)
        return Aggregation(J.combine(weights), weights)
