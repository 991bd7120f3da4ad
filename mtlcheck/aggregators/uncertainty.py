"""Uncertainty weighting (Kendall et al. 2018).

Total loss Σ_i ½ (e^{−s_i} L_i + s_i) with learnable log-variances s = log σ² (init `init`),
so w_i = ½ e^{−s_i} (nash-mtl's form and init 0: weights 0.5 at the start; LibMTL starts at
s = −0.5, weights 0.82, SamsungLabs/MTL uses e^{−s}L + ½s, weights 1 — the same direction at the
first step, other scales). s is stepped with ∂/∂s_i = ½ (1 − e^{−s_i} L_i) (SGD, lr/momentum) after
the weights of the current step are taken. Loss-only. The losses must be ≥ 0 (ValueError
otherwise): for L_i < 0 the objective is unbounded below in s_i (s_i → −∞, the weight overflows
to inf and NaN); Kendall et al.'s losses are negative log-likelihoods of a Gaussian or softmax
likelihood up to constants, ≥ 0 as cross-entropies and squared errors are.
"""

from __future__ import annotations

import math

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._optim import check_lr, check_nonnegative_losses, sgd_momentum
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("uncertainty", paper_name="Uncertainty")
class Uncertainty(WeightingAggregator):
    _state_attrs = ("_s", "_velocity")

    def __init__(self, *, init: float = 0.0, lr: float = 1e-4, momentum: float = 0.9, seed: int = 0):
        super().__init__(seed=seed)
        check_lr("Uncertainty", lr, momentum)
        if not math.isfinite(init):
            raise ValueError(f"Uncertainty: init must be finite, got {init!r}")
        self.init, self.lr, self.momentum = init, lr, momentum
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(inputs=frozenset({"losses"}), nonneg_weights=True, stateful=True, reduction="other")

    def identical_rows_scale(self, n_tasks):
        return n_tasks * 0.5 * math.exp(-self.init)

    def _weights(self, J, losses):
        check_nonnegative_losses(self, losses, "½(e^{−s}L + s)", "s → −∞")
        if self._s is None:
            self._s = torch.full((losses.shape[0],), float(self.init), dtype=torch.float64)
            self._velocity = torch.zeros_like(self._s)
        w = 0.5 * torch.exp(-self._s)
        self._s, self._velocity = sgd_momentum(self._s, 0.5 - w * losses, self._velocity, self.lr, self.momentum)
        return w
