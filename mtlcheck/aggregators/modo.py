"""MoDo, multi-objective gradient with double sampling (Chen, Fernando, Ying & Chen 2023,
"Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and
Conflict-Avoidance", NeurIPS; JMLR 25 (2024)):

    λ ← Π_Δ(λ − γ (G₁G₂ᵀ λ + ρ λ)),   d = G₃ᵀ λ,   λ = 1/T at the start,

with G₁, G₂, G₃ the task gradients of independent mini-batches (so that G₁G₂ᵀ is an unbiased
estimate of the Gram) and Π_Δ the Euclidean projection onto the simplex (`_simplex`).

An aggregator receives one batch's task gradients per step, so here G₁ = G₂ = G₃ = G: the λ
step reads the one-batch Gram GGᵀ, the biased estimate the paper's double sampling avoids (its
convergence guarantee needs the independent draws; mtlcheck's engine computes one Jacobian per
step). The update is otherwise the paper's: one projected gradient step on λ per call, on the raw
Gram (γ is in the gradients' squared units), with the updated λ weighting G.

Peers: TorchJD 0.18 (`torchjd.aggregation.MoDoWeighting(gamma, rho)`) takes any matrix for
G₁G₂ᵀ; fed GGᵀ it is this update (the defaults γ = 0.1, ρ = 0.1 are TorchJD's). LibMTL's current
tree (not in 1.1.5) draws three batches (γ = 0.001 by default); fed one batch three times it is
this update to 1e-10 (suites/aggregators/test_libmtl_tree_fidelity.py).
"""

from __future__ import annotations

import math

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.aggregators._simplex import gram_step


def _positive(owner: str, name: str, value, *, zero_ok: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value >= 0 if zero_ok else value > 0)):
        raise ValueError(f"{owner}: {name} must be a finite number {'>=' if zero_ok else '>'} 0, got {value!r}")


@register_aggregator("modo", paper_name="MoDo")
class MoDo(WeightingAggregator):
    _state_attrs = ("_lambda",)

    def __init__(self, *, gamma: float = 0.1, rho: float = 0.1, seed: int = 0):
        super().__init__(seed=seed)
        _positive("MoDo", "gamma", gamma)
        _positive("MoDo", "rho", rho, zero_ok=True)
        self.gamma, self.rho = gamma, rho
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(family="solver", nonneg_weights=True, stateful=True, reduction="mean", homogeneity=None)

    def _weights(self, J, losses):
        n = J.n_tasks
        lam = torch.full((n,), 1.0 / n, dtype=torch.float64) if self._lambda is None else self._lambda
        # from the scaled Gram, so that no scale of G overflows
        lam = gram_step(lam, self.gamma, self.rho, J.scaled_gram(), J.gram_exponent)
        self._lambda = lam
        return lam.clone()
