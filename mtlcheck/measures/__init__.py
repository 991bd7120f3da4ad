"""Measures of multi-task-learning challenges (paper section 5).

* :mod:`~mtlcheck.measures.gds`  -- Gradient Direction Similarity (Eq. 5), from the Gram matrix.
* :mod:`~mtlcheck.measures.gms`  -- Gradient Magnitude Similarity (Eq. 6, denominator typo fixed).
* :mod:`~mtlcheck.measures.disentanglement` -- Feature Disentanglement (Eq. 7-8).
* :mod:`~mtlcheck.measures.ranking` -- Ranking Similarity (Eq. 9) and its symmetric report.

GDS and GMS take the T x T Gram matrix G G^T (float64) that the gradient engine accumulates per
parameter block; ``*_from_gradients`` variants build it from a T x d matrix for convenience.
"""

from .disentanglement import feature_disentanglement, position_entropies
from .gds import gds_from_gradients, gradient_direction_similarity, pairwise_cosines
from .gms import gms_from_gradients, gradient_magnitude_similarity, pairwise_magnitude_similarities
from .ranking import ranking_similarity, symmetric_ranking_similarity

__all__ = [
    "pairwise_cosines",
    "gradient_direction_similarity",
    "gds_from_gradients",
    "pairwise_magnitude_similarities",
    "gradient_magnitude_similarity",
    "gms_from_gradients",
    "feature_disentanglement",
    "position_entropies",
    "ranking_similarity",
    "symmetric_ranking_similarity",
]
