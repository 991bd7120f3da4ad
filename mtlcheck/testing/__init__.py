"""The public conformance kit: check any aggregator, built-in or your own, against the
properties every MTL method must satisfy (see `checks.py`)."""

from mtlcheck.testing.checks import CheckSkipped, aggregator_checks, check_names
from mtlcheck.testing.kit import EXPECTED_FAILURES, as_factory, check_aggregator, parametrize_with_checks

__all__ = ["CheckSkipped", "EXPECTED_FAILURES", "aggregator_checks", "as_factory", "check_aggregator", "check_names",
           "parametrize_with_checks"]
