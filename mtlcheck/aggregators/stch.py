"""STCH, smooth Tchebycheff scalarization (Lin, Zhang, Yang, Zhang & Zhang 2024, "Smooth
Tchebycheff Scalarization for Multi-Objective Optimization", ICML, arXiv:2402.19078):

    g_μ(f) = μ log Σ_i exp(λ_i (f_i − z_i) / μ),

the smooth (log-sum-exp) version of the Tchebycheff max_i λ_i (f_i − z_i), with smoothing μ > 0,
preferences λ (here 1) and a reference point z. For multi-task learning (the paper's experiments and its
official code, github.com/Xi-L/STCH) the objectives are the log-losses normalised by a nadir
point, f_i = log(L_i / n_i), z = 0, and the scalarization is multiplied by T. Its gradient is a
loss weighting:

    ∇(T g_μ) = Σ_i w_i ∇L_i,   w_i = T softmax(f / μ)_i / L_i.

The first `warmup_steps` steps descend Σ_i log L_i (w_i = 1/L_i), and n_i is the mean loss of task
i over the last `nadir_steps` of them (default: all), as the official code's warm-up epochs, whose
nadir is the mean over the last one (`warmup_epoch + 1` epochs of B steps: `warmup_steps` =
(warmup_epoch + 1)·B, `nadir_steps` = B); `warmup_steps=0` uses n_i = 1. The mean is kept as a
running mean (losses of 1e308 have one that fits, where their sum overflowed).
With μ = 1 the weights are w_i = T n_i⁻¹ / Σ_j (L_j / n_j): only the nadir tells
the tasks apart, and without warm-up (n = 1) STCH is equal weighting scaled by T / Σ_j L_j — set
`warmup_steps` (the official code warms up for epochs) or a smaller μ (μ → 0: the Tchebycheff
max, all weight on the task furthest above its nadir). Loss-only; positive losses (ValueError
otherwise). At the nadir (L = n) the weights are 1/L_i, those of Σ_i log L_i.
The official code's "epochs" become steps here (an aggregator sees steps, not epochs).

Peers: LibMTL's current tree (`LibMTL.weighting.STCH`, not in 1.1.5) follows the official code
(log(L/n + 1e-20); log-losses for warmup_epoch + 1 epochs, the nadir from the last one's mean
losses): with B steps per epoch it is ours with warmup_steps=(warmup_epoch + 1)·B and nadir_steps=B
to 1e-12 (suites/aggregators/test_libmtl_tree_fidelity.py). TorchJD has no STCH.
"""

from __future__ import annotations

import math

import torch

from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._registry import register_aggregator


@register_aggregator("stch", paper_name="STCH")
class STCH(WeightingAggregator):
    _state_attrs = ("_nadir", "_count", "_options")
    _legacy_state_keys = ("_sum",)

    def __init__(self, *, mu: float = 1.0, warmup_steps: int = 0, nadir_steps: int | None = None, seed: int = 0):
        super().__init__(seed=seed)
        if not (isinstance(mu, (int, float)) and math.isfinite(mu) and mu > 0):
            raise ValueError(f"STCH: mu must be a finite number > 0, got {mu!r}")
        if not (isinstance(warmup_steps, int) and not isinstance(warmup_steps, bool) and warmup_steps >= 0):
            raise ValueError(f"STCH: warmup_steps must be an int >= 0, got {warmup_steps!r}")
        if nadir_steps is not None and not (
            isinstance(nadir_steps, int) and not isinstance(nadir_steps, bool) and 1 <= nadir_steps <= warmup_steps
        ):
            raise ValueError(
                f"STCH: nadir_steps must be None (every warm-up step) or an int in [1, warmup_steps={warmup_steps}], "
                f"got {nadir_steps!r}"
            )
        self.mu, self.warmup_steps, self.nadir_steps = mu, warmup_steps, nadir_steps
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            inputs=frozenset({"losses"}),
            nonneg_weights=True,
            stateful=self.warmup_steps > 0,
            reduction="other",  # w_i = T softmax(f/μ)_i / L_i: the scale depends on the losses
        )

    def _set_state(self, state):
        options = state.get("_options")  # (warmup_steps, nadir_steps) of the run that saved it
        if options is not None:
            if not (isinstance(options, (tuple, list)) and len(options) == 2):
                raise ValueError(f"{self!r}: the state's options {options!r} are not (warmup_steps, nadir_steps)")
            options = tuple(options)
            if _window(*options) != _window(self.warmup_steps, self.nadir_steps):
                raise ValueError(
                    f"{self!r}: the state was saved with warmup_steps={options[0]}, nadir_steps={options[1]}; "
                    f"it does not fit warmup_steps={self.warmup_steps}, nadir_steps={self.nadir_steps}"
                )
        state = {**state, "_options": options}
        if "_sum" in state:  # saved when the nadir was kept as a sum over every warm-up step so far
            sums, count = state["_sum"], state["_count"]
            state = {k: v for k, v in state.items() if k != "_sum"}
            state["_nadir"] = None if sums is None else sums / count
            if sums is not None and self._skipped() > 0:
                raise ValueError(
                    f"{self!r}: the state's nadir is the mean over all of its {count} warm-up steps, "
                    f"not over the last nadir_steps={self.nadir_steps}"
                )
        count = state["_count"] or 0
        if (state["_nadir"] is None) != (min(count, self.warmup_steps) <= self._skipped()):
            raise ValueError(
                f"{self!r}: a state of {count} warm-up steps {'without' if state['_nadir'] is None else 'with'} "
                f"a nadir does not fit warmup_steps={self.warmup_steps}, nadir_steps={self.nadir_steps} "
                "(saved with other options?)"
            )
        super()._set_state(state)

    def _skipped(self) -> int:
        """The warm-up steps before those the nadir is the mean of."""
        return self.warmup_steps - (self.nadir_steps or self.warmup_steps)

    def _weights(self, J, losses):
        if bool((losses <= 0).any()):
            raise ValueError(f"{self!r}: the log-loss objectives need positive losses, got {losses.tolist()}")
        n = losses.shape[0]
        count = self._count or 0
        if self.warmup_steps:  # (without a warm-up there is no state for options to fit)
            self._options = (self.warmup_steps, self.nadir_steps)
        if count < self.warmup_steps:  # warm-up: Σ log L_i, and the nadir's running mean
            skipped = self._skipped()
            if count >= skipped:  # (a mean, not a sum: losses of 1e308 have a mean that fits)
                k = count - skipped + 1
                self._nadir = losses.clone() if k == 1 else self._nadir + (losses - self._nadir) / k
            self._count = count + 1
            return 1.0 / losses
        nadir = torch.ones(n, dtype=torch.float64) if self._nadir is None else self._nadir
        f = (losses / nadir).log()
        # softmax((f − max f)/μ), the same softmax up to rounding (~1e-13 relative): f/μ alone
        # overflows for a tiny μ (inf − inf)
        return n * torch.softmax((f - f.max()) / self.mu, dim=0) / losses


def _window(warmup_steps, nadir_steps):
    """(warmup_steps, the steps the nadir is the mean of): nadir_steps=None is every warm-up step."""
    return warmup_steps, nadir_steps or warmup_steps
