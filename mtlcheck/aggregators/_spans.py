"""Column spans of (T, n) blocks, for the stateful methods that update a T × d state elementwise.

A method that runs several elementwise operations over its state and the gradients (DB-MTL's
EMA and its row norms, ExcessMTL's AdaGrad sum and excess risks) runs them span by span: each
span is read from memory once and the later operations find it in the cache, and the scratch
tensor they need is one span (4 MiB of float32), not a copy of the block. A fresh block-sized
temporary per step is what cost most: on the CPU, blocks over glibc's mmap threshold (32 MiB
tuned, e.g. a 3×3×512×512 convolution at T = 7) are page-faulted in anew at every step.
"""

from __future__ import annotations

import torch

SPAN = 1 << 20  # elements (T × columns) per span


def span_width(block: torch.Tensor) -> int:
    """The columns of the widest span of `block` (T, n)."""
    t, n = block.shape
    return min(n, max(1, SPAN // max(t, 1)))


def column_spans(block: torch.Tensor) -> list[tuple[int, int]]:
    """[start, stop) column ranges covering `block` (T, n), each of at most SPAN elements."""
    width, n = max(1, span_width(block)), block.shape[1]
    return [(start, min(start + width, n)) for start in range(0, n, width)]


def span_scratch(block: torch.Tensor) -> torch.Tensor:
    """An uninitialised flat tensor for the widest span of `block` (T, n), in its dtype and device:
    `scratch[: T * w].view(T, w)` is a contiguous (T, w) tensor for a span of w columns."""
    return torch.empty(block.shape[0] * span_width(block), dtype=block.dtype, device=block.device)


def span_row_sums(x: torch.Tensor) -> torch.Tensor:
    """Σ over the columns of `x` (T, w), on x's device, in float32 (float64 for float64 x) by
    torch's cascade sum: relative error ~1e-8 over a 2.4M-column float32 row, where one float32
    accumulator, as a BLAS dot, is ~1e-5 off. Spans' sums are then added in float64."""
    return x.sum(1, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)


def row_sums(x: torch.Tensor) -> torch.Tensor:
    """`span_row_sums(x)` in float64."""
    return span_row_sums(x).to(torch.float64)


def paired_spans(state: torch.Tensor, block: torch.Tensor):
    """(s, g): the column spans of a per-block `state` (T, n), as views to update in place, beside
    those of the gradients' `block` in the state's dtype (a half-precision span widened into one
    scratch span, in the cache, instead of a widened copy of the block)."""
    n, scratch = state.shape[0], span_scratch(state) if block.dtype != state.dtype else None
    for start, stop in column_spans(state):
        g = block[:, start:stop]
        if scratch is not None:
            g = scratch[: n * (stop - start)].view(n, stop - start).copy_(g)
        yield state[:, start:stop], g
