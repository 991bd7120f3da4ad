"""Dynamic Weight Average (Liu et al. 2019).

With L̄_i(k) the mean loss of task i over the k-th most recent window of `window` steps,
r_i = L̄_i(1) / L̄_i(2) and w = T softmax(r / temperature). Until two full windows of history
exist, w = 1. (The original works per epoch; `window` steps play the role of an epoch, as in
the nash-mtl implementation.) Loss-only.
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator, softmax64
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("dwa", paper_name="DWA")
class DWA(WeightingAggregator):
    _state_attrs = ("_history",)

    def __init__(self, *, temperature: float = 2.0, window: int = 25, seed: int = 0):
        super().__init__(seed=seed)
        if not temperature > 0:
            raise ValueError(f"DWA: temperature must be > 0, got {temperature!r}")
        if not (isinstance(window, int) and window >= 1):
            raise ValueError(f"DWA: window must be an int >= 1, got {window!r}")
        self.temperature, self.window = temperature, window
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(inputs=frozenset({"losses"}), nonneg_weights=True, stateful=True)

    def _weights(self, J, losses):
        n = losses.shape[0]
        self._history = self._history or []
        if len(self._history) >= 2 * self.window:
            recent = torch.stack(self._history[-self.window :]).mean(0)
            before = torch.stack(self._history[-2 * self.window : -self.window]).mean(0)
            if bool((before <= 0).any()):
                raise ValueError(f"{self!r}: loss ratios need positive losses, got window means {before.tolist()}")
            w = n * softmax64((recent / before) / self.temperature)
        else:
            w = torch.ones(n, dtype=torch.float64)
        self._history = (self._history + [losses.clone()])[-2 * self.window :]
        return w
