"""Resizing and image normalisation shared by the dataset loaders.

Conventions (one choice, used everywhere):
- Label maps, id maps, masks and depth are resized with **nearest** neighbour, sampling the source
  pixel whose centre is closest ("half-pixel" rule: src = floor((dst + 0.5) * in / out), the same
  as PIL NEAREST and torch's "nearest-exact"). Values are copied, never blended, so ignore values
  and ids survive unchanged.
- Images and normal maps are resized with **bilinear** interpolation
  (`torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=True)`, which
  matches torchvision `Resize(antialias=True)` as used by the paper code, Pylon).
- Image normalisation modes (`normalize=`):
  "imagenet": RGB / 255, then (x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225) (torchvision's
  ImageNet statistics; fits ImageNet-pretrained ResNet18 weights). Default of every loader.
  "unit": RGB / 255 in [0, 1] (Pylon's NYU-v2 loader: `ToTensor()` only).
  "cityscapes_bgr": the quirk of the paper code and SamsungLabs/MTL on CityScapes: channels
  reversed to **BGR**, then minus the *RGB* means [123.675, 116.28, 103.53], then / 255.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CITYSCAPES_QUIRK_MEAN = (123.675, 116.28, 103.53)  # subtracted from B, G, R in that order (sic)
NORMALIZE_MODES = ("imagenet", "unit", "cityscapes_bgr")


def check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """Validate an output size (H, W) (or None for native resolution)."""
    if size is None:
        return None
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 2 for s in size):
        raise ValueError(f"size must be None or (H, W) with integers >= 2, got {size!r}")
    return int(size[0]), int(size[1])


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of nearest ("half-pixel") resizing from n_in to n_out samples."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def resize_nearest(arr: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes of `arr` (any dtype) to `size` = (H, W)."""
    if size is None or tuple(arr.shape[-2:]) == tuple(size):
        return arr
    rows = nearest_indices(arr.shape[-2], size[0])
    cols = nearest_indices(arr.shape[-1], size[1])
    return arr[..., rows[:, None], cols[None, :]]


def resize_bilinear(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear (antialiased) resize of a float tensor (C, H, W) to `size`."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def normalize_image(rgb255: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise a float RGB image (3, H, W) on the 0..255 scale; see the module docstring."""
    if mode == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=rgb255.dtype).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=rgb255.dtype).view(3, 1, 1)
        return (rgb255 / 255.0 - mean) / std
    if mode == "unit":
        return rgb255 / 255.0
    if mode == "cityscapes_bgr":
        mean = torch.tensor(CITYSCAPES_QUIRK_MEAN, dtype=rgb255.dtype).view(3, 1, 1)
        return (rgb255.flip(0) - mean) / 255.0
    raise ValueError(f"unknown image normalisation {mode!r}; expected one of {NORMALIZE_MODES}")


def check_normalize(mode: str) -> str:
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown image normalisation {mode!r}; expected one of {NORMALIZE_MODES}")
    return mode


def image_tensor(rgb: np.ndarray, size: tuple[int, int] | None, normalize: str) -> torch.Tensor:
    """(H, W, 3) RGB array on the 0..255 scale -> normalised float32 (3, H', W')."""
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1).contiguous()
    x = resize_bilinear(x, size)
    return normalize_image(x, normalize).to(torch.float32).contiguous()
