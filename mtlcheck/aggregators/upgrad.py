"""UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization",
arXiv:2406.16232): the mean of the projections of every task gradient onto the dual
cone of all of them,

    d = (1/T) Σ_i π_C(g_i),   C = {x : ⟨g_j, x⟩ ≥ 0 for every j},   π_C(x) = argmin_{y ∈ C} ‖y − x‖.

As the paper shows, π_C(uᵀG) = wᵀG with w = argmin_{v ≥ u} vᵀ(GGᵀ)v, so UPGrad is a
weighting of the rows: w = Σ_i w^(i), w^(i) the solution for u = e_i / T (`_dual_cone`, exact,
KKT-certified). The weights are ≥ 1/T, d conflicts with no task (it lies in C), and when every
g_i already lies in C (no pair conflicts: G Gᵀ ≥ 0 entrywise) d is the mean of the rows.
Defining property (`implements = "upgrad"`): d equals the mean of the projections, each computed
independently by the kit (`testing/identities.py`).

Peers: TorchJD 0.18 (`torchjd.aggregation.UPGrad`, the authors' library) normalises the Gram by
its Frobenius norm and adds 1e-4·I before its QP (quadprog; `QuadprogProjector(reg_eps=1e-4)`),
so its projections are those of a slightly perturbed problem: the difference from the exact
projection is O(1e-4) relative, and vanishes with `reg_eps=0` (README findings). The scale is the
same (the mean). LibMTL's current tree (not in 1.1.5) has the same solve, with `UPGrad_norm_eps` and
`UPGrad_reg_eps` at 1e-4; with both at 0 it is ours to 1e-10 (suites/aggregators/test_libmtl_tree_fidelity.py).
"""

from __future__ import annotations

import numpy as np
import torch

from mtlcheck.aggregators._base import AggregatorTags, SolverError, WeightingAggregator
from mtlcheck.aggregators._dual_cone import DualConeError, project_weights
from mtlcheck.aggregators._registry import register_aggregator


def dual_cone_weights(owner, gram: torch.Tensor, U: np.ndarray) -> np.ndarray:
    """`project_weights` on the (scaled) Gram, with its failure as the owner's SolverError."""
    try:
        W = project_weights(gram.numpy(), U)
    except DualConeError as exc:
        raise SolverError(f"{owner!r}: {exc}") from exc
    if not np.isfinite(W).all():
        raise SolverError(f"{owner!r}: the dual-cone projection returned non-finite weights {W.tolist()}")
    return W


class DualConeWeighting(WeightingAggregator):
    """A weighting by dual-cone projections (`dual_cone_weights`; UPGrad, DualProj): weights ≥ 1/T,
    a direction that conflicts with no task, at the scale of the mean."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            family="solver",
            nonneg_weights=True,
            reduction="mean",
            non_conflicting=True,
            requires_solver="dual-cone-qp",
        )


@register_aggregator("upgrad", paper_name="UPGrad")
class UPGrad(DualConeWeighting):
    implements = "upgrad"

    def _weights(self, J, losses):
        n = J.n_tasks
        W = dual_cone_weights(self, J.scaled_gram(), np.eye(n) / n)  # the weights do not depend on the scale
        return torch.from_numpy(W.sum(0))
