"""The conformance checks every aggregator must pass, generated from its tags.

Each check is a plain function `check_*(make)` taking a zero-argument factory that returns a
fresh aggregator, and raising AssertionError (with the aggregator and expectation named) on
failure. `aggregator_checks(make)` yields the checks that apply to `make().tags()`, like
scikit-learn's estimator checks: a check that cannot apply is never generated; the generator
chains one small `_yield_*` group per concern (API, inputs, randomness and state, declared
properties, back ends and engine), and a loss-only method gets each group's checks that need no
Jacobian. A check whose protocol hook the class does not provide (`ProjectionMethod.surgery`,
`SecondOrderMethod.penalty_term`), or that has nothing to test (no numerical back end reached),
raises `CheckSkipped` with the reason (pytest reports it as skipped).
Inputs are float64 and seeded; the default tolerance is 1e-6 relative to the input's scale.
"""

from __future__ import annotations

import copy
import inspect
import math
import pickle
import random
import unittest
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch

from mtlcheck import LEVELS
from mtlcheck.aggregators import Aggregator, AggregatorTags, ProjectionMethod, SecondOrderMethod
from mtlcheck.aggregators._registry import aggregator_class
from mtlcheck.jacobian import Jacobian
from mtlcheck.testing import faults, identities, samplers

Factory = Callable[[], Aggregator]
Check = Callable[[Factory], None]
RTOL = 1e-6
TASK_COUNTS = (2, 3, 5)
DIM = 12


class CheckSkipped(unittest.SkipTest):
    """The check does not apply (a missing protocol hook, nothing to test); carries the reason.
    A unittest.SkipTest, so pytest reports it as skipped."""


def _hook(agg: Aggregator, name: str, mixin: type):
    """The bound protocol method `name`, or None when the class does not implement it."""
    impl = getattr(type(agg), name, None)
    if impl is None or impl is getattr(mixin, name):
        return None
    return getattr(agg, name)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _losses(n: int, seed: int = 0) -> torch.Tensor:
    return 0.5 + torch.rand(n, generator=_gen(1000 + seed), dtype=torch.float64)


class NonFiniteOutput(AssertionError):
    """The method returned NaN or inf for a finite input: every check that meets it says so, in
    these words, instead of reporting what the NaN breaks (a disagreement, a conflict)."""


def _raw_call(agg: Aggregator, G: torch.Tensor, losses: torch.Tensor | None = None):
    return agg(G, _losses(G.shape[0]) if losses is None else losses)


def _call(agg: Aggregator, G: torch.Tensor, losses: torch.Tensor | None = None):
    """Call with losses when the method reads them (always pass them: G-only methods ignore); a
    non-finite direction or weights for a finite G raise NonFiniteOutput."""
    out = _raw_call(agg, G, losses)
    for what, value in (("direction", out.direction), ("weights", out.weights)):
        if value is not None and not bool(torch.isfinite(value).all()) and bool(torch.isfinite(G).all()):
            raise NonFiniteOutput(
                f"{agg!r} returned a non-finite {what} (NaN or inf) for a finite input G of shape {tuple(G.shape)}, "
                f"{G.dtype}: {value.tolist()}"
            )
    return out


def _direction(agg, G, losses=None) -> torch.Tensor:
    return _call(agg, G, losses).direction


def _close(a: torch.Tensor, b: torch.Tensor, scale: float, rtol: float = RTOL) -> bool:
    """Equal up to rtol·scale; NaN where the other has NaN counts as equal (a NaN output is reported
    once, as NaN, by check_output_contract / check_finite_on_hard_inputs, not as a disagreement)."""
    scale = scale if math.isfinite(scale) else 1.0
    return bool(torch.allclose(a, b, rtol=0.0, atol=rtol * max(scale, 1e-300), equal_nan=True))


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN at the same places counting as equal (see `_close`)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    return bool(torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)))


def _label(make: Factory) -> str:
    return repr(make())


def _subject(make: Factory) -> tuple[Aggregator, int]:
    """A fresh instance and the task count most checks use: max(min_tasks, 3)."""
    agg = make()
    return agg, max(agg.tags().min_tasks, 3)


def _task_counts(agg: Aggregator) -> list[int]:
    """The TASK_COUNTS the instance accepts (at least its min_tasks)."""
    return [n for n in TASK_COUNTS if n >= agg.tags().min_tasks]


# ---------------------------------------------------------------------------------------------
# API checks
# ---------------------------------------------------------------------------------------------
def check_registry_and_config(make: Factory) -> None:
    """Registry name resolves to the class; config round-trips; repr shows non-default params;
    construction does not touch the global RNG; tags() is an AggregatorTags."""
    state = torch.get_rng_state()
    agg = make()
    assert torch.equal(state, torch.get_rng_state()), f"constructing {agg!r} consumed the global torch RNG"
    cls = type(agg)
    if cls.__dict__.get("name"):  # registered under its own name (an inherited name is not a registration)
        assert aggregator_class(cls.name) is cls, f"{cls.__name__}.name={cls.name!r} does not resolve to the class"
    try:
        config = agg.get_config()
        again = cls.from_config(config)
        config_again = again.get_config()
    except Exception as exc:  # noqa: BLE001 - a failed round trip is a failed check
        raise AssertionError(
            f"{agg!r}: the config round trip from_config(get_config()) failed: {type(exc).__name__}: {exc}"
        ) from exc
    assert config_again == config, f"{agg!r}: from_config(get_config()) changed the config"
    assert repr(again) == repr(agg), f"repr differs after a config round trip: {again!r} vs {agg!r}"
    defaults = {p.name: p.default for p in inspect.signature(cls).parameters.values()}
    for name, value in config.items():
        default = defaults.get(name, inspect.Parameter.empty)
        if default is inspect.Parameter.empty or value != default:
            assert f"{name}=" in repr(agg), f"repr {agg!r} hides the non-default parameter {name}"
    assert isinstance(agg.tags(), AggregatorTags), f"{agg!r}.tags() must return an AggregatorTags"


def check_output_contract(make: Factory) -> None:
    """Direction (d,), same dtype/device as G; weights (T,) when weighted; bad shapes raise
    ValueError naming the class."""
    agg, n = _subject(make)
    tags = agg.tags()
    for dtype in (torch.float64, torch.float32):
        G = samplers.normal(n, DIM, _gen()).to(dtype)
        out = _call(make(), G)
        assert out.direction.shape == (DIM,), f"{agg!r}: direction shape {tuple(out.direction.shape)} != ({DIM},)"
        assert out.direction.dtype == dtype, f"{agg!r}: direction dtype {out.direction.dtype} != G's {dtype}"
        assert out.direction.device == G.device, f"{agg!r}: direction left G's device"
        if tags.weighted:
            assert out.weights is not None and out.weights.shape == (n,), f"{agg!r}: weights must have shape ({n},)"
    G = samplers.normal(n, DIM, _gen())
    bad_inputs = {
        "1-D G": (torch.ones(DIM, dtype=torch.float64), _losses(n)),
        "3-D G": (torch.ones(n, DIM, 1, dtype=torch.float64), _losses(n)),
        "T=0": (torch.ones(0, DIM, dtype=torch.float64), torch.ones(0, dtype=torch.float64)),
        "NaN in G": (torch.full((n, DIM), float("nan"), dtype=torch.float64), _losses(n)),
        "wrong number of losses": (G, _losses(n + 1)),
        "NaN loss": (G, torch.full((n,), float("nan"), dtype=torch.float64)),
    }
    for what, (bad_G, losses) in bad_inputs.items():
        try:
            make()(bad_G, losses)
        except ValueError as exc:
            assert type(agg).__name__ in str(exc), f"{agg!r}: the ValueError for {what} does not name the class: {exc}"
        else:
            raise AssertionError(f"{agg!r} accepted {what} without a ValueError")


def check_finite_on_hard_inputs(make: Factory) -> None:
    """Finite output for rank-deficient G, a zero row, opposite rows, and scales 1e-10..1e10."""
    agg = make()
    for n in _task_counts(agg):
        for name, G in samplers.hard_inputs(n, DIM, _gen(n)).items():
            out = _raw_call(make(), G)
            assert torch.isfinite(out.direction).all(), f"{agg!r}: non-finite direction on {name} (T={n})"
            if out.weights is not None:
                assert torch.isfinite(out.weights).all(), f"{agg!r}: non-finite weights on {name} (T={n})"


def check_zero_input(make: Factory) -> None:
    """G = 0 gives exactly A(G) = 0."""
    agg, n = _subject(make)
    out = _call(make(), torch.zeros(n, DIM, dtype=torch.float64))
    assert torch.equal(out.direction, torch.zeros(DIM, dtype=torch.float64)), (
        f"{agg!r}: A(0) = {out.direction.tolist()} is not exactly 0"
    )


def check_input_not_mutated(make: Factory) -> None:
    """G and the losses are bit-identical after the call."""
    agg, n = _subject(make)
    G = samplers.conflicting(n, DIM, _gen())
    losses = _losses(n)
    G0, l0 = G.clone(), losses.clone()
    _call(agg, G, losses)
    assert torch.equal(G, G0), f"{agg!r} modified its input G"
    assert torch.equal(losses, l0), f"{agg!r} modified its input losses"


def check_no_global_rng(make: Factory) -> None:
    """torch, random and numpy global RNG states are unchanged by construction and calls."""
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    agg, n = _subject(make)
    for step in range(3):
        _call(agg, samplers.conflicting(n, DIM, _gen(step)))
    assert torch.equal(torch_state, torch.get_rng_state()), f"{agg!r} consumed the global torch RNG"
    assert py_state == random.getstate(), f"{agg!r} consumed Python's global random RNG"
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1]) and np_state[2:] == after[2:], (
        f"{agg!r} consumed numpy's global RNG"
    )


def _sequence(agg: Aggregator, n: int, steps: int = 5, seed: int = 0) -> list[torch.Tensor]:
    outs = []
    for k in range(steps):
        G = samplers.conflicting(n, DIM, _gen(seed + k))
        out = _call(agg, G, _losses(n, seed + k))
        outs.append(out.direction)
        if agg.tags().post_step_update:
            agg.after_step(_losses(n, seed + k) * 0.9)
    return outs


def check_seed_determinism(make: Factory) -> None:
    """Two fresh instances fed the same 5-step sequence give bit-identical outputs."""
    agg, n = _subject(make)
    a, b = _sequence(make(), n), _sequence(make(), n)
    for k, (x, y) in enumerate(zip(a, b)):
        assert _identical(x, y), f"{agg!r}: step {k} differs between two fresh instances with the same seed"


def check_stochastic_tag_truthful(make: Factory) -> None:
    """stochastic=True: some two seeds differ on a conflicting G (T=3); False: all seeds agree."""
    agg, n = _subject(make)
    tags = agg.tags()
    G = samplers.conflicting(n, DIM, _gen(7))
    outs = []
    for seed in range(8):
        seeded = make()
        seeded.seed = seed
        seeded.reset()  # re-seeds the generator from `seed`
        outs.append(_direction(seeded, G))
    differs = any(not _identical(outs[0], o) for o in outs[1:])
    if tags.stochastic:
        assert differs, f"{agg!r} is tagged stochastic but 8 seeds gave identical outputs"
    else:
        assert not differs, f"{agg!r} is tagged deterministic but different seeds gave different outputs"


_MISSING = object()


def _same_value(a, b) -> bool:
    """Whether two attribute values are equal (tensors and arrays elementwise, NaN equal to NaN)."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and _identical(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values: compare what they print
        return repr(a) == repr(b)


def _declared_state(agg: Aggregator) -> set[str]:
    """The attributes a method declares as state (`_state_attrs`, or what its `_get_state` returns),
    plus the base class's generator and task count."""
    declared = set(getattr(agg, "_state_attrs", ()) or ()) | {"generator", "_n_tasks"}
    try:
        declared |= set(agg._get_state())
    except Exception:  # noqa: BLE001 - a broken _get_state is the round-trip check's to report
        pass
    return declared


def _attributes(agg: Aggregator) -> dict:
    """A copy of the instance's attributes (those that cannot be copied are compared by identity)."""
    out = {}
    for name, value in vars(agg).items():
        try:
            out[name] = copy.deepcopy(value)
        except Exception:  # noqa: BLE001
            out[name] = value
    return out


def _undeclared_differences(agg: Aggregator, reference: dict) -> list[str]:
    """Attributes of `agg` that differ from `reference` (an earlier snapshot, or a fresh instance's)
    and are not declared state."""
    now = vars(agg)
    declared = _declared_state(agg)
    names = (set(now) | set(reference)) - declared
    return sorted(n for n in names if not _same_value(now.get(n, _MISSING), reference.get(n, _MISSING)))


def _state_hint(names: list[str]) -> str:
    if not names:
        return ""
    return f"; attribute(s) {', '.join(names)} changed across the calls but are not in _state_attrs"


def _other_inputs(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs unlike the probe (other directions, scales 1e-2..1e2, other losses), so that state
    which settles on one repeated input still moves."""
    return [
        (samplers.normal(n, DIM, _gen(200 + k)) * scale, _losses(n, 200 + k))
        for k, scale in enumerate((1e-2, 3.0, 1e2, 0.5))
    ]


def check_stateless_idempotent(make: Factory) -> None:
    """Without declared state, the output on an input A is a function of A alone: A, then four
    other inputs, then A again on one instance (generator re-seeded before each A) equal A on a
    fresh instance. A failure names the attributes that changed across the calls."""
    agg, n = _subject(make)
    tags = agg.tags()
    A, losses = samplers.conflicting(n, DIM, _gen()), _losses(n)
    before = _attributes(agg)
    first = _direction(agg, A, losses)
    for G, other_losses in _other_inputs(n):
        _call(agg, G, other_losses)
        if tags.post_step_update:
            agg.after_step(other_losses * 0.9)
    agg.generator.manual_seed(agg.seed)
    again = _direction(agg, A, losses)
    fresh = _direction(make(), A, losses)
    changed = _undeclared_differences(agg, before)
    for what, got in (("its first call", first), ("after four other inputs", again)):
        if not _identical(got, fresh):
            raise AssertionError(
                f"{agg!r} is not tagged stateful but its output depends on earlier calls: on the same input, "
                f"{what} differs from a fresh instance{_state_hint(changed)} (declare tags(stateful=True) and "
                "list the state in _state_attrs, or keep none)"
            )


def check_reset(make: Factory) -> None:
    """After k steps on varied inputs and reset(), the next k outputs equal a fresh instance's; a
    failure names the attributes reset() left different from a fresh instance's."""
    agg, n = _subject(make)
    _sequence(agg, n, seed=50)
    for G, losses in _other_inputs(n):
        _call(agg, G, losses)
    agg.reset()
    leftover = _undeclared_differences(agg, _attributes(make()))
    for k, (x, y) in enumerate(zip(_sequence(agg, n), _sequence(make(), n))):
        assert _identical(x, y), f"{agg!r}: after reset(), step {k} differs from a fresh instance" + (
            f"; reset() left attribute(s) {', '.join(leftover)} unlike a fresh instance's (not in _state_attrs)"
            if leftover
            else ""
        )


def check_state_roundtrip(make: Factory) -> None:
    """load_state_dict(state_dict()), deepcopy and pickle resume with identical next outputs."""
    agg, n = _subject(make)
    _sequence(agg, n, seed=50)
    restored = make()
    restored.load_state_dict(agg.state_dict())
    clones = {"state_dict": restored, "deepcopy": copy.deepcopy(agg), "pickle": pickle.loads(pickle.dumps(agg))}
    expected = _sequence(agg, n, seed=80)
    for how, clone in clones.items():
        for k, (x, y) in enumerate(zip(_sequence(clone, n, seed=80), expected)):
            assert _identical(x, y), f"{agg!r}: after a {how} round trip, step {k} differs" + (
                f"; state_dict() misses attribute(s) {', '.join(missed)} (changed across calls, not in _state_attrs)"
                if how == "state_dict" and (missed := _undeclared_differences(restored, _attributes(agg)))
                else ""
            )


def check_weighted_consistency(make: Factory) -> None:
    """Weighted methods: direction == weights @ G."""
    agg = make()
    for n in _task_counts(agg):
        G = samplers.conflicting(n, DIM, _gen(n))
        out = _call(make(), G)
        assert out.weights is not None, f"{agg!r} is tagged weighted but returned no weights"
        expected = out.weights.to(G.dtype) @ G
        assert _close(out.direction, expected, float(G.norm())), f"{agg!r}: direction != weights @ G (T={n})"


def check_single_task(make: Factory) -> None:
    """T = 1: the direction is parallel to g (and equals scale·g when the scale is declared)."""
    agg = make()
    if agg.tags().min_tasks > 1:
        return
    G = samplers.normal(1, DIM, _gen())
    d = _direction(make(), G)
    cos = float(torch.dot(d, G[0]) / (d.norm() * G[0].norm()))
    assert abs(cos - 1) < 1e-9, f"{agg!r}: for one task the direction is not parallel to g (cos={cos})"
    scale = agg.identical_rows_scale(1)
    if scale is not None:
        assert _close(d, scale * G[0], float(G.norm())), f"{agg!r}: for one task expected {scale}·g"


def check_identical_rows(make: Factory) -> None:
    """G = 1 gᵀ gives c·g with c the declared scale (T for sum, 1 for mean), else parallel to g."""
    agg = make()
    for n in _task_counts(agg):
        G = samplers.identical_rows(n, DIM, _gen(n))
        g = G[0]
        d = _direction(make(), G, torch.ones(n, dtype=torch.float64))
        cos = float(torch.dot(d, g) / (d.norm() * g.norm()))
        assert abs(cos - 1) < 1e-9, f"{agg!r}: identical rows (T={n}) but the direction is not parallel to g"
        scale = make().identical_rows_scale(n)
        if scale is not None:
            got = float(d.norm() / g.norm())
            assert _close(d, scale * g, float(g.norm()) * n), (
                f"{agg!r}: identical rows (T={n}) gave {got:.6g}·g, but its tags declare {scale:.6g}·g"
            )


def check_permutation_equivariance(make: Factory) -> None:
    """At the initial state, A(PG) = A(G) and w(PG) = P w(G) for permutations P."""
    agg, n = _subject(make)
    G = samplers.conflicting(n, DIM, _gen())
    losses = _losses(n)
    base = _call(make(), G, losses)
    for shift in range(1, n):
        perm = torch.roll(torch.arange(n), shift)
        out = _call(make(), G[perm], losses[perm])
        assert _close(out.direction, base.direction, float(G.norm())), (
            f"{agg!r}: direction changes when tasks are permuted (a method that treats tasks differently by "
            "design, e.g. drawing its random weights task by task, declares tags(task_symmetric=False))"
        )
        if base.weights is not None:
            assert _close(out.weights, base.weights[perm], float(base.weights.abs().max())), (
                f"{agg!r}: weights are not permuted with the tasks"
            )


def check_homogeneity(make: Factory) -> None:
    """A(cG) = c^k A(G) for c in {1e-3, 0.5, 7, 1e3}, with k = tags.homogeneity (losses fixed)."""
    agg, n = _subject(make)
    k = agg.tags().homogeneity
    G = samplers.conflicting(n, DIM, _gen())
    losses = _losses(n)
    base = _direction(make(), G, losses)
    for c in (1e-3, 0.5, 7.0, 1e3):
        got = _direction(make(), c * G, losses)
        expected = c**k * base
        assert _close(got, expected, float(expected.norm()), rtol=1e-5), (
            f"{agg!r}: A({c:g}·G) != {c:g}^{k}·A(G) (max error {float((got - expected).abs().max()):.3g})"
        )


def check_non_conflicting(make: Factory) -> None:
    """min_i ⟨g_i, A(G)⟩ >= −atol on pairwise-conflicting G: atol = 1e-6·‖G‖‖d‖, or, for a method
    declaring `tags().solver_tol` s, at least s·max_i‖g_i‖² (a solver stopped at duality gap
    s·max_i‖g_i‖² guarantees ⟨g_i, d⟩ ≥ ‖d‖² − gap ≥ −s·max_i‖g_i‖²)."""
    agg = make()
    solver_tol = agg.tags().solver_tol
    for n in TASK_COUNTS:
        for seed in range(3):
            G = samplers.conflicting(n, DIM, _gen(seed))
            d = _direction(make(), G)
            dots = G @ d
            atol = RTOL * float(G.norm() * d.norm())
            if solver_tol is not None:
                atol = max(atol, solver_tol * float(G.norm(dim=1).max()) ** 2)
            assert float(dots.min()) >= -atol, (
                f"{agg!r}: conflicts with task {int(dots.argmin())} (⟨g_i, d⟩ = {float(dots.min()):.3g}, "
                f"tolerance {atol:.3g}, T={n})"
            )


def check_nonzero_off_stationarity(make: Factory) -> None:
    """Non-negative weightings give a non-zero direction when no v >= 0 cancels the gradients."""
    agg = make()
    for n in TASK_COUNTS:
        G = samplers.conflicting(n, DIM, _gen(n))
        d = _direction(make(), G)
        assert float(d.norm()) > 1e-3 * float(G.norm()), f"{agg!r}: zero direction off stationarity (T={n})"


def check_projection_identity_without_conflict(make: Factory) -> None:
    """Projection methods leave the gradients alone when no pair conflicts: Σ_i g_i for reduction
    "sum", Σ_i g_i / T for "mean", the direction of Σ_i g_i when the scale is not declared."""
    agg = make()
    for n in _task_counts(agg):
        G = samplers.non_conflicting(n, DIM, _gen(n))
        d = _direction(make(), G)
        scale = agg.identical_rows_scale(n)
        if scale is None:
            cos = float(d @ G.sum(0) / (d.norm() * G.sum(0).norm()))
            assert abs(cos - 1) < 1e-9, f"{agg!r} changed the direction of non-conflicting gradients (T={n}, cos={cos})"
            continue
        expected = (scale / n) * G.sum(0)
        assert _close(d, expected, float(expected.norm())), (
            f"{agg!r} changed non-conflicting gradients (T={n}): expected {scale / n:g}·Σ_i g_i "
            f"(reduction {agg.tags().reduction!r}), max error {float((d - expected).abs().max()):.3g}"
        )


def check_conflict_reduction(make: Factory) -> None:
    """Projection methods, T = 2: every surgered g_i' reaches its target, cos(g_i', g_j) >= target
    (0 for PCGrad, the EMA target for GradVac), checked at the first step and after 3 steps."""
    agg = make()
    surgery = _hook(agg, "surgery", ProjectionMethod)
    if surgery is None:
        raise CheckSkipped(
            f"{type(agg).__name__} has no surgery(J) (mtlcheck.aggregators.ProjectionMethod): "
            "the per-pair targets cannot be checked (check_method_identity checks the output)"
        )
    for step in range(4):
        G = samplers.conflicting(2, DIM, _gen(10 + step))
        J = Jacobian.from_matrix(G)
        if step in (0, 3):
            state = agg.state_dict()
            C, targets = surgery(J)
            agg.load_state_dict(state)
            C = C if C.ndim == 3 else C[None]
            targets = targets if targets.ndim == 3 else targets[None]
            for i, j in ((0, 1), (1, 0)):
                gi = C[0, i] @ G
                cos = float(gi @ G[j] / (gi.norm() * G[j].norm()))
                assert cos >= float(targets[0, i, j]) - 1e-6, (
                    f"{agg!r}: after surgery cos(g_{i}', g_{j}) = {cos:.4f} is below its target "
                    f"{float(targets[0, i, j]):.4f} (step {step})"
                )
        _call(agg, G)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(
        torch.allclose(a.double(), b.double(), rtol=1e-9, atol=1e-12 * float(b.abs().max()))
    )


def check_no_silent_fallback(make: Factory) -> None:
    """When a numerical back end the method uses fails in its own way (scipy.optimize returns an
    unsuccessful result, cvxpy raises its SolverError, numpy/scipy/torch linalg raise LinAlgError;
    `faults.py`), the method raises or warns (a warning of any category: SolverFallbackWarning,
    RuntimeWarning, ...; one it also issues without the failure does not count) — or
    returns the same result as without the failure. A different result without a word is a
    silent fallback. Back ends the method never reaches are not judged."""
    agg, n = _subject(make)
    losses = _losses(n)
    reached = set()
    # a symmetric input can be solved without the back end (Nash-MTL's Newton starts at the answer
    # when every pair has the same cosine), so a generic input follows the conflicting one
    for name, G in (("conflicting", samplers.conflicting(n, DIM, _gen())), ("normal", samplers.normal(n, DIM, _gen()))):
        reached |= _judge_backends(make, G, losses, name)
    if not reached:
        raise CheckSkipped(f"{agg!r} reached none of the numerical back ends {faults.BACKENDS} on T={n} inputs")


def _judge_backends(make: Factory, G: torch.Tensor, losses, name: str) -> set[str]:
    """The back ends the method reached on G; raises on a silent fallback."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        baseline = make()(G, losses)
    usual = {(w.category, str(w.message)) for w in caught}
    reached = set()
    backends = faults.available_backends()
    refs = faults.references(backends)
    for backend in backends:
        fresh = make()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with faults.failing_backend(backend, refs) as calls:
                try:
                    out = fresh(G, losses)
                except Exception:  # noqa: BLE001 - an error is the right answer
                    reached.add(backend)
                    continue
        if calls.count == 0:
            continue
        reached.add(backend)
        warned = [w for w in caught if (w.category, str(w.message)) not in usual]  # any category says it
        if warned or (_same(out.direction, baseline.direction) and _same(out.weights, baseline.weights)):
            continue
        change = float(
            (out.direction.double() - baseline.direction.double()).norm() / baseline.direction.double().norm()
        )
        raise AssertionError(
            f"{make()!r}: {backend} failed ({calls.count} call(s) got the planted failure) on the {name} input and the "
            f"method returned a different result (relative change {change:.3g}) without raising or warning: a silent "
            "fallback"
        )
    return reached


def check_autograd_contract(make: Factory) -> None:
    """If G requires grad, a first-order method returns a detached result."""
    agg, n = _subject(make)
    G = samplers.conflicting(n, DIM, _gen()).requires_grad_(True)
    out = _call(agg, G)
    assert not out.direction.requires_grad, f"{agg!r} returned a direction attached to G's graph"


def check_second_order(make: Factory) -> None:
    """Second-order methods (SecondOrderMethod.penalty_term): the engine's update minus the plain
    summed gradient Σ_i g_i is the gradient of the penalty. Checked against central finite
    differences of the penalty's VALUE along random directions, with the step and tolerance set
    by the precision the penalty is computed in (float64: h = 1e-5, 1e-5 relative; float32:
    h = 3e-3, 1e-2 relative), so a float32 penalty is not a false alarm. Fails when the penalty
    is not differentiated (no double backprop) or has no effect."""
    from mtlcheck.gradients import backward_step
    from mtlcheck.models.toy import ToyRegression

    agg = make()
    penalty_term = _hook(agg, "penalty_term", SecondOrderMethod)
    if penalty_term is None:
        raise CheckSkipped(
            f"{type(agg).__name__} is tagged second_order but has no penalty_term(blocks) "
            "(mtlcheck.aggregators.SecondOrderMethod)"
        )
    model = ToyRegression(n_tasks=3, in_features=4, hidden=5).double()
    batch = ToyRegression.make_batch(3, 6, 4, dtype=torch.float64)
    shared = [p for _, p in model.shared_parameters()]

    def penalty_value() -> torch.Tensor:
        z = model.encode(batch)
        L = torch.stack(list(model.task_losses(z, batch).values()))
        rows = [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(L[i], shared, retain_graph=True)])
            for i in range(len(L))
        ]
        with torch.no_grad():
            return penalty_term([torch.stack(rows)])

    model.zero_grad()
    backward_step(model, batch, make(), level="parameter")
    engine = torch.cat([p.grad.reshape(-1) for p in shared])
    z = model.encode(batch)
    plain = torch.autograd.grad(sum(model.task_losses(z, batch).values()), shared)
    plain = torch.cat([g.reshape(-1) for g in plain])
    applied = engine - plain  # what the engine applied as the penalty's gradient
    low_precision = penalty_value().dtype != torch.float64
    h, rtol = (3e-3, 1e-2) if low_precision else (1e-5, 1e-5)
    theta = torch.cat([p.detach().reshape(-1) for p in shared])

    def set_theta(v: torch.Tensor) -> None:
        with torch.no_grad():
            offset = 0
            for p in shared:
                p.copy_(v[offset : offset + p.numel()].reshape(p.shape))
                offset += p.numel()

    gen = _gen(5)
    worst, fd_scale = 0.0, 0.0
    for _ in range(4):
        v = torch.randn(theta.shape, generator=gen, dtype=torch.float64)
        v = v / v.norm()
        set_theta(theta + h * v)
        up = float(penalty_value())
        set_theta(theta - h * v)
        down = float(penalty_value())
        set_theta(theta)
        fd = (up - down) / (2 * h)
        fd_scale = max(fd_scale, abs(fd))
        worst = max(worst, abs(fd - float(applied @ v)))
    scale = max(fd_scale, float(applied.norm()), 1e-12)
    assert worst <= rtol * scale, (
        f"{agg!r}: the engine's update differs from Σ_i g_i + ∇penalty: directional derivatives of the penalty "
        f"(finite differences, {'float32' if low_precision else 'float64'} penalty) differ by {worst:.3g} "
        f"(tolerance {rtol:g} × {scale:.3g}) — is the penalty differentiated (double backprop)?"
    )
    assert float(applied.norm()) > 1e-8 * float(plain.norm()), (
        f"{agg!r}: the gradient equals the plain summed gradient; the penalty has no effect"
    )


def check_method_identity(make: Factory) -> None:
    """A method declaring `implements = "<name>"` satisfies that published method's defining
    property on hard inputs (T = 2..7, a dominant task, ill-conditioned and nearly collinear G,
    a conflicting pair): see `mtlcheck.testing.identities`."""
    agg = make()
    name = getattr(agg, "implements", None)
    known = identities.IDENTITIES
    assert name in known, f"{agg!r}: implements={name!r} is not one of {known}"
    found = identities.violations(name, make, _losses)
    hint = ""
    if agg.tags().solver_tol is None:
        hint = (
            "\n(an iterative solver stopped at a tolerance declares it, tags(solver_tol=...), and is held to that "
            "precision scaled by the case's conditioning: see mtlcheck.testing.identities)"
        )
    assert not found, (
        f"{agg!r} declares implements={name!r} but violates its defining property "
        f"({len(found)} case(s)):\n  " + "\n  ".join(found[:6]) + hint
    )


def check_dtype_agreement(make: Factory) -> None:
    """float32 and float64 inputs agree to 1e-4 relative (deterministic methods, same seed)."""
    agg, n = _subject(make)
    G = samplers.conflicting(n, DIM, _gen())
    d64 = _direction(make(), G)
    d32 = _direction(make(), G.float()).double()
    assert _close(d32, d64, float(d64.norm()), rtol=1e-4), f"{agg!r}: float32 and float64 disagree"


def check_float64_arithmetic(make: Factory) -> None:
    """The float64 path computes in float64: along a random direction V, the outputs at
    G, G + hV, G + 2hV (h = 1e-8 relative, fresh instances) change linearly, their second
    difference below 1e-3 of the first. Float64 arithmetic gives O(h·curvature) + O(ε/h) ≈ 1e-6
    (the built-ins: ≤ 1.2e-6); a float32 step inside (unit roundoff 6e-8, above h) turns the
    response into rounding noise of its own size (ratios 0.1-1). Failing needs both inputs (a kink
    of a piecewise method, crossed by chance, affects one). Not generated for methods declaring a
    solver_tol: their output is only as smooth as their solver."""
    agg, n = _subject(make)
    ratios = []
    for seed, G in ((0, samplers.conflicting(n, DIM, _gen())), (1, samplers.normal(n, DIM, _gen(1)))):
        V = torch.randn(G.shape, generator=_gen(300 + seed), dtype=torch.float64)
        V *= 1e-8 * float(G.norm()) / float(V.norm())
        losses = _losses(n)
        a0, a1, a2 = (_direction(make(), G + k * V, losses).double() for k in (0, 1, 2))
        first = float((a1 - a0).norm())
        if first == 0.0:  # no response at all: a float32 input rounding that swallowed h
            ratios.append(math.inf if float(a0.norm()) > 0 else 0.0)
            continue
        ratios.append(float((a2 - 2 * a1 + a0).norm()) / first)
    if min(ratios) > 1e-3:
        raise AssertionError(
            f"{agg!r}: the float64 path responds to a 1e-8 relative change of G like float32 arithmetic "
            f"(second difference / first difference = {', '.join(f'{r:.3g}' for r in ratios)}; float64 gives "
            "< 1e-3): part of it runs in float32 (a .float(), a float32 tensor or numpy array made inside), or an "
            "iterative solver stops at a tolerance above 1e-8 (then declare it: tags(solver_tol=...))"
        )


def check_feature_level_equivalence(make: Factory) -> None:
    """With an identity encoder (Z = θ, batch 1, θ > 0) the parameter-level and feature-level
    engine steps give the same update."""
    from mtlcheck.gradients import backward_step
    from mtlcheck.models.toy import IdentityEncoder

    agg, n = _subject(make)
    grads = {}
    for level in LEVELS:
        model = IdentityEncoder(n_tasks=n, dim=DIM)
        with torch.no_grad():
            model.theta.abs_()
        backward_step(model, {}, make(), level=level)
        grads[level] = model.theta.grad.reshape(-1)
    assert _close(grads["feature"], grads["parameter"], float(grads["parameter"].norm())), (
        f"{agg!r}: feature-level and parameter-level updates differ for an identity encoder"
    )


def _toy_step(make: Factory, level: str):
    from mtlcheck.gradients import backward_step
    from mtlcheck.models.toy import ToyRegression

    model = ToyRegression(n_tasks=3, in_features=4, hidden=6).double()
    batch = ToyRegression.make_batch(3, 5, 4, dtype=torch.float64)
    result = backward_step(model, batch, make(), level=level)
    return model, batch, result


def _per_task_rows(model, batch, wrt_features: bool):
    """(Z, Jacobian of the true per-task gradients, losses) computed independently of the engine."""
    z = model.encode(batch)
    losses = list(model.task_losses(z, batch).values())
    if wrt_features:
        rows = [torch.autograd.grad(L, [z], retain_graph=True) for L in losses]
        J = Jacobian.from_task_grads(rows, [z], ["z0"], level="feature", activations=[z])
    else:
        named = model.shared_parameters()
        params = [p for _, p in named]
        rows = [torch.autograd.grad(L, params, retain_graph=True) for L in losses]
        J = Jacobian.from_task_grads(rows, params, [n for n, _ in named])
    return z, J, torch.stack([L.detach() for L in losses])


def check_engine_levels(make: Factory) -> None:
    """The gradient engine applies the method faithfully at each gradient level on a toy model:
    shared gradients equal the method's direction on the true per-task gradients (parameter
    level) or its direction on ∇_Z L_i pushed through the encoder (feature level); heads get
    the unweighted sum for gradient methods and the weighted loss for loss-only methods;
    loss-only methods refuse the feature level."""
    agg = make()
    tags = agg.tags()
    model, batch, result = _toy_step(make, "parameter")
    shared = [p for _, p in model.shared_parameters()]
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    _, J, losses = _per_task_rows(model, batch, wrt_features=False)
    expected = make()(J, losses.double()).direction
    assert _close(got, expected, float(J.gram().trace()) ** 0.5, rtol=1e-9), (
        f"{agg!r}: parameter-level engine step != A(G)"
    )
    heads = [p for _, p in model.head_parameters()]
    z = model.encode(batch)
    L = torch.stack(list(model.task_losses(z, batch).values()))
    head_weights = result.weights.to(L.dtype) if tags.loss_only else torch.ones_like(L)
    head_expected = torch.autograd.grad((head_weights * L).sum(), heads)
    for p, g in zip(heads, head_expected):
        assert _close(p.grad, g, float(g.norm()) + 1e-12, rtol=1e-9), f"{agg!r}: head gradient convention violated"
    if tags.loss_only:
        try:
            _toy_step(make, "feature")
        except ValueError:
            return
        raise AssertionError(f"{agg!r} is loss-only but the engine accepted level='feature'")
    model, batch, result = _toy_step(make, "feature")
    z, J, losses = _per_task_rows(model, batch, wrt_features=True)
    shared = [p for _, p in model.shared_parameters()]
    direction = make()(J, losses.double()).direction.reshape(z.shape)
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(z, shared, direction)])
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    assert _close(got, expected, float(expected.norm()) + 1e-12, rtol=1e-9), (
        f"{agg!r}: feature-level engine step != A(∇_Z L)"
    )


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------
def _yield_api_checks(tags: AggregatorTags) -> Iterator[Check]:
    """Registry, config and repr; the output's shapes and dtypes; bad inputs refused."""
    yield check_registry_and_config
    yield check_output_contract


def _yield_input_checks(tags: AggregatorTags) -> Iterator[Check]:
    """Hard and zero Jacobians (methods reading gradients); inputs left unmodified."""
    if not tags.loss_only:
        yield check_finite_on_hard_inputs
        yield check_zero_input
    yield check_input_not_mutated


def _yield_randomness_and_state_checks(tags: AggregatorTags) -> Iterator[Check]:
    """Own generator only, seeded and truthful about `stochastic`; state that resets and
    round-trips, or none at all."""
    yield check_no_global_rng
    yield check_seed_determinism
    yield check_stochastic_tag_truthful
    yield from (check_reset, check_state_roundtrip) if tags.stateful else (check_stateless_idempotent,)


def _yield_property_checks(agg: Aggregator, tags: AggregatorTags) -> Iterator[Check]:
    """The properties the tags declare; the ones about the direction's geometry (single task,
    homogeneity, conflicts, projections, a published method's identity) for gradient methods."""
    grads = not tags.loss_only
    if tags.weighted:
        yield check_weighted_consistency
    if grads:
        yield check_single_task
    yield check_identical_rows
    if tags.task_symmetric:
        yield check_permutation_equivariance
    if not grads:
        return
    if tags.homogeneity is not None:
        yield check_homogeneity
    if tags.non_conflicting:
        yield check_non_conflicting
    if tags.nonneg_weights and tags.weighted:
        yield check_nonzero_off_stationarity
    if tags.family == "projection":
        yield check_projection_identity_without_conflict
        yield check_conflict_reduction
    if getattr(agg, "implements", None) is not None:
        yield check_method_identity


def _yield_backend_and_engine_checks(tags: AggregatorTags) -> Iterator[Check]:
    """Gradient methods: no silent fallback of a numerical back end, the autograd contract (or
    the second-order penalty's gradient), float32 against float64, and the feature level on an
    identity encoder; every method but a second-order one: the engine at each level."""
    grads = not tags.loss_only
    second_order = grads and tags.second_order
    if grads:
        yield check_no_silent_fallback
        yield check_second_order if second_order else check_autograd_contract
    if not second_order:
        yield check_engine_levels
    if grads:
        if not tags.stochastic:
            yield check_dtype_agreement
        if tags.solver_tol is None:
            yield check_float64_arithmetic
        yield check_feature_level_equivalence


def aggregator_checks(make: Factory) -> Iterator[Check]:
    """The checks that apply to `make()`, chosen by its tags (a loss-only method gets those that
    do not read a Jacobian)."""
    agg = make()
    tags = agg.tags()
    yield from _yield_api_checks(tags)
    yield from _yield_input_checks(tags)
    yield from _yield_randomness_and_state_checks(tags)
    yield from _yield_property_checks(agg, tags)
    yield from _yield_backend_and_engine_checks(tags)


def check_names(make: Factory) -> list[str]:
    return [c.__name__ for c in aggregator_checks(make)]
