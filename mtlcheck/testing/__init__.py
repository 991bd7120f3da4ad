"""The public conformance kit: check any aggregator, built-in or your own, against the
properties every MTL method must satisfy (see `checks.py`). Names are imported on first use,
so the pytest plugin (`plugin.py`) loads without torch."""

from importlib import import_module

_EXPORTS = {
    "CheckSkipped": "mtlcheck.testing.checks",
    "aggregator_checks": "mtlcheck.testing.checks",
    "check_names": "mtlcheck.testing.checks",
    "EXPECTED_FAILURES": "mtlcheck.testing.kit",
    "as_factory": "mtlcheck.testing.kit",
    "check_aggregator": "mtlcheck.testing.kit",
    "parametrize_with_checks": "mtlcheck.testing.kit",
}
_MODULES = ("checks", "faults", "identities", "kit", "samplers", "snapshots")

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return import_module(f"mtlcheck.testing.{name}")
    raise AttributeError(f"module 'mtlcheck.testing' has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | set(_MODULES))
