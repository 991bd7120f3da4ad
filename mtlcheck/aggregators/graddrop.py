"""GradDrop (Chen et al. 2020): gradient sign dropout.

At each coordinate, with S_i the task gradients (at the feature level multiplied by sign(Z) of
the input activation and summed over the batch), the sign purity is
    P = ½ (1 + Σ_i S_i / Σ_i |S_i|)      (P = ½ where Σ_i |S_i| = 0),
U ~ Uniform(0, 1) per coordinate (float32, from the method's own CPU generator), and the mask keeps the positive part
where P > U and the negative part where P < U:  M_i = [P > U][S_i > 0] + [P < U][S_i < 0].
direction = Σ_i g_i ⊙ (ℓ + (1 − ℓ) M_i), with leak ℓ ∈ [0, 1]; the mask is broadcast over the
batch at the feature level. At the parameter level S_i = g_i (no activation sign, no batch).
Activations Z with NaN or inf raise NonFiniteInputError (a ValueError) naming the block: sign(NaN)
is NaN, which would silently drop that feature's gradient.
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import Aggregation, Aggregator, AggregatorTags
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.jacobian import NonFiniteInputError


@register_aggregator("graddrop", paper_name="GradDrop")
class GradDrop(Aggregator):
    def __init__(self, *, leak: float = 0.0, seed: int = 0):
        super().__init__(seed=seed)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"GradDrop: leak must be in [0, 1], got {leak!r}")
        self.leak = leak

    def tags(self) -> AggregatorTags:
        return AggregatorTags(family="masking", weighted=False, stochastic=True, reads_gram=False)

    def _drop(self, block: torch.Tensor, shape: torch.Size, activation: torch.Tensor | None, feature: bool):
        # Σ_i g_i ⊙ M_i only ever sums the components whose S_i has the kept sign, so it is
        # where(P > U, Σ_{S_i>0} g_i, where(P < U, Σ_{S_i<0} g_i, 0)): two passes over the T rows
        # instead of materialising T masks (at the parameter level S_i = g_i, so the same two
        # sums also give P).
        n = block.shape[0]
        if feature:
            g = block.reshape(n, shape[0], -1)  # (T, B, F)
            S = (g * torch.sign(activation).reshape(1, shape[0], -1)).sum(1) if activation is not None else g.sum(1)
            pos, neg = S.clamp(min=0).sum(0), S.clamp(max=0).sum(0)  # (F,)
            kept_up = (g * (S > 0).unsqueeze(1).to(g.dtype)).sum(0)  # (B, F)
            kept_down = (g * (S < 0).unsqueeze(1).to(g.dtype)).sum(0)
        else:
            g = block
            pos = kept_up = block.clamp(min=0).sum(0)
            neg = kept_down = block.clamp(max=0).sum(0)
        total = pos - neg  # Σ_i |S_i|
        P = torch.where(total > 0, 0.5 * (1 + (pos + neg) / torch.where(total > 0, total, 1)), 0.5)
        U = torch.rand(P.shape, generator=self.generator, dtype=torch.float32).to(P.device)
        kept = torch.where(
            P > U, kept_up, torch.where(P < U, kept_down, torch.zeros((), dtype=g.dtype, device=g.device))
        )
        if self.leak:
            kept = self.leak * g.sum(0) + (1 - self.leak) * kept
        return kept.reshape(-1)

    def _aggregate(self, J, losses):
        feature = J.level == "feature"
        acts = J.activations if J.activations is not None else (None,) * len(J.blocks)
        for name, a in zip(J.names, acts):
            if a is not None and not bool(torch.isfinite(a).all()):
                raise NonFiniteInputError(
                    f"{self!r}: the activations Z of block {name!r} (J.activations) contain NaN or inf"
                )
        blocks = tuple(self._drop(b, s, a, feature) for b, s, a in zip(J.blocks, J.shapes, acts))
        return Aggregation(blocks, None)
