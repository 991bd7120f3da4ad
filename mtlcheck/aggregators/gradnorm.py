"""GradNorm (Chen et al. 2018): balance gradient norms by learnable task weights.

Weights w (init 1, renormalised to Σ w = T). With n_i = ‖g_i‖ (over all shared blocks, or over
the blocks of the last shared module with a weight matrix or kernel: `norm_blocks="last"`, the
paper's "last shared layer"), G_i = w_i n_i,
r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)) with L(0) the first call's losses, and the target
mean(G) · r_i^α held constant, the GradNorm loss Σ_i |G_i − target_i| has
∂/∂w_i = sign(G_i − target_i) n_i. Each call returns the current w (direction Σ w_i g_i) and
then steps w (SGD, lr/momentum), keeps it ≥ 0 and renormalises it to sum T — so the weights keep
learning at every step (a peer's GradNorm silently stops after the first step).
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._optim import check_lr, sgd_momentum
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.jacobian import times_pow2


@register_aggregator("gradnorm", paper_name="GradNorm")
class GradNorm(WeightingAggregator):
    _state_attrs = ("_w", "_velocity", "_initial_losses")

    def __init__(
        self, *, alpha: float = 1.5, lr: float = 1e-4, momentum: float = 0.9, norm_blocks: str = "all", seed: int = 0
    ):
        super().__init__(seed=seed)
        check_lr("GradNorm", lr, momentum)
        if not alpha >= 0:
            raise ValueError(f"GradNorm: alpha must be >= 0, got {alpha!r}")
        if norm_blocks not in ("all", "last"):
            raise ValueError(f"GradNorm: norm_blocks must be 'all' or 'last', got {norm_blocks!r}")
        self.alpha, self.lr, self.momentum, self.norm_blocks = alpha, lr, momentum, norm_blocks
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(inputs=frozenset({"grads", "losses"}), nonneg_weights=True, stateful=True)

    @staticmethod
    def last_layer(J) -> list[int]:
        """Blocks of the last shared module that has a weight matrix or kernel (ndim >= 2), so a
        trailing normalisation layer is not mistaken for the last layer; all blocks if none has."""
        layers = [g for g in J.groups("module") if any(len(J.shapes[k]) >= 2 for k in g)]
        return layers[-1] if layers else list(range(len(J.blocks)))

    def _weights(self, J, losses):
        n = J.n_tasks
        if self._w is None:
            if bool((losses <= 0).any()):
                raise ValueError(
                    f"{self!r}: initial losses must be positive to form loss ratios, got {losses.tolist()}"
                )
            self._w = torch.ones(n, dtype=torch.float64)
            self._velocity = torch.zeros(n, dtype=torch.float64)
            self._initial_losses = losses.clone()
        grams = J.scaled_block_grams()
        gram = grams[self.last_layer(J)].sum(0) if self.norm_blocks == "last" else grams.sum(0)
        norms = times_pow2(gram.diagonal().clamp_min(0).sqrt(), J.gram_exponent)  # ‖g_i‖
        w = self._w.clone()
        weighted = w * norms
        ratio = losses / self._initial_losses
        target = weighted.mean() * (ratio / ratio.mean()) ** self.alpha
        grad = torch.sign(weighted - target) * norms
        new, self._velocity = sgd_momentum(self._w, grad, self._velocity, self.lr, self.momentum)
        new = new.clamp_min(0)
        if not new.sum() > 0:
            raise RuntimeError(f"{self!r}: every weight was driven to zero; lower lr")
        self._w = new * n / new.sum()
        return w
