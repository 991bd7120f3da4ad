"""FAMO (Liu et al. 2023): fast adaptive multitask optimization, O(1) per step.

Logits ξ (init 0), z = softmax(ξ), D_i = L_i − ℓ_i + ε with ℓ_i the known lower bounds
(`min_losses`, 0 by default). The step minimises Σ_i z_i log D_i, i.e. weights
w_i = (z_i / D_i) / Σ_j (z_j / D_j) (they sum to 1). After the optimizer step the trainer
re-evaluates the same batch and calls `after_step(L_new)`: with δ = log D_prev − log D_new,
the logits get the gradient J_softmax(ξ)ᵀ δ and one Adam step (lr `w_lr`, weight decay `gamma`).
NaN or inf losses (at the step or after it) raise ValueError, naming them: a NaN logit would make
every later weight NaN.
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator, softmax64
from mtlcheck.aggregators._optim import adam, check_lr
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("famo", paper_name="FAMO")
class FAMO(WeightingAggregator):
    _state_attrs = ("_logits", "_adam", "_prev")

    def __init__(
        self, *, w_lr: float = 0.025, gamma: float = 1e-3, min_loss: float = 0.0, eps: float = 1e-8, seed: int = 0
    ):
        super().__init__(seed=seed)
        check_lr("FAMO", w_lr)
        if not gamma >= 0:
            raise ValueError(f"FAMO: gamma must be >= 0, got {gamma!r}")
        if not eps > 0:
            raise ValueError(f"FAMO: eps must be > 0, got {eps!r}")
        self.w_lr, self.gamma, self.min_loss, self.eps = w_lr, gamma, min_loss, eps
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            inputs=frozenset({"losses"}), nonneg_weights=True, stateful=True, reduction="mean", post_step_update=True
        )

    def _shifted(self, losses: torch.Tensor, what: str) -> torch.Tensor:
        shifted = losses - self.min_loss + self.eps
        if bool((shifted <= 0).any()):
            raise ValueError(f"{self!r}: {what} must exceed min_loss={self.min_loss}, got {losses.tolist()}")
        return shifted

    def _weights(self, J, losses):
        n = losses.shape[0]
        if self._logits is None:
            self._logits = torch.zeros(n, dtype=torch.float64)
            self._adam = {"m": torch.zeros(n, dtype=torch.float64), "v": torch.zeros(n, dtype=torch.float64), "t": 0}
        D = self._shifted(losses, "losses")
        z = softmax64(self._logits)
        self._prev = D
        return (z / D) / (z / D).sum()

    def after_step(self, losses: torch.Tensor) -> None:
        if self._prev is None:
            raise RuntimeError(f"{self!r}: after_step() called before any aggregation step")
        new = torch.as_tensor(losses, dtype=torch.float64).detach().cpu().reshape(-1)
        if not torch.isfinite(new).all():  # log D would make the logits, and every later weight, NaN
            raise ValueError(f"{self!r}: after_step(losses) got NaN or inf post-step losses {new.tolist()}")
        new = self._shifted(new, "post-step losses")
        if new.shape != self._prev.shape:
            raise ValueError(f"{self!r}: after_step got {new.shape[0]} losses, expected {self._prev.shape[0]}")
        delta = self._prev.log() - new.log()
        z = softmax64(self._logits)
        grad = z * (delta - (z * delta).sum())  # J_softmax(ξ)ᵀ δ
        self._logits, self._adam = adam(self._logits, grad, self._adam, self.w_lr, self.gamma)
        self._prev = None
