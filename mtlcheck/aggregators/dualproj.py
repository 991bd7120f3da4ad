"""DualProj (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization",
arXiv:2406.16232; the projection of Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory",
Eq. 11): the mean of the task gradients projected onto the dual cone of all of them,

    d = π_C((1/T) Σ_i g_i),   C = {x : ⟨g_j, x⟩ ≥ 0 for every j}.

As Quinton & Rey show, d = wᵀG with w = argmin_{v ≥ 1/T} vᵀ(GGᵀ)v (`_dual_cone`,
exact, KKT-certified). The weights are ≥ 1/T and d conflicts with no task; when the mean conflicts
with none, d is the mean. Defining property (`implements = "dualproj"`): d equals the projection
of the mean onto C, computed independently by the kit (`testing/identities.py`).

Peers: TorchJD 0.18 (`torchjd.aggregation.DualProj`) solves the same QP after normalising the
Gram by its Frobenius norm and adding 1e-4·I (`QuadprogProjector(reg_eps=1e-4)`): O(1e-4)
relative from the exact projection, none with `reg_eps=0` (README findings). Same scale (mean).
"""

from __future__ import annotations

import numpy as np
import torch

from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.aggregators.upgrad import DualConeWeighting, dual_cone_weights


@register_aggregator("dualproj", paper_name="DualProj")
class DualProj(DualConeWeighting):
    implements = "dualproj"

    def _weights(self, J, losses):
        n = J.n_tasks
        W = dual_cone_weights(self, J.scaled_gram(), np.full((1, n), 1.0 / n))
        return torch.from_numpy(W[0])
