"""GLS, the geometric loss strategy (Chennupati et al. 2019, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops): the
training loss is the geometric mean of the task losses, L = (Π_i L_i)^{1/T}, so

    ∇L = Σ_i w_i ∇L_i,    w_i = L / (T L_i) = exp(mean_j log L_j − log L_i) / T.

Loss-only (the engine back-propagates Σ_i w_i L_i once, the heads included, as ∇L does); the
weights are formed in log space, so many tasks or tiny losses neither under- nor overflow Π L_i.
Needs positive losses (ValueError otherwise: the geometric mean of a zero or negative loss has no
gradient). Equal losses give w = 1/T (the mean).

Peers: LibMTL 1.1.5 (`LibMTL.weighting.GLS`) back-propagates (Π L_i)^{1/T} itself — the same
update, its heads included — but the weights it returns (and logs) are L_i / (T Π_j L_j), not the
weights it applied, L / (T L_i) (README findings). TorchJD has no GLS.
"""

from __future__ import annotations

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("gls", paper_name="GLS")
class GLS(WeightingAggregator):
    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self) -> AggregatorTags:
        return AggregatorTags(inputs=frozenset({"losses"}), nonneg_weights=True, reduction="mean")

    def _weights(self, J, losses):
        if bool((losses <= 0).any()):
            raise ValueError(
                f"{self!r}: the geometric loss strategy needs positive losses, got {losses.tolist()} "
                f"(the geometric mean (Π L_i)^(1/T) has no gradient at a zero loss)"
            )
        logs = losses.log()
        return (logs.mean() - logs).exp() / losses.shape[0]
