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
import pickle
import random
import types
from collections.abc import Iterator

import numpy as np
import torch

from mtlcheck.aggregators import Aggregator, AggregatorTags, ProjectionMethod
from mtlcheck.aggregators._registry import aggregator_class
from mtlcheck.jacobian import Jacobian, NonFiniteOutputError
from mtlcheck.testing import identities, samplers
from mtlcheck.testing.check_inputs import (
    DIM,
    RTOL,
    TASK_COUNTS,
    Check,
    CheckSkipped,
    Factory,
    bitwise_equal,
    checked_call,
    close_at,
    direction_of,
    on_case,
    protocol_hook,
    random_losses,
    raw_call,
    rng,
    subject_of,
    task_counts_of,
)
from mtlcheck.testing.numeric_checks import (
    check_autograd_contract,
    check_dtype_agreement,
    check_engine_levels,
    check_feature_level_equivalence,
    check_float64_arithmetic,
    check_method_identity,
    check_no_silent_fallback,
    check_second_order,
)


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
    agg, n = subject_of(make)
    tags = agg.tags()
    for dtype in (torch.float64, torch.float32):
        G = samplers.normal(n, DIM, rng()).to(dtype)
        out = checked_call(make(), G)
        assert out.direction.shape == (DIM,), f"{agg!r}: direction shape {tuple(out.direction.shape)} != ({DIM},)"
        assert out.direction.dtype == dtype, f"{agg!r}: direction dtype {out.direction.dtype} != G's {dtype}"
        assert out.direction.device == G.device, f"{agg!r}: direction left G's device"
        if tags.weighted:
            assert out.weights is not None and out.weights.shape == (n,), f"{agg!r}: weights must have shape ({n},)"
    G = samplers.normal(n, DIM, rng())
    bad_inputs = {
        "1-D G": (torch.ones(DIM, dtype=torch.float64), random_losses(n)),
        "3-D G": (torch.ones(n, DIM, 1, dtype=torch.float64), random_losses(n)),
        "T=0": (torch.ones(0, DIM, dtype=torch.float64), torch.ones(0, dtype=torch.float64)),
        "NaN in G": (torch.full((n, DIM), float("nan"), dtype=torch.float64), random_losses(n)),
        "wrong number of losses": (G, random_losses(n + 1)),
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
    for n in task_counts_of(agg):
        for name, G in samplers.hard_inputs(n, DIM, rng(n)).items():
            try:
                with on_case(f"{name} (T={n})"):
                    out = raw_call(make(), G)
            except NonFiniteOutputError as exc:  # the base class's own output check met it
                raise AssertionError(f"{agg!r}: non-finite {exc.what} on {name} (T={n}) ({exc})") from None
            assert torch.isfinite(out.direction).all(), f"{agg!r}: non-finite direction on {name} (T={n})"
            if out.weights is not None:
                assert torch.isfinite(out.weights).all(), f"{agg!r}: non-finite weights on {name} (T={n})"


def check_nonpositive_losses(make: Factory) -> None:
    """Methods reading losses, fed losses with a zero and with a negative entry (the other checks
    feed [0.5, 1.5]; a regression loss reaches 0, a shifted or a log-likelihood loss goes below):
    a ValueError (a typed refusal, naming the class) or a finite output, never NaN or inf and
    never another error."""
    agg, n = subject_of(make)
    G = samplers.conflicting(n, DIM, rng())
    base = random_losses(n)
    for what, value in (("a zero loss", 0.0), ("a negative loss", -0.5)):
        losses = base.clone()
        losses[0] = value
        case = f"{what} (losses {[round(float(v), 3) for v in losses]}, T={n})"
        try:
            with on_case(case):
                out = make()(G, losses)
        except ValueError:
            continue
        for part in ("direction", "weights"):
            value = getattr(out, part)
            assert value is None or bool(torch.isfinite(value).all()), (
                f"{agg!r}: non-finite {part} for {case}: {value.tolist()} (a method that needs positive losses "
                "raises ValueError for them)"
            )


def check_zero_input(make: Factory) -> None:
    """G = 0 gives exactly A(G) = 0."""
    agg, n = subject_of(make)
    out = checked_call(make(), torch.zeros(n, DIM, dtype=torch.float64))
    assert torch.equal(out.direction, torch.zeros(DIM, dtype=torch.float64)), (
        f"{agg!r}: A(0) = {out.direction.tolist()} is not exactly 0"
    )


def check_input_not_mutated(make: Factory) -> None:
    """G and the losses are bit-identical after the call."""
    agg, n = subject_of(make)
    G = samplers.conflicting(n, DIM, rng())
    losses = random_losses(n)
    G0, l0 = G.clone(), losses.clone()
    checked_call(agg, G, losses)
    assert torch.equal(G, G0), f"{agg!r} modified its input G"
    assert torch.equal(losses, l0), f"{agg!r} modified its input losses"


def check_no_global_rng(make: Factory) -> None:
    """torch, random and numpy global RNG states are unchanged by construction and calls."""
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    agg, n = subject_of(make)
    for step in range(3):
        checked_call(agg, samplers.conflicting(n, DIM, rng(step)))
    assert torch.equal(torch_state, torch.get_rng_state()), f"{agg!r} consumed the global torch RNG"
    assert py_state == random.getstate(), f"{agg!r} consumed Python's global random RNG"
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1]) and np_state[2:] == after[2:], (
        f"{agg!r} consumed numpy's global RNG"
    )


def _sequence(agg: Aggregator, n: int, steps: int = 5, seed: int = 0) -> list[torch.Tensor]:
    outs = []
    for k in range(steps):
        G = samplers.conflicting(n, DIM, rng(seed + k))
        out = checked_call(agg, G, random_losses(n, seed + k))
        outs.append(out.direction)
        if agg.tags().post_step_update:
            agg.after_step(random_losses(n, seed + k) * 0.9)
    return outs


def check_seed_determinism(make: Factory) -> None:
    """Two fresh instances fed the same 5-step sequence give bit-identical outputs."""
    agg, n = subject_of(make)
    a, b = _sequence(make(), n), _sequence(make(), n)
    for k, (x, y) in enumerate(zip(a, b)):
        assert bitwise_equal(x, y), f"{agg!r}: step {k} differs between two fresh instances with the same seed"


def check_stochastic_tag_truthful(make: Factory) -> None:
    """stochastic=True: some two seeds differ on a conflicting G (T=3); False: all seeds agree."""
    agg, n = subject_of(make)
    tags = agg.tags()
    G = samplers.conflicting(n, DIM, rng(7))
    outs = []
    for seed in range(8):
        seeded = make()
        seeded.seed = seed
        seeded.reset()  # re-seeds the generator from `seed`
        outs.append(direction_of(seeded, G))
    differs = any(not bitwise_equal(outs[0], o) for o in outs[1:])
    if tags.stochastic:
        assert differs, f"{agg!r} is tagged stochastic but 8 seeds gave identical outputs"
    else:
        assert not differs, f"{agg!r} is tagged deterministic but different seeds gave different outputs"


_MISSING = object()


def _same_value(a, b, seen: dict | None = None) -> bool:
    """Whether two attribute values are equal (tensors and arrays elementwise, NaN equal to NaN;
    objects without value equality, such as an nn.Module or another library's aggregator, by what
    they pickle to where their class says (`__getstate__`/`__reduce__`: a random.Random, an
    optimizer, a functools.partial), else by their attributes; bound methods by function and
    object; recursively: a deep copy of an unchanged one is the same value). A pair met again
    inside itself (a cycle) counts as equal, and so does an object that can be compared neither
    way: a hint that names an attribute must not name one that never changed."""
    if a is b:
        return True
    seen = {} if seen is None else seen
    if (id(a), id(b)) in seen:
        return True
    seen[(id(a), id(b))] = (a, b)  # kept alive: a freed temporary's id must not match a later pair
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and bitwise_equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() == b.keys():
            return all(_same_value(a[k], b[k], seen) for k in a)
        # keys without value equality (an optimizer's state is keyed by its parameters): in order
        return len(a) == len(b) and all(
            _same_value(ka, kb, seen) and _same_value(va, vb, seen) for (ka, va), (kb, vb) in zip(a.items(), b.items())
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y, seen) for x, y in zip(a, b))
    if isinstance(a, types.MethodType) and isinstance(b, types.MethodType):
        return a.__func__ is b.__func__ and _same_value(a.__self__, b.__self__, seen)
    if type(a) is type(b) and type(a).__eq__ is object.__eq__:  # no value equality of its own
        pickles = any(getattr(type(a), m) is not getattr(object, m) for m in ("__getstate__", "__reduce__"))
        attrs = getattr(a, "__dict__", None), getattr(b, "__dict__", None)  # (both: reading makes one)
        if not pickles and (attrs[0] or attrs[1]):
            return _same_value(*attrs, seen)
        try:
            return _same_value(a.__reduce_ex__(4)[1:], b.__reduce_ex__(4)[1:], seen)
        except Exception:  # noqa: BLE001 - cannot be compared: not named
            return True
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
        (samplers.normal(n, DIM, rng(200 + k)) * scale, random_losses(n, 200 + k))
        for k, scale in enumerate((1e-2, 3.0, 1e2, 0.5))
    ]


def check_stateless_idempotent(make: Factory) -> None:
    """Without declared state, the output on an input A is a function of A alone: A, then four
    other inputs, then A again on one instance (generator re-seeded before each A) equal A on a
    fresh instance. A failure names the attributes that changed across the calls."""
    agg, n = subject_of(make)
    tags = agg.tags()
    A, losses = samplers.conflicting(n, DIM, rng()), random_losses(n)
    before = _attributes(agg)
    first = direction_of(agg, A, losses)
    for G, other_losses in _other_inputs(n):
        checked_call(agg, G, other_losses)
        if tags.post_step_update:
            agg.after_step(other_losses * 0.9)
    agg.generator.manual_seed(agg.seed)
    again = direction_of(agg, A, losses)
    fresh = direction_of(make(), A, losses)
    changed = _undeclared_differences(agg, before)
    for what, got in (("its first call", first), ("after four other inputs", again)):
        if not bitwise_equal(got, fresh):
            raise AssertionError(
                f"{agg!r} is not tagged stateful but its output depends on earlier calls: on the same input, "
                f"{what} differs from a fresh instance{_state_hint(changed)} (declare tags(stateful=True) and "
                "list the state in _state_attrs, or keep none)"
            )


def check_reset(make: Factory) -> None:
    """After k steps on varied inputs and reset(), the next k outputs equal a fresh instance's; a
    failure names the attributes reset() left different from a fresh instance's."""
    agg, n = subject_of(make)
    _sequence(agg, n, seed=50)
    for G, losses in _other_inputs(n):
        checked_call(agg, G, losses)
    agg.reset()
    leftover = _undeclared_differences(agg, _attributes(make()))
    for k, (x, y) in enumerate(zip(_sequence(agg, n), _sequence(make(), n))):
        assert bitwise_equal(x, y), f"{agg!r}: after reset(), step {k} differs from a fresh instance" + (
            f"; reset() left attribute(s) {', '.join(leftover)} unlike a fresh instance's (not in _state_attrs)"
            if leftover
            else ""
        )


def check_state_roundtrip(make: Factory) -> None:
    """load_state_dict(state_dict()), deepcopy and pickle resume with identical next outputs."""
    agg, n = subject_of(make)
    _sequence(agg, n, seed=50)
    restored = make()
    restored.load_state_dict(agg.state_dict())
    clones = {"state_dict": restored, "deepcopy": copy.deepcopy(agg), "pickle": pickle.loads(pickle.dumps(agg))}
    expected = _sequence(agg, n, seed=80)
    for how, clone in clones.items():
        for k, (x, y) in enumerate(zip(_sequence(clone, n, seed=80), expected)):
            assert bitwise_equal(x, y), f"{agg!r}: after a {how} round trip, step {k} differs" + (
                f"; state_dict() misses attribute(s) {', '.join(missed)} (changed across calls, not in _state_attrs)"
                if how == "state_dict" and (missed := _undeclared_differences(restored, _attributes(agg)))
                else ""
            )


def check_weighted_consistency(make: Factory) -> None:
    """Weighted methods: direction == weights @ G."""
    agg = make()
    for n in task_counts_of(agg):
        G = samplers.conflicting(n, DIM, rng(n))
        out = checked_call(make(), G)
        assert out.weights is not None, f"{agg!r} is tagged weighted but returned no weights"
        expected = out.weights.to(G.dtype) @ G
        assert close_at(out.direction, expected, float(G.norm())), f"{agg!r}: direction != weights @ G (T={n})"


def check_single_task(make: Factory) -> None:
    """T = 1: the direction is parallel to g (and equals scale·g when the scale is declared)."""
    agg = make()
    if agg.tags().min_tasks > 1:
        return
    G = samplers.normal(1, DIM, rng())
    d = direction_of(make(), G)
    cos = float(torch.dot(d, G[0]) / (d.norm() * G[0].norm()))
    assert abs(cos - 1) < 1e-9, f"{agg!r}: for one task the direction is not parallel to g (cos={cos})"
    scale = agg.identical_rows_scale(1)
    if scale is not None:
        assert close_at(d, scale * G[0], float(G.norm())), f"{agg!r}: for one task expected {scale}·g"


def check_identical_rows(make: Factory) -> None:
    """G = 1 gᵀ gives c·g with c the declared scale (T for sum, 1 for mean), else parallel to g."""
    agg = make()
    for n in task_counts_of(agg):
        G = samplers.identical_rows(n, DIM, rng(n))
        g = G[0]
        d = direction_of(make(), G, torch.ones(n, dtype=torch.float64))
        cos = float(torch.dot(d, g) / (d.norm() * g.norm()))
        assert abs(cos - 1) < 1e-9, f"{agg!r}: identical rows (T={n}) but the direction is not parallel to g"
        scale = make().identical_rows_scale(n)
        if scale is not None:
            got = float(d.norm() / g.norm())
            assert close_at(d, scale * g, float(g.norm()) * n), (
                f"{agg!r}: identical rows (T={n}) gave {got:.6g}·g, but its tags declare {scale:.6g}·g"
            )


def check_permutation_equivariance(make: Factory) -> None:
    """At the initial state, A(PG) = A(G) and w(PG) = P w(G) for permutations P."""
    agg, n = subject_of(make)
    G = samplers.conflicting(n, DIM, rng())
    losses = random_losses(n)
    base = checked_call(make(), G, losses)
    for shift in range(1, n):
        perm = torch.roll(torch.arange(n), shift)
        out = checked_call(make(), G[perm], losses[perm])
        assert close_at(out.direction, base.direction, float(G.norm())), (
            f"{agg!r}: direction changes when tasks are permuted (a method that treats tasks differently by "
            "design, e.g. drawing its random weights task by task, declares tags(task_symmetric=False))"
        )
        if base.weights is not None:
            assert close_at(out.weights, base.weights[perm], float(base.weights.abs().max())), (
                f"{agg!r}: weights are not permuted with the tasks"
            )


def check_homogeneity(make: Factory) -> None:
    """A(cG) = c^k A(G) for c in {1e-3, 0.5, 7, 1e3}, with k = tags.homogeneity (losses fixed)."""
    agg, n = subject_of(make)
    k = agg.tags().homogeneity
    G = samplers.conflicting(n, DIM, rng())
    losses = random_losses(n)
    base = direction_of(make(), G, losses)
    for c in (1e-3, 0.5, 7.0, 1e3):
        got = direction_of(make(), c * G, losses)
        expected = c**k * base
        assert close_at(got, expected, float(expected.norm()), rtol=1e-5), (
            f"{agg!r}: A({c:g}·G) != {c:g}^{k}·A(G) (max error {float((got - expected).abs().max()):.3g})"
        )


def check_non_conflicting(make: Factory) -> None:
    """min_i ⟨g_i, A(G)⟩ >= −atol on pairwise-conflicting G: atol = 1e-6·‖G‖‖d‖, or, for a method
    declaring `tags().solver_tol` s, at least s·max_i‖g_i‖² (a solver stopped at duality gap
    s·max_i‖g_i‖² guarantees ⟨g_i, d⟩ ≥ ‖d‖² − gap ≥ −s·max_i‖g_i‖²). A declared s of at least
    the identities' ceiling (`identities.MAX_TOL`, 0.1) excuses conflicts as large as the ones the
    check is for, so it decides nothing: the check fails saying so."""
    agg = make()
    solver_tol = agg.tags().solver_tol
    assert solver_tol is None or solver_tol < identities.MAX_TOL, (
        f"{agg!r} cannot be held to non-conflict at its declared solver_tol={solver_tol:g}: it allows "
        f"⟨g_i, d⟩ down to −{solver_tol:g}·max_i‖g_i‖² (≥ {identities.MAX_TOL:g}, where a conflicting method passes)"
    )
    for n in TASK_COUNTS:
        for seed in range(3):
            G = samplers.conflicting(n, DIM, rng(seed))
            d = direction_of(make(), G)
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
        G = samplers.conflicting(n, DIM, rng(n))
        d = direction_of(make(), G)
        assert float(d.norm()) > 1e-3 * float(G.norm()), f"{agg!r}: zero direction off stationarity (T={n})"


def check_projection_identity_without_conflict(make: Factory) -> None:
    """Projection methods leave the gradients alone when no pair conflicts: Σ_i g_i for reduction
    "sum", Σ_i g_i / T for "mean", the direction of Σ_i g_i when the scale is not declared."""
    agg = make()
    for n in task_counts_of(agg):
        G = samplers.non_conflicting(n, DIM, rng(n))
        d = direction_of(make(), G)
        scale = agg.identical_rows_scale(n)
        if scale is None:
            cos = float(d @ G.sum(0) / (d.norm() * G.sum(0).norm()))
            assert abs(cos - 1) < 1e-9, f"{agg!r} changed the direction of non-conflicting gradients (T={n}, cos={cos})"
            continue
        expected = (scale / n) * G.sum(0)
        assert close_at(d, expected, float(expected.norm())), (
            f"{agg!r} changed non-conflicting gradients (T={n}): expected {scale / n:g}·Σ_i g_i "
            f"(reduction {agg.tags().reduction!r}), max error {float((d - expected).abs().max()):.3g}"
        )


def check_conflict_reduction(make: Factory) -> None:
    """Projection methods, T = 2: every surgered g_i' reaches its target, cos(g_i', g_j) >= target
    (0 for PCGrad, the EMA target for GradVac), checked at the first step and after 3 steps."""
    agg = make()
    surgery = protocol_hook(agg, "surgery", ProjectionMethod)
    if surgery is None:
        raise CheckSkipped(
            f"{type(agg).__name__} has no surgery(J) (mtlcheck.aggregators.ProjectionMethod): "
            "the per-pair targets cannot be checked (check_method_identity checks the output)"
        )
    for step in range(4):
        G = samplers.conflicting(2, DIM, rng(10 + step))
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
        checked_call(agg, G)


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------
def _yield_api_checks(tags: AggregatorTags) -> Iterator[Check]:
    """Registry, config and repr; the output's shapes and dtypes; bad inputs refused."""
    yield check_registry_and_config
    yield check_output_contract


def _yield_input_checks(tags: AggregatorTags) -> Iterator[Check]:
    """Hard and zero Jacobians (methods reading gradients); zero and negative losses (methods
    reading losses); inputs left unmodified."""
    if not tags.loss_only:
        yield check_finite_on_hard_inputs
        yield check_zero_input
    if "losses" in tags.inputs:
        yield check_nonpositive_losses
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
