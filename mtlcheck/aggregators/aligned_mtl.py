"""Aligned-MTL (Senushkin et al. 2023): align the principal components of the gradient system.

With M = G Gᵀ = V diag(λ) Vᵀ (eigenvalues below λ_max · T · eps(dtype of G) dropped as rank
deficiency), B = σ V diag(λ^{-1/2}) Vᵀ and α = B 1, direction = Σ_i α_i g_i. σ² is λ_min
("min", the paper's default), the median ("median") or the mean ("rmse") of the kept
eigenvalues. Defining property: the aligned system B G has all its non-zero singular values
equal to σ (condition number 1). At the feature level this is Aligned-MTL-UB.

Peers: α = B 1 as the official code (github.com/SamsungLabs/MTL) and LibMTL; TorchJD's
`AlignedMTL` and Pylon use the mean preference B 1/T (÷T, same direction). LibMTL's -UB solves on
batch-summed feature rows (mtlcheck: feature_batch="sum"); the official -UB flattens them, as here.
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator

SCALE_MODES = ("min", "median", "rmse")


@register_aggregator("aligned_mtl", paper_name="Aligned-MTL", feature_alias="aligned_mtl_ub")
class AlignedMTL(WeightingAggregator):
    implements = "aligned_mtl"

    def __init__(self, *, scale_mode: str = "min", seed: int = 0):
        super().__init__(seed=seed)
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"AlignedMTL: scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
        self.scale_mode = scale_mode

    def tags(self) -> AggregatorTags:
        return AggregatorTags(family="solver", reduction="sum")

    def alignment(self, gram: torch.Tensor, eps: float) -> torch.Tensor:
        """The T×T matrix B (zero when G = 0)."""
        n = gram.shape[0]
        lam, V = torch.linalg.eigh(gram)
        top = float(lam.max())
        if top <= 0:
            return torch.zeros(n, n, dtype=torch.float64)
        keep = lam > top * n * eps
        lam, V = lam[keep], V[:, keep]
        sigma2 = {"min": lam.min(), "median": lam.median(), "rmse": lam.mean()}[self.scale_mode]
        return sigma2.sqrt() * (V * lam.rsqrt()) @ V.T

    def _weights(self, J, losses):
        B = self.alignment(J.scaled_gram(), torch.finfo(J.dtype).eps)  # B does not change with the Gram's scale
        return B.sum(1)
