"""Gradient Vaccine (Wang et al. 2021): adaptive gradient similarity targets.

State φ̂_ij (per group k), initialised to 0, an EMA of the observed cosines. For each task i and,
in a random order, each j ≠ i: with ρ = cos(g_i', g_j), if ρ < φ̂_ij then
    g_i' ← g_i' + ‖g_i'‖ (φ̂_ij √(1−ρ²) − ρ √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j,
which makes cos(g_i', g_j) exactly φ̂_ij (ε = `eps` is added to √(1−φ̂²), not to the whole
denominator as in LibMTL, so the method stays exactly scale-equivariant); then always φ̂_ij ← (1−β) φ̂_ij + β ρ.
direction = Σ_i g_i' (LibMTL and TorchJD; Pylon averages, ÷T). Groups (`group_type`): "whole" model (one group),
"module" (blocks that share a module path), "parameter" (each block). All of it runs on Gram matrices.
"""

from __future__ import annotations

import math

import torch

from mtlcheck.aggregators._base import Aggregation, Aggregator, AggregatorTags, ProjectionMethod
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.aggregators.pcgrad import random_order

GROUP_TYPES = ("whole", "module", "parameter")


@register_aggregator("gradvac", paper_name="GradVac")
class GradVac(ProjectionMethod, Aggregator):
    implements = "gradvac"
    _state_attrs = ("_targets",)

    def __init__(self, *, beta: float = 0.5, group_type: str = "whole", eps: float = 1e-8, seed: int = 0):
        super().__init__(seed=seed)
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"GradVac: beta must be in (0, 1], got {beta!r}")
        if group_type not in GROUP_TYPES:
            raise ValueError(f"GradVac: group_type must be one of {GROUP_TYPES}, got {group_type!r}")
        if eps < 0:
            raise ValueError(f"GradVac: eps must be >= 0, got {eps!r}")
        self.beta, self.group_type, self.eps = beta, group_type, eps
        self._reset_state()  # _targets: (K, T, T) EMA of the cosines, None before the first step

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            family="projection",
            weighted=self.group_type == "whole",
            nonneg_weights=False,
            stateful=True,
            stochastic=True,
            task_symmetric=False,
        )

    def _groups_and_grams(self, J):
        groups = J.groups(self.group_type)
        block_grams = J.scaled_block_grams()  # cosines and norm ratios only
        grams = torch.stack([block_grams[g].sum(0) for g in groups])
        if self._targets is not None and self._targets.shape[0] != len(groups):
            raise ValueError(
                f"{self!r}: state has {self._targets.shape[0]} groups but G has {len(groups)}; call reset()"
            )
        return groups, grams

    def _correction(self, norm_i: float, norm_j: float, rho: float, target: float) -> float:
        """The coefficient of g_j that lifts cos(g_i', g_j) from rho to target (Wang et al. Eq. 4)."""
        root_rho, root_target = math.sqrt(max(1 - rho**2, 0.0)), math.sqrt(max(1 - target**2, 0.0))
        return norm_i * (target * root_rho - rho * root_target) / (norm_j * (root_target + self.eps))

    def surgery(self, J) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, targets) for the current state without changing it: g_i' = C[k, i] G per group k.

        Also returns the cosines ρ observed before each correction (to update the EMA) as
        `self._last_rho`. Runs on Python floats (T is small), keeping h = C[k, i] M_k, the inner
        products of g_i' with every original g_j in group k, up to date: ‖g_i'‖² = C[k, i]·h."""
        groups, grams = self._groups_and_grams(J)
        n = J.n_tasks
        targets = self._targets if self._targets is not None else torch.zeros(len(groups), n, n, dtype=torch.float64)
        target_values = targets.tolist()
        rho_seen = targets.tolist()
        M = grams.tolist()
        C = [[[float(a == b) for b in range(n)] for a in range(n)] for _ in M]
        H = [[list(Mk[i]) for i in range(n)] for Mk in M]
        for i in range(n):
            for j in random_order(n, i, self.generator):
                for k, Mk in enumerate(M):
                    c_i, h_i = C[k][i], H[k][i]
                    norm_i = math.sqrt(max(sum(a * b for a, b in zip(c_i, h_i)), 0.0))
                    norm_j = math.sqrt(max(Mk[j][j], 0.0))
                    if norm_i == 0.0 or norm_j == 0.0:
                        continue
                    rho = h_i[j] / (norm_i * norm_j)
                    target = target_values[k][i][j]
                    rho_seen[k][i][j] = rho
                    if rho < target:
                        coef = self._correction(norm_i, norm_j, rho, target)
                        c_i[j] += coef
                        H[k][i] = [x + coef * m for x, m in zip(h_i, Mk[j])]
        self._last_rho = torch.tensor(rho_seen, dtype=torch.float64)
        return torch.tensor(C, dtype=torch.float64), targets

    def _direction_scale(self, n_tasks: int) -> float:
        """A factor on the corrected gradients' sum (1: the sum; the published variant's mean: 1/T),
        applied to the weights, so that the direction is formed once, at its own scale."""
        return 1.0

    def _group_weights(self, J) -> torch.Tensor:
        """The (K, T) weights of the K groups' directions, and the targets' update."""
        C, targets = self.surgery(J)
        self._targets = (1 - self.beta) * targets + self.beta * self._last_rho
        return C.sum(1) * self._direction_scale(J.n_tasks)

    def _aggregate_weights(self, J, losses):
        if self.group_type != "whole":  # (no task weights: not tagged weighted)
            return self._aggregate(J, losses)
        return Aggregation(None, self._group_weights(J)[0])

    def _aggregate(self, J, losses):
        per_group = self._group_weights(J)  # (K, T)
        if self.group_type == "whole":
            return Aggregation(J.combine(per_group[0]), per_group[0])
        groups = J.groups(self.group_type)
        per_block = torch.empty(len(J.blocks), J.n_tasks, dtype=torch.float64)
        for k, g in enumerate(groups):
            per_block[g] = per_group[k]
        return Aggregation(J.combine_per_block(per_block), None)
