# Intentionally near-empty. The suites' own options and set-up live in suites/conftest.py; the
# installed mtlcheck pytest plugin (pytest11 entry point, mtlcheck.testing.plugin) adds only
# --mtlcheck-aggregator and the conformance marker.
