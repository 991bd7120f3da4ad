"""DB-MTL (Lin, Ye, Xu, Shi & Zhang 2023, "Dual-Balancing for Multi-Task Learning",
arXiv:2308.12029): balance the loss scales by a logarithm and the gradient
magnitudes by the largest one.

    loss-scale balancing:   each task descends log L_i, whose gradient is g_i / L_i;
    EMA of those gradients: ĝ_i ← β_t ĝ_i + (1 − β_t) g_i / L_i,  β_t = β / t^σ,  ĝ_i = 0 at t = 0;
    magnitude balancing:    d = Σ_i (max_j ‖ĝ_j‖ / ‖ĝ_i‖) ĝ_i   (every term has the largest norm).

Defining property (`implements = "db_mtl"`, checked at the first step, where ĝ_i = (1 − β) g_i / L_i):
every term has the largest norm, so d ∥ Σ_i g_i / ‖g_i‖ whatever the losses.
Stateful (the T EMA rows, one per block, in the gradients' dtype, and the step t); not a
weighting of the current G (ĝ carries earlier steps). Needs positive losses (ValueError: log L
has no gradient at L ≤ 0); a task whose ĝ_i is 0 contributes 0. At the feature level the EMA runs
over the representation's gradients, row by row of the batch, so the block shapes must stay the
same from step to step (ValueError otherwise; reset() between shapes).

Peers: LibMTL's current tree (`LibMTL.weighting.DB_MTL`, not in 1.1.5) uses the same EMA from
zero with β_t = β/t^σ, log(L + 1e-8) and ‖ĝ_i‖ + 1e-8 in the ratio (negligible unless ĝ_i is
tiny), and refuses the feature level (rep_grad). TorchJD has no DB-MTL.
"""

from __future__ import annotations

import math

import torch

from mtlcheck.aggregators._base import Aggregation, Aggregator, AggregatorTags, check_state_shapes
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.jacobian import Jacobian


@register_aggregator("db_mtl", paper_name="DB-MTL")
class DBMTL(Aggregator):
    implements = "db_mtl"
    _state_attrs = ("_buffer", "_step")

    def __init__(self, *, beta: float = 0.9, beta_sigma: float = 0.5, seed: int = 0):
        super().__init__(seed=seed)
        if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
            raise ValueError(f"DBMTL: beta must be in [0, 1), got {beta!r}")
        if not (isinstance(beta_sigma, (int, float)) and math.isfinite(beta_sigma) and beta_sigma >= 0):
            raise ValueError(f"DBMTL: beta_sigma must be a finite number >= 0, got {beta_sigma!r}")
        self.beta, self.beta_sigma = beta, beta_sigma
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            inputs=frozenset({"grads", "losses"}),
            family="weighting",
            weighted=False,
            stateful=True,
            reduction="other",  # identical rows: T(1 − β) g / L at the first step
        )

    def _aggregate(self, J, losses):
        if bool((losses <= 0).any()):
            raise ValueError(f"{self!r}: log-loss balancing needs positive losses, got {losses.tolist()}")
        step = (self._step or 0) + 1
        beta_t = self.beta / step**self.beta_sigma
        check_state_shapes(self, self._buffer, J.blocks)
        scale = ((1 - beta_t) / losses).to(J.dtype)[:, None]  # (1 − β_t)/L_i per row
        if self._buffer is None:
            buffer = tuple(b * scale.to(b.device) for b in J.blocks)
        else:
            buffer = tuple((b * scale.to(b.device)).add_(old, alpha=beta_t) for old, b in zip(self._buffer, J.blocks))
        # relative norms only (the ratio is scale-free): the diagonal of the buffer's scaled Gram
        # (accumulated in float64, rescaled by a power of two where squares would under- or overflow)
        norms = Jacobian(buffer, J.shapes, J.names, J.level).scaled_gram().diagonal().clamp_min(0).sqrt()
        top = float(norms.max())
        ratio = torch.where(
            norms > 0, top / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(norms)
        )
        self._buffer, self._step = buffer, step
        blocks = tuple(ratio.to(b.dtype).to(b.device) @ b for b in buffer)
        return Aggregation(blocks, None)
