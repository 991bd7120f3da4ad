"""Aggregator base classes and tags.

An aggregator is a pure function of explicit inputs: the task gradients (a `Jacobian`, T×d),
the task losses (T,), its own declared state, and a private `torch.Generator` seeded from
`seed`. It never touches a model, `.grad`, the device or the global RNG; the gradient engine
applies what it returns. It returns an `Aggregation`: the update direction (same dtype/device
as the gradients) and, for weighting methods, the task weights w with direction = Σ_i w_i g_i.

Loss-only methods (EW, RLW, UW, DWA, FAMO) compute weights from the losses alone; the engine
then needs no per-task gradients and back-propagates Σ_i w_i L_i once.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from mtlcheck.jacobian import (
    Jacobian,
    NonFiniteGradientError,
    NonFiniteInputError,
    NonFiniteOutputError,
    all_finite,
    each_max_abs,
    narrowest_dtype,
)

_REDUCTIONS = ("sum", "mean", "normalized", "other")
_FAMILIES = ("weighting", "projection", "solver", "masking", "regularizer")
_INPUTS = frozenset({"losses", "grads"})


class SolverError(RuntimeError):
    """An aggregator's inner solver failed; the step must not silently fall back to EW."""


class SolverFallbackWarning(UserWarning):
    """An aggregator's solver failed and a documented fallback was used (never silent)."""


@dataclass(frozen=True)
class AggregatorTags:
    """What a method is; the conformance kit generates only the checks that apply.

    inputs: subset of {"losses", "grads"} the method reads.
    family: "weighting" | "projection" | "solver" | "masking" | "regularizer".
    weighted: direction == weights @ G.
    nonneg_weights: weights >= 0 and not all zero (for G != 0).
    stateful: outputs depend on earlier calls (reset/state_dict matter).
    stochastic: draws from its generator.
    reduction: scale convention for identical rows — "sum" (direction T·g), "mean" (g),
        "normalized" (direction only), "other" (see `identical_rows_scale`).
    homogeneity: k with A(cG) = c^k A(G) for c > 0 (losses fixed); None = not claimed.
    non_conflicting: <g_i, A(G)> >= 0 for every i.
    task_symmetric: permutation-equivariant at its initial state.
    second_order: the true update needs second derivatives (engine support, see CosReg).
    requires_solver: name of the inner solver the method depends on, or None.
    post_step_update: needs `after_step(losses)` with the losses re-evaluated after the step.
    min_tasks: smallest T the method accepts.
    reads_gram: the method reads the Gram G Gᵀ of its input (`J.gram()`, `J.scaled_gram()`, …), so
        the input check that refuses NaN and inf reuses it; False: the check is an aminmax per block
        (`J.max_abs()`), a cheaper pass than a Gram. A speed hint only: either value gives the same results.
    solver_tol: the relative precision the method's inner solver reaches (its stopping tolerance,
        e.g. Frank-Wolfe's step threshold or SLSQP's ftol on the objective); the kit's checks of
        solver-defined properties (defining property, non-conflict) accept violations up to
        max(solver_tol, the kit's default) in the problem's own units. None: the default.
    """

    inputs: frozenset = frozenset({"grads"})
    family: str = "weighting"
    weighted: bool = True
    nonneg_weights: bool = False
    stateful: bool = False
    stochastic: bool = False
    reduction: str = "sum"
    homogeneity: int | None = 1
    non_conflicting: bool = False
    task_symmetric: bool = True
    second_order: bool = False
    requires_solver: str | None = None
    post_step_update: bool = False
    min_tasks: int = 1
    solver_tol: float | None = None
    reads_gram: bool = True

    def __post_init__(self):
        if not isinstance(self.inputs, frozenset) or not self.inputs or not self.inputs <= _INPUTS:
            raise ValueError(f"tags.inputs must be a non-empty frozenset within {sorted(_INPUTS)}, got {self.inputs!r}")
        if self.family not in _FAMILIES:
            raise ValueError(f"tags.family must be one of {_FAMILIES}, got {self.family!r}")
        if self.reduction not in _REDUCTIONS:
            raise ValueError(f"tags.reduction must be one of {_REDUCTIONS}, got {self.reduction!r}")
        if self.min_tasks < 1:
            raise ValueError(f"tags.min_tasks must be >= 1, got {self.min_tasks}")
        if self.solver_tol is not None and not (isinstance(self.solver_tol, (int, float)) and 0 < self.solver_tol < 1):
            raise ValueError(f"tags.solver_tol must be a number in (0, 1) or None, got {self.solver_tol!r}")

    @property
    def loss_only(self) -> bool:
        return "grads" not in self.inputs

    def replace(self, **changes) -> AggregatorTags:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return AggregatorTags(**values)


@dataclass(frozen=True, eq=False)
class Aggregation:
    """An aggregator's output: direction blocks (None for loss-only methods) and weights;
    `bound`, optionally, an upper bound on the direction's |entries| that the method knows without
    a pass over it (then the check that a finite G gave a finite direction reads it)."""

    blocks: tuple[torch.Tensor, ...] | None
    weights: torch.Tensor | None
    bound: float | None = None

    @property
    def direction(self) -> torch.Tensor | None:
        """The (d,) update direction (concatenated blocks)."""
        if self.blocks is None:
            return None
        return self.blocks[0] if len(self.blocks) == 1 else torch.cat(self.blocks)


def _conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether `value` fits the annotation `hint`, the value as that type). Unknown or missing
    annotations accept anything."""
    if hint is inspect.Parameter.empty or hint is Any or isinstance(hint, str):
        return True, value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            ok, conformed = _conform(value, option)
            if ok:
                return True, conformed
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(hint), value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:  # numpy's integers too; a bool is never a number
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return False, value
        return True, int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False, value
        try:
            as_float = float(value)
        except OverflowError:  # an int past float's range
            return False, value
        return math.isfinite(as_float), as_float
    if hint is str:
        return isinstance(value, str), value
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        return isinstance(value, (list, tuple)), value
    return True, value


def _describe_type(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if hint is float:
        return "a finite number"
    return {bool: "true or false", int: "an integer", str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


class Aggregator:
    """Base class. Subclasses set `name` (via `register_aggregator`), implement `tags()` and
    `_aggregate(J, losses)`, store every constructor argument under its own name (for
    `get_config`; or override `get_config`), and, when stateful, list their state attributes in
    `_state_attrs`.

    The conformance kit (`mtlcheck.testing`) uses only public members: `tags()`,
    `identical_rows_scale`, `get_config`/`from_config`, `reset`, `state_dict`/`load_state_dict`,
    `after_step`, `seed`/`generator`, `implements`, and the hooks of the protocol mixins
    `ProjectionMethod.surgery` and `SecondOrderMethod.penalty_term`.

    implements: the published method this class claims to be, one of the kit's
        `mtlcheck.testing.identities.IDENTITIES` ("mgda", "cagrad", "nash_mtl", "imtl_g", "pcgrad",
        "aligned_mtl", "gradvac", "upgrad", "dualproj", ...), or None. The kit then checks that
        method's defining property on hard inputs (`check_method_identity`).
        A class attribute or a property (when it depends on the configuration). "cagrad" reads
        the attribute `c` (the ball radius factor), "gradvac" reads `beta` (the EMA rate).
    """

    name: ClassVar[str] = ""
    implements: ClassVar[str | None] = None

    def __init__(self, *, seed: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"{type(self).__name__}: seed must be an int, got {seed!r}")
        if not -(2**63) <= int(seed) < 2**64:  # what torch.Generator.manual_seed takes
            raise ValueError(f"{type(self).__name__}: seed must be in [-2**63, 2**64), got {seed!r}")
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self._n_tasks: int | None = None

    # -- description ----------------------------------------------------------------------------
    def tags(self) -> AggregatorTags:  # pragma: no cover - abstract
        raise NotImplementedError

    def identical_rows_scale(self, n_tasks: int) -> float | None:
        """c with A(1·gᵀ) = c·g at the initial state, or None when only the direction is fixed."""
        return {"sum": float(n_tasks), "mean": 1.0}.get(self.tags().reduction)

    @classmethod
    def _init_parameters(cls) -> list[inspect.Parameter]:
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = inspect.signature(cls.__init__).parameters.values()
        return [p for p in params if p.name != "self" and p.kind in kinds]

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """`config` checked against the constructor's keywords and their annotated types (an int
        for a float becomes that float; a bool is never a number; floats must be finite): a
        ValueError naming the parameter, its type and the value otherwise. Values themselves
        (ranges) are the constructor's to check."""
        params = {p.name: p for p in cls._init_parameters()}
        unknown = sorted(set(config) - set(params))
        if unknown:
            raise ValueError(f"{cls.__name__} has no parameter(s) {unknown}; it takes {sorted(params)}")
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # noqa: BLE001 - unresolvable annotations: leave the values to __init__
            hints = {}
        checked = {}
        for name, value in config.items():
            hint = hints.get(name, params[name].annotation)
            ok, value = _conform(value, hint)
            if not ok:
                raise ValueError(f"{cls.__name__}: {name} must be {_describe_type(hint)}, got {value!r}")
            checked[name] = value
        return checked

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (every keyword of __init__, read from the attribute of that name).
        Raises TypeError naming the argument when it is not stored under its own name."""
        missing = [p.name for p in self._init_parameters() if not hasattr(self, p.name)]
        if missing:
            raise TypeError(
                f"{type(self).__name__}: constructor argument(s) {missing} are not stored under their own name, "
                f"so get_config() cannot read them; store them as self.<name> or override get_config()"
            )
        return {p.name: copy.deepcopy(getattr(self, p.name)) for p in self._init_parameters()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Aggregator:
        return cls(**config)

    def __repr__(self) -> str:
        shown = []
        for p in self._init_parameters():
            if not hasattr(self, p.name):  # stored under another name: repr must not fail (get_config says why)
                shown.append(f"{p.name}=?")
                continue
            value = getattr(self, p.name)
            try:
                differs = p.default is p.empty or bool(value != p.default)
            except Exception:  # noqa: BLE001 - e.g. a tensor argument: show it
                differs = True
            if differs:
                shown.append(f"{p.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    # -- the call -------------------------------------------------------------------------------
    def __call__(self, G: torch.Tensor | Jacobian | None, losses: torch.Tensor | None = None) -> Aggregation:
        return self._call(G, losses, direction=True)

    def task_weights(self, G: torch.Tensor | Jacobian | None, losses: torch.Tensor | None = None) -> torch.Tensor:
        """The task weights w (T,) of a weighted method (`tags().weighted`: d = Σ_i w_i g_i), after
        the same checks and the same state update as a call, without forming d where the method
        computes w first (a `WeightingAggregator`). For a method built on another's weights
        (CR-MOGM), which would otherwise pay a pass over G for a direction it discards, and be
        refused where that direction, not its own, passes the dtype's range."""
        if not self.tags().weighted:
            raise ValueError(
                f"{self!r} does not weight the task gradients (tags weighted=False): it has no task weights"
            )
        weights = self._call(G, losses, direction=False).weights
        if weights is None:
            raise ValueError(f"{self!r} is tagged weighted but returned no task weights")
        return weights

    def _call(self, G, losses, *, direction: bool) -> Aggregation:
        tags = self.tags()
        J = self._check_gradients(G, tags)
        losses = self._check_losses(losses, tags, J)
        n = J.n_tasks if J is not None else losses.shape[0]
        if n < tags.min_tasks:
            raise ValueError(f"{self!r} needs at least {tags.min_tasks} tasks, got T={n}")
        if tags.stateful and self._n_tasks is not None and n != self._n_tasks:
            raise ValueError(
                f"{self!r} was called with T={self._n_tasks} tasks before and now with T={n}; call reset() first"
            )
        # a refused call leaves the method as it found it: its state (references: a method whose
        # state tensors change in place refuses before changing them, and is restored on its first
        # call only, where its state is None), its generator and, on the first call, T unset
        first = self._n_tasks is None
        restore = first or not self._state_changes_in_place
        kept = (self._snapshot(), self.generator.get_state()) if restore else None
        self._n_tasks = n
        try:
            result = self._aggregate(J, losses) if direction else self._aggregate_weights(J, losses)
            if result.weights is not None and not bool(torch.isfinite(result.weights).all()):
                raise NonFiniteOutputError(f"{self!r}: non-finite task weights {result.weights.tolist()}", "weights")
            if J is not None and result.blocks is not None:
                self._check_direction(J, result, tags)
        except Exception:
            if restore:
                self._n_tasks = None if first else n
                self._restore(kept[0])
                self.generator.set_state(kept[1])
            raise
        return result

    def _check_direction(self, J: Jacobian, result: Aggregation, tags: AggregatorTags) -> None:
        """A NonFiniteOutputError when a finite G gave a direction that is not finite (an
        fp16 ConFIG step past 65504, say). Free where the method's `bound`, or, for a weighting
        method (direction = Σ w_i g_i) whose weights fit the dtype, what the input check computed
        (`Jacobian.combine_bound`), bound it; else one summing pass over the direction."""
        dtype = narrowest_dtype(result.blocks)
        top = torch.finfo(dtype).max / 4  # with room for rounding (the direction's blocks: J's dtypes)
        bound = result.bound
        w = result.weights
        if bound is None and w is not None and tags.weighted and float(w.abs().max()) < top:
            # (the engine's combination forms weights its dtype cannot hold in a wider one, but a
            # method that combines them itself may cast them: only weights that fit are trusted)
            bound = J.combine_bound(w)
        if bound is not None and bound < top:
            return
        if not all_finite(result.blocks):
            raise NonFiniteOutputError(
                f"{self!r}: a non-finite direction (NaN or inf: past the range of {dtype}?) for a finite G "
                f"(max |G| = {J.max_abs():.3g})"
            )

    def _aggregate(self, J: Jacobian | None, losses: torch.Tensor | None) -> Aggregation:  # pragma: no cover
        raise NotImplementedError

    def _aggregate_weights(self, J: Jacobian | None, losses: torch.Tensor | None) -> Aggregation:
        """What `task_weights` reads: the aggregation, whose direction a weighting method skips."""
        return self._aggregate(J, losses)

    def _check_gradients(self, G, tags: AggregatorTags) -> Jacobian | None:
        if G is None:
            if not tags.loss_only:
                raise ValueError(f"{self!r} needs the task gradients G (T, d); got None")
            return None
        try:
            J = G if isinstance(G, Jacobian) else Jacobian.from_matrix(G)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self!r}: {exc}") from None
        if J.n_tasks == 0:
            raise ValueError(f"{self!r}: G has T=0 tasks; at least one task gradient is required")
        if J.dim == 0:
            raise ValueError(f"{self!r}: G has d=0 columns; the task gradients must have at least one entry")
        if not J.dtype.is_floating_point:
            raise ValueError(f"{self!r}: G must be a floating-point tensor, got dtype {J.dtype}")
        if any(b.requires_grad for b in J.blocks) and not tags.second_order:
            J = J.map_blocks(torch.Tensor.detach)  # non-differentiable: never a silently wrong gradient
        # NaN or inf is refused before any state changes. A method that reads the Gram gets the
        # check with it (NaN/inf anywhere make its diagonal non-finite; finite rows at any scale give
        # a finite scaled Gram); any other pays one read pass (`max_abs`) instead of a Gram
        if tags.reads_gram:
            try:
                J.scaled_gram()
            except NonFiniteGradientError:
                self._refuse_non_finite_blocks(J)
                raise
        elif not J.is_finite():
            self._refuse_non_finite_blocks(J)
            raise NonFiniteInputError(f"{self!r}: G contains NaN or inf")  # not reached: a block has one
        return J

    def _refuse_non_finite_blocks(self, J: Jacobian) -> None:
        for name, b in zip(J.names, J.blocks):
            if not torch.isfinite(b).all():
                raise NonFiniteInputError(f"{self!r}: G block {name!r} contains NaN or inf") from None

    def _check_losses(self, losses, tags: AggregatorTags, J: Jacobian | None) -> torch.Tensor | None:
        if losses is None:
            if "losses" in tags.inputs:
                raise ValueError(f"{self!r} needs the task losses (a (T,) tensor); got None")
            return None
        if not isinstance(losses, torch.Tensor):
            try:
                losses = torch.as_tensor(losses, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError, OverflowError) as exc:  # (an int past float64)
                raise ValueError(
                    f"{self!r}: losses must be a (T,) tensor of real numbers, got {losses!r} ({exc})"
                ) from None
        if losses.is_complex() or losses.dtype == torch.bool:
            raise ValueError(f"{self!r}: losses must be real numbers, got dtype {losses.dtype}")
        if losses.ndim != 1:
            raise ValueError(f"{self!r}: losses must have shape (T,), got {tuple(losses.shape)}")
        if J is not None and losses.shape[0] != J.n_tasks:
            raise ValueError(f"{self!r}: losses has {losses.shape[0]} entries but G has T={J.n_tasks} rows")
        if losses.shape[0] == 0:
            raise ValueError(f"{self!r}: losses is empty (T=0)")
        if not torch.isfinite(losses).all():
            raise ValueError(f"{self!r}: losses contain NaN or inf: {losses.tolist()}")
        return losses.detach().to(torch.float64).cpu()

    # -- state ----------------------------------------------------------------------------------
    def after_step(self, losses: torch.Tensor) -> None:
        """Called by the trainer with the same batch's losses re-evaluated after the optimizer step
        (only for `tags().post_step_update`)."""

    def reset(self) -> None:
        """Back to the freshly constructed state (generator re-seeded)."""
        self.generator.manual_seed(self.seed)
        self._n_tasks = None
        self._reset_state()

    # the attributes that hold a stateful method's state; None means "initial"
    _state_attrs: ClassVar[tuple[str, ...]] = ()
    # True for a method that updates its state tensors in place (a T × d average, say): a call it
    # refuses after its update cannot be undone by restoring the attributes, so such a method must
    # refuse before changing anything (its first call is still undone: its state was None)
    _state_changes_in_place: ClassVar[bool] = False

    def _snapshot(self) -> Any:
        """The state as it is, for a refused call to restore: references (a method replaces its
        state rather than change it) to the `_state_attrs`, or `_get_state()` for a method that
        declares its state that way alone."""
        if not self._state_attrs:
            return self._get_state()
        return {name: getattr(self, name) for name in self._state_attrs}

    def _restore(self, kept: Any) -> None:
        """Back to a `_snapshot`, as it was: set again, not loaded (no conversion, no check)."""
        if not self._state_attrs:
            self._set_state(kept)
            return
        for name, value in kept.items():
            setattr(self, name, value)

    def _reset_state(self) -> None:
        for name in self._state_attrs:
            setattr(self, name, None)

    def _get_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._state_attrs}

    def _set_state(self, state: dict[str, Any]) -> None:
        for name in self._state_attrs:
            setattr(self, name, state[name])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: generator state, T, and the method's own state."""
        return {
            "generator": self.generator.get_state(),
            "n_tasks": self._n_tasks,
            "method": copy.deepcopy(self._get_state()),
        }

    # state keys an older release saved, which `_set_state` still reads (besides `_state_attrs`)
    _legacy_state_keys: ClassVar[tuple[str, ...]] = ()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output. A ValueError naming what is missing or foreign (keys, a
        generator state that does not fit, a task count that is none) otherwise, with nothing
        changed; the values of the method's own state are its own to check."""
        who = type(self).__name__
        if not isinstance(state, dict) or set(state) != {"generator", "n_tasks", "method"}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{who}.load_state_dict: expected the keys ['generator', 'method', 'n_tasks'], got {got}")
        generator, n_tasks, method = state["generator"], state["n_tasks"], state["method"]
        try:
            torch.Generator(device="cpu").set_state(generator)
        except (TypeError, RuntimeError) as exc:
            raise ValueError(f"{who}.load_state_dict: 'generator' is not a CPU generator's state ({exc})") from None
        if n_tasks is not None and (isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1):
            raise ValueError(f"{who}.load_state_dict: 'n_tasks' must be None or an int >= 1, got {n_tasks!r}")
        if not isinstance(method, dict):
            raise ValueError(f"{who}.load_state_dict: 'method' must be a dict, got {type(method).__name__}")
        kept = self._get_state()
        foreign = sorted(set(method) - set(kept) - set(self._legacy_state_keys))
        if foreign:
            raise ValueError(
                f"{who}.load_state_dict: state keys {foreign} are not {who}'s (it keeps {sorted(kept)}); "
                "was the state saved from another method?"
            )
        try:
            self._set_state(copy.deepcopy(method))
        except KeyError as exc:
            self._set_state(kept)
            raise ValueError(f"{who}.load_state_dict: the method state lacks {exc}; it keeps {sorted(kept)}") from None
        except Exception:
            self._set_state(kept)
            raise
        self.generator.set_state(generator)
        self._n_tasks = n_tasks

    def __getstate__(self):
        # a pickle (or deepcopy) is for the same release; `state_dict()` is what later releases
        # load (`load_state_dict` takes the states earlier releases saved)
        d = self.__dict__.copy()
        d["generator"] = self.generator.get_state()
        return d

    def __setstate__(self, d):
        gen = torch.Generator(device="cpu")
        gen.set_state(d["generator"])
        d["generator"] = gen
        self.__dict__.update(d)

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new


class ProjectionMethod:
    """Protocol mixin for gradient-surgery methods (tags family "projection").

    Implement `surgery(J)`; the kit's `check_conflict_reduction` calls it (a projection method
    without it gets that check reported as skipped, with the reason)."""

    def surgery(self, J: Jacobian) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, targets) for the current state, WITHOUT changing it (the kit saves and restores
        `state_dict()` around the call all the same).

        J: the task gradients (`Jacobian`: `J.gram()` the float64 T×T Gram matrix, `J.matrix()` G).
        C: float64 (T, T), or (K, T, T) for K parameter groups: the corrected gradient of task i
            is g_i' = Σ_j C[i, j] g_j (per group k: C[k, i] applied to that group's blocks).
        targets: same shape as C: the cosine cos(g_i', g_j) that the surgery must reach for each
            pair (0 for PCGrad; GradVac's EMA target φ̂_ij)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement surgery(J)")


class SecondOrderMethod:
    """Protocol mixin for methods whose objective penalises the gradients (tags second_order):
    Σ_i L_i + penalty(g_1, ..., g_T). The engine takes the g_i with create_graph=True and
    differentiates the penalty (double backprop); the kit's `check_second_order` compares that
    gradient with finite differences of the penalty's value."""

    def penalty_term(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """A scalar tensor: the penalty. blocks: per parameter block (or feature tensor) k, the
        (T, n_k) task gradients, attached to the autograd graph; the result must stay attached."""
        raise NotImplementedError(f"{type(self).__name__} does not implement penalty_term(blocks)")


class WeightingAggregator(Aggregator):
    """direction = Σ_i w_i g_i with w from `_weights(J, losses)` (float64, shape (T,))."""

    def _weights(self, J: Jacobian | None, losses: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _aggregate(self, J, losses):
        w = self._weights(J, losses)
        return Aggregation(None if J is None else J.combine(w), w)

    def _aggregate_weights(self, J, losses):
        return Aggregation(None, self._weights(J, losses))


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a stateful method keeps its per-block state in for gradients of `dtype`: float32
    for fp16/bf16 (a running average or sum in half precision loses what rounds below its 11 or 8
    bits, and rows near its subnormals keep only a few: 2-45 % off after one step for an fp16 row
    1e-6 beside 1), theirs otherwise. Widened from half precision, the state holds every value
    of the gradients' dtype exactly."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def in_dtypes_of(direction: tuple[torch.Tensor, ...], J: Jacobian) -> tuple[torch.Tensor, ...]:
    """A direction formed from a state kept in `state_dtype`, each block rounded once to the
    gradients' dtype (the same blocks where the dtypes agree)."""
    return tuple(d.to(b.dtype) for d, b in zip(direction, J.blocks))


def check_state_shapes(
    owner: Aggregator,
    state: tuple[torch.Tensor, ...] | None,
    blocks,
    dtypes: tuple[torch.dtype | None, ...] | None = None,
) -> None:
    """A ValueError when the gradient blocks' shapes differ from those of the per-block `state` a
    stateful method kept from the last step (None: no state yet), or a block's dtype from the one
    of the gradients that made the state (`dtypes`, kept beside it: a float32 state serves fp16,
    bf16 and float32 gradients alike); where one is not known (None: a state saved without them),
    the state must be in `state_dtype` of the block's dtype."""
    if state is None:
        return
    if [tuple(s.shape) for s in state] != [tuple(b.shape) for b in blocks]:
        raise ValueError(
            f"{owner!r}: the gradient blocks changed shape since the last step "
            f"({[tuple(s.shape) for s in state]} → {[tuple(b.shape) for b in blocks]}); call reset() first"
        )
    for k, (s, b) in enumerate(zip(state, blocks)):  # every block: a Jacobian may mix dtypes
        was = None if dtypes is None else dtypes[k]
        if b.dtype != was if was is not None else s.dtype != state_dtype(b.dtype):
            before = f"gradients were {was}" if was is not None else f"state in {s.dtype}"
            raise ValueError(
                f"{owner!r}: the gradients' dtype changed since the last step (block {k}: {before}, "
                f"gradients now {b.dtype}); call reset() first"
            )


def dtypes_of(tensors: tuple[torch.Tensor, ...] | None) -> tuple[torch.dtype, ...] | None:
    """The dtypes of a per-block state or Jacobian's blocks (None for none)."""
    return None if tensors is None else tuple(t.dtype for t in tensors)


def kept_gradient_dtypes(owner: Aggregator, dtypes, state: tuple[torch.Tensor, ...] | None):
    """The gradients' dtypes of a loaded state: None, or one torch.dtype (or None) per block."""
    if dtypes is None:
        return None
    dtypes = tuple(dtypes) if isinstance(dtypes, (tuple, list)) else dtypes
    if not (
        isinstance(dtypes, tuple)
        and state is not None
        and len(dtypes) == len(state)
        and all(d is None or isinstance(d, torch.dtype) for d in dtypes)
    ):
        raise ValueError(f"{owner!r}: the state's gradient dtypes {dtypes!r} are not one torch.dtype per block")
    return dtypes


def saved_gradient_dtypes(state: tuple[torch.Tensor, ...] | None) -> tuple[torch.dtype | None, ...] | None:
    """The gradients' dtypes behind a per-block state saved before they were kept beside it: a
    state in fp16, bf16 or float64 was in its gradients' dtype; a float32 one may have been made
    by float32 or (once half-precision states were widened) fp16/bf16 gradients: None, for
    `check_state_shapes` to judge by `state_dtype` alone."""
    if state is None:
        return None
    return tuple(None if s.dtype == torch.float32 else s.dtype for s in state)


def widened_state(state: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...] | None:
    """A per-block state saved in half precision (before it was kept in float32), in `state_dtype`
    of its own: exact."""
    return None if state is None else tuple(s.to(state_dtype(s.dtype)) for s in state)


def softmax64(x: torch.Tensor) -> torch.Tensor:
    """Softmax in float64 (small helper shared by the random and loss-balancing methods)."""
    return torch.softmax(x.to(torch.float64), dim=0)


def average_bound(owner: Aggregator, kept: tuple[float, ...] | None, J: Jacobian, what: str) -> tuple[float, ...]:
    """The bounds, block by block, on the entries of a state that is a running average (a convex
    combination) of the G seen so far: max(kept_k, max |G_k|). A NonFiniteGradientError, before
    any state changes, where a block's y + w(g − y) could overflow: 2 · bound_k past the range of
    block k's state dtype (`state_dtype`: each its own, float32 for an fp16 block)."""
    seen = J.block_max_abs()
    kept = kept or (0.0,) * len(seen)
    bounds = tuple(max(k, m) for k, m in zip(kept, seen))
    for name, block, k, m, bound in zip(J.names, J.blocks, kept, seen, bounds):
        dtype = state_dtype(block.dtype)
        if not 2 * bound < torch.finfo(dtype).max:
            raise NonFiniteGradientError(
                f"{owner!r}: {what} gradients of max |g| = {m:.3g} in block {name!r} (the state's entries "
                f"<= {k:.3g} there) would overflow {dtype}; the state is unchanged"
            )
    return bounds


def block_bounds(bound, state: tuple[torch.Tensor, ...] | None) -> tuple[float, ...] | None:
    """A state's per-block bounds as kept now, from a state saved earlier: none kept (max |state|
    of each block), or one for all blocks (that one for each)."""
    if state is None:
        return None
    if bound is None:
        return each_max_abs(state)
    if not isinstance(bound, (tuple, list)):
        return (float(bound),) * len(state)
    if len(bound) != len(state):
        raise ValueError(f"a state bound for {len(bound)} block(s) beside a state of {len(state)} block(s)")
    return tuple(float(b) for b in bound)


def loaded_average(owner: Aggregator, state: dict[str, Any], key: str, bound_key: str) -> dict[str, Any]:
    """A running average's per-block state as loaded (MoCo's Y, DB-MTL's B, under `key`): saved in
    half precision before it was kept in float32, widened (exact); the gradients' dtypes checked,
    or, saved before they were kept, what the state tells of them (`saved_gradient_dtypes`); its
    bound under `bound_key` kept block by block (`block_bounds`)."""
    saved = state[key]
    if "_grad_dtypes" in state:
        dtypes = kept_gradient_dtypes(owner, state["_grad_dtypes"], saved)
    else:
        dtypes = saved_gradient_dtypes(saved)
    rows = widened_state(saved)
    return {**state, key: rows, bound_key: block_bounds(state.get(bound_key), rows), "_grad_dtypes": dtypes}


def decayed(rate: float, step: int, power: float) -> float:
    """rate / step^power (a step-size schedule); 0 where step^power overflows a float (a power
    of 2000, say), instead of an OverflowError or an exact integer power that never ends."""
    try:
        return rate / float(step) ** power
    except OverflowError:
        return 0.0
