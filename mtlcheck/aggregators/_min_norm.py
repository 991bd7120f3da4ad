"""Exact minimum-norm point of a convex hull, from the Gram matrix alone.

Solves  min_w  wᵀ M w  subject to  w ≥ 0, Σ_i w_i = 1,  with M = G Gᵀ (T×T, PSD), by Wolfe's
(1976) minimum-norm-point algorithm: an active-set method that is finite in exact arithmetic.
Optimality (KKT) holds when (M w)_i ≥ wᵀ M w for every i, with equality on the support of w.
Sener & Koltun's MGDA solves the same problem with Frank–Wolfe iterations; an exact solver
makes the KKT conditions verifiable to machine precision.

For T ≤ ENUMERATION_MAX_TASKS the point is found faster by solving every face at once: on a
support S the affine minimiser solves the bordered system [[M_SS, 1], [1ᵀ, 0]] [w; −μ] = [0; 1];
the optimum is the feasible (w ≥ 0) candidate of least wᵀMw, certified by the KKT test above
(Wolfe's iteration runs instead when no candidate passes it, e.g. affinely dependent gradients).
"""

from __future__ import annotations

from functools import cache

import numpy as np

ENUMERATION_MAX_TASKS = 10


@cache
def face_masks(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every non-empty support S ⊆ {0..n-1} as a (2^n − 1, n) boolean mask, its (., n, n) pair
    mask, and the identity on the complement (pads M_SS into an n×n matrix with w_i = 0 off S)."""
    masks = ((np.arange(1, 2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    pairs = masks[:, :, None] & masks[:, None, :]
    return masks, pairs, np.eye(n) * ~pairs


def batched_solve(M: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """np.linalg.solve over a stack, with least-squares solutions where a system is singular."""
    try:
        return np.linalg.solve(M, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(M) @ rhs


class MinNormError(RuntimeError):
    pass


def _affine_minimizer(M: np.ndarray, support: list[int]) -> np.ndarray:
    """argmin vᵀ M_SS v subject to Σ v = 1 (least-squares solution of the KKT system)."""
    k = len(support)
    A = np.zeros((k + 1, k + 1))
    A[:k, :k] = M[np.ix_(support, support)]
    A[:k, k] = 1.0
    A[k, :k] = 1.0
    b = np.zeros(k + 1)
    b[k] = 1.0
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    v = sol[:k]
    return v / v.sum() if abs(v.sum()) > 0 else np.full(k, 1.0 / k)


def min_norm_weights(M: np.ndarray, *, tol: float = 1e-12, max_iter: int | None = None) -> np.ndarray:
    """Weights w on the simplex minimising ‖Σ_i w_i g_i‖² given M = G Gᵀ.

    M is rescaled by its largest diagonal entry first, so `tol` is relative. A zero M (all
    gradients zero) returns uniform weights (every point of the hull is the origin).
    Raises MinNormError if the iteration cap is reached.
    """
    M = np.asarray(M, dtype=np.float64)
    T = M.shape[0]
    if T == 1:
        return np.ones(1)
    scale = float(np.max(np.diag(M)))
    if scale <= 0.0:
        return np.full(T, 1.0 / T)
    M = M / scale
    if T <= ENUMERATION_MAX_TASKS:
        w = _enumerated(M, tol)
        if w is not None:
            return w
    max_iter = max_iter or 50 * T + 50
    i0 = int(np.argmin(np.diag(M)))
    support = [i0]
    w = np.zeros(T)
    w[i0] = 1.0
    for _ in range(max_iter):
        grad = M @ w
        value = float(w @ grad)
        j = int(np.argmin(grad))
        if grad[j] >= value - tol or j in support:
            return _polish(w)
        support.append(j)
        before = w.copy()
        for _ in range(max_iter):  # inner loop: move to the affine minimiser of the support
            v = _affine_minimizer(M, support)
            ws = w[support]
            if np.all(v > tol):
                w[:] = 0.0
                w[support] = v
                break
            # step from ws toward v until the first coordinate reaches zero
            shrinking = v < ws
            ratios = np.where(shrinking & (v <= tol), ws / np.maximum(ws - v, 1e-300), np.inf)
            t = float(min(1.0, ratios.min()))
            new = ws + t * (v - ws)
            keep = [s for s, x in zip(support, new) if x > tol]
            w[:] = 0.0
            w[support] = np.maximum(new, 0.0)
            support = keep or [int(np.argmax(w))]
            w[[s for s in range(T) if s not in support]] = 0.0
            w /= w.sum()
            if j not in support and t == 0.0:
                # the new vertex is affinely dependent on the support and cannot enter: w is optimal
                # up to rounding (re-adding it would cycle)
                return _polish(before)
        else:
            raise MinNormError("min-norm inner loop did not terminate")
    raise MinNormError(f"min-norm solver did not converge in {max_iter} iterations")


def _enumerated(M: np.ndarray, tol: float) -> np.ndarray | None:
    """The min-norm point by solving every face's bordered system at once; None if no feasible
    candidate passes the KKT test (then Wolfe's iteration decides)."""
    T = M.shape[0]
    masks, pairs, eye_outside = face_masks(T)
    K = masks.shape[0]
    B = np.zeros((K, T + 1, T + 1))
    B[:, :T, :T] = np.where(pairs, M, eye_outside)
    B[:, :T, T] = masks
    B[:, T, :T] = masks
    rhs = np.zeros((K, T + 1, 1))
    rhs[:, T] = 1.0
    W = np.where(masks, batched_solve(B, rhs)[:, :T, 0], 0.0)
    W = W[(W >= -tol).all(1) & np.isfinite(W).all(1)]
    if not W.shape[0]:
        return None
    W = np.clip(W, 0.0, None)
    W = W / W.sum(1, keepdims=True)
    w = W[int(np.argmin(((W @ M) * W).sum(1)))]
    return w if kkt_violation(M, w) <= tol else None


def _polish(w: np.ndarray) -> np.ndarray:
    w = np.maximum(w, 0.0)
    return w / w.sum()


def kkt_violation(M: np.ndarray, w: np.ndarray) -> float:
    """max_i (wᵀMw − (Mw)_i)_+ over all i plus |(Mw)_i − wᵀMw| on the support, relative to max diag M."""
    M = np.asarray(M, dtype=np.float64)
    scale = max(float(np.max(np.diag(M))), 1e-300)
    grad = M @ w
    value = float(w @ grad)
    below = np.maximum(value - grad, 0.0).max()
    on_support = np.abs(grad - value)[w > 1e-9].max(initial=0.0)
    return float(max(below, on_support) / scale)
