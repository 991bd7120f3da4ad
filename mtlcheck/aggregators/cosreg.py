"""CosReg (Suteu & Guo 2019): regularise the squared cosine between task gradients.

Objective  Σ_i L_i + λ (Σ_{i,j} cos²(g_i, g_j) − T) / (T² − T),  g_i = ∇L_i (w.r.t. shared
parameters, or Z at the feature level). The penalty depends on the gradients, so its gradient
needs second derivatives: the engine takes g_i with create_graph=True and differentiates
`penalty(J)` (double backprop). Given only a fixed G, the first-order part is Σ_i g_i, which is
what `__call__` returns. (The authors' code computes the penalty from detached gradients, so it
trains the plain summed loss: danielmao2019/Pylon @ ebe46305 `optimizers/multi_task_optimizers` takes g_i without
create_graph=True.)
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, SecondOrderMethod, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator


def mean_squared_cosine(blocks) -> torch.Tensor:
    """mean_{i≠j} cos²(g_i, g_j) from per-block (T, n_k) gradients; differentiable; 0 for T = 1.
    A pair with a zero gradient counts as cos² = 0 (no epsilon: the value is scale-free)."""
    gram = sum(b.to(torch.float64) @ b.to(torch.float64).T for b in blocks)
    n = gram.shape[0]
    if n < 2:
        return gram.new_zeros(())
    norms2 = gram.diagonal()
    denom = torch.outer(norms2, norms2)
    positive = denom > 0
    cos2 = torch.where(
        positive, gram**2 / torch.where(positive, denom, torch.ones_like(denom)), torch.zeros_like(denom)
    )
    off = ~torch.eye(n, dtype=torch.bool, device=gram.device)
    return cos2[off].mean()


@register_aggregator("cosreg", paper_name="CosReg")
class CosReg(SecondOrderMethod, WeightingAggregator):
    def __init__(self, *, penalty: float = 10.0, seed: int = 0):
        super().__init__(seed=seed)
        if not penalty >= 0:
            raise ValueError(f"CosReg: penalty must be >= 0, got {penalty!r}")
        self.penalty = penalty

    def tags(self) -> AggregatorTags:
        return AggregatorTags(family="regularizer", nonneg_weights=True, second_order=True, reads_gram=False)

    def penalty_term(self, blocks) -> torch.Tensor:
        """λ · mean_{i≠j} cos²(g_i, g_j); `blocks` keep their autograd graph (create_graph=True)."""
        return self.penalty * mean_squared_cosine(blocks)

    def _weights(self, J, losses):
        return torch.ones(J.n_tasks, dtype=torch.float64)
