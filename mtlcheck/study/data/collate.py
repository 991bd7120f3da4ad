"""Batch collation for the loaders' sample dicts.

`collate_detection` (MetaGraspNet): tensors of equal shape are stacked, "target" stays a list of
per-image dicts (variable numbers of objects, as torchvision detection models expect), other
values become lists. `collate_dense` (CityScapes, NYU-v2): every tensor is stacked, strings become
lists. Both raise ValueError when tensors under one key differ in shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtlcheck.study.data.paper import PAPER_BATCH_SIZE, PAPER_IMAGE_SIZE

__all__ = ["collate_detection", "collate_dense", "PAPER_BATCH_SIZE", "PAPER_IMAGE_SIZE"]


def _stack(key: str, values: list) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(f"cannot stack {key!r}: samples have shapes {sorted(shapes)}")
        return torch.stack(values)
    return list(values)


def _check(samples: Sequence[dict]) -> list[str]:
    if not samples:
        raise ValueError("cannot collate an empty batch")
    keys = list(samples[0])
    for i, s in enumerate(samples):
        if list(s) != keys:
            raise ValueError(f"sample {i} has keys {list(s)}; sample 0 has {keys}")
    return keys


def collate_detection(samples: Sequence[dict]) -> dict:
    """[{"image", "depth", "target", ...}] -> {"image": (B,3,H,W), "depth": (B,1,H,W), "target": [dict]}."""
    keys = _check(samples)
    return {k: [s[k] for s in samples] if k == "target" else _stack(k, [s[k] for s in samples]) for k in keys}


def collate_dense(samples: Sequence[dict]) -> dict:
    """[{"image", "semantic", ...}] -> the same keys with stacked tensors and listed strings."""
    keys = _check(samples)
    return {k: _stack(k, [s[k] for s in samples]) for k in keys}
