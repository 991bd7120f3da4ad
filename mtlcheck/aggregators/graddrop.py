"""GradDrop (Chen et al. 2020): gradient sign dropout.

At each coordinate, with S_i the task gradients (at the feature level multiplied by sign(Z) of
the input activation and summed over the batch), the sign purity is
    P = ½ (1 + Σ_i S_i / Σ_i |S_i|)      (P = ½ where Σ_i |S_i| = 0),
U ~ Uniform(0, 1) per coordinate, and the mask keeps the positive part where P > U and the
negative part where P < U:  M_i = [P > U][S_i > 0] + [P < U][S_i < 0].
direction = Σ_i g_i ⊙ (ℓ + (1 − ℓ) M_i), with leak ℓ ∈ [0, 1]; the mask is broadcast over the
batch at the feature level. At the parameter level S_i = g_i (no activation sign, no batch).
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import Aggregation, AggregatorTags, Aggregator
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("graddrop")
class GradDrop(Aggregator):
    def __init__(self, *, leak: float = 0.0, seed: int = 0):
        super().__init__(seed=seed)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"GradDrop: leak must be in [0, 1], got {leak!r}")
        self.leak = leak

    def tags(self) -> AggregatorTags:
        return AggregatorTags(family="masking", weighted=False, stochastic=True)

    def _drop(self, block: torch.Tensor, shape: torch.Size, activation: torch.Tensor | None, feature: bool):
        n = block.shape[0]
        if feature:
            g = block.reshape(n, shape[0], -1)  # (T, B, F)
            signed = g * torch.sign(activation).reshape(1, shape[0], -1) if activation is not None else g
            S = signed.sum(1)  # (T, F)
        else:
            g = block
            S = block
        total = S.abs().sum(0)
        P = torch.where(total > 0, 0.5 * (1 + S.sum(0) / torch.where(total > 0, total, 1)), 0.5)
        U = torch.rand(P.shape, generator=self.generator, dtype=torch.float64).to(P.dtype).to(P.device)
        M = ((P > U) & (S > 0)) | ((P < U) & (S < 0))
        keep = self.leak + (1 - self.leak) * M.to(block.dtype)
        if feature:
            keep = keep.unsqueeze(1)  # broadcast over the batch
        return (g * keep).sum(0).reshape(-1)

    def _aggregate(self, J, losses):
        feature = J.level == "feature"
        acts = J.activations if J.activations is not None else (None,) * len(J.blocks)
        blocks = tuple(self._drop(b, s, a, feature) for b, s, a in zip(J.blocks, J.shapes, acts))
        return Aggregation(blocks, None)
