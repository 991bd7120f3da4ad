"""IMTL (Liu et al. 2021): impartial multi-task learning, gradient (G) and loss (L) parts.

IMTL-G: find the direction d = Σ_i α_i g_i with Σ_i α_i = 1 whose projections onto the unit
task gradients u_i = g_i/‖g_i‖ are all equal. With M = G Gᵀ and n_i = ‖g_i‖ this is the linear
system M α = c n, 1ᵀ α = 1, solved in the least-squares sense (minimum-norm α) so that
rank-deficient G (identical or opposite rows) stays finite. Defining property: u_iᵀ d equal for
all i.
IMTL-L (`loss_balance=True`, the paper's hybrid): losses are scaled e^{s_i} L_i − s_i, so task
gradients become e^{s_i} g_i; s is stepped with ∂/∂s_i = e^{s_i} L_i − 1 (SGD, lr/momentum).
IMTL-L needs losses ≥ 0 (ValueError otherwise): e^{s}L − s is unbounded below in s for L < 0.
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._optim import check_lr, check_nonnegative_losses, sgd_momentum
from mtlcheck.aggregators._registry import register_aggregator


def equal_projection_weights(gram: torch.Tensor) -> torch.Tensor:
    """α with Σα = 1 and equal projections of Σ α_i g_i on every u_i (zeros when G = 0)."""
    n = gram.shape[0]
    trace = float(gram.trace())
    if trace <= 0:
        return torch.zeros(n, dtype=torch.float64)
    M = gram / trace
    norms = M.diagonal().clamp_min(0).sqrt()
    A = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    A[:n, :n] = M
    A[:n, n] = -norms
    A[n, :n] = 1.0
    b = torch.zeros(n + 1, dtype=torch.float64)
    b[n] = 1.0
    sol = torch.linalg.pinv(A, rtol=1e-12) @ b
    return sol[:n]


@register_aggregator("imtl", paper_name="IMTL")
class IMTL(WeightingAggregator):
    _state_attrs = ("_s", "_velocity")

    def __init__(self, *, loss_balance: bool = True, lr: float = 1e-4, momentum: float = 0.9, seed: int = 0):
        super().__init__(seed=seed)
        check_lr("IMTL", lr, momentum)
        self.loss_balance, self.lr, self.momentum = loss_balance, lr, momentum
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            inputs=frozenset({"grads", "losses"} if self.loss_balance else {"grads"}),
            family="solver",
            stateful=self.loss_balance,
            reduction="mean",
        )

    @property
    def implements(self):
        """IMTL-G's equal projections hold for the gradients alone (loss_balance=False)."""
        return None if self.loss_balance else "imtl_g"

    def _weights(self, J, losses):
        n = J.n_tasks
        if not self.loss_balance:
            return equal_projection_weights(J.scaled_gram())  # normalised by its trace
        check_nonnegative_losses(self, losses, "e^{s}L − s", "s → +∞")
        if self._s is None:
            self._s = torch.zeros(n, dtype=torch.float64)
            self._velocity = torch.zeros(n, dtype=torch.float64)
        scale = self._s.exp()
        alpha = equal_projection_weights(J.scaled_gram() * torch.outer(scale, scale))
        self._s, self._velocity = sgd_momentum(self._s, scale * losses - 1.0, self._velocity, self.lr, self.momentum)
        return alpha * scale
