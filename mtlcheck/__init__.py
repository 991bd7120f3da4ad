"""mtlcheck: reference implementation and conformance suite for multi-task-learning optimization."""

__version__ = "0.1.0"

# the two gradient levels: with respect to the shared parameters θ_sh, or to the shared representation Z
LEVELS = ("parameter", "feature")
