"""Multi-task models: the paper's three benchmark models and small models for CPU runs."""

from mtlcheck.models._base import MultiTaskModel, Representation, as_tuple, named_shared_parameters

__all__ = ["MultiTaskModel", "Representation", "as_tuple", "named_shared_parameters"]
