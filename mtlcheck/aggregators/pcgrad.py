"""PCGrad (Yu et al. 2020): gradient surgery by projection onto normal planes.

For each task i, in a random order of the other tasks j: if ⟨g_i', g_j⟩ < 0 then
g_i' ← g_i' − ⟨g_i', g_j⟩/‖g_j‖² · g_j (projections against the ORIGINAL g_j);
direction = Σ_i g_i'. Every g_i' is a combination of the original gradients, so the surgery runs
on the T×T Gram matrix (coefficients C with g_i' = Σ_j C_ij g_j) and the direction is
(Σ_i C_i) G. Defining property: for T = 2, ⟨g_1', g_2⟩ ≥ 0 and ⟨g_2', g_1⟩ ≥ 0.

Peers (same direction up to these conventions): LibMTL (github.com/median-research-group/LibMTL),
nash-mtl (github.com/AvivNavon/nash-mtl) and Aligned-MTL's code (github.com/SamsungLabs/MTL) shuffle
ALL task indices for task i, i itself included; that self-projection only fires once earlier
projections have turned g_i' against g_i (so the random stream, and rarely the step, differ from
ours, which follows Yu et al.'s j ≠ i, as CAGrad's repository and TorchJD do). They also add ε
(1e-8, SamsungLabs 1e-5) to ‖g_j‖²; the sum Σ_i g_i' is everyone's scale except Pylon's mean (÷T).
For T ≥ 3 the result depends on the order whenever a task conflicts with two others, so peers
agree only in distribution.
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import Aggregation, Aggregator, AggregatorTags, ProjectionMethod
from mtlcheck.aggregators._registry import register_aggregator


def random_order(n: int, i: int, generator: torch.Generator) -> list[int]:
    """The other tasks j ≠ i in a random order drawn from `generator`."""
    others = [j for j in range(n) if j != i]
    return [others[k] for k in torch.randperm(len(others), generator=generator).tolist()]


@register_aggregator("pcgrad", paper_name="PCGrad")
class PCGrad(ProjectionMethod, Aggregator):
    implements = "pcgrad"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self) -> AggregatorTags:
        return AggregatorTags(family="projection", nonneg_weights=True, stochastic=True, task_symmetric=False)

    def _order(self, n: int, i: int) -> list[int]:
        return random_order(n, i, self.generator)

    def surgery(self, J) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, targets): g_i' = C_i G, and the cosine each pair must reach (0 for PCGrad).

        Runs on Python floats (T is small; tensor calls would cost more than the arithmetic),
        keeping h = C_i M, the inner products of g_i' with every original g_j, up to date."""
        M = J.scaled_gram().tolist()  # ratios only: any power-of-two scale of the Gram
        n = len(M)
        C = [[float(a == b) for b in range(n)] for a in range(n)]
        for i in range(n):
            h = list(M[i])
            for j in self._order(n, i):
                if h[j] < 0 and M[j][j] > 0:
                    coef = h[j] / M[j][j]
                    C[i][j] -= coef
                    h = [hk - coef * mk for hk, mk in zip(h, M[j])]
        return torch.tensor(C, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64)

    def _aggregate(self, J, losses):
        w = self._aggregate_weights(J, losses).weights
        return Aggregation(J.combine(w), w)

    def _aggregate_weights(self, J, losses):
        C, _ = self.surgery(J)
        return Aggregation(None, C.sum(0))
