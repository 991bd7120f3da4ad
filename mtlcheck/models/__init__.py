"""Multi-task models: the protocol the gradient engine drives (`MultiTaskModel`) and toy models for the kit.

The paper's benchmark models are part of the study: `mtlcheck.study.models`."""

from mtlcheck.models._base import MultiTaskModel, Representation, as_tuple, map_tensors, named_shared_parameters

__all__ = ["MultiTaskModel", "Representation", "as_tuple", "map_tensors", "named_shared_parameters"]
