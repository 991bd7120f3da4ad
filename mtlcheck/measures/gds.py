"""Gradient Direction Similarity (GDS), Eq. 5 of the paper.

    alpha_ij = <g_i, g_j> / (||g_i||_2 ||g_j||_2)              (5a)
    GDS      = 1 / (T (T - 1)) * sum_{i != j} alpha_ij          (5b)

where g_i = d L_i / d theta_sh is task i's gradient w.r.t. the shared parameters.

Everything here is computed from the T x T Gram matrix ``gram = G G^T`` (float64), never from
the T x d matrix G itself: the gradient engine (``mtlcheck.jacobian``) accumulates the Gram
accurately per parameter block (a single fp32 ``G @ G.T`` over ~11M parameters was measured
~1% off), and the measures only need inner products.

Conventions
-----------
* Zero vectors: the cosine of any vector with a zero vector is defined as 0 (including a zero
  vector with itself), so a task whose gradient vanishes counts as "orthogonal" to every other
  task. Results are never NaN.
* T = 1 has no pairs (i != j), so Eq. 5b is 0/0: ``gradient_direction_similarity`` raises
  ``ValueError``. ``pairwise_cosines`` accepts T = 1.
* Rounding can push <g_i, g_j> slightly past ||g_i|| ||g_j||; cosines are clamped to [-1, 1].
"""

from __future__ import annotations

import torch

from ._inputs import real_tensor

__all__ = ["pairwise_cosines", "gradient_direction_similarity", "gds_from_gradients"]

# Relative asymmetry tolerated in a Gram matrix before it is rejected (the engine symmetrizes;
# a matrix this far from symmetric is not a Gram matrix at all).
_SYMMETRY_RTOL = 1e-6


def _validate_gram(gram, *, name: str = "gram", min_tasks: int = 1) -> torch.Tensor:
    """Return ``gram`` as a detached, symmetrized float64 (T, T) tensor, or raise ValueError."""
    gram = real_tensor(gram, name, "a (T, T) Gram matrix")
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"{name} must be a square (T, T) Gram matrix; got shape {tuple(gram.shape)}")
    if gram.shape[0] < min_tasks:
        raise ValueError(
            f"{name} has T={gram.shape[0]} task(s); this measure needs at least {min_tasks} "
            f"(Eq. 5b/6b average over pairs i != j)"
        )
    gram = gram.detach().to(torch.float64)
    if not bool(torch.isfinite(gram).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    diag = torch.diagonal(gram)
    if bool((diag < 0).any()):
        raise ValueError(f"{name} has a negative diagonal entry (squared norm); not a Gram matrix")
    if gram.numel():
        scale = float(diag.max())
        asym = float((gram - gram.T).abs().max())
        if asym > _SYMMETRY_RTOL * scale:
            raise ValueError(f"{name} is not symmetric (max |G - G^T| = {asym:.3g}, max diagonal = {scale:.3g})")
        gram = (gram + gram.T) / 2
    return gram


def _gram_from_gradients(G, *, name: str = "G", min_tasks: int = 1) -> torch.Tensor:
    """Float64 Gram matrix of a (T, d) gradient matrix (trailing dims are flattened)."""
    G = real_tensor(G, name, "a (T, d) gradient matrix")
    if G.ndim < 2:
        raise ValueError(f"{name} must have shape (T, d) (one row per task); got shape {tuple(G.shape)}")
    if G.shape[0] < min_tasks:
        raise ValueError(
            f"{name} has T={G.shape[0]} task(s); this measure needs at least {min_tasks} "
            f"(Eq. 5b/6b average over pairs i != j)"
        )
    G = G.detach().reshape(G.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(G).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return G @ G.T


def pairwise_cosines(gram) -> torch.Tensor:
    """Matrix of cosines alpha_ij (Eq. 5a) from the Gram matrix ``gram = G G^T``.

    alpha_ij = gram_ij / (sqrt(gram_ii) sqrt(gram_jj)), clamped to [-1, 1].

    Returns a float64 (T, T) tensor. The diagonal is 1 for a nonzero gradient and 0 for a zero
    gradient: every cosine involving a zero vector is 0 (module convention).
    """
    return _cosines(_validate_gram(gram))


def _cosines(gram: torch.Tensor) -> torch.Tensor:
    """Cosine matrix of an already validated float64 Gram matrix."""
    norms = torch.sqrt(torch.diagonal(gram))
    nonzero = norms > 0
    safe = torch.where(nonzero, norms, torch.ones_like(norms))
    # Divide one factor at a time: the product of two tiny norms could underflow to 0.
    cos = (gram / safe[:, None]) / safe[None, :]
    cos = ((cos + cos.T) / 2).clamp(-1.0, 1.0)  # exactly symmetric despite rounding
    both = nonzero[:, None] & nonzero[None, :]
    cos = torch.where(both, cos, torch.zeros_like(cos))
    cos.diagonal().copy_(nonzero.to(cos.dtype))
    return cos


def gradient_direction_similarity(gram) -> float:
    """GDS (Eq. 5b): mean of alpha_ij (Eq. 5a) over the T (T - 1) ordered pairs i != j.

    ``gram`` is the (T, T) Gram matrix G G^T of the per-task gradients (float64 recommended;
    any real dtype is promoted). Lies in [-1, 1]: 1 when all gradients point the same way,
    -1 for (g, -g) with T = 2. A zero gradient has cosine 0 with everything. Raises
    ``ValueError`` for T < 2 (no pairs) or an input that is not a Gram matrix.
    """
    gram = _validate_gram(gram, min_tasks=2)
    T = gram.shape[0]
    cos = _cosines(gram)
    off = cos.sum() - torch.diagonal(cos).sum()
    return float((off / (T * (T - 1))).clamp(-1.0, 1.0))


def gds_from_gradients(G) -> float:
    """GDS (Eq. 5) of a (T, d) gradient matrix G; the Gram G G^T is formed in float64.

    Convenience for small problems and tests; training code should pass the engine's
    block-accumulated Gram to :func:`gradient_direction_similarity` instead.
    """
    return gradient_direction_similarity(_gram_from_gradients(G, min_tasks=2))
