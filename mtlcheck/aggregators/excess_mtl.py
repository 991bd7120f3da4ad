"""ExcessMTL (He, Chen, Li & Zhao 2024, "Robust Multi-Task Learning with Excess Risks", ICML,
PMLR 235, §3, Eqs. 6-9): weight the tasks by their excess risks, estimated from the gradients.

The excess risk of task i (the distance of its loss from its optimum) is estimated by a
second-order expansion, ℰ_i ≈ ½ g_iᵀ H_i⁻¹ g_i, with the diagonal AdaGrad approximation of the
Hessian, H_i = diag(√(Σ_{s ≤ t} g_{s,i}² + ε)) over the steps so far (Eqs. 6-7); the factor ½
cancels below and is left out:

    ℰ_i = Σ_k g_ik² / √(S_ik + ε),        S_i ← S_i + g_i²  (elementwise, this step included).

Scale processing (§3.2): ℰ_i is divided by its value ℰ_i⁰ at the first weighted step (or by its
mean over `warmup_steps` steps, during which the weights stay 1/T); a task with ℰ_i⁰ = 0 (a zero
gradient) keeps a zero excess risk. The task weights take one exponentiated-gradient step (Eq. 9)
    α ← softmax(log α + η ℰ / ℰ⁰),   α = 1/T at the start,
and d = Σ_i α_i g_i (the weights stay on the simplex, as the paper's). ε = 1e-7 as TorchJD's
version (adapted from github.com/uiuctml/ExcessMTL). Stateful: S + ε (T × d, in the gradients'
dtype, float32 for fp16/bf16 ones, kept with ε added and updated in place), a bound on max S of
each block (ε plus Σ over the steps of max g² there, so that a G whose squares would overflow S's
dtype is refused before S changes), ℰ⁰, α and the step. At the feature level S accumulates the
representation's gradients row by row of the batch, so the block shapes must stay the same
(ValueError otherwise; reset() between shapes).

Cost: one pass over S + ε (read with G and written) and, span by span in the cache, g², an rsqrt,
a product and a row sum, plus the input check's read pass, in place of a Gram-based method's Gram
(it reads none): the AdaGrad scaling is elementwise, so it has no T × T form; about 11 % / 10 %
over the best Gram-based parameter-level step at T = 3 / 7 on a CPU (part by part, and what a fused
kernel would save, in docs/bench/cpu_stateful_floor.md).

Peers: TorchJD 0.18 (`torchjd.aggregation.ExcessMTL`) divides by ℰ⁰ + 1e-7 (instead of leaving a
zero-gradient task at 0) and, without warm-up, takes its first exponentiated step with the RAW ℰ
(its ℰ⁰ is set at that step and used only from the next one), as it says the official code and
LibMTL do: that first step depends on the gradients' scale (README findings). With warm-up steps
the two agree to the 1e-7. LibMTL's current tree (not in 1.1.5; run against it, commit 4336804,
suites/aggregators/test_libmtl_tree_fidelity.py) does not take that step: its first call sets ℰ⁰
and keeps the weights, and from there it is ours to 1e-12, with weights that sum to T (it starts
from α = 1) instead of 1.
"""

from __future__ import annotations

import math

import torch

from mtlcheck.aggregators._base import (
    AggregatorTags,
    WeightingAggregator,
    block_bounds,
    check_state_shapes,
    dtypes_of,
    kept_gradient_dtypes,
    state_dtype,
    widened_state,
)
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.aggregators._spans import column_spans, span_row_sums, span_width
from mtlcheck.jacobian import NonFiniteGradientError


@register_aggregator("excess_mtl", paper_name="ExcessMTL")
class ExcessMTL(WeightingAggregator):
    _state_attrs = ("_sq_sum_eps", "_sq_bound", "_baseline", "_warmup_sum", "_alpha", "_step", "_grad_dtypes")
    _state_changes_in_place = True  # (and refuses before it changes)
    _legacy_state_keys = ("_sq_sum",)

    def __init__(self, *, robust_step_size: float = 1.0, warmup_steps: int = 0, eps: float = 1e-7, seed: int = 0):
        super().__init__(seed=seed)
        if not (
            isinstance(robust_step_size, (int, float)) and math.isfinite(robust_step_size) and robust_step_size > 0
        ):
            raise ValueError(f"ExcessMTL: robust_step_size must be a finite number > 0, got {robust_step_size!r}")
        if not (isinstance(warmup_steps, int) and not isinstance(warmup_steps, bool) and warmup_steps >= 0):
            raise ValueError(f"ExcessMTL: warmup_steps must be an int >= 0, got {warmup_steps!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"ExcessMTL: eps must be > 0, got {eps!r}")
        self.robust_step_size, self.warmup_steps, self.eps = robust_step_size, warmup_steps, eps
        self._reset_state()

    def tags(self) -> AggregatorTags:
        # no homogeneity claimed: ε is absolute (under √(S + ε)), and g² is formed in the gradients'
        # dtype (float32 squares of ~1e-23 gradients underflow)
        return AggregatorTags(
            family="weighting",
            nonneg_weights=True,
            stateful=True,
            reduction="mean",
            homogeneity=None,
            reads_gram=False,
        )

    def _set_state(self, state):
        if "_sq_sum" in state:  # saved when S was kept without ε
            sums = state["_sq_sum"]
            state = {k: v for k, v in state.items() if k != "_sq_sum"}
            # (in float32 for half precision, as S is kept now, before ε is added)
            state["_sq_sum_eps"] = None if sums is None else tuple(s + self.eps for s in widened_state(sums))
        # saved before S was float32 for half precision; and before the bound was kept (max S
        # itself), or kept as one for every block
        sums = widened_state(state["_sq_sum_eps"])
        state = {**state, "_sq_sum_eps": sums, "_sq_bound": block_bounds(state.get("_sq_bound"), sums)}
        # saved before the gradients' dtypes were kept: unknown (S was float32 for half precision,
        # and every block's in the first block's dtype)
        state["_grad_dtypes"] = kept_gradient_dtypes(self, state.get("_grad_dtypes"), sums)
        super()._set_state(state)

    def _weights(self, J, losses):
        n = J.n_tasks
        # S is kept in float32 for half-precision gradients (`state_dtype`): an fp16 sum of squares
        # overflows past |g| = 256, and a bf16 one stops growing once it is 256 times a new g²
        sums = self._sq_sum_eps
        if sums is not None and self._grad_dtypes is None and len(sums) == len(J.blocks):
            # a state saved before the gradients' dtypes were kept: every block's S in the first
            # block's state dtype (or, later, each in its own block's) if the dtypes are those it
            # was made with; then in its own block's state dtype (a float32 S for a float64 block
            # widened exactly), assigned once the call is taken
            first = state_dtype(J.blocks[0].dtype)
            own = all(s.dtype == state_dtype(b.dtype) for s, b in zip(sums, J.blocks))
            if not (own or all(s.dtype == first for s in sums)):
                raise ValueError(
                    f"{self!r}: the gradients' dtype changed since the last step (state in "
                    f"{[s.dtype for s in sums]}, gradients now {[b.dtype for b in J.blocks]}); call reset() first"
                )
            sums = tuple(s.to(state_dtype(b.dtype)) for s, b in zip(sums, J.blocks))
        check_state_shapes(self, sums, J.blocks, self._grad_dtypes)
        # refused before any state changes: max S_k <= ε + Σ over the steps of max g_k² (kept for
        # each block k), and S_k must stay finite in its dtype (float32 gradients of 1e20 square
        # past its range)
        seen = J.block_max_abs()
        bounds = tuple(k + m * m for k, m in zip(self._sq_bound or (self.eps,) * len(seen), seen))
        for name, b, m, bound in zip(J.names, J.blocks, seen, bounds):  # (inf, not OverflowError, past the range)
            dtype = state_dtype(b.dtype)
            if not bound < torch.finfo(dtype).max / 2:
                raise NonFiniteGradientError(
                    f"{self!r}: the running sum of squared gradients in block {name!r} (<= {bound:.3g} with "
                    f"max |g| = {m:.3g} there) would overflow {dtype}; the state is unchanged"
                )
        if sums is None:  # S + ε, kept with ε added (one elementwise pass less per step)
            sums = tuple(torch.full(b.shape, self.eps, dtype=state_dtype(b.dtype), device=b.device) for b in J.blocks)
            self._alpha = torch.full((n,), 1.0 / n, dtype=torch.float64)
            self._warmup_sum = torch.zeros(n, dtype=torch.float64)
            self._step = 0
        risk = _update_and_risks(sums, J.blocks)
        self._sq_sum_eps, self._sq_bound, self._grad_dtypes = sums, bounds, dtypes_of(J.blocks)
        self._step += 1
        if self._step <= self.warmup_steps:
            self._warmup_sum = self._warmup_sum + risk
            return self._alpha.clone()
        if self._baseline is None:
            self._baseline = self._warmup_sum / self.warmup_steps if self.warmup_steps else risk
        base = self._baseline
        ratio = torch.where(base > 0, risk / torch.where(base > 0, base, torch.ones_like(base)), torch.zeros_like(risk))
        # a ratio or step past float64's range counts as its largest value: the tasks there share the
        # weight (softmax's limit) instead of a NaN from inf − inf
        logits = (self._alpha.log() + self.robust_step_size * ratio).nan_to_num(posinf=torch.finfo(torch.float64).max)
        self._alpha = torch.softmax(logits, dim=0)
        return self._alpha.clone()


def _update_and_risks(sums: tuple[torch.Tensor, ...], blocks: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """S + ε ← S + ε + g² in place (the state is ours; state_dict copies) and the risks
    ℰ_i = Σ_k g_ik² / √(S_ik + ε), float64 (T,), on the CPU.

    Span by span (each span of G and S read from memory once, the rest in the cache): q = g² into
    one scratch span, S += q, then rsqrt(S) · q into another and its row sums, in S's dtype (g²
    of half-precision gradients formed in S's float32); each span's float32 row sums (float64 for
    float64 S) are added in float64. Two scratch spans serve every block of a dtype and device,
    and the sums are converted once, not span by span: a parameter-level Jacobian has dozens of
    small blocks, where per-block temporaries cost as much as the work."""
    n = blocks[0].shape[0]
    widest: dict = {}  # (dtype, device) -> the widest span's columns
    for s in sums:
        key = (s.dtype, s.device)
        widest[key] = max(widest.get(key, 0), span_width(s))
    scratch = {key: [torch.empty(n * w, dtype=key[0], device=key[1]) for _ in range(2)] for key, w in widest.items()}
    parts: dict = {}  # device -> each span's row sums
    for s, b in zip(sums, blocks):
        square, scaled = scratch[(s.dtype, s.device)]
        spans, same = column_spans(b), b.dtype == s.dtype
        found = parts.setdefault(s.device, []) if spans else None  # (a block with no columns adds nothing)
        for start, stop in spans:
            sc, bc, w = s[:, start:stop], b[:, start:stop], stop - start
            q = square[: n * w].view(n, w)
            if same:
                torch.mul(bc, bc, out=q)
            else:  # fp16/bf16 g, squared in S's float32 (an fp16 square overflows past |g| = 256)
                q.copy_(bc).mul_(q)
            sc.add_(q)
            found.append(span_row_sums(torch.rsqrt(sc, out=scaled[: n * w].view(n, w)).mul_(q)))
    risk = torch.zeros(n, dtype=torch.float64)
    for found in parts.values():
        risk += torch.stack(found).to(torch.float64).sum(0).cpu()
    return risk
