"""SDMGrad, stochastic direction-oriented multi-objective gradient descent (Xiao, Ban & Ji 2023,
"Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms",
NeurIPS, arXiv:2305.18409, Algorithm 1): MGDA's simplex weights pulled toward a preferred
direction w̃ (here the mean, w̃ = 1/T) by a regulariser λ,

    min_{w ∈ Δ} ½ ‖Gᵀ(w + λ w̃)‖²,   d = Gᵀ(w + λ w̃) / (1 + λ),

with w found by `n_iter` projected SGD steps with momentum (learning rate `lr`, momentum
`momentum`) warm-started from the previous step's w (1/T at the start), on the Gram normalised by
the squared mean gradient norm, A = GGᵀ / (mean_i ‖g_i‖)² (the paper's §6.1 normalisation; it
makes `lr` scale-free, so the step is homogeneous of degree 1).

The paper's double sampling reads A = G₁G₂ᵀ from two independent mini-batches (and G₃ for d);
an aggregator receives one batch's task gradients, so here G₁ = G₂ = G₃ = G (the biased estimate
its guarantee avoids). Defaults as TorchJD's (lr 10, momentum 0.5, 20 iterations; λ = 0.3, by
TorchJD's account the value of the official code's experiments, github.com/OptMN-Lab/SDMGrad).

Peers: TorchJD 0.18 (`torchjd.aggregation.SDMGradWeighting`) takes any matrix for A; fed GGᵀ it
is this update (it adds 1e-8 to the squared mean norm: the same to ~1e-8 relative at unit scale,
not at tiny scales). LibMTL's current tree (not in 1.1.5) draws three batches, uses lr 5 and adds
the same 1e-8: fed one batch three times, ours with lr=5 is it to 1e-9 at gradient norms ~1e4, and
at norms ~4e-3 the 1e-8 (~0.07 % of the normalisation), through the inner SGD, changes the update
on some steps, by over 100 % on one (README findings; suites/aggregators/test_libmtl_tree_fidelity.py).
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.aggregators._simplex import projected_step
from mtlcheck.aggregators.modo import _positive


@register_aggregator("sdmgrad", paper_name="SDMGrad")
class SDMGrad(WeightingAggregator):
    _state_attrs = ("_w",)

    def __init__(
        self, *, lr: float = 10.0, momentum: float = 0.5, n_iter: int = 20, lambda_: float = 0.3, seed: int = 0
    ):
        super().__init__(seed=seed)
        _positive("SDMGrad", "lr", lr)
        _positive("SDMGrad", "lambda_", lambda_, zero_ok=True)
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"SDMGrad: momentum must be in [0, 1), got {momentum!r}")
        if not (isinstance(n_iter, int) and not isinstance(n_iter, bool) and n_iter >= 1):
            raise ValueError(f"SDMGrad: n_iter must be an int >= 1, got {n_iter!r}")
        self.lr, self.momentum, self.n_iter, self.lambda_ = lr, momentum, n_iter, lambda_
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(family="solver", nonneg_weights=True, stateful=True, reduction="mean")

    def _weights(self, J, losses):
        n = J.n_tasks
        target = torch.full((n,), 1.0 / n, dtype=torch.float64)
        w = target.clone() if self._w is None else self._w
        gram = J.scaled_gram()  # the normalisation below removes any scale
        mean_norm = float(gram.diagonal().clamp_min(0).sqrt().mean())
        if mean_norm > 0:
            A = gram / mean_norm**2
            velocity = None
            for _ in range(self.n_iter):
                grad = A @ (w + self.lambda_ * target)
                velocity = grad if velocity is None else self.momentum * velocity + grad
                w = projected_step(w, self.lr, velocity)
        self._w = w
        return (w + self.lambda_ * target) / (1 + self.lambda_)
