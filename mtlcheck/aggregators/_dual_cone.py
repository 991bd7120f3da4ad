"""Projection onto the dual cone of the task gradients, from the Gram matrix alone.

The dual cone of the rows of G is C = {x : G x ≥ 0} (the directions that conflict with no task).
Quinton & Rey (2024, "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232)
show that the projection of a combination uᵀG onto C is wᵀG with

    w = argmin_{v ≥ u}  vᵀ M v,        M = G Gᵀ,

a quadratic program in T variables. Its KKT conditions characterise the optimum (M is PSD, so
the problem is convex): with λ = M w,

    w ≥ u,   λ ≥ 0,   (w − u)_i λ_i = 0 for every i.

`project_weights` solves it exactly. For T ≤ ENUMERATION_MAX_TASKS every face is solved at once:
on a free set F (λ_F = 0) and w = u off F, M_FF w_F = −M_FA u_A; the feasible candidate of least
wᵀMw that passes the KKT test (to `tol`, relative to the Gram's scale) is the optimum. When no
candidate passes (a singular M_FF whose least-squares candidate is not the feasible solution of a
consistent system, e.g. rank-deficient G), or for larger T, the same problem is solved as a
non-negative least-squares problem in z = w − u ≥ 0 (Lawson & Hanson's active-set NNLS, scipy),
min ‖B(u + z)‖² with M = BᵀB (B from the eigendecomposition of M, after M is scaled to a unit
diagonal, and the face NNLS finds re-solved exactly: `_nnls`), and its answer must pass the same
KKT test: otherwise `DualConeError`, never a silent fallback.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from mtlcheck.aggregators._min_norm import ENUMERATION_MAX_TASKS, batched_solve, face_masks

KKT_TOL = 1e-10


class DualConeError(RuntimeError):
    """No certified solution of the dual-cone projection QP."""


def kkt_residuals(M: np.ndarray, u: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Per row w of W (K, T): the largest violation of w ≥ u, Mw ≥ 0 and (w − u)_i (Mw)_i = 0,
    relative to the scale: λ_i = ⟨g_i, d⟩ against ‖g_i‖ (‖d‖ + 1e-4 Σ_j |w_j| ‖g_j‖) (cosine units,
    with a floor above the rounding of Mw when d vanishes), w − u against max(|u|, |w|)."""
    lam = W @ M
    dn = np.sqrt(np.clip((lam * W).sum(1), 0.0, None))
    norms = np.sqrt(np.clip(np.diag(M), 0.0, None))
    lam_scale = norms[None, :] * (dn + 1e-4 * (np.abs(W) @ norms))[:, None] + 1e-300
    w_scale = np.maximum(np.maximum(np.abs(u).max(), np.abs(W).max(1)), 1e-300)
    slack = (W - u[None, :]) / w_scale[:, None]
    lam_rel = lam / lam_scale
    primal = np.maximum(-slack, 0.0).max(1)
    dual = np.maximum(-lam_rel, 0.0).max(1)
    complementary = np.minimum(np.abs(slack), np.abs(lam_rel)).max(1)
    return np.maximum(np.maximum(primal, dual), complementary)


def kkt_residual(M: np.ndarray, u: np.ndarray, w: np.ndarray) -> float:
    """`kkt_residuals` of one w."""
    return float(kkt_residuals(M, u, w[None, :])[0])


def _enumerated(M: np.ndarray, U: np.ndarray, tol: float) -> np.ndarray:
    """(K, T) candidates per row u of U, NaN rows where no face passes the KKT test."""
    T = M.shape[0]
    masks, pairs, eye_outside = face_masks(T)  # masks: the free set F
    B = np.where(pairs, M, eye_outside)  # (F, T, T): M_FF padded with the identity off F
    fixed = ~masks  # (F, T)
    # rhs for every face and every u: −M_FA u_A on F, u_A on A (the identity rows keep w_A = u_A)
    Ua = fixed[:, None, :] * U[None, :, :]  # (F, K, T): u restricted to A
    rhs = -np.einsum("ij,fkj->fki", M, Ua)  # (F, K, T)
    rhs = np.where(masks[:, None, :], rhs, U[None, :, :])
    X = batched_solve(B, np.swapaxes(rhs, 1, 2))  # (F, T, K)
    W = np.swapaxes(X, 1, 2)  # (F, K, T)
    W = np.where(masks[:, None, :], W, U[None, :, :])
    out = np.full(U.shape, np.nan)
    for k, u in enumerate(U):
        cand = W[:, k, :]
        cand = cand[np.isfinite(cand).all(1)]
        cand = cand[kkt_residuals(M, u, cand) <= tol]
        if cand.shape[0]:  # the certified candidate of least objective (ties: rounding apart)
            out[k] = np.maximum(cand[int(np.argmin(((cand @ M) * cand).sum(1)))], u)
    return out


def _square_root(M: np.ndarray) -> np.ndarray:
    """B with BᵀB = M (M symmetric PSD; negative rounding eigenvalues are clipped)."""
    vals, vecs = np.linalg.eigh(M)
    return np.sqrt(np.clip(vals, 0.0, None))[:, None] * vecs.T


def _nnls(M: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The QP by NNLS, rescaled by D = diag(M)^½ (the same problem: v ≥ u iff Dv ≥ Du, and
    vᵀMv = v'ᵀM'v' with v' = Dv, M' = D⁻¹MD⁻¹), then re-solved on the face NNLS found (free set F:
    M'_FF w'_F = −M'_FA u'_A, least squares), whichever of the two has the smaller KKT residual.
    Unscaled, rows of norms 1e-2 to 1e2 (T = 11) left the square root B of M, whose conditioning
    is M's squared, ~1e-10 from the optimum: uncertified, though M has a clean answer."""
    d = np.sqrt(np.clip(np.diag(M), 0.0, None))
    d = np.where(d > 0, d, 1.0)  # (a zero row: any v_i ≥ u_i is optimal)
    Ms, us = M / np.outer(d, d), u * d
    B = _square_root(Ms)
    z, _ = nnls(B, -B @ us)
    best = (us + z) / d
    free = z > 0
    if free.any():
        face = us.copy()
        face[free] = np.linalg.lstsq(Ms[np.ix_(free, free)], -Ms[np.ix_(free, ~free)] @ us[~free], rcond=None)[0]
        face = np.maximum(face, us) / d
        if kkt_residual(M, u, face) < kkt_residual(M, u, best):
            best = face
    return best


def project_weights(M: np.ndarray, U: np.ndarray, *, tol: float = KKT_TOL) -> np.ndarray:
    """w_k = argmin_{v ≥ u_k} vᵀMv for every row u_k of U (K, T); returns (K, T).

    M: the Gram matrix (any positive scale: it is normalised by its largest diagonal entry).
    Raises DualConeError when neither solver's answer passes the KKT test."""
    M = np.asarray(M, dtype=np.float64)
    U = np.atleast_2d(np.asarray(U, dtype=np.float64))
    scale = float(np.max(np.diag(M))) if M.size else 0.0
    if scale <= 0.0:  # G = 0: every v ≥ u is optimal; u itself projects 0 onto 0
        return U.copy()
    M = M / scale
    T = M.shape[0]
    W = _enumerated(M, U, tol) if T <= ENUMERATION_MAX_TASKS else np.full(U.shape, np.nan)
    for k in np.flatnonzero(~np.isfinite(W).all(1)):
        try:
            w = _nnls(M, U[k])
        except (RuntimeError, np.linalg.LinAlgError) as exc:
            raise DualConeError(f"the dual-cone projection's NNLS failed: {exc}") from exc
        residual = kkt_residual(M, U[k], w)
        if not residual <= tol:
            raise DualConeError(
                f"the dual-cone projection found no certified optimum for u = {U[k].tolist()}: "
                f"KKT residual {residual:.3g} > {tol:g}"
            )
        W[k] = w
    return W
