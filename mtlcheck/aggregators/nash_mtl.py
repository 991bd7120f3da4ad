"""Nash-MTL (Navon et al. 2022): the Nash bargaining solution of the task gradients.

Find α > 0 with α_i (G Gᵀ α)_i = 1 for every task, on the raw Gram — the official code's scale
(github.com/AvivNavon/nash-mtl, methods/weight_methods.py: it solves on G Gᵀ / ‖G Gᵀ‖_F and
multiplies the normalisation back inside its constraint). Then the step Σ_i α_i g_i has norm √T
whatever the scale of G (‖Σ α_i g_i‖² = αᵀ G Gᵀ α = Σ_i α_i (G Gᵀ α)_i = T); it is clipped to
norm `max_norm` (1.0 as the official code, so the default step has norm 1; None = off: norm √T,
as SamsungLabs/MTL's copy). `update_weights_every` reuses α for k steps (official option).

Solver. The equation is solved for the cosine matrix C_ij = ⟨g_i, g_j⟩ / (‖g_i‖ ‖g_j‖) —
if β ⊙ Cβ = 1 then α_i = β_i / ‖g_i‖ solves it for G Gᵀ (the official code's ‖G Gᵀ‖_F is another
exact rescaling) — as the stationarity conditions of the strictly convex
    f(β) = ½ βᵀ C β − Σ_i log β_i,
by Newton's method in relative coordinates: with D = diag(β) and r = β ⊙ Cβ − 1,
(D C D + I) s = −r and β ← β ⊙ (1 + t s). f is self-concordant, so the damped step
t = 1/(1 + λ), λ² = −rᵀs ≥ ‖s‖² (the Newton decrement), decreases f and keeps β > 0 from any start, and
full steps converge quadratically once λ < 1/4 (Boyd & Vandenberghe, Convex Optimization §9.6);
a backtracking search tries longer damped steps first. It stops when max_i |r_i| ≤ `tol`, or,
where rounding makes that unreachable (nearly opposite gradients: β is large and Cβ a
cancellation), when full Newton steps stop halving r while |r_i| ≤ 2T·u·β_i(|C| β)_i
(u = 2⁻⁵³): α then solves the equation exactly for a matrix that differs from G Gᵀ by at most
2T·u relative, entry by entry (a componentwise backward error). Start: the last α (warm start) or 1/‖g_i‖, scaled by
the optimal factor √(T / βᵀCβ).

No solution exists exactly when a non-negative, non-zero combination of the gradients vanishes
(e.g. g and −g; f is then unbounded below). When Newton does not converge, the minimum-norm
point Σ w_i ĝ_i of the convex hull of the unit gradients ĝ_i = g_i/‖g_i‖ (w on the simplex)
decides: if its squared norm is zero up to rounding (then no solution exists, or none that
float64 resolves), SolverError reports w as the certificate — never a silent fall back
to equal weighting (peers return EW when their ECOS solver is missing or fails). Tasks whose
gradient is zero get α = 0 and are left out of the bargaining. Scale: the solve reads the
Jacobian's scaled Gram (`Jacobian.scaled_gram`), so tiny or huge gradients give the same step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtlcheck.aggregators._base import Aggregation, Aggregator, AggregatorTags, SolverError
from mtlcheck.aggregators._min_norm import MinNormError, min_norm_weights
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.jacobian import times_pow2

UNIT_ROUNDOFF = 2.0**-53
DIVERGED = 1e12  # β (unit gradients) beyond this: f is heading to −∞ along a vanishing combination


class NashNotConverged(Exception):
    """Newton stopped without a certified solution (the caller looks for a certificate that none exists)."""


def nash_newton(M: np.ndarray, alpha0: np.ndarray, *, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """α > 0 with α ⊙ (M α) = 1 by damped Newton on f(α) = ½αᵀMα − Σ log α (module docstring;
    NashMTL calls it with the cosine matrix, M_ii = 1, for which `DIVERGED` is meant).

    Raises NashNotConverged when neither stopping rule is met within `max_iter` steps or α diverges."""
    n = M.shape[0]
    alpha = np.asarray(alpha0, dtype=np.float64) / float(np.max(alpha0))
    q = float(alpha @ M @ alpha)
    if q > 0:
        alpha = alpha * math.sqrt(n / q)  # argmin_c f(c α)

    def f(a):
        return 0.5 * float(a @ M @ a) - float(np.log(a).sum())

    last_full = None  # (α, max|r|, r, rounding bound) before the latest full Newton step
    for _ in range(max_iter):
        r = alpha * (M @ alpha) - 1.0
        err = float(np.abs(r).max())
        if err <= tol:
            return alpha
        if last_full is not None and err > 0.5 * last_full[1]:  # a full step no longer halved r:
            before, _, r_before, bound = last_full  # rounding, if r was at its level
            if np.all(np.abs(r_before) <= bound):
                return before
        H = alpha[:, None] * M * alpha[None, :]
        H.flat[:: n + 1] += 1.0
        try:
            s = -np.linalg.solve(H, r)
        except np.linalg.LinAlgError as exc:
            raise NashNotConverged(f"Newton system singular: {exc}") from None
        # λ² = −rᵀs = sᵀ(DMD + I)s ≥ ‖s‖² (DMD is PSD); the bound keeps λ honest where rounding
        # makes −rᵀs meaningless (β ~ 1e8), so that ‖s‖∞ ≤ λ and every step below keeps β > 0
        lam2 = max(-float(r @ s), float(s @ s))
        lam = math.sqrt(lam2)
        if lam < 0.25:  # quadratic convergence region: full step (α stays > 0: ‖s‖ ≤ λ < 1)
            last_full = (alpha, err, r, 2 * n * UNIT_ROUNDOFF * alpha * (np.abs(M) @ alpha))
            alpha = alpha * (1.0 + s)
            continue
        last_full = None
        safe = 1.0 / (1.0 + lam)
        shrink = s < 0
        t = min(1.0, 0.99 / float(np.max(-s[shrink]))) if shrink.any() else 1.0
        f0 = f(alpha)
        while t > safe and not f(alpha * (1.0 + t * s)) <= f0 - 0.25 * t * lam2:
            t *= 0.5
        alpha = alpha * (1.0 + max(t, safe) * s)
        if not np.all(np.isfinite(alpha)) or float(alpha.max()) > DIVERGED:
            raise NashNotConverged(f"α diverged (max α_i = {float(alpha.max()):.3g} for unit gradients)")
    raise NashNotConverged(f"no certified solution after {max_iter} Newton steps")


def no_solution_certificate(M: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """(w, ‖Σ w_i g_i‖², rounding level) when 0 is in the convex hull of the gradients up to
    rounding — the proof that α ⊙ Mα = 1 has no positive solution float64 can resolve — else None."""
    try:
        w = min_norm_weights(M)
    except MinNormError:
        return None
    value = float(w @ M @ w)
    level = 2 * M.shape[0] * UNIT_ROUNDOFF * float(w @ np.abs(M) @ w)
    return (w, value, level) if value <= level else None


@register_aggregator("nash_mtl", paper_name="Nash-MTL")
class NashMTL(Aggregator):
    implements = "nash_mtl"
    _state_attrs = ("_alpha", "_step")

    def __init__(
        self,
        *,
        max_norm: float | None = 1.0,
        update_weights_every: int = 1,
        warm_start: bool = True,
        tol: float = 1e-10,
        max_iter: int = 100,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"NashMTL: max_norm must be > 0 or None, got {max_norm!r}")
        if not (isinstance(update_weights_every, int) and update_weights_every >= 1):
            raise ValueError(f"NashMTL: update_weights_every must be an int >= 1, got {update_weights_every!r}")
        if not tol > 0:
            raise ValueError(f"NashMTL: tol must be > 0, got {tol!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"NashMTL: max_iter must be an int >= 1, got {max_iter!r}")
        self.max_norm, self.update_weights_every, self.warm_start = max_norm, update_weights_every, warm_start
        self.tol, self.max_iter = tol, max_iter
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            family="solver",
            nonneg_weights=True,
            stateful=self.warm_start or self.update_weights_every > 1,
            reduction="normalized",  # the unclipped step has norm √T at any scale of G
            homogeneity=0,
            requires_solver="newton",
        )

    def _solve(self, M: np.ndarray, alpha0: np.ndarray) -> np.ndarray:
        """β for the cosine matrix M of the task gradients (raises SolverError when there is none)."""
        try:
            return nash_newton(M, alpha0, tol=self.tol, max_iter=self.max_iter)
        except NashNotConverged as exc:
            certificate = no_solution_certificate(M)
            if certificate is not None:
                w, value, level = certificate
                raise SolverError(
                    f"{self!r}: no bargaining solution: α_i (G Gᵀ α)_i = 1 has no positive solution (none that "
                    f"float64 resolves) because a non-negative combination of the task gradients vanishes up to "
                    f"rounding — w = {np.round(w, 6).tolist()} (on the simplex) gives ‖Σ w_i g_i/‖g_i‖‖² = "
                    f"{value:.3g} ≤ {level:.3g}, the rounding level (e.g. two exactly opposite gradients)"
                ) from None
            raise SolverError(
                f"{self!r}: Newton failed although a bargaining solution exists ({exc}); "
                f"cosine matrix of the gradients = {M.tolist()}"
            ) from None

    def solve_weights(self, gram: torch.Tensor) -> torch.Tensor:
        """α with α_i (gram α)_i = 1 for every task with a non-zero gradient (α_i = 0 for the others)."""
        return torch.from_numpy(self._solve_gram(gram.numpy()))

    def _solve_gram(self, gram: np.ndarray) -> np.ndarray:
        n = gram.shape[0]
        active = np.diag(gram) > 0
        alpha = np.zeros(n)
        if active.any():
            M = gram if active.all() else gram[np.ix_(active, active)]
            norms = np.sqrt(np.diag(M))
            start = np.ones(len(norms))
            if self.warm_start and self._alpha is not None and np.all(self._alpha[active] > 0):
                start = self._alpha[active] * norms
            alpha[active] = self._solve(M / np.outer(norms, norms), start) / norms
        return alpha

    def _aggregate(self, J, losses):
        weights = self._aggregate_weights(J, losses).weights
        return Aggregation(J.combine(weights), weights)

    def _aggregate_weights(self, J, losses):
        step = self._step or 0
        gram, exponent = J.scaled_gram(), J.gram_exponent  # G Gᵀ = 4^exponent · gram
        if self._alpha is None or step % self.update_weights_every == 0:
            alpha = times_pow2(self.solve_weights(gram).numpy(), -exponent)
        else:
            alpha = self._alpha
        self._step = step + 1
        if self.warm_start or self.update_weights_every > 1:
            self._alpha = alpha.copy()
        weights = alpha
        if self.max_norm is not None:
            scaled = times_pow2(alpha, exponent)  # ‖Σ α_i g_i‖ from the scaled Gram
            norm = float(scaled @ gram.numpy() @ scaled) ** 0.5
            if norm > self.max_norm:
                weights = alpha * (self.max_norm / norm)
        return Aggregation(None, torch.from_numpy(weights.copy()))  # (never a view of the state)
