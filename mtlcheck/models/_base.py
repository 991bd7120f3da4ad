"""The contract every multi-task model in mtlcheck follows.

The gradient engine (`mtlcheck.gradients`) splits a model into a shared encoder and task heads:

    z = model.encode(batch)              # shared representation Z: a Tensor or a tuple of Tensors
    losses = model.task_losses(z, batch) # {task name: scalar loss}, ordered as model.task_names

`shared_parameters()` are the parameters the per-task gradients are taken with respect to
(theta_sh in the paper); every other trainable parameter belongs to the heads. `task_losses`
must accept any tensor(s) with the structure and shapes `encode` returned (the engine feeds it a
detached copy of Z so that feature-level gradients dL_i/dZ are cheap), and must never call
`encode` itself.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

Representation = torch.Tensor | tuple[torch.Tensor, ...]


class MultiTaskModel(nn.Module):
    """Base class: a shared encoder plus heads that return one loss per task."""

    task_names: tuple[str, ...] = ()

    def encode(self, batch: Mapping[str, Any]) -> Representation:  # pragma: no cover - abstract
        raise NotImplementedError

    def task_losses(self, z: Representation, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    def predict(self, batch: Mapping[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        """Task outputs for evaluation (eval mode, no targets needed)."""
        raise NotImplementedError

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:  # pragma: no cover - abstract
        """Named shared parameters theta_sh, in a fixed order."""
        raise NotImplementedError

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every trainable parameter that is not shared."""
        shared = {id(p) for _, p in self.shared_parameters()}
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad and id(p) not in shared]


def as_tuple(z: Representation) -> tuple[torch.Tensor, ...]:
    """Z as a tuple of tensors (a single tensor becomes a 1-tuple)."""
    if isinstance(z, torch.Tensor):
        return (z,)
    if isinstance(z, Sequence) and all(isinstance(t, torch.Tensor) for t in z):
        return tuple(z)
    raise TypeError(f"encode() must return a Tensor or a tuple of Tensors, got {type(z).__name__}")
