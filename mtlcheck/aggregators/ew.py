"""Equal weighting (EW): the paper's baseline, the SUM of the task losses (Eq. 4).

direction = Σ_i g_i, i.e. weights w_i = 1, as LibMTL (github.com/median-research-group/LibMTL),
nash-mtl (github.com/AvivNavon/nash-mtl), FAMO (github.com/Cranial-XIX/FAMO) and Aligned-MTL's code
(github.com/SamsungLabs/MTL). TorchJD's `Mean` and Pylon (github.com/danielmao2019/Pylon) take the
mean Σ_i g_i / T: the same direction, ÷T in scale (a rescaled learning rate).
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("ew", paper_name="Baseline")
class EW(WeightingAggregator):
    """w = 1 for every task."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self) -> AggregatorTags:
        return AggregatorTags(inputs=frozenset({"losses"}), nonneg_weights=True, reduction="sum")

    def _weights(self, J, losses):
        n = J.n_tasks if J is not None else losses.shape[0]
        return torch.ones(n, dtype=torch.float64)
