"""The T×d matrix of task gradients, stored as per-parameter (or per-feature-tensor) blocks.

`Jacobian` is what every aggregator receives. Row i is the gradient g_i of task loss L_i with
respect to the shared parameters (parameter level) or the shared representation Z (feature
level). The gradient engine never flattens it: each block is a (T, n_k) view of one parameter's
(or one Z tensor's) gradients, so that

* the Gram matrix G Gᵀ is the sum of per-block T×T products, accumulated in float64 (a single
  float32 product over 11M parameters was measured ~1e-2 off the float64 one);
* a weighted direction Σ_i w_i g_i is formed per block and written straight into `.grad`.

A plain (T, d) tensor is a one-block Jacobian (`Jacobian.from_matrix`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mtlcheck import LEVELS

_GRAM_CHUNK = 1 << 13  # columns per float32 product in the Gram (relative error ~1e-8; batched, so
#                       small chunks cost no more than large ones: 15 ms for 3×11.2M on 2 CPU cores)
_GRAM_SPAN = 1 << 22  # columns per batched product (bounds the float32 copy of a bf16/fp16 block to 4M columns)


@contextlib.contextmanager
def exact_matmul(device: torch.device):
    """No autocast and no TF32 inside (restored on exit): the Gram's float32 products must keep
    their ~1e-6 relative error whatever precision the training step runs in."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


class NonFiniteGradientError(FloatingPointError):
    """The task gradients overflow: their Gram matrix is not finite (a diverging run)."""


class NonFiniteOutputError(NonFiniteGradientError):
    """A finite G gave a direction or weights with NaN or inf (`what` says which): a result past
    the range of its dtype, or a method's bug."""

    def __init__(self, message: str, what: str = "direction"):
        super().__init__(message)
        self.what = what


class NonFiniteInputError(NonFiniteGradientError, ValueError):
    """The task gradients contain NaN or inf: a bad input (ValueError) and, inside training, a
    diverged run (FloatingPointError)."""


@dataclass(frozen=True, eq=False)
class Jacobian:
    """Task gradients as blocks of shape (T, n_k).

    Attributes:
        blocks: the (T, n_k) blocks, one per parameter or Z tensor.
        shapes: the shape each block's columns come from (the parameter's or Z tensor's shape).
        names: a name per block (parameter name or ``"z0"``, ``"z1"``, ...).
        level: ``"parameter"`` or ``"feature"``. At feature level every shape starts with the
            batch dimension.
        activations: at feature level, the values of Z (one tensor per block, same shapes), so
            that methods like GradDrop can use sign(Z); None otherwise.
    """

    blocks: tuple[torch.Tensor, ...]
    shapes: tuple[torch.Size, ...]
    names: tuple[str, ...]
    level: str = "parameter"
    activations: tuple[torch.Tensor, ...] | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if not self.blocks:
            raise ValueError("Jacobian needs at least one block")
        if len(self.shapes) != len(self.blocks) or len(self.names) != len(self.blocks):
            raise ValueError("Jacobian: blocks, shapes and names must have the same length")
        if self.level not in LEVELS:
            raise ValueError(f"Jacobian level must be 'parameter' or 'feature', got {self.level!r}")
        t = self.blocks[0].shape[0] if self.blocks[0].ndim == 2 else None
        for name, block, shape in zip(self.names, self.blocks, self.shapes):
            if block.ndim != 2:
                raise ValueError(f"Jacobian block {name!r} must be 2-D (T, n), got shape {tuple(block.shape)}")
            if block.shape[0] != t:
                raise ValueError(f"Jacobian block {name!r} has {block.shape[0]} rows, expected T={t}")
            if block.shape[1] != math.prod(shape):
                raise ValueError(f"Jacobian block {name!r} has {block.shape[1]} columns but shape {tuple(shape)}")
        if self.activations is not None:
            if len(self.activations) != len(self.blocks):
                raise ValueError("Jacobian: one activation tensor per block is required")
            for name, a, shape in zip(self.names, self.activations, self.shapes):
                if a.shape != shape:
                    raise ValueError(f"activations for {name!r} have shape {tuple(a.shape)}, expected {tuple(shape)}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_matrix(cls, matrix: torch.Tensor, *, name: str = "G") -> Jacobian:
        """A one-block Jacobian from a (T, d) tensor."""
        if not isinstance(matrix, torch.Tensor):
            raise TypeError(f"G must be a torch.Tensor of shape (T, d), got {type(matrix).__name__}")
        if matrix.ndim != 2:
            raise ValueError(f"G must have shape (T, d), got {tuple(matrix.shape)}")
        return cls(blocks=(matrix,), shapes=(torch.Size([matrix.shape[1]]),), names=(name,))

    @classmethod
    def from_task_grads(
        cls,
        per_task: Sequence[Sequence[torch.Tensor | None]],
        like: Sequence[torch.Tensor],
        names: Sequence[str],
        *,
        level: str = "parameter",
        activations: Sequence[torch.Tensor] | None = None,
    ) -> Jacobian:
        """Stack per-task gradient lists (T lists of K tensors; None = no gradient = zeros)."""
        blocks = []
        for k, ref in enumerate(like):
            rows = [
                torch.zeros(ref.numel(), dtype=ref.dtype, device=ref.device) if g[k] is None else g[k].reshape(-1)
                for g in per_task
            ]
            blocks.append(torch.stack(rows))
        acts = None if activations is None else tuple(a.detach() for a in activations)
        return cls(tuple(blocks), tuple(r.shape for r in like), tuple(names), level, acts)

    # -- shape ----------------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return self.blocks[0].shape[0]

    @property
    def dim(self) -> int:
        return sum(b.shape[1] for b in self.blocks)

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0].dtype

    @property
    def device(self) -> torch.device:
        return self.blocks[0].device

    # -- derived quantities -------------------------------------------------------------------
    # The Gram is kept as 4^S · Ĝ with S an integer and max_i Ĝ_ii in [1, 4): Ĝ never under- or
    # overflows, whatever the scale of G. Methods whose weights only depend on ratios of Gram
    # entries (every Gram-based method here) read Ĝ, so they give the same direction at any
    # representable positive scale of G (G Gᵀ of float64 rows at 1e-170, or the float32 products of
    # rows at 1e-24, underflow to zero).
    def scaled_block_grams(self) -> torch.Tensor:
        """Per-block Gram matrices divided by 4^S (`gram_exponent`), shape (K, T, T), float64 on the CPU."""
        if "scaled_block_grams" not in self._cache:
            with exact_matmul(self.device):
                self._cache["scaled_block_grams"], self._cache["gram_exponent"] = self._scaled_block_grams()
        return self._cache["scaled_block_grams"]

    @property
    def gram_exponent(self) -> int:
        """S with G Gᵀ = 4^S · `scaled_gram()` (so ‖g_i‖ = 2^S √Ĝ_ii); 0 when G = 0."""
        self.scaled_block_grams()
        return self._cache["gram_exponent"]

    def max_abs(self) -> float:
        """max |G_ij| over every block (NaN where an entry is NaN, inf where one is inf): one
        `aminmax` per block (a read pass as fast as a sum, and exact: it cannot overflow) and one
        host sync, cached. The stateful methods that read no Gram bound their state with it."""
        if "max_abs" not in self._cache:
            self._cache["max_abs"] = _largest(self.block_max_abs())
        return self._cache["max_abs"]

    def block_max_abs(self) -> tuple[float, ...]:
        """max |entry| of each block (`each_max_abs`), cached: a state kept block by block is
        bounded block by block, each against its own dtype's range."""
        if "block_max_abs" not in self._cache:
            self._cache["block_max_abs"] = each_max_abs(self.blocks)
        return self._cache["block_max_abs"]

    def combine_bound(self, weights: torch.Tensor) -> float | None:
        """An upper bound on every |Σ_i w_i G_ik| from what is already computed, with no pass over
        G: Σ_i |w_i| ‖g_i‖ from the scaled Gram, or Σ_i |w_i| · max |G| from `max_abs`; None when
        neither has been computed."""
        w = weights.detach().to(torch.float64).cpu().abs()
        if "scaled_gram" in self._cache:
            norms = self._cache["scaled_gram"].diagonal().clamp_min(0).sqrt()
            if bool(((norms == 0) & (w > 0)).any()):  # a row too small for the scaled Gram: no bound
                return None
            return float(times_pow2(w @ norms, self._cache["gram_exponent"]))
        if "max_abs" in self._cache:
            return float(w.sum()) * self._cache["max_abs"]
        return None

    def is_finite(self) -> bool:
        """No entry is NaN or inf (`max_abs` is finite). For methods that read no Gram: on a CPU,
        2 threads, 3.8 ms against the Gram's 7.5 for 3 × 11.2M float32 entries, 7.6 against 20.9
        for 7 × 11.2M (docs/bench/cpu_stateful_floor.md)."""
        return math.isfinite(self.max_abs())

    def scaled_gram(self) -> torch.Tensor:
        """Ĝ = G Gᵀ / 4^S, shape (T, T), float64 on the CPU, symmetrised, max diagonal in [1, 4)."""
        if "scaled_gram" not in self._cache:
            g = self.scaled_block_grams().sum(0)
            if not torch.isfinite(g).all():
                raise NonFiniteGradientError(f"non-finite Gram matrix of the task gradients: {g.tolist()}")
            self._cache["scaled_gram"] = (g + g.T) / 2
        return self._cache["scaled_gram"]

    def block_grams(self) -> torch.Tensor:
        """Per-block Gram matrices, shape (K, T, T), float64 on the CPU (may under- or overflow
        where 4^S does: use `scaled_block_grams` for ratios)."""
        if "block_grams" not in self._cache:
            self._cache["block_grams"] = times_pow2(self.scaled_block_grams(), 2 * self.gram_exponent)
        return self._cache["block_grams"]

    def gram(self) -> torch.Tensor:
        """G Gᵀ, shape (T, T), float64 on the CPU, symmetrised (raises NonFiniteGradientError where
        it overflows float64; use `scaled_gram` for ratios)."""
        if "gram" not in self._cache:
            g = times_pow2(self.scaled_gram(), 2 * self.gram_exponent)
            if not torch.isfinite(g).all():
                raise NonFiniteGradientError(
                    f"the Gram matrix of the task gradients overflows float64 "
                    f"(4^{self.gram_exponent} times {self.scaled_gram().tolist()})"
                )
            self._cache["gram"] = g
        return self._cache["gram"]

    def _scaled_block_grams(self) -> tuple[torch.Tensor, int]:
        # Fast path: the products of the blocks as they are. A block is recomputed from its rows,
        # each times the power of two that brings its largest entry into [0.5, 1) (exact), only
        # where its products may have lost digits: a row whose squared norm is below n·tiny/eps of
        # the product dtype (its products underflow: subnormal or zero), or a finite block whose
        # Gram overflowed. Each row's own power keeps a row far smaller than another (float32 rows
        # 1e-30 apart, whose products underflow float32 at any common scale); the powers are taken
        # out again in float64.
        grams = torch.stack([_block_gram(b) for b in self.blocks]).cpu()  # block k: 4^{e_k} · G_k G_kᵀ
        exponents = [0] * len(self.blocks)
        finite = torch.isfinite(grams).flatten(1).all(1).tolist()
        diagonals = grams.diagonal(dim1=1, dim2=2).tolist()
        for k, b in enumerate(self.blocks):
            info = torch.finfo(torch.float64 if b.dtype == torch.float64 else torch.float32)  # the product dtype
            floor = b.shape[1] * info.tiny / info.eps
            if finite[k] and not any(m < floor and bool(b[i].any()) for i, m in enumerate(diagonals[k])):
                continue
            low, high = torch.aminmax(b, dim=1)
            tops = torch.maximum(-low, high).tolist()  # max |row i|
            top = max(tops)
            if all(math.isfinite(t) for t in tops) and top > 0:  # (NaN/inf: left for the callers' check)
                exponents[k] = -math.frexp(top)[1]  # max |b · 2^e| in [0.5, 1)
                rows = [-math.frexp(t)[1] if t > 0 else exponents[k] for t in tops]  # each row's own
                back = torch.tensor([2.0 ** (exponents[k] - e) for e in rows], dtype=torch.float64)  # <= 1
                grams[k] = _block_gram(b, rows).cpu() * back[:, None] * back[None, :]
        # the common exponent S (max diagonal of Σ_k 4^{-e_k-S} B_k in [1, 4)): first from the
        # largest block, then corrected by the sum (powers of two: exact)
        peaks = [(float(g.diagonal().max()), e) for g, e in zip(grams, exponents)]
        logs = [math.frexp(p)[1] - 1 - 2 * e for p, e in peaks if 0 < p < math.inf]
        if not logs:  # G = 0, or NaN/inf in G (left for the caller's finiteness check)
            return grams, 0
        S = max(logs) // 2
        if len(set(exponents)) == 1:  # one factor for every block (the fast path: all e_k = 0)
            scaled = times_pow2(grams, -2 * (exponents[0] + S))
        else:
            scaled = torch.stack([times_pow2(g, -2 * (e + S)) for g, e in zip(grams, exponents)])
        peak = float(scaled.sum(0).diagonal().max())
        if 4 <= peak < math.inf:  # the blocks' diagonals add up past 4
            step = (math.frexp(peak)[1] - 1) // 2
            S += step
            scaled = times_pow2(scaled, -2 * step)
        return scaled, S

    def matrix(self) -> torch.Tensor:
        """The full (T, d) matrix (a copy unless there is a single block)."""
        return self.blocks[0] if len(self.blocks) == 1 else torch.cat(self.blocks, dim=1)

    def split(self, direction: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A (d,) direction cut into this Jacobian's blocks (for `Aggregation(blocks, weights)`)."""
        if tuple(direction.shape) != (self.dim,):
            raise ValueError(f"split: direction must have shape ({self.dim},), got {tuple(direction.shape)}")
        return tuple(torch.split(direction.to(self.dtype), [b.shape[1] for b in self.blocks]))

    def combine(self, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Σ_i w_i g_i per block; weights (T,) in any dtype/device."""
        if tuple(weights.shape) != (self.n_tasks,):
            raise ValueError(f"combine: weights must have shape ({self.n_tasks},), got {tuple(weights.shape)}")
        values = weights.detach().to("cpu", torch.float64).tolist()
        acc = {dtype: _accumulation_dtype(values, dtype) for dtype in {b.dtype for b in self.blocks}}
        return tuple(_weighted_row_sum(b, weights, values, acc[b.dtype]) for b in self.blocks)

    def combine_per_block(self, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-block weights (K, T): block k gets Σ_i w_ki g_i."""
        if tuple(weights.shape) != (len(self.blocks), self.n_tasks):
            raise ValueError(
                f"combine_per_block: weights must have shape ({len(self.blocks)}, {self.n_tasks}), "
                f"got {tuple(weights.shape)}"
            )
        values = weights.detach().to("cpu", torch.float64).tolist()
        rows = zip(weights, values, self.blocks)
        return tuple(_weighted_row_sum(b, wk, vk, _accumulation_dtype(vk, b.dtype)) for wk, vk, b in rows)

    def groups(self, kind: str) -> list[list[int]]:
        """Block indices per group: "whole" (one group), "module" (blocks whose names share the
        module path, i.e. the name up to its last '.'), or "parameter" (one group per block)."""
        if kind == "whole":
            return [list(range(len(self.blocks)))]
        if kind == "parameter":
            return [[k] for k in range(len(self.blocks))]
        if kind != "module":
            raise ValueError(f"group kind must be 'whole', 'module' or 'parameter', got {kind!r}")
        groups: dict[str, list[int]] = {}
        for k, name in enumerate(self.names):
            groups.setdefault(name.rpartition(".")[0], []).append(k)
        return list(groups.values())

    def batch_summed(self) -> Jacobian:
        """A feature-level Jacobian with each row summed over the batch (the first axis of every
        shape), kept as a batch of one: rows Σ_b ∇_{Z_b} L_i (LibMTL's rule for gradients with
        respect to the representation, `_get_grads` with `rep_grad=True`). No activations."""
        if self.level != "feature":
            raise ValueError(f"batch_summed needs a feature-level Jacobian, got level {self.level!r}")
        blocks = tuple(b.reshape(b.shape[0], s[0], -1).sum(1) for b, s in zip(self.blocks, self.shapes))
        shapes = tuple(torch.Size([1, *s[1:]]) for s in self.shapes)
        return Jacobian(blocks, shapes, self.names, "feature")

    def map_blocks(self, fn) -> Jacobian:
        """A Jacobian with fn applied to every block (same shapes and names)."""
        return Jacobian(tuple(fn(b) for b in self.blocks), self.shapes, self.names, self.level, self.activations)


def max_abs(tensors: Sequence[torch.Tensor]) -> float:
    """max |entry| over the tensors (NaN where one is NaN, inf where one is inf, 0 for none): one
    `aminmax` per tensor, one host sync."""
    return _largest(each_max_abs(tensors))


def _largest(values: Sequence[float]) -> float:
    """max of `values`, NaN if one is NaN (Python's max depends on where it stands), 0 for none."""
    return math.nan if any(math.isnan(v) for v in values) else max(values, default=0.0)


def each_max_abs(tensors: Sequence[torch.Tensor]) -> tuple[float, ...]:
    """max |entry| of each tensor (NaN where one of its entries is NaN, 0 for an empty one): one
    `aminmax` per tensor, one host sync."""
    ends = [
        torch.stack(torch.aminmax(t)).to(torch.float64) if t.numel() else t.new_zeros(2, dtype=torch.float64)
        for t in tensors
    ]
    if not ends:
        return ()
    if len({e.device for e in ends}) > 1:
        ends = [e.cpu() for e in ends]
    return tuple(torch.stack(ends).abs().amax(1).cpu().tolist())  # (amax keeps NaN)


def narrowest_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    """The dtype with the smallest largest finite value among the tensors' (fp16 before bf16
    before float32 before float64)."""
    return min((t.dtype for t in tensors), key=lambda dtype: torch.finfo(dtype).max)


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """No entry of any tensor is NaN or inf. One read pass, a sum per tensor, one host sync: NaN
    and inf carry through every addition, so a finite sum clears its tensor; only a tensor whose
    finite entries add up past the range (float32 sums for bf16/fp16: an fp16 tensor cannot) is
    tested entry by entry. `torch.isfinite(t).all()` makes temporaries of t's size: on a CPU it
    takes 12× as long over a ResNet18's 11.3M gradient entries (10.7–14.3 against 0.9 ms, 2 threads)."""
    if not tensors:
        return True
    tensors = [torch.view_as_real(t) if t.is_complex() else t for t in tensors]  # both parts
    sums = torch.stack([t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32) for t in tensors])
    if bool(torch.isfinite(sums).all()):
        return True
    return all(math.isfinite(s) or bool(torch.isfinite(t).all()) for s, t in zip(sums.tolist(), tensors))


def times_pow2(x, exponent: int):
    """x · 2^exponent (a tensor or array), exact unless the result leaves the dtype's normal range;
    in factors of at most 2^±100, each representable even in float32 (2^146 is not, 2^100 · 2^46 is)."""
    while exponent:
        step = max(-100, min(100, exponent))
        x = x * 2.0**step
        exponent -= step
    return x


def _times_row_pow2(x: torch.Tensor, exponents: int | list[int]) -> torch.Tensor:
    """x (T, n) with every row times 2^exponents (an int), or row i times 2^exponents[i]: exact
    unless a result leaves the normal range; in factors of at most 2^±100 (representable in
    float32), as `times_pow2`."""
    if isinstance(exponents, int):
        return times_pow2(x, exponents)
    if len(set(exponents)) == 1:
        return times_pow2(x, exponents[0])
    left = torch.tensor(exponents, dtype=torch.float64)
    while bool(left.any()):
        step = left.clamp(-100, 100)
        x = x * torch.pow(2.0, step).to(dtype=x.dtype, device=x.device)[:, None]
        left = left - step
    return x


def _block_gram(b: torch.Tensor, exponents: int | list[int] = 0) -> torch.Tensor:
    """(D b)(D b)ᵀ in float64, D = 2^exponents (one power for every row, or one per row). float32
    products over column chunks of _GRAM_CHUNK, all chunks of a span in one batched product,
    summed in float64; bf16/fp16 blocks (e.g. feature gradients under autocast) are multiplied in
    float32, one span at a time (no float32 copy of the block); non-zero exponents scale each span
    (a copy of one span)."""
    if b.dtype == torch.float64:
        b = _times_row_pow2(b, exponents)
        return b @ b.T
    t, n = b.shape
    acc = torch.zeros(t, t, dtype=torch.float64, device=b.device)
    for start in range(0, n, _GRAM_SPAN):
        part = b[:, start : start + _GRAM_SPAN]
        if part.dtype in (torch.bfloat16, torch.float16):
            part = part.float()
        part = _times_row_pow2(part, exponents)
        m = part.shape[1] // _GRAM_CHUNK
        if m:  # (m, T, C) @ (m, C, T)
            chunks = part[:, : m * _GRAM_CHUNK].reshape(t, m, _GRAM_CHUNK).transpose(0, 1)
            acc += torch.bmm(chunks, chunks.transpose(1, 2)).to(torch.float64).sum(0)
        if part.shape[1] > m * _GRAM_CHUNK:
            rest = part[:, m * _GRAM_CHUNK :]
            acc += (rest @ rest.T).to(torch.float64)
    return acc


_WIDER = {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.float32: torch.float64}
_HALF = (torch.float16, torch.bfloat16)


def _needs_wider_dtype(weights: list[float], dtype: torch.dtype) -> bool:
    """Some finite non-zero weight is not a normal number of `dtype`: rounded to it, the weight
    would be inf (past its range) or lose digits (subnormal) or vanish. A DB-MTL weight
    max_j ‖ĝ_j‖ / ‖ĝ_i‖ for a task row 1e-5 of another passes fp16's 65504 where the direction
    itself fits; an MGDA weight of 1e-6 is an fp16 subnormal with 5 bits."""
    if dtype not in _WIDER:
        return False
    info = torch.finfo(dtype)
    return any(w != 0 and math.isfinite(w) and not info.tiny <= abs(w) <= info.max for w in weights)


def _accumulation_dtype(values: list[float], dtype: torch.dtype) -> torch.dtype:
    """The dtype Σ w_i g_i of `dtype` rows is formed in: float32 for bf16/fp16 rows, theirs
    otherwise, and the next wider one where a weight is not a normal number of that
    (`_needs_wider_dtype`: float64 for float32)."""
    acc = _WIDER[dtype] if dtype in _HALF else dtype
    return _WIDER[acc] if _needs_wider_dtype(values, acc) else acc


def _weighted_row_sum(block: torch.Tensor, weights: torch.Tensor, values: list[float], acc: torch.dtype):
    """Σ_i w_i block[i] (`values`: the weights as floats), formed in `acc` (`_accumulation_dtype`)
    and rounded once to the block's dtype, so it is inf only where the direction itself passes
    the range. Half-precision weights lost 11 or 8 bits: five fp16 rows of 65504 weighted 1/5
    added up past the range. One scaled copy of row 0 plus T−1 in-place axpys, each row read in
    its own dtype (no widened copy of the block): one pass over each row (w @ block, a (1,T)·(T,n)
    product, is ~30 % slower on a 3×11M float32 Jacobian on CPU). Weights that carry a graph take
    the product, which keeps it."""
    if weights.requires_grad:
        return (weights.to(dtype=acc, device=block.device) @ block.to(acc)).to(block.dtype)
    out = block[0] * values[0] if acc == block.dtype else block[0].to(acc).mul_(values[0])
    for i in range(1, len(values)):
        out.add_(block[i], alpha=values[i])
    return out.to(block.dtype)
