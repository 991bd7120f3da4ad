"""'As published' variants: what the authors' probable code base actually trains.

Pylon (danielmao2019/Pylon, `optimizers/multi_task_optimizers`, read at ebe46305) is likely the
code base behind the paper's numbers: it has exactly the paper's list of methods, a `wrt_rep`
switch for the feature level with `mgda_ub`/`aligned_mtl_ub` configs, the paper's benchmarks and
its SGD settings. Several of its methods differ from their papers, as listed below. Each class
reproduces that behaviour from the math (not from their code), so runs and claims can ask
whether the published rows are explained by it. None of them is a correct implementation of its method:

    ew-mean             the published baseline: Σ_i g_i / T (mean of the losses; EW here is the sum)
    cosreg-published    Σ_i g_i: the penalty is computed from detached gradients, so it is a constant
    nash_mtl-published  Σ_i g_i / T: the solver never runs (NameError swallowed), α = 1 normalised
    gradnorm-published  Σ_i g_i / T: the learned weights are a stale tensor, softmax keeps them at 1/T
    gradvac-published   GradVac with the correction's sign flipped, Σ/T instead of Σ, β = 0.01

`PUBLISHED_VARIANTS` names them (e.g. to tell them apart from the paper's methods in a registry listing).
"""

from __future__ import annotations

import math

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.aggregators.cosreg import CosReg
from mtlcheck.aggregators.gradvac import GradVac

PUBLISHED_VARIANTS = ("ew-mean", "cosreg-published", "nash_mtl-published", "gradnorm-published", "gradvac-published")


@register_aggregator("ew-mean")
class EWMean(WeightingAggregator):
    """Equal weighting as the MEAN of the losses, w_i = 1/T (danielmao2019/Pylon's
    `MTLOptimizer.backward` averages the losses; also torchjd `Mean`). Same direction as `ew`,
    a T-times smaller step. Loss-only: the engine back-propagates Σ_i L_i / T once, so the heads
    get the mean-loss gradient, as in that trainer."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self) -> AggregatorTags:
        return AggregatorTags(inputs=frozenset({"losses"}), nonneg_weights=True, reduction="mean")

    def _weights(self, J, losses):
        n = J.n_tasks if J is not None else losses.shape[0]
        return torch.full((n,), 1.0 / n, dtype=torch.float64)


@register_aggregator("nash_mtl-published")
class NashMTLPublished(EWMean):
    """Nash-MTL as published: w_i = 1/T, i.e. the mean-loss baseline.

    Why (danielmao2019/Pylon's Nash-MTL): at Pylon HEAD, cvxpy is imported only inside the problem set-up,
    so the solver call raises NameError; a bare `except` swallows it, α keeps its initial value
    1 and is normalised to sum 1, so every step uses α = 1/T (no warning, no clipping). The
    per-task gradients it computes are never used, so this class reads only the task count
    (loss-only, like EW). The 2024 versions imported cvxpy at module level and did solve."""


@register_aggregator("gradnorm-published")
class GradNormPublished(EWMean):
    """GradNorm as published: w_i = 1/T, i.e. the mean-loss baseline.

    Why: danielmao2019/Pylon's GradNorm renormalises its weights with
    `softmax` under no_grad by rebinding the attribute, so its own optimiser keeps updating a stale
    tensor; the weights used are softmax re-applied to (near-)equal values, 1/T ± 1e-5 in a
    side-by-side run. Here exactly 1/T and stateless; the GradNorm loss, which never reaches the
    weights, is not formed."""


@register_aggregator("cosreg-published")
class CosRegPublished(CosReg):
    """CosReg as published: direction Σ_i g_i, first order only.

    Why: danielmao2019/Pylon takes the task gradients without `create_graph=True`, so the
    penalty λ·mean cos²(g_i, g_j) is a constant and its gradient is zero; training follows the
    plain summed loss Σ_i L_i = T × its mean-loss baseline (a T-times larger step). `penalty` is
    kept (its value is still computed, `penalty_term`), but the engine never differentiates it."""

    def tags(self) -> AggregatorTags:
        return super().tags().replace(second_order=False)


@register_aggregator("gradvac-published")
class GradVacPublished(GradVac):
    """GradVac as published: sign-flipped correction, mean reduction, β = 0.01.

    danielmao2019/Pylon's correction coefficient has `+ ρ√(1−φ̂²)` where Wang et al.
    (Eq. 4) have `− ρ√(1−φ̂²)`: at φ̂ = 0 a conflicting g_i (ρ < 0) gets ρ·‖g_i‖/‖g_j‖ · g_j added,
    which pushes it further from g_j instead of lifting cos to φ̂ (fails check_conflict_reduction
    by design). The corrected gradients are averaged (Σ_i g_i' / T) and its config sets β = 0.01."""

    def __init__(self, *, beta: float = 0.01, group_type: str = "whole", eps: float = 1e-8, seed: int = 0):
        super().__init__(beta=beta, group_type=group_type, eps=eps, seed=seed)

    def tags(self) -> AggregatorTags:
        return super().tags().replace(reduction="mean")

    def _correction(self, norm_i: float, norm_j: float, rho: float, target: float) -> float:
        root_rho, root_target = math.sqrt(max(1 - rho**2, 0.0)), math.sqrt(max(1 - target**2, 0.0))
        return norm_i * (target * root_rho + rho * root_target) / (norm_j * (root_target + self.eps))

    def _direction_scale(self, n_tasks: int) -> float:
        return 1.0 / n_tasks  # the mean (combining Σ and then dividing overflowed where Σ does)
