"""mtlcheck: reference implementation and conformance suite for multi-task-learning optimization."""

__version__ = "0.1.0"
