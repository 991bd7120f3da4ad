"""Running the conformance checks: a pytest decorator and a plain-Python runner.

    from mtlcheck.testing import parametrize_with_checks
    @parametrize_with_checks([MyAggregator, lambda: MyAggregator(c=2.0)])
    def test_conformance(aggregator, check):
        check(aggregator)

    from mtlcheck.testing import check_aggregator
    records = check_aggregator(MyAggregator)      # raises on the first failure by default

Known failures of built-ins live in `EXPECTED_FAILURES` (strict xfails with a reason);
third parties pass `expected_failed_checks=callable(aggregator) -> {check name: reason}`.
"""

from __future__ import annotations

import traceback
import warnings
from typing import Any, Callable, Iterable

from mtlcheck.aggregators import Aggregator
from mtlcheck.testing.checks import aggregator_checks

Factory = Callable[[], Aggregator]

EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "NashMTL": {
        "check_finite_on_hard_inputs": (
            "No Nash bargaining solution exists when a non-negative combination of the gradients vanishes "
            "(opposite rows g, -g): M α = 1/α has no positive solution, so NashMTL raises SolverError "
            "instead of returning a silent fallback (Navon et al. 2022, Eq. 3 assumes linearly independent gradients)."
        ),
    },
    "GradVacPublished": {
        "check_conflict_reduction": (
            "By design (danielmao2019/Pylon's GradVac): the published correction has '+ ρ√(1−φ̂²)' where Wang et al. "
            "Eq. 4 has '−', so at φ̂ = 0 a conflicting g_i is pushed further from g_j (cos falls below its target) "
            "instead of being lifted to φ̂."
        ),
        "check_projection_identity_without_conflict": (
            "By design (danielmao2019/Pylon's GradVac): the published GradVac averages the corrected gradients, so without "
            "conflict it returns Σ_i g_i / T, not Σ_i g_i (same direction, declared reduction 'mean')."
        ),
    },
}


# extra parameter settings of built-ins whose properties depend on parameters (sklearn's
# PER_ESTIMATOR_CHECK_PARAMS): each is checked in addition to the default instance
BUILTIN_VARIANTS: dict[str, list[dict[str, Any]]] = {
    "CAGrad": [dict(c=0.0), dict(c=1.0), dict(c=2.0, rescale=0), dict(c=0.4, rescale=2)],
    "MGDA": [dict(normalization="l2"), dict(normalization="loss"), dict(normalization="loss+")],
    "GradVac": [dict(group_type="parameter"), dict(beta=0.01)],
    "NashMTL": [dict(max_norm=None), dict(update_weights_every=3)],
    "AlignedMTL": [dict(scale_mode="median"), dict(scale_mode="rmse")],
    "IMTL": [dict(loss_balance=False)],
    "GradDrop": [dict(leak=0.5)],
    "GradNorm": [dict(alpha=0.5, norm_blocks="last")],
    "DWA": [dict(window=1)],
    "Uncertainty": [dict(init=-0.5)],
}


def builtin_variants(cls: type[Aggregator]) -> list[Factory]:
    """The default instance of `cls` plus its BUILTIN_VARIANTS, as factories."""
    configs = [{}] + BUILTIN_VARIANTS.get(cls.__name__, [])
    return [as_factory(cls(**cfg)) if cfg else as_factory(cls) for cfg in configs]


def as_factory(obj: Any) -> Factory:
    """A class, an instance (deep-copied per call) or a factory → a zero-argument factory."""
    if isinstance(obj, type) and issubclass(obj, Aggregator):
        factory = obj
    elif isinstance(obj, Aggregator):
        config, cls = obj.get_config(), type(obj)

        def factory():
            return cls.from_config(config)
    elif callable(obj):
        factory = obj
    else:
        raise TypeError(f"expected an Aggregator class, instance or factory, got {obj!r}")
    made = factory()
    if not isinstance(made, Aggregator):
        raise TypeError(f"{obj!r} did not produce an Aggregator (got {type(made).__name__})")
    factory.__mtlcheck_repr__ = repr(made)
    return factory


def _expected(make: Factory, expected_failed_checks) -> dict[str, str]:
    agg = make()
    reasons = dict(EXPECTED_FAILURES.get(type(agg).__name__, {}))
    if expected_failed_checks is not None:
        reasons.update(expected_failed_checks(agg) or {})
    return reasons


def iter_checks(aggregators: Iterable[Any], expected_failed_checks=None):
    """(factory, check, reason-or-None) for every aggregator and applicable check."""
    for obj in aggregators:
        make = as_factory(obj)
        reasons = _expected(make, expected_failed_checks)
        for check in aggregator_checks(make):
            yield make, check, reasons.get(check.__name__)


def parametrize_with_checks(aggregators: Iterable[Any], *, expected_failed_checks=None):
    """pytest.mark.parametrize("aggregator, check", ...) with ids 'Repr-check_name'; expected
    failures become strict xfails carrying their reason."""
    import pytest

    params = []
    for make, check, reason in iter_checks(aggregators, expected_failed_checks):
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(make, check, marks=marks, id=f"{make.__mtlcheck_repr__}-{check.__name__}"))
    return pytest.mark.parametrize("aggregator, check", params)


def check_aggregator(aggregator: Any, *, on_fail: str | None = "raise", expected_failed_checks=None,
                     checks: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Run every applicable check without pytest; returns one record per check:
    {"check", "status": passed|failed|xfail|xpass, "reason", "exception"}.
    on_fail: "raise" (first unexpected failure raises), "warn", or None (just record)."""
    if on_fail not in ("raise", "warn", None):
        raise ValueError(f"on_fail must be 'raise', 'warn' or None, got {on_fail!r}")
    wanted = set(checks) if checks is not None else None
    records = []
    for make, check, reason in iter_checks([aggregator], expected_failed_checks):
        if wanted is not None and check.__name__ not in wanted:
            continue
        try:
            check(make)
        except Exception as exc:  # noqa: BLE001 - recorded
            status = "xfail" if reason else "failed"
            records.append({"check": check.__name__, "status": status, "reason": reason,
                            "exception": "".join(traceback.format_exception_only(type(exc), exc)).strip()})
            if status == "failed":
                if on_fail == "raise":
                    raise
                if on_fail == "warn":
                    warnings.warn(f"{make.__mtlcheck_repr__} failed {check.__name__}: {exc}", stacklevel=2)
        else:
            records.append({"check": check.__name__, "status": "xpass" if reason else "passed", "reason": reason,
                            "exception": None})
    if wanted is not None:
        missing = wanted - {r["check"] for r in records}
        if missing:
            raise ValueError(f"checks {sorted(missing)} do not apply to {as_factory(aggregator).__mtlcheck_repr__}")
    return records
