"""The conformance checks of numerics: no silent fallback of a numerical back end, the autograd
contract, the second-order penalty, a published method's identity, float32 against float64, float64
arithmetic, the feature level and the engine at each level (`checks.aggregator_checks` chooses them)."""

from __future__ import annotations

import math
import warnings

import torch

from mtlcheck import LEVELS
from mtlcheck.aggregators import SecondOrderMethod
from mtlcheck.jacobian import Jacobian
from mtlcheck.testing import faults, identities, samplers
from mtlcheck.testing.check_inputs import (
    DIM,
    CheckSkipped,
    Factory,
    checked_call,
    close_at,
    direction_of,
    protocol_hook,
    random_losses,
    rng,
    subject_of,
)


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
    agg, n = subject_of(make)
    losses = random_losses(n)
    reached = set()
    # a symmetric input can be solved without the back end (Nash-MTL's Newton starts at the answer
    # when every pair has the same cosine), so a generic input follows the conflicting one
    for name, G in (
        ("conflicting", samplers.conflicting(n, DIM, rng())),
        ("normal", samplers.normal(n, DIM, rng())),
    ):
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
    agg, n = subject_of(make)
    G = samplers.conflicting(n, DIM, rng()).requires_grad_(True)
    out = checked_call(agg, G)
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
    penalty_term = protocol_hook(agg, "penalty_term", SecondOrderMethod)
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

    gen = rng(5)
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


def check_method_identity(make: Factory) -> str | None:
    """A method declaring `implements = "<name>"` satisfies that published method's defining
    property on hard inputs (T = 2..7, a dominant task, ill-conditioned and nearly collinear G,
    a conflicting pair): see `mtlcheck.testing.identities`. A condition that a declared solver_tol
    leaves undecidable on every case fails; one undecidable on some cases is returned as a note.
    The hint to declare a solver tolerance comes only with violations one could explain."""
    agg = make()
    name = getattr(agg, "implements", None)
    known = identities.IDENTITIES
    assert name in known, f"{agg!r}: implements={name!r} is not one of {known}"
    verdicts = identities.verdicts_of(name, make, random_losses)
    found = verdicts.verdict()
    solver_tol = agg.tags().solver_tol
    hint = ""
    if solver_tol is None and verdicts.found and verdicts.explainable:
        hint = (
            "\n(an iterative solver stopped at a tolerance declares it, tags(solver_tol=...), and is held to that "
            "precision scaled by the case's conditioning: see mtlcheck.testing.identities)"
        )
    at = "" if solver_tol is None else f" at its declared solver_tol={solver_tol:g}"
    what = "violates its defining property" if verdicts.found else "cannot be held to its defining property"
    assert not found, (
        f"{agg!r} declares implements={name!r} but {what}{at} ({len(found)} case(s)):\n  "
        + "\n  ".join(found[:6])
        + hint
    )
    return verdicts.note


def check_dtype_agreement(make: Factory) -> None:
    """float32 and float64 inputs agree to 1e-4 relative (deterministic methods, same seed)."""
    agg, n = subject_of(make)
    G = samplers.conflicting(n, DIM, rng())
    d64 = direction_of(make(), G)
    d32 = direction_of(make(), G.float()).double()
    assert close_at(d32, d64, float(d64.norm()), rtol=1e-4), f"{agg!r}: float32 and float64 disagree"


def _float32_valued(x: torch.Tensor | None) -> bool:
    """Whether every non-zero entry of a float64 output is a float32 number and one at least is not
    a short binary fraction (≤ 12 significant bits, like 1/2 or 3/4). A float64 computation lands
    on a float32 number with probability 2^-29 per entry; a result computed in float32 and cast
    back always does."""
    if x is None:
        return False
    if x.dtype != torch.float64:  # a float32 (or lower) result for float64 inputs, as it is
        return x.is_floating_point()
    x = x[x != 0]
    if x.numel() == 0 or not bool(torch.isfinite(x).all()) or not bool((x.float().double() == x).all()):
        return False
    mantissa, _ = torch.frexp(x)
    return bool(((mantissa * 2**12).round() != mantissa * 2**12).any())


def _float64_inputs(n: int) -> list[tuple[str, torch.Tensor]]:
    """A conflicting G, a normal G and a second conflicting G, where a projection, a min-norm or
    another constraint of the method is active (on the normal G it often is not: its output is
    then a smooth function of G even through a float32 step, e.g. UPGrad's weights 1/T)."""
    return [
        ("conflicting", samplers.conflicting(n, DIM, rng())),
        ("normal", samplers.normal(n, DIM, rng(1))),
        ("conflicting (another seed)", samplers.conflicting(n, DIM, rng(2))),
    ]


def _response_ratio(outs) -> float:
    """second difference / first difference of three outputs at G, G + hV, G + 2hV (inf for no
    response of a non-zero output: a float32 rounding swallowed h)."""
    a0, a1, a2 = (o.double() for o in outs)
    first = float((a1 - a0).norm())
    if first == 0.0:
        return math.inf if float(a0.norm()) > 0 else 0.0
    return float((a2 - 2 * a1 + a0).norm()) / first


def check_float64_arithmetic(make: Factory) -> None:
    """The float64 path computes in float64, judged two ways: (1) on three inputs
    (`_float64_inputs`), no output (direction or weights) is float32-valued (`_float32_valued`: a
    float32 result cast back; UPGrad solved in float32 has weights that a 1e-8 change of G leaves
    unchanged, so its direction responds linearly and only this finds it); (2) on the first two,
    along a random direction V, the directions at G, G + hV, G + 2hV (h = 1e-8 relative, fresh
    instances) change linearly, their second difference below 1e-3 of the first. Float64
    arithmetic gives O(h·curvature) + O(ε/h) ≈ 1e-6 (the built-ins: ≤ 1.2e-6); a float32 step
    inside (unit roundoff 6e-8, above h) turns the response into rounding noise of its own size
    (ratios 0.1-1). (2) fails on both inputs (a kink of a piecewise method, crossed by chance,
    affects one), and is not judged for a method declaring a solver_tol (its output is only as
    smooth as its solver: `mtlcheck check` says so on the summary line); (1) always is."""
    agg, n = subject_of(make)
    losses = random_losses(n)
    ratios = []
    for seed, (label, G) in enumerate(_float64_inputs(n)):
        V = torch.randn(G.shape, generator=rng(300 + seed), dtype=torch.float64)
        V *= 1e-8 * float(G.norm()) / float(V.norm())
        outs = [checked_call(make(), G + k * V, losses) for k in (0, 1, 2)]
        for what in ("direction", "weights"):
            if _float32_valued(getattr(outs[0], what)):
                raise AssertionError(
                    f"{agg!r}: the float64 path returns float32 numbers: every entry of its {what} on the {label} "
                    f"input (T={n}) is a float32 value ({getattr(outs[0], what).dtype}: "
                    f"{getattr(outs[0], what).tolist()}): part of "
                    "it runs in float32 (a .float(), a float32 tensor or numpy array made inside)"
                )
        if seed < 2:
            ratios.append(_response_ratio([o.direction for o in outs]))
    if agg.tags().solver_tol is None and min(ratios) > 1e-3:
        raise AssertionError(
            f"{agg!r}: the float64 path responds to a 1e-8 relative change of G like float32 arithmetic "
            f"(second difference / first difference = {', '.join(f'{r:.3g}' for r in ratios)} on the conflicting "
            "and normal inputs; float64 gives < 1e-3): part of it runs "
            "in float32 (a .float(), a float32 tensor or numpy array made inside), or an iterative solver stops at "
            "a tolerance above 1e-8 (then declare it: tags(solver_tol=...))"
        )


def check_feature_level_equivalence(make: Factory) -> None:
    """With an identity encoder (Z = θ, batch 1, θ > 0) the parameter-level and feature-level
    engine steps give the same update."""
    from mtlcheck.gradients import backward_step
    from mtlcheck.models.toy import IdentityEncoder

    agg, n = subject_of(make)
    grads = {}
    for level in LEVELS:
        model = IdentityEncoder(n_tasks=n, dim=DIM)
        with torch.no_grad():
            model.theta.abs_()
        backward_step(model, {}, make(), level=level)
        grads[level] = model.theta.grad.reshape(-1)
    assert close_at(grads["feature"], grads["parameter"], float(grads["parameter"].norm())), (
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
    assert close_at(got, expected, float(J.gram().trace()) ** 0.5, rtol=1e-9), (
        f"{agg!r}: parameter-level engine step != A(G)"
    )
    heads = [p for _, p in model.head_parameters()]
    z = model.encode(batch)
    L = torch.stack(list(model.task_losses(z, batch).values()))
    head_weights = result.weights.to(L.dtype) if tags.loss_only else torch.ones_like(L)
    head_expected = torch.autograd.grad((head_weights * L).sum(), heads)
    for p, g in zip(heads, head_expected):
        assert close_at(p.grad, g, float(g.norm()) + 1e-12, rtol=1e-9), f"{agg!r}: head gradient convention violated"
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
    assert close_at(got, expected, float(expected.norm()) + 1e-12, rtol=1e-9), (
        f"{agg!r}: feature-level engine step != A(∇_Z L)"
    )
