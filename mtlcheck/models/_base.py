"""The contract every multi-task model in mtlcheck follows.

The gradient engine (`mtlcheck.gradients`) splits a model into a shared encoder and task heads:

    z = model.encode(batch)              # shared representation Z: a Tensor or a tuple of Tensors
    losses = model.task_losses(z, batch) # {task name: scalar loss}, ordered as model.task_names

`shared_parameters()` returns the parameters the per-task gradients are taken with respect to
(theta_sh in the paper) as ``(name, parameter)`` pairs, like ``named_parameters()`` (a list of
bare parameters is refused with an error saying so); every other trainable parameter belongs to
the heads. `task_losses`
must accept any tensor(s) with the structure and shapes `encode` returned (the engine feeds it a
detached copy of Z so that feature-level gradients dL_i/dZ are cheap), and must never call
`encode` itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
        """Named shared parameters theta_sh, in a fixed order: ``(name, parameter)`` pairs, e.g.
        ``list(self.encoder.named_parameters())``."""
        raise NotImplementedError

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every trainable parameter that is not shared."""
        shared = {id(p) for _, p in named_shared_parameters(self)}
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad and id(p) not in shared]


def named_shared_parameters(model: MultiTaskModel) -> list[tuple[str, nn.Parameter]]:
    """`model.shared_parameters()` as a list, checked to be ``(name, parameter)`` pairs: a
    TypeError naming the model and the first bad item otherwise (a bare parameter would be
    unpacked along its first dimension)."""
    items = list(model.shared_parameters())
    for i, item in enumerate(items):
        if not (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], torch.Tensor)
        ):
            what = (
                f"a bare {type(item).__name__} of shape {tuple(item.shape)}"
                if isinstance(item, torch.Tensor)
                else f"{type(item).__name__} {item!r:.80}"
            )
            raise TypeError(
                f"{type(model).__name__}.shared_parameters() must yield (name, parameter) pairs like "
                f"named_parameters(); item {i} is {what}"
            )
    return items


def as_tuple(z: Representation) -> tuple[torch.Tensor, ...]:
    """Z as a tuple of tensors (a single tensor becomes a 1-tuple)."""
    if isinstance(z, torch.Tensor):
        return (z,)
    if isinstance(z, Sequence) and all(isinstance(t, torch.Tensor) for t in z):
        return tuple(z)
    raise TypeError(f"encode() must return a Tensor or a tuple of Tensors, got {type(z).__name__}")


def map_tensors(batch: Any, fn) -> Any:
    """`fn` applied to every tensor of a (nested dict / list / tuple) batch; other values kept."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch
