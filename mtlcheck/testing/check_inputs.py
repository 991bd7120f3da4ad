"""What the conformance checks share: tolerances and sizes, the skip and non-finite signals, the
factory of a fresh aggregator, seeded inputs and the checked call."""

from __future__ import annotations

import contextlib
import math
import unittest
from collections.abc import Callable

import torch

from mtlcheck.aggregators import Aggregator
from mtlcheck.jacobian import NonFiniteOutputError

Factory = Callable[[], Aggregator]
Check = Callable[[Factory], None]

RTOL = 1e-6
TASK_COUNTS = (2, 3, 5)
DIM = 12


class CheckSkipped(unittest.SkipTest):
    """The check does not apply (a missing protocol hook, nothing to test); carries the reason.
    A unittest.SkipTest, so pytest reports it as skipped."""


def protocol_hook(agg: Aggregator, name: str, mixin: type):
    """The bound protocol method `name`, or None when the class does not implement it."""
    impl = getattr(type(agg), name, None)
    if impl is None or impl is getattr(mixin, name):
        return None
    return getattr(agg, name)


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_losses(n: int, seed: int = 0) -> torch.Tensor:
    return 0.5 + torch.rand(n, generator=rng(1000 + seed), dtype=torch.float64)


class NonFiniteOutput(AssertionError):
    """The method returned NaN or inf for a finite input: every check that meets it says so, in
    these words, instead of reporting what the NaN breaks (a disagreement, a conflict)."""


_NON_FINITE = {"direction": "a non-finite direction", "weights": "non-finite weights"}


def raw_call(agg: Aggregator, G: torch.Tensor, losses: torch.Tensor | None = None):
    return agg(G, random_losses(G.shape[0]) if losses is None else losses)


def checked_call(agg: Aggregator, G: torch.Tensor, losses: torch.Tensor | None = None):
    """Call with losses when the method reads them (always pass them: G-only methods ignore); a
    non-finite direction or weights for a finite G raise NonFiniteOutput."""
    try:
        out = raw_call(agg, G, losses)
    except NonFiniteOutputError as exc:  # the base class's own check met it first
        raise NonFiniteOutput(
            f"{agg!r} returned {_NON_FINITE[exc.what]} (NaN or inf) for a finite input G of shape {tuple(G.shape)}, "
            f"{G.dtype} ({exc})"
        ) from None
    for what, value in (("direction", out.direction), ("weights", out.weights)):
        if value is not None and not bool(torch.isfinite(value).all()) and bool(torch.isfinite(G).all()):
            raise NonFiniteOutput(
                f"{agg!r} returned {_NON_FINITE[what]} (NaN or inf) for a finite input G of shape {tuple(G.shape)}, "
                f"{G.dtype}: {value.tolist()}"
            )
    return out


@contextlib.contextmanager
def on_case(label: str):
    """Adds to an exception raised inside it a note naming the input case: the kit's assertion
    messages name their case, and an error of the method under test then says it too."""
    try:
        yield
    except Exception as exc:
        notes = getattr(exc, "__notes__", ())
        if hasattr(exc, "add_note") and not any(n.startswith("mtlcheck: on input case") for n in notes):
            exc.add_note(f"mtlcheck: on input case {label}")
        raise


def direction_of(agg, G, losses=None) -> torch.Tensor:
    return checked_call(agg, G, losses).direction


def close_at(a: torch.Tensor, b: torch.Tensor, scale: float, rtol: float = RTOL) -> bool:
    """Equal up to rtol·scale; NaN where the other has NaN counts as equal (a NaN output is reported
    once, as NaN, by check_output_contract / check_finite_on_hard_inputs, not as a disagreement)."""
    scale = scale if math.isfinite(scale) else 1.0
    return bool(torch.allclose(a, b, rtol=0.0, atol=rtol * max(scale, 1e-300), equal_nan=True))


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN at the same places counting as equal (see `close_at`)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    return bool(torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)))


def label_of(make: Factory) -> str:
    return repr(make())


def subject_of(make: Factory) -> tuple[Aggregator, int]:
    """A fresh instance and the task count most checks use: max(min_tasks, 3)."""
    agg = make()
    return agg, max(agg.tags().min_tasks, 3)


def task_counts_of(agg: Aggregator) -> list[int]:
    """The TASK_COUNTS the instance accepts (at least its min_tasks)."""
    return [n for n in TASK_COUNTS if n >= agg.tags().min_tasks]
