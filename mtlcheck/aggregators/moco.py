"""MoCo (Fernando, Shen, Liu, Chaudhury, Murugesan & Chen 2023, "Mitigating Gradient Bias in
Multi-objective Learning: A Provably Convergent Approach", ICLR, Algorithm 1): track each task's
gradient with a moving average and run MGDA's weights on the tracked gradients, one projected
gradient step per call:

    y_i ← y_i − β_k (y_i − g_i),                          β_k = β / k^{σ_β},  y_i = 0 at the start,
    λ ← Π_Δ(λ − γ_k (Y Yᵀ + ρ I) λ),                      γ_k = γ / k^{σ_γ},  λ = 1/T at the start,
    d = Yᵀ λ.

The tracking step is what removes MGDA's stochastic bias (the paper's point): d uses Y, not the
current G, so MoCo is not a weighting of G. The paper's projection of each y_i onto a ball of
radius ℓ_i (the Lipschitz bound of its analysis) is left out (ℓ_i is unknown in practice, and the
LibMTL omits it too). Defaults β = 0.5, σ_β = 0.5, γ = 0.1, σ_γ = 0.5, ρ = 0
(LibMTL's). The λ step reads the raw Y Yᵀ (γ is in the gradients' squared units), taken from its
scaled form so that no scale overflows. Stateful (Y, one (T, n_k) tensor per block in the
gradients' dtype, float32 for fp16/bf16 ones, updated in place, d rounded once to the gradients'
dtype; the largest |g| seen, which bounds |Y| so that a G the lerp
would overflow is refused before Y changes; λ; the step); at the feature
level Y tracks the representation's gradients row by row of the batch, so the block shapes must
stay the same.

Cost: beyond a Gram-based method's step, one pass over Y (read Y and G, write Y) and the input
check's read pass over G; the Gram of Y takes the place of the Gram of G, which MoCo does not
read (updating Y Yᵀ from the last step's would need Y Gᵀ, a product as costly). On a CPU that is
7–10 % of a Gram-based parameter-level step at T = 3 and 7 (docs/bench/cpu_stateful_methods_reads_no_gram.md).

Peers: LibMTL's current tree (`LibMTL.weighting.MoCo`, not in 1.1.5; from the authors' code)
rescales each g_i to norm L_i before tracking (g_i/‖g_i‖·L_i) and replaces the simplex projection
by a softmax, λ ← softmax(λ − γ_k(YYᵀ + ρI)λ): another update than Algorithm 1 (README findings;
run against the tree, it is that recurrence to 1e-12: suites/aggregators/test_libmtl_tree_fidelity.py).
TorchJD has no MoCo.
"""

from __future__ import annotations

import torch

from mtlcheck.aggregators._base import (
    Aggregation,
    Aggregator,
    AggregatorTags,
    average_bound,
    check_state_shapes,
    decayed,
    dtypes_of,
    in_dtypes_of,
    loaded_average,
    state_dtype,
)
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.aggregators._simplex import gram_step
from mtlcheck.aggregators._spans import paired_spans
from mtlcheck.aggregators.modo import _positive
from mtlcheck.jacobian import Jacobian


@register_aggregator("moco", paper_name="MoCo")
class MoCo(Aggregator):
    _state_attrs = ("_y", "_y_bound", "_lambda", "_step", "_grad_dtypes")
    _state_changes_in_place = True  # (and refuses before it changes)

    def __init__(
        self,
        *,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        if not (isinstance(beta, (int, float)) and 0 < beta <= 1):
            raise ValueError(f"MoCo: beta must be in (0, 1], got {beta!r}")
        _positive("MoCo", "beta_sigma", beta_sigma, zero_ok=True)
        _positive("MoCo", "gamma", gamma)
        _positive("MoCo", "gamma_sigma", gamma_sigma, zero_ok=True)
        _positive("MoCo", "rho", rho, zero_ok=True)
        self.beta, self.beta_sigma, self.gamma, self.gamma_sigma, self.rho = beta, beta_sigma, gamma, gamma_sigma, rho
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(  # it reads the Gram of Y, not of G
            family="solver", weighted=False, stateful=True, reduction="other", homogeneity=None, reads_gram=False
        )

    def identical_rows_scale(self, n_tasks):
        return float(self.beta)  # the first step: y_i = β g and λ stays uniform

    def _set_state(self, state):
        super()._set_state(loaded_average(self, state, "_y", "_y_bound"))

    def _aggregate(self, J, losses):
        n = J.n_tasks
        check_state_shapes(self, self._y, J.blocks, self._grad_dtypes)
        step = (self._step or 0) + 1
        beta_k = decayed(self.beta, step, self.beta_sigma)
        gamma_k = decayed(self.gamma, step, self.gamma_sigma)
        # Refused before any state changes: Y is a convex combination of the G seen so far, so
        # max |Y| <= the largest max |G| (kept), and lerp's g − y stays finite below half the
        # range of Y's dtype. Past that, nothing below can fail: the Gram of Y is read scaled, the λ
        # step cannot overflow, and |d| = |Yᵀλ| <= max |Y| (λ on the simplex).
        bound = average_bound(self, self._y_bound, J, "tracking")
        if self._y is None:  # y = 0 − β_k (0 − g) = β_k g
            y = tuple(b.to(state_dtype(b.dtype)) * beta_k for b in J.blocks)
        else:  # in place: no fresh T × d allocation per step (state_dict copies the state)
            y = self._y
            for old, b in zip(y, J.blocks):
                if old.dtype == b.dtype:
                    old.lerp_(b, beta_k)
                else:  # half-precision gradients, a float32 Y
                    for yc, gc in paired_spans(old, b):
                        yc.lerp_(gc, beta_k)
        self._y, self._y_bound, self._step, self._grad_dtypes = y, bound, step, dtypes_of(J.blocks)
        tracked = Jacobian(y, J.shapes, J.names, J.level)
        # λ ← Π_Δ(λ − γ_k (Y Yᵀλ + ρλ)) from the scaled Gram of Y (float64-accumulated): no overflow
        lam = torch.full((n,), 1.0 / n, dtype=torch.float64) if self._lambda is None else self._lambda
        lam = gram_step(lam, gamma_k, self.rho, tracked.scaled_gram(), tracked.gram_exponent)
        self._lambda = lam
        return Aggregation(in_dtypes_of(tracked.combine(lam), J), None, bound=max(bound))
