"""Gradient Magnitude Similarity (GMS), Eq. 6 of the paper, with its denominator typo fixed.

    beta_ij = 2 ||g_i||_2 ||g_j||_2 / (||g_i||_2^2 + ||g_j||_2^2)   (6a, corrected)
    GMS     = 1 / (T (T - 1)) * sum_{i != j} beta_ij                (6b)

Typo: the paper prints the denominator of Eq. 6a as ||g_j||^2 + ||g_j||^2 (j twice), which
would make beta_ij = ||g_i|| / ||g_j|| -- unbounded and not symmetric, contradicting the text's
beta_ij in [0, 1]. We use ||g_i||^2 + ||g_j||^2, as in the measure's source (PCGrad, Yu et al.
2020).

Only the norms are needed, i.e. the diagonal of the Gram matrix G G^T (float64; see
``mtlcheck.measures.gds`` for why measures take the Gram and not G).

Computation: with r = min(||g_i||, ||g_j||) / max(||g_i||, ||g_j||), beta_ij = 2 r / (1 + r^2),
which cannot overflow and is exactly 1 when the two norms are equal (in float64, norms
within a relative ~1e-8 of each other also round to beta = 1.0).

Conventions
-----------
* Both gradients zero: beta_ij = 1 (equal magnitudes, nobody dominates).
* Exactly one gradient zero: beta_ij = 0 (the formula's limit; total dominance).
* T = 1 has no pairs: ``gradient_magnitude_similarity`` raises ``ValueError``.
"""

from __future__ import annotations

import torch

from .gds import _gram_from_gradients, _validate_gram

__all__ = ["pairwise_magnitude_similarities", "gradient_magnitude_similarity", "gms_from_gradients"]


def pairwise_magnitude_similarities(gram) -> torch.Tensor:
    """Matrix of beta_ij (corrected Eq. 6a) from the Gram matrix; float64 (T, T), diagonal 1."""
    return _betas(_validate_gram(gram))


def _betas(gram: torch.Tensor) -> torch.Tensor:
    norms = torch.sqrt(torch.diagonal(gram))
    hi = torch.maximum(norms[:, None], norms[None, :])
    lo = torch.minimum(norms[:, None], norms[None, :])
    both_zero = hi == 0
    r = lo / torch.where(both_zero, torch.ones_like(hi), hi)
    beta = 2 * r / (1 + r * r)
    beta = torch.where(both_zero, torch.ones_like(beta), beta)
    return beta.clamp(0.0, 1.0)


def gradient_magnitude_similarity(gram) -> float:
    """GMS (Eq. 6b): mean of beta_ij (Eq. 6a, typo fixed) over ordered pairs i != j.

    ``gram`` is the (T, T) Gram matrix G G^T of the per-task gradients. Lies in [0, 1] and is 1
    iff all gradient norms are equal. Invariant to task order, to a common positive scale of all
    gradients and to any orthogonal map (it only sees the norms). Raises ``ValueError`` for
    T < 2 or an input that is not a Gram matrix.
    """
    gram = _validate_gram(gram, min_tasks=2)
    T = gram.shape[0]
    beta = _betas(gram)
    off = beta.sum() - torch.diagonal(beta).sum()
    return float((off / (T * (T - 1))).clamp(0.0, 1.0))


def gms_from_gradients(G) -> float:
    """GMS (Eq. 6) of a (T, d) gradient matrix G; the Gram G G^T is formed in float64."""
    return gradient_magnitude_similarity(_gram_from_gradients(G, min_tasks=2))
