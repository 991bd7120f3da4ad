"""Input coercion shared by the measures."""

from __future__ import annotations

import torch


def real_tensor(x, name: str, expected: str) -> torch.Tensor:
    """`x` as a real tensor (non-tensors converted to float64), or ValueError naming `name`."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be {expected}; got {type(x).__name__}") from exc
    if x.is_complex():
        raise ValueError(f"{name} must be real; got dtype {x.dtype}")
    return x
