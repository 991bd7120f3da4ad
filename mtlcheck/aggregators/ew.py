"""Equal weighting (EW): the paper's baseline, the SUM of the task losses (Eq. 4).

direction = Σ_i g_i, i.e. weights w_i = 1. (Some peers use the mean Σ_i g_i / T; that is
only a rescaling of the learning rate: Pylon's baseline and torchjd's `Mean` use the mean,
LibMTL, nash-mtl and SamsungLabs/MTL the sum.)
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("ew")
class EW(WeightingAggregator):
    """w = 1 for every task."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self) -> AggregatorTags:
        return AggregatorTags(inputs=frozenset({"losses"}), nonneg_weights=True, reduction="sum")

    def _weights(self, J, losses):
        n = J.n_tasks if J is not None else losses.shape[0]
        return torch.ones(n, dtype=torch.float64)
