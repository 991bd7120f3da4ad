"""Random loss weighting (RLW) and random gradient weighting (RGW), Lin et al. 2022.

w = softmax(ε), ε ~ N(0, I_T) drawn afresh every step from the aggregator's own generator.
RLW applies w to the losses (one backward of Σ w_i L_i); RGW applies the same weights to the
per-task gradients. Their shared-parameter directions coincide; they differ in cost and in what
the task heads receive (weighted loss for RLW, own unweighted loss for RGW).
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator, softmax64
from mtlcheck.aggregators._registry import register_aggregator


class _RandomWeights(WeightingAggregator):
    _inputs: frozenset = frozenset()

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self) -> AggregatorTags:
        # weights are drawn per task index: equivariant in distribution only, not draw by draw
        return AggregatorTags(
            inputs=self._inputs,
            nonneg_weights=True,
            stochastic=True,
            reduction="mean",
            task_symmetric=False,
            reads_gram=False,
        )

    def _weights(self, J, losses):
        n = J.n_tasks if J is not None else losses.shape[0]
        return softmax64(torch.randn(n, generator=self.generator, dtype=torch.float64))


@register_aggregator("rlw", paper_name="RLW")
class RLW(_RandomWeights):
    """Random loss weighting: loss-only."""

    _inputs = frozenset({"losses"})


@register_aggregator("rgw", paper_name="RGW")
class RGW(_RandomWeights):
    """Random gradient weighting: the weights act on the per-task gradients."""

    _inputs = frozenset({"grads"})
