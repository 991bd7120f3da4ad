"""DB-MTL (Lin, Ye, Xu, Shi & Zhang 2023, "Dual-Balancing for Multi-Task Learning",
arXiv:2308.12029): balance the loss scales by a logarithm and the gradient
magnitudes by the largest one.

    loss-scale balancing:   each task descends log L_i, whose gradient is g_i / L_i;
    EMA of those gradients: ĝ_i ← β_t ĝ_i + (1 − β_t) g_i / L_i,  β_t = β / t^σ,  ĝ_i = 0 at t = 0;
    magnitude balancing:    d = Σ_i (max_j ‖ĝ_j‖ / ‖ĝ_i‖) ĝ_i   (every term has the largest norm).

Defining property (`implements = "db_mtl"`, checked over a sequence of steps against the recurrence
above): every term has the largest norm (at the first step, where ĝ_i = (1 − β) g_i / L_i, d ∥ Σ_i
g_i / ‖g_i‖ whatever the losses). A loss so small that g_i / L_i overflows the dtype, and a G whose
g − B would, are refused before the state changes (the largest |g| seen bounds |B|). Stateful (the
T EMA rows ĝ_i = c_i B_i: B, one (T, n_k) tensor per block in the gradients' dtype, float32 for
fp16/bf16 ones (d is rounded once to the gradients' dtype), updated in place, and c, a float64
scale per row, so that the EMA is one pass over B; and the step t); not a weighting of the current
G (ĝ carries earlier steps). Cost: that pass (B read with G, and written), whose squares give the
row norms while it is in the cache, in place of a Gram-based method's Gram (it reads none: its
input check is one read pass, `max_abs`). Needs positive losses (ValueError: log L has no gradient
at L ≤ 0); a task whose ĝ_i is 0 contributes 0. At the feature level the EMA runs over the
representation's gradients, row by row of the batch, so the block shapes must stay the same from
step to step (ValueError otherwise; reset() between shapes).

Peers: LibMTL's current tree (`LibMTL.weighting.DB_MTL`, not in 1.1.5) uses the same EMA from
zero with β_t = β/t^σ, log(L + 1e-8) and ‖ĝ_i‖ + 1e-8 in the ratio (negligible unless ĝ_i is
tiny), and refuses the feature level (rep_grad): run against it (commit 4336804,
suites/aggregators/test_libmtl_tree_fidelity.py), it is that recurrence to 1e-12, and ours is the
recurrence without the epsilons. TorchJD has no DB-MTL.
"""

from __future__ import annotations

import math

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
from mtlcheck.aggregators._spans import paired_spans, row_sums, span_scratch
from mtlcheck.jacobian import Jacobian, max_abs, times_pow2


@register_aggregator("db_mtl", paper_name="DB-MTL")
class DBMTL(Aggregator):
    implements = "db_mtl"
    _state_attrs = ("_buffer", "_scale", "_g_bound", "_step", "_grad_dtypes")
    _state_changes_in_place = True  # (and refuses before it changes)

    def __init__(self, *, beta: float = 0.9, beta_sigma: float = 0.5, seed: int = 0):
        super().__init__(seed=seed)
        if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
            raise ValueError(f"DBMTL: beta must be in [0, 1), got {beta!r}")
        if not (isinstance(beta_sigma, (int, float)) and math.isfinite(beta_sigma) and beta_sigma >= 0):
            raise ValueError(f"DBMTL: beta_sigma must be a finite number >= 0, got {beta_sigma!r}")
        self.beta, self.beta_sigma = beta, beta_sigma
        self._reset_state()

    def tags(self) -> AggregatorTags:
        return AggregatorTags(
            inputs=frozenset({"grads", "losses"}),
            family="weighting",
            weighted=False,
            stateful=True,
            reduction="other",  # identical rows: T(1 − β) g / L at the first step
            reads_gram=False,
        )

    def _set_state(self, state):
        state = loaded_average(self, state, "_buffer", "_g_bound")
        if "_scale" not in state:  # saved when the EMA rows were stored as they are: c = 1
            rows = state["_buffer"]
            state = {**state, "_scale": None if rows is None else torch.ones(rows[0].shape[0], dtype=torch.float64)}
        super()._set_state(state)

    def _aggregate(self, J, losses):
        if bool((losses <= 0).any()):
            raise ValueError(f"{self!r}: log-loss balancing needs positive losses, got {losses.tolist()}")
        step = (self._step or 0) + 1
        beta_t = decayed(self.beta, step, self.beta_sigma)
        check_state_shapes(self, self._buffer, J.blocks, self._grad_dtypes)
        n = J.n_tasks
        # ĝ_i is kept as c_i B_i (c_i > 0 a float64 scalar per row), so that the EMA is one pass
        # over B: c_i ← β_t c_i + s_i and B_i ← B_i + (s_i / c_i)(g_i − B_i), s_i = (1 − β_t)/L_i
        s = (1 - beta_t) / losses
        first = self._buffer is None
        c = s if first else beta_t * self._scale + s
        # refused before any state changes: a loss so small that ∇log L_i = g_i / L_i (or 1/L_i)
        # leaves the range of the dtype (float64), and gradients whose g − B would overflow the
        # dtype (B is a convex combination of the G seen so far, so max |B| <= the largest max |G|,
        # kept), each block judged by its own dtype's range
        low = float(losses.min())
        over = [b.dtype for m, b in zip(J.block_max_abs(), J.blocks) if not m / low < torch.finfo(b.dtype).max]
        if over or not bool(torch.isfinite(c).all()):
            raise ValueError(
                f"{self!r}: the losses {losses.tolist()} with gradients of max |g| = {J.max_abs():.3g} make "
                f"∇log L_i = g_i / L_i overflow {over[0] if over else torch.float64}; the state is unchanged"
            )
        bound = average_bound(self, self._g_bound, J, "averaging")
        weight = (s / c)[:, None]  # float64, rounded once to each block's state dtype below
        buffer = (
            tuple(torch.empty(b.shape, dtype=state_dtype(b.dtype), device=b.device) for b in J.blocks)
            if first
            else self._buffer
        )
        # in place (the state is ours; state_dict copies), with each span's squared row norms of B
        # while it is in the cache (B is float32 or float64: half-precision gradients are widened)
        squares = torch.zeros(len(buffer), n, dtype=torch.float64)
        for k, (old, b) in enumerate(zip(buffer, J.blocks)):
            row_weight = weight.to(device=b.device, dtype=old.dtype)  # (blocks may differ in dtype)
            scratch = span_scratch(old)
            part = torch.zeros(n, dtype=torch.float64, device=b.device)
            for oc, bc in paired_spans(old, b):
                if first:
                    oc.copy_(bc)
                else:
                    oc.lerp_(bc, row_weight)
                part += row_sums(torch.mul(oc, oc, out=scratch[: oc.numel()].view(oc.shape)))
            squares[k] = part.cpu()
        self._buffer, self._scale, self._g_bound, self._step = buffer, c, bound, step
        self._grad_dtypes = dtypes_of(J.blocks)
        tracked = Jacobian(buffer, J.shapes, J.names, J.level)
        roots, exponent = _row_norms(tracked, squares)
        norms = c * roots  # the rows' norms / 2^exponent
        top = float(norms.max())
        # the weight of B_i is (top/‖ĝ_i‖) c_i = top/‖B_i‖: formed without c, whose round trip
        # c·(1/c) overflows float64 for rows and losses far apart
        # (c_i‖B_i‖ may underflow where ‖B_i‖ does not: the row is judged by ‖B_i‖)
        weights = torch.where(
            roots > 0, top / torch.where(roots > 0, roots, torch.ones_like(roots)), torch.zeros_like(roots)
        )
        # every term has norm `top`, so |d| <= T·top: where that passes the dtype's range, the base
        # checks d itself, and a d that overflows raises after the step (the EMA has taken G in).
        # A weight past the dtype's range (a row 1e-5 of another in fp16) is formed in a wider
        # dtype by the combination, so the bound holds for the computed d too; one past float64's
        # gives no bound
        finite = bool(torch.isfinite(weights).all())
        bound = n * float(times_pow2(torch.tensor(top, dtype=torch.float64), exponent)) if finite else None
        return Aggregation(in_dtypes_of(tracked.combine(weights), J), None, bound=bound)


def _row_norms(buffer: Jacobian, squares: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(r, S): the rows' norms are 2^S r (the ratio of norms is what DB-MTL reads, and S gives the
    norms themselves): the square roots of the blocks' float64 sums of float32/float64 squares
    where none of them lost digits, else of the diagonal of the scaled Gram, which is exact at any
    scale. A block's sum lost digits where it is not finite (squares overflow) or below n·tiny/eps
    of its own dtype in a non-zero row (squares underflow: subnormal or zero), the Gram's own test.
    A non-zero row too small beside the largest for the scaled Gram's float64 diagonal (subnormal
    or 0: a float64 row 1e-155 or 1e-170 of another) gets its own scale (`_row_norm`) instead of
    a norm with few digits or none (a weight of 0: the task dropped)."""
    if bool(torch.isfinite(squares).all()):
        floors = torch.tensor(
            [b.shape[1] * torch.finfo(b.dtype).tiny / torch.finfo(b.dtype).eps for b in buffer.blocks],
            dtype=torch.float64,
        )
        low = (squares < floors[:, None]).nonzero().tolist()
        if not any(bool(buffer.blocks[k][i].any()) for k, i in low):
            return squares.sum(0).sqrt(), 0
    q, S = buffer.scaled_gram().diagonal(), buffer.gram_exponent
    r = q.clamp_min(0).sqrt()
    info = torch.finfo(torch.float64)
    for i in (q < info.tiny / info.eps).nonzero().flatten().tolist():
        if any(bool(b[i].any()) for b in buffer.blocks):
            r[i] = _row_norm(buffer, i, S)
    return r, S


def _row_norm(buffer: Jacobian, i: int, S: int) -> float:
    """Row i's norm / 2^S: the row scaled by the power of two of its largest entry (exact), squared
    and summed in float64, its square root scaled back (0 only past float64's range: a row below
    ~1e-308 of the largest, whose weight would be past it too)."""
    rows = [b[i] for b in buffer.blocks]
    e = math.frexp(max_abs(rows))[1]  # max |row| = f · 2^e, f in [0.5, 1)
    sum_sq = sum(float(times_pow2(r.double(), -e).square().sum()) for r in rows)
    return math.ldexp(math.sqrt(sum_sq), e - S)
