"""Every registered aggregator (and the built-ins' parameter variants) against every conformance
check its tags call for. Select methods with --mtlcheck-aggregator NAME
(or an alias such as mgda_ub, or pkg.module:Class)."""


def test_conformance(aggregator_check):
    make, check = aggregator_check
    check(make)
