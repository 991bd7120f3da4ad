"""Euclidean projection onto the probability simplex (Held, Wolfe & Crowder 1974; the sort-based
algorithm of Duchi et al. 2008, "Efficient Projections onto the ℓ1-Ball", Fig. 1): exact."""

from __future__ import annotations

import math

import torch

from mtlcheck.jacobian import times_pow2


def project_onto_simplex(y: torch.Tensor) -> torch.Tensor:
    """argmin_{x ≥ 0, Σx = 1} ‖x − y‖ for a float64 vector y (−inf entries get 0; NaN or +inf:
    FloatingPointError). y is shifted by its maximum first (the projection does not change when a
    constant is added to every entry), so that huge entries cannot round the largest one's test
    u_1 − (u_1 − 1) > 0 to zero."""
    if bool(torch.isnan(y).any()) or bool((y == math.inf).any()) or not bool(torch.isfinite(y).any()):
        raise FloatingPointError(
            f"project_onto_simplex: y must have a finite entry and no NaN or +inf one, got {y.tolist()}"
        )
    n = y.shape[0]
    # entries more than 1 below the largest get 0 (θ >= max y − 1) and do not move θ, so they are
    # raised to −2: the cumulative sums below cannot overflow, and −inf entries are no NaN
    y = (y - y.max()).clamp_min(-2.0)
    u, _ = torch.sort(y, descending=True)
    css = torch.cumsum(u, 0) - 1.0
    k = torch.arange(1, n + 1, dtype=y.dtype)
    rho = int(torch.nonzero(u - css / k > 0).max())
    theta = css[rho] / (rho + 1)
    return (y - theta).clamp_min(0.0)


def projected_step(x: torch.Tensor, step: float, direction: torch.Tensor, exponent: int = 0) -> torch.Tensor:
    """Π_Δ(x − c·direction) with c = step · 2^exponent, computed as Π_Δ(x − c·(direction − min direction)):
    the projection does not change when a constant is added to every entry. c is applied as its
    mantissa times a power of two (exact scaling), so no entry becomes +inf or NaN whatever c (one
    that overflows to −inf gets 0, as it would for any large c). `direction` must be finite."""
    return project_onto_simplex(x - _times(step, direction - direction.min(), exponent))


def gram_step(lam: torch.Tensor, step: float, rho: float, scaled_gram: torch.Tensor, exponent: int) -> torch.Tensor:
    """Π_Δ(λ − step·(G Gᵀ λ + ρ λ)) for G Gᵀ = 4^exponent · `scaled_gram` (MoDo's and MoCo's λ step),
    at any scale of G: each term is shifted by its own minimum (the projection does not change when
    a constant is added to every entry) and scaled exactly by its power of two, so that neither
    hides the other's gaps and none gives inf − inf or 0 · inf."""
    gram_term = scaled_gram @ lam
    ridge, gram = lam - lam.min(), gram_term - gram_term.min()
    y = lam - _times(step * rho, ridge) - _times(step, gram, 2 * exponent)
    if bool(torch.isfinite(y).any()):
        return project_onto_simplex(y)
    # every entry past the range (each has a gap in one term or the other): the limit of the step,
    # all weight where the combined gap ρ·ridge + 4^exponent·gram is least (compared as logarithms,
    # which cannot overflow), ties shared as the projection of λ on them
    log_rho = math.log(rho) if rho > 0 else -math.inf
    gaps = torch.logaddexp(log_rho + ridge.log(), 2 * exponent * math.log(2.0) + gram.log())
    least = gaps == gaps.min()
    out = torch.zeros_like(lam)
    out[least] = project_onto_simplex(lam[least])
    return out


def _times(c: float, gaps: torch.Tensor, exponent: int = 0) -> torch.Tensor:
    """c · 2^exponent · gaps for gaps >= 0, as (mantissa of c · gaps) · 2^(its exponent + exponent):
    exact but for the one rounding of the product, +inf past the range, never NaN (c may be inf)."""
    if math.isinf(c):
        return torch.where(gaps > 0, math.inf, 0.0).to(gaps.dtype)
    mantissa, e = math.frexp(c)
    return times_pow2(mantissa * gaps, e + exponent)
