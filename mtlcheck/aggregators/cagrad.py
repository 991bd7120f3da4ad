"""CAGrad (Liu et al. 2021): conflict-averse gradient descent.

With A = G Gᵀ, g0 = mean_i g_i and c' = c ‖g0‖, solve on the simplex
    w* = argmin_w  F(w) = wᵀ b + c' √(wᵀ A w),   b = A 1/T,
and take d = g0 + (c' / ‖g_w‖) g_w with g_w = Σ_i w*_i g_i. Like the official code the
direction is multiplied by T ("to match the sum loss"), and `rescale` divides it by
1 (0), 1 + c² (1, the official default) or 1 + c (2). c = 0 gives the plain sum Σ_i g_i;
c ≥ 1 makes the direction non-conflicting.

Peers (all the same direction, github.com/Cranial-XIX/CAGrad the reference): ×T as here in the
official code, nash-mtl and FAMO's repository, not in LibMTL, SamsungLabs/MTL, Pylon or TorchJD;
÷(1 + c²) (rescale=1) in the official code, LibMTL, nash-mtl and FAMO, not in SamsungLabs/MTL
(rescale=0 default), Pylon or TorchJD. Default c: 0.5 here and in the official code and LibMTL,
0.4 in nash-mtl and FAMO.

The dual is solved exactly by `solve_dual` (closed form per support, below); SLSQP (scipy)
is used only for T > `ENUMERATION_MAX_TASKS`, where 2^T supports would be too many.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize

from mtlcheck.aggregators._base import AggregatorTags, SolverError, WeightingAggregator
from mtlcheck.aggregators._min_norm import (
    ENUMERATION_MAX_TASKS,
    MinNormError,
    batched_solve,
    face_masks,
    min_norm_weights,
)
from mtlcheck.aggregators._registry import register_aggregator

GW_ZERO = 1e-12  # ‖g_w‖² relative to Σ_i ‖g_i‖² treated as g_w = 0 (float32 rows resolve ~4e-15)


def solve_dual(A: np.ndarray, c: float, *, tol: float = 1e-9) -> np.ndarray:
    """argmin over the simplex of F(w) = wᵀb + c√(wᵀAw), b = A 1/T, by enumerating supports.

    On a support S where the optimum has g_w ≠ 0, stationarity (∇F_S = λ1, Σ w = 1) has a
    closed form: with p = A_SS⁻¹1, q = A_SS⁻¹b_S, α = 1ᵀp, β = 1ᵀq, γ = b_Sᵀq and
    D = β² − α(γ − c²) > 0,
        λ = (β + √D)/α,   w_S = (λp − q)/√D   (then ‖g_w‖ = c/√D).
    Every support is solved at once (one batched solve); among the feasible candidates
    (w_S ≥ 0) the one with the lowest F is the optimum, certified by the KKT test
    ∇F_i ≥ wᵀ∇F for all i with equality on S, to `tol` relative to the scale of ∇F
    (sufficient: F is convex and differentiable wherever g_w ≠ 0). If no candidate passes it,
    the optimum may have g_w = 0 (0 in the hull of the gradients, where F is not
    differentiable), so the exact min-norm point joins the candidates and the lowest F wins.
    Never above SLSQP by more than 1e-9 in F on random and rank-deficient Grams
    (suites/aggregators/test_cagrad_dual.py).
    """
    n = A.shape[0]
    b = A.mean(1)
    masks, pairs, eye_outside = face_masks(n)
    M = np.where(pairs, A, eye_outside)
    rhs = np.where(masks[:, :, None], np.stack([np.ones(n), b], 1), 0.0)
    X = batched_solve(M, rhs)  # least-squares candidates where A_SS is singular (rank-deficient G)
    p, q = X[..., 0], X[..., 1]
    alpha, beta, gamma = p.sum(1), q.sum(1), q @ b
    disc = beta**2 - alpha * (gamma - c * c)
    ok = (disc > 0) & (alpha > 0)
    root = np.sqrt(np.where(ok, disc, 1.0))
    lam = (beta + root) / np.where(ok, alpha, 1.0)
    W = np.where(masks, (lam[:, None] * p - q) / root[:, None], 0.0)
    ok &= (W >= -tol).all(1)
    W = np.clip(W[ok], 0.0, None)
    W = W / W.sum(1, keepdims=True)
    AW = W @ A
    r = np.sqrt(np.maximum((AW * W).sum(1), 0.0))
    F = W @ b + c * r
    if W.shape[0]:
        k = int(np.argmin(F))
        if r[k] > 0:
            grad = b + c * AW[k] / r[k]
            level = float(grad @ W[k])
            # |∇F_i| ≤ |b_i| + c √A_ii (Cauchy–Schwarz): the test is relative to that scale, so a
            # tiny task gradient cannot make a wrong candidate pass it
            scale = float(np.abs(b).max()) + c * math.sqrt(float(np.diag(A).max()))
            if grad.min() >= level - tol * scale and np.abs(grad - level)[W[k] > 0].max() <= tol * scale:
                return W[k]
    try:
        w0 = min_norm_weights(A)
    except MinNormError as exc:
        raise SolverError(f"CAGrad: the min-norm candidate failed: {exc}") from exc
    W, F = np.vstack([W, w0]), np.append(F, w0 @ b + c * math.sqrt(max(w0 @ A @ w0, 0.0)))
    return W[int(np.argmin(F))]


def solve_dual_slsqp(A: np.ndarray, c: float) -> np.ndarray:
    """The same problem by SLSQP (scipy): for T > ENUMERATION_MAX_TASKS."""
    n = A.shape[0]
    b = A.mean(1)
    smooth = 1e-14  # keeps √ differentiable where g_w = 0; A is scaled to unit trace

    def f(w):
        return float(w @ b + c * math.sqrt(max(w @ A @ w, 0.0) + smooth))

    def grad(w):
        return b + c * (A @ w) / math.sqrt(max(w @ A @ w, 0.0) + smooth)

    res = minimize(
        f,
        np.full(n, 1.0 / n),
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},),
        options={"ftol": 1e-13, "maxiter": 500},
    )
    if not res.success:
        raise SolverError(f"CAGrad: SLSQP failed on a {n}-task Gram: {res.message}")
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


@register_aggregator("cagrad", paper_name="CAGrad")
class CAGrad(WeightingAggregator):
    implements = "cagrad"

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
            requires_solver="dual-enumeration" if self.c > 0 else None,
        )

    def identical_rows_scale(self, n_tasks):
        return n_tasks * (1 + self.c) / self._divisor()

    def _divisor(self) -> float:
        return {0: 1.0, 1: 1 + self.c**2, 2: 1 + self.c}[self.rescale]

    def _solve(self, A: np.ndarray, c: float) -> np.ndarray:
        """w* on the simplex for the normalised Gram A (trace-scaled)."""
        if A.shape[0] <= ENUMERATION_MAX_TASKS:
            return solve_dual(A, c)
        return solve_dual_slsqp(A, c)

    def _weights(self, J, losses):
        A = J.scaled_gram()  # normalised by its trace below: any power-of-two scale
        n = A.shape[0]
        trace = float(A.trace())
        if trace <= 0:
            return torch.zeros(n, dtype=torch.float64)
        An = A / trace
        g0_norm = math.sqrt(max(float(An.mean()), 0.0))
        cc = self.c * g0_norm
        w = torch.from_numpy(self._solve(An.numpy(), cc)) if cc > 0 else torch.full((n,), 1.0 / n, dtype=torch.float64)
        gw_sq = float(w @ An @ w)
        # At g_w = 0 (0 in the hull) the dual's direction g_w/‖g_w‖ is undefined and a ‖g_w‖ of
        # rounding size would blow λ up: below 1e-12 of the (unit) trace the step is g0, as the
        # official code's ‖g_w‖ + 1e-4 denominator makes it
        lam = cc / math.sqrt(gw_sq) if gw_sq > GW_ZERO else 0.0
        weights = torch.full((n,), 1.0 / n, dtype=torch.float64) + lam * w
        return weights * n / self._divisor()
