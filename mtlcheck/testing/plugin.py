"""The mtlcheck pytest plugin, registered through the `pytest11` entry point in every pytest
session of an environment where mtlcheck is installed, so it adds only what a kit user needs:

  --mtlcheck-aggregator NAME|pkg.mod:Class   aggregators the `aggregator_check` fixture runs
                                             over (repeatable; env MTLCHECK_AGGREGATOR, comma
                                             separated; default: every registered one; aliases
                                             such as mgda_ub are accepted)
  marker `conformance`                       set on every `aggregator_check` item

The `aggregator_check` fixture parametrizes a test over every (selected aggregator and its
built-in variants × applicable conformance check). Nothing is imported (torch included) unless a
test requests that fixture. The project's own test options (--runslow, --budget, GPU pinning, …)
live in its suites/conftest.py, not here.
"""

from __future__ import annotations

import os

import pytest

OPTION = "--mtlcheck-aggregator"


def pytest_addoption(parser):
    group = parser.getgroup("mtlcheck", "mtlcheck conformance kit")
    group.addoption(
        OPTION,
        action="append",
        default=[],
        dest="mtlcheck_aggregator",
        metavar="NAME",
        help="aggregator for the `aggregator_check` fixture: a registered name, an alias (mgda_ub) or "
        "pkg.module:Class (repeatable; env MTLCHECK_AGGREGATOR)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "conformance: an mtlcheck aggregator conformance check")


def selected_aggregators(config) -> list[str]:
    chosen = list(config.getoption("mtlcheck_aggregator") or [])
    env = os.environ.get("MTLCHECK_AGGREGATOR")
    if not chosen and env:
        chosen = [s for s in env.split(",") if s]
    if chosen:
        return chosen
    from mtlcheck.aggregators import list_aggregators

    return list_aggregators()


def pytest_generate_tests(metafunc):
    if "aggregator_check" not in metafunc.fixturenames:
        return
    from mtlcheck.testing.kit import builtin_variants, iter_checks, resolve_aggregator

    factories = []
    for name in selected_aggregators(metafunc.config):
        factories.extend(builtin_variants(resolve_aggregator(name)))
    params = []
    for make, check, reason in iter_checks(factories):
        marks = [pytest.mark.conformance]
        if reason:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param((make, check), marks=marks, id=f"{make.__mtlcheck_repr__}-{check.__name__}"))
    metafunc.parametrize("aggregator_check", params)
