"""ConFIG (Liu, Chu & Thuerey 2024, "ConFIG: Towards Conflict-free Training of Physics Informed
Neural Networks", arXiv:2408.11104, Eq. 2): the direction with the same cosine to every task,
scaled by the sum of the task gradients' projections on it,

    v = [û_1, ..., û_T]ᵀ⁺ 1   (û_i = g_i / ‖g_i‖; the minimum-norm solution of ⟨û_i, v⟩ = 1),
    d = (Σ_i ⟨g_i, v̂⟩) v̂,     v̂ = v / ‖v‖.

From the Gram alone: with the cosine matrix C = Û Ûᵀ, v = Ûᵀ a with a = C⁺1 (Û⁺ = Ûᵀ(ÛÛᵀ)⁺),
so d = Σ_i w_i g_i with w_i = λ a_i / ‖g_i‖ and λ = Σ_j ‖g_j‖ (Ca)_j / (aᵀCa). A zero gradient
has û_i = 0 (as TorchJD's adaptation of the official code, github.com/tum-pbs/ConFIG), and C⁺ cuts
singular values below T·2⁻⁵² of the largest (rank-deficient G: the least-squares v). With
linearly independent rows every task has cosine ⟨û_i, v̂⟩ = 1/‖v‖ > 0 with d; with dependent
ones the system ⟨û_i, v⟩ = 1 may be inconsistent, and its least-squares v can conflict with a
task even where a direction conflicting with none exists (four rows in R³, say): so
non-conflict is not claimed (TorchJD's gives the same v). v = 0 (the step is 0) where 1 is
orthogonal to the range of C, e.g. g and −g.
Defining property (`implements = "config"`): every task has the same cosine with d, d lies in
the span of the g_i, and ‖d‖ = Σ_i ⟨g_i, d/‖d‖⟩ (with the declared sum scale).

Peers: TorchJD 0.18 (`torchjd.aggregation.ConFIG`, adapted from the official code) takes the
pseudo-inverse of the T×d unit matrix: the same direction and scale (README findings), to 1e-15
for rows far from collinear. Read from the Gram, whose conditioning is G's squared, rows within
δ of collinear lose digits: for δ = 1e-6 the tasks' cosines with d spread by ~2e-4 (TorchJD's
~2e-11), and below δ ≈ 3e-8 the cut-off takes the rows as collinear (a direction 26-96 % from
TorchJD's, which keeps them).
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator


def config_weights(gram: torch.Tensor) -> torch.Tensor:
    """w with Σ w_i g_i the ConFIG direction, from the Gram at any positive scale: w_i = λ a_i/‖g_i‖
    is of degree 0 in the scale of G (λ of degree 1, a of degree 0)."""
    n = gram.shape[0]
    norms = gram.diagonal().clamp_min(0).sqrt()
    active = norms > 0
    inv = torch.where(active, 1.0 / torch.where(active, norms, torch.ones_like(norms)), torch.zeros_like(norms))
    C = gram * torch.outer(inv, inv)
    if not bool(active.any()):
        return torch.zeros(n, dtype=torch.float64)
    a = torch.linalg.pinv(C, rtol=n * 2.0**-52, hermitian=True) @ torch.ones(n, dtype=torch.float64)
    v_sq = float(a @ C @ a)
    if not v_sq > 0:
        return torch.zeros(n, dtype=torch.float64)
    length = float(norms @ (C @ a)) / v_sq
    return length * a * inv


@register_aggregator("config", paper_name="ConFIG")
class ConFIG(WeightingAggregator):
    implements = "config"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self) -> AggregatorTags:
        return AggregatorTags(family="solver", reduction="sum")

    def _weights(self, J, losses):
        return config_weights(J.scaled_gram())  # degree 0 in the Gram's scale: the scaled Gram gives w
