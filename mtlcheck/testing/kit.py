"""Running the conformance checks: a pytest decorator and a plain-Python runner.

    from mtlcheck.testing import parametrize_with_checks
    @parametrize_with_checks([MyAggregator, lambda: MyAggregator(c=2.0)])
    def test_conformance(aggregator, check):
        check(aggregator)

    from mtlcheck.testing import check_aggregator
    records = check_aggregator(MyAggregator)      # raises on the first failure by default

Known failures of built-ins (`EXPECTED_FAILURES`) and their extra parameter settings
(`BUILTIN_VARIANTS`) live beside them, in `mtlcheck.aggregators._conformance`; third parties set
the class attribute `expected_failed_checks = {check name: reason}` (read by every entry point),
or pass `expected_failed_checks=` a dict or a callable(aggregator) returning one (strict xfails).
A check that does not apply to a class (a protocol hook it lacks) is reported as skipped.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from mtlcheck.aggregators import Aggregator
from mtlcheck.aggregators._conformance import BUILTIN_VARIANTS, EXPECTED_FAILURES
from mtlcheck.jacobian import NonFiniteOutputError
from mtlcheck.testing.check_inputs import NonFiniteOutput
from mtlcheck.testing.checks import CheckSkipped, aggregator_checks

Factory = Callable[[], Aggregator]


def builtin_variants(cls: type[Aggregator], config: dict[str, Any] | None = None) -> list[Factory]:
    """The instance of `cls` built with `config` (default: no arguments), plus, without a
    config, its BUILTIN_VARIANTS (the class itself, not a subclass or namesake), as factories."""
    if config:
        return [as_factory(lambda: cls(**config))]
    return [as_factory(cls)] + [as_factory(lambda cfg=cfg: cls(**cfg)) for cfg in BUILTIN_VARIANTS.get(cls, [])]


def resolve_aggregator(name: str) -> type[Aggregator]:
    """The class behind a registry name, a `run` alias (mgda_ub, aligned_mtl_ub: the same
    method, whose level only the engine sets) or pkg.module:Class."""
    from mtlcheck.aggregators import aggregator_class, level_aliases

    aliases = level_aliases()
    return aggregator_class(aliases[name][0] if name in aliases else name)


def as_factory(obj: Any) -> Factory:
    """A class, an instance or a factory → a zero-argument factory. An instance is rebuilt from
    its config per call (a fresh state), or deep-copied when its config does not round-trip
    (check_registry_and_config then reports why)."""
    if isinstance(obj, type) and issubclass(obj, Aggregator):
        factory = obj
    elif isinstance(obj, Aggregator):
        cls = type(obj)
        try:
            config = obj.get_config()
            cls.from_config(config)
        except Exception:  # noqa: BLE001 - reported by check_registry_and_config, not a crash here
            template = copy.deepcopy(obj)

            def factory():
                return copy.deepcopy(template)
        else:

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
    """The built-in expected failures of the class, updated with the method's own (its attribute
    `expected_failed_checks`, a dict {check name: reason}: the one seam that reaches every entry
    point, `mtlcheck check` and the pytest plugin included), then with the caller's: a dict (for
    every aggregator) or a callable(aggregator) -> such a dict."""
    agg = make()
    reasons = dict(EXPECTED_FAILURES.get(type(agg), {}))
    own = getattr(agg, "expected_failed_checks", None)
    if own is not None:
        if not isinstance(own, dict):
            raise TypeError(
                f"{type(agg).__name__}.expected_failed_checks must be a dict {{check name: reason}}, "
                f"got {type(own).__name__}"
            )
        reasons.update(own)
    if expected_failed_checks is None:
        return reasons
    given = expected_failed_checks(agg) if callable(expected_failed_checks) else expected_failed_checks
    if not isinstance(given, dict) and given is not None:
        raise TypeError(
            "expected_failed_checks must be a dict {check name: reason} or a callable(aggregator) returning one, "
            f"got {type(given).__name__}"
        )
    reasons.update(given or {})
    return reasons


def relaxations(make: Factory) -> str:
    """' (identity checks relaxed to solver_tol=S; ...)' when the method declares a solver_tol, for
    the summary line: a reader sees how far the checks were relaxed; else ''."""
    solver_tol = make().tags().solver_tol
    if solver_tol is None:
        return ""
    return (
        f" (identity and non-conflict checks relaxed to solver_tol={solver_tol:g}; float64 arithmetic judged by "
        "float32-valued outputs only)"
    )


_KIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the mtlcheck package
_LIBRARY_DIRS = tuple(
    {os.path.abspath(p) for p in (sysconfig.get_paths().get(k) for k in ("stdlib", "purelib", "platlib")) if p}
)


def user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """Where an exception came from in the user's code: the last frame of its traceback outside
    mtlcheck and outside installed libraries, else the last frame outside mtlcheck (a third-party
    library under test), else None (the kit's own assertion)."""
    frames = traceback.extract_tb(exc.__traceback__)
    outside = [f for f in frames if not os.path.abspath(f.filename).startswith(_KIT_DIR + os.sep)]
    own = [f for f in outside if not os.path.abspath(f.filename).startswith(_LIBRARY_DIRS)]
    chosen = own or outside
    return chosen[-1] if chosen else None


def where(exc: BaseException) -> str:
    """' (raised at FILE:LINE in FUNC: SOURCE)' for an exception from the user's code, else ''."""
    frame = user_frame(exc)
    if frame is None:
        return ""
    path = frame.filename
    try:
        path = os.path.relpath(path)
    except ValueError:  # another drive
        pass
    source = f": {frame.line.strip()}" if frame.line else ""
    return f" (raised at {path}:{frame.lineno} in {frame.name}{source})"


def _located(check):
    """The check, adding to an exception raised in the user's code a note with its file and line
    (pytest and tracebacks print notes)."""

    @functools.wraps(check)
    def run(make):
        try:
            return check(make)
        except CheckSkipped:
            raise
        except Exception as exc:
            at = where(exc)
            if at and sys.version_info >= (3, 11):
                exc.add_note(f"mtlcheck: the error comes from your code{at}")
            raise

    return run


def iter_checks(aggregators: Iterable[Any], expected_failed_checks=None):
    """(factory, check, reason-or-None) for every aggregator and applicable check."""
    for obj in aggregators:
        make = as_factory(obj)
        reasons = _expected(make, expected_failed_checks)
        for check in aggregator_checks(make):
            yield make, _located(check), reasons.get(check.__name__)


def parametrize_with_checks(aggregators: Iterable[Any], *, expected_failed_checks=None):
    """pytest.mark.parametrize("aggregator, check", ...) with ids 'Repr-check_name'; expected
    failures become strict xfails carrying their reason; a check that does not apply to the class
    is skipped with its reason when it runs."""
    import pytest

    params = []
    for make, check, reason in iter_checks(aggregators, expected_failed_checks):
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(make, check, marks=marks, id=f"{make.__mtlcheck_repr__}-{check.__name__}"))
    return pytest.mark.parametrize("aggregator, check", params)


def check_aggregator(
    aggregator: Any, *, on_fail: str | None = "raise", expected_failed_checks=None, checks: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Run every applicable check without pytest; returns one record per check:
    {"check", "status": passed|failed|xfail|xpass|skipped, "reason", "exception", "traceback", "note"}
    (for skipped, "reason" says why the check does not apply; "exception" is the error's last
    line, with the input case and the user's file and line when the error was raised in the
    user's code, and "traceback" the full traceback, for failed and xfail; "note", for a passed
    check, what it could not decide, e.g. cases a declared solver_tol leaves undecidable).
    on_fail: "raise" (first unexpected failure raises), "warn", or None (just record)."""
    if on_fail not in ("raise", "warn", None):
        raise ValueError(f"on_fail must be 'raise', 'warn' or None, got {on_fail!r}")
    wanted = set(checks) if checks is not None else None
    records = []
    first_nonfinite = None
    for make, check, reason in iter_checks([aggregator], expected_failed_checks):
        if wanted is not None and check.__name__ not in wanted:
            continue
        try:
            note = check(make)
        except CheckSkipped as exc:
            records.append(
                {
                    "check": check.__name__,
                    "status": "skipped",
                    "reason": str(exc),
                    "exception": None,
                    "traceback": None,
                    "note": None,
                }
            )
            continue
        except Exception as exc:  # noqa: BLE001 - recorded
            status = "xfail" if reason else "failed"
            message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            message = message.split("\nmtlcheck: the error comes from your code", 1)[0]  # the note, said once
            # one cause (the kit's NaN test, or the base class's output check): said in full by the
            # first check that met it
            if isinstance(exc, (NonFiniteOutput, NonFiniteOutputError)):
                if first_nonfinite is None:
                    first_nonfinite = check.__name__
                else:
                    message = f"NonFiniteOutput: the same non-finite output as in {first_nonfinite}"
            records.append(
                {
                    "check": check.__name__,
                    "status": status,
                    "reason": reason,
                    "exception": message + where(exc),
                    "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                    "note": None,
                }
            )
            if status == "failed":
                if on_fail == "raise":
                    raise
                if on_fail == "warn":
                    warnings.warn(f"{make.__mtlcheck_repr__} failed {check.__name__}: {exc}", stacklevel=2)
        else:
            records.append(
                {
                    "check": check.__name__,
                    "status": "xpass" if reason else "passed",
                    "reason": reason,
                    "exception": None,
                    "traceback": None,
                    "note": note if isinstance(note, str) else None,
                }
            )
    if wanted is not None:
        missing = wanted - {r["check"] for r in records}
        if missing:
            raise ValueError(f"checks {sorted(missing)} do not apply to {as_factory(aggregator).__mtlcheck_repr__}")
    return records
