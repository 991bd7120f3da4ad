"""CR-MOGM, correlation-reduced multi-objective gradient manipulation (Zhou, Zhang, Jiang, Zhang,
Shen & Chen 2022, "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and
Beyond", NeurIPS): smooth the task weights of a gradient-manipulation method over the steps,

    λ_k = α λ_{k−1} + (1 − α) λ̂_k,        d = Σ_i λ_k,i g_i,

with λ̂_k the weights the base method computes from the current gradients, and λ_0 = λ̂_1 (the
first step is the base method's). The smoothing decorrelates the weights from the current
mini-batch's noise, which the paper shows makes MGDA-type methods converge under stochastic
gradients. `base` names any registered weighting method of gradients (default "mgda", the
paper's main instance; "cagrad", "upgrad", ... work alike); α = 0.9 (the paper's schedule moves α_k
toward 1 as the learning rate decays: set `alpha` between steps for it).

Tags follow the base method's, made stateful; conflict-avoidance is not claimed (the smoothed
weights of earlier steps can conflict with the current gradients).

Peers: TorchJD 0.18 (`torchjd.aggregation.CRMOGMWeighting(weighting, alpha)`) is the same
smoothing, λ_0 = λ̂_1 as here; fed the same base weighting it gives the same weights (README).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import aggregator_class, register_aggregator


@register_aggregator("cr_mogm", paper_name="CR-MOGM")
class CRMOGM(WeightingAggregator):
    _state_attrs = ("_lambda",)

    def __init__(self, *, base: str = "mgda", alpha: float = 0.9, seed: int = 0):
        super().__init__(seed=seed)
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 <= alpha <= 1):
            raise ValueError(f"CRMOGM: alpha must be in [0, 1], got {alpha!r}")
        if not isinstance(base, str):
            raise ValueError(f"CRMOGM: base must be a registered method's name, got {base!r}")
        cls = aggregator_class(base)
        if cls is CRMOGM:
            raise ValueError("CRMOGM: base cannot be cr_mogm itself")
        self._base = cls(seed=seed)
        self._base.generator = self.generator  # one generator: seeded, saved and reset as CR-MOGM's
        tags = self._base.tags()
        if not tags.weighted or tags.loss_only:
            raise ValueError(f"CRMOGM: base {base!r} must weight the task gradients (tags weighted, reads grads)")
        if tags.second_order:
            raise ValueError(
                f"CRMOGM: base {base!r} is a second-order method (a penalty the engine differentiates, "
                "penalty_term), not weights of the current gradients to smooth"
            )
        self._state_changes_in_place = self._base._state_changes_in_place
        self.base, self.alpha = base, alpha
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return self._base.tags().replace(stateful=True, non_conflicting=False)

    def identical_rows_scale(self, n_tasks):
        return self._base.identical_rows_scale(n_tasks)

    def _reset_state(self) -> None:
        super()._reset_state()
        if hasattr(self, "_base"):
            self._base.seed = self.seed
            self._base.reset()

    def _get_state(self) -> dict[str, Any]:
        return {"lambda": self._lambda, "base": self._base.state_dict()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._lambda = state["lambda"]
        self._base.load_state_dict(copy.deepcopy(state["base"]))

    def _snapshot(self) -> Any:
        return self._lambda, self._base._snapshot(), self._base._n_tasks

    def _restore(self, kept: Any) -> None:
        self._lambda, base, self._base._n_tasks = kept
        self._base._restore(base)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # the draws come from the base's generator (one object with CR-MOGM's): a state saved when
        # the base kept its own has the one that moved there, and CR-MOGM's, unused, beside it
        self.generator.set_state(state["method"]["base"]["generator"])

    def __setstate__(self, d):
        super().__setstate__(d)
        self._base.generator = self.generator  # (a copy gave the base its own)

    def _weights(self, J, losses):
        # the base's weights only: its direction, which CR-MOGM discards, is not formed
        current = self._base.task_weights(J, losses).to(torch.float64).cpu()
        lam = current if self._lambda is None else self.alpha * self._lambda + (1 - self.alpha) * current
        self._lambda = lam
        return lam.clone()
