"""The embedded default benchmark: procedural scenes of overlapping real handwritten digits.

Source glyphs are the 1,797 8x8 handwritten digits bundled with scikit-learn
(`sklearn.datasets.load_digits`, the UCI "optdigits" test set, read from inside the installed
package; nothing is downloaded). Each scene is a pure function of (seed, split, index): the scene
RNG is `numpy.random.default_rng(SeedSequence([seed, split_code, index]))`, never the global RNG,
so any item can be regenerated alone, in any worker, in any order.

Scene model (all lengths in pixels of a `size` x `size` image; default size 32, where digits are
8-22 px; 48 gives 11-33 px digits at ~2.5x the compute):
- A background plane with a slanted depth, d_bg(y) = far + tilt * (y/(size-1) - 0.5), far ~ U(3, 4),
  tilt ~ U(-0.5, 0.5), and a dim colour shaded by 2/d.
- `n ~ U{min_digits..max_digits}` digits. Digit i has a depth d_i ~ U(1.0, 2.2) (always in front of
  the background), a size s_i = round(0.6 * size * 1.0/d_i * U(0.85, 1.15)) clipped to [8, size]
  (perspective: nearer digits are larger), a uniform top-left corner keeping it inside the image,
  and a colour U(0.4, 1)^3 shaded by 1.2/d_i. The glyph a_i = bilinear resize of (8x8 image / 16) to
  s_i x s_i (align_corners=False), in [0, 1].
- Amodal mask of digit i: a_i >= 0.5 (MASK_THRESHOLD). Nearer digits occlude farther ones: the owner
  of a pixel is the nearest digit whose amodal mask covers it (background otherwise), and the visible
  mask of digit i is {owner == i}. Images are composited far to near with alpha = a_i.
- Soft pixels: anti-aliased stroke borders (SOFT_LOW < a_j < MASK_THRESHOLD) of a digit j that is
  nearer than the pixel's owner. There the image blends two surfaces, so the semantic and
  instance-offset targets are set to the ignore value (like CityScapes "void").
- Depth holes: with probability `hole_prob`, one rectangle (sides U(size/8, size/3)) of invalid
  depth (0), like missing stereo/sensor depth.
- Additive Gaussian pixel noise (std `noise_std`); the image is float32, roughly in [0, 1], not
  mean/std normalised.

Dense variant (`DigitsDense`, CityScapes-like keys):
    image    (3,H,W) float32
    semantic (H,W) int64: digit value 0..9 for visible digit pixels, BACKGROUND_CLASS = 10 for the
             background, IGNORE_INDEX = 250 on soft pixels. NUM_CLASSES = 11.
    depth    (1,H,W) float32: depth of the visible surface (digit or background plane), 0 = invalid
             (hole). The background is a valid surface, so 0 occurs only in holes.
    instance (2,H,W) float32: (dy, dx) = (y/(H-1), x/(W-1)) minus the mean of the same over the
             instance's non-soft visible pixels (Pylon's CityScapes target, channel order y, x);
             IGNORE_INDEX = 250 on background and soft pixels.

Instance variant (`DigitsInstances`, MetaGraspNet-like): a sample is
    {"image": (3,H,W) float32, "depth": (1,H,W) float32 (same values as the dense depth target,
     0 = invalid), "target": {...}} with target
    boxes          float32 (N,4) amodal box xyxy, x2/y2 exclusive (= last pixel + 1, so x2 - x1 is
                   the pixel width as in COCO's toBbox)
    labels         int64 (N,) all 1 (class_agnostic=True, the default, as UOAIS and the MetaGraspNet
                   loader) or digit + 1 in 1..10 (class_agnostic=False)
    visible_masks  uint8 (N,H,W);  amodal_masks uint8 (N,H,W);  visible ⊆ amodal
    occluded       int64 (N,) 1 iff |visible| < |amodal| (the MetaGraspNet loader flags UOAIS's
                   occluded_rate >= 0.05 instead; threshold occluded_rate to get that rule)
    occluded_rate  float32 (N,) 1 - |visible| / |amodal| (UOAIS "occluded_rate")
    image_id       int (the dataset index)
Instances are ordered near to far; digits that are fully hidden (empty visible mask) are dropped,
as the MetaGraspNet converter does. The nearest digit is never hidden, so N >= 1.
`collate_instances` batches samples as {"image": (B,3,H,W), "depth": (B,1,H,W), "targets": [dicts]}.

Splits: the 1,797 source glyphs are split once, by a fixed permutation (SPLIT_SEED), into disjoint
train and test pools (`test_fraction`, default 0.25); a scene draws its glyphs only from its split's
pool. The scene `seed` changes the scenes, never the pools.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

NUM_DIGITS = 10
BACKGROUND_CLASS = 10
NUM_CLASSES = 11
IGNORE_INDEX = 250
MASK_THRESHOLD = 0.5
SOFT_LOW = 0.25
SPLIT_SEED = 20240517
SPLITS = ("train", "test")
_SPLIT_CODE = {"train": 0, "test": 1}

DIGIT_DEPTH_RANGE = (1.0, 2.2)
BACKGROUND_DEPTH_RANGE = (3.0, 4.0)


@functools.lru_cache(maxsize=1)
def _load_glyphs() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    targets = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


def source_indices(split: str, test_fraction: float = 0.25) -> np.ndarray:
    """Indices into `load_digits()` of the glyphs a split may use (sorted; train and test disjoint)."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    _, targets = _load_glyphs()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(targets))
    n_test = int(round(test_fraction * len(targets)))
    chosen = perm[:n_test] if split == "test" else perm[n_test:]
    return np.sort(chosen)


@functools.lru_cache(maxsize=64)
def _resize_matrix(out: int, src: int = 8) -> np.ndarray:
    """(out, src) bilinear interpolation matrix, align_corners=False with edge clamping."""
    m = np.zeros((out, src))
    pos = (np.arange(out) + 0.5) * src / out - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    w = pos - lo
    m[np.arange(out), lo] += 1.0 - w
    m[np.arange(out), hi] += w
    m.setflags(write=False)
    return m


def render_glyph(glyph: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an 8x8 glyph in [0,1] to (size, size): R @ g @ R^T."""
    r = _resize_matrix(size, glyph.shape[0])
    return np.clip(r @ glyph @ r.T, 0.0, 1.0)


@dataclass(frozen=True)
class DigitScene:
    """One generated scene; per-digit arrays are ordered near to far (index 0 is the nearest)."""

    image: np.ndarray  # (3,H,W) float32
    depth: np.ndarray  # (H,W) float32, 0 = invalid
    digits: np.ndarray  # (n,) int64 digit values 0..9
    digit_depths: np.ndarray  # (n,) float64
    sources: np.ndarray  # (n,) int64 indices into load_digits()
    amodal: np.ndarray  # (n,H,W) bool
    owner: np.ndarray  # (H,W) int64: index of the visible digit, -1 = background
    soft: np.ndarray  # (H,W) bool: ambiguous anti-aliased pixels

    @property
    def visible(self) -> np.ndarray:
        """(n,H,W) bool visible masks: owner == i."""
        return self.owner[None] == np.arange(len(self.digits))[:, None, None]


def _place_digits(
    rng: np.random.Generator, depths: np.ndarray, jitter: np.ndarray, *, size: int, digit_scale: float
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Sides (nearer digits larger) and top-left corners (drawn from `rng`) of the digits' squares."""
    sides = np.clip(np.round(digit_scale * size / depths * jitter), 8, size).astype(int)
    corners = [(int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))) for s in sides]
    return sides, corners


def _render_alphas(
    images: np.ndarray, sources: np.ndarray, sides: np.ndarray, corners: list[tuple[int, int]], size: int
) -> np.ndarray:
    """(n,H,W) glyph alphas, each glyph resized into its square and zero elsewhere."""
    alphas = np.zeros((len(sides), size, size))
    for i, ((top, left), s) in enumerate(zip(corners, sides)):
        alphas[i, top : top + s, left : left + s] = render_glyph(images[sources[i]], s)
    return alphas


def _composite(
    image: np.ndarray, alphas: np.ndarray, amodal: np.ndarray, shade: Callable[[int], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the digits far to near over `image` (alpha = the glyph, colour `shade(i)`); returns the
    image, the visible owner of every pixel (-1 = background) and the soft pixels."""
    owner = np.full(image.shape[1:], -1, dtype=np.int64)
    soft = np.zeros(image.shape[1:], dtype=bool)
    for i in range(len(alphas) - 1, -1, -1):  # far to near: painter's algorithm
        a = alphas[i]
        image = image * (1.0 - a)[None] + shade(i) * a[None]
        owner[amodal[i]] = i
        soft[amodal[i]] = False
        soft[(a > SOFT_LOW) & ~amodal[i]] = True
    return image, owner, soft


def _draw_hole(rng: np.random.Generator, size: int, hole_prob: float) -> tuple[slice, slice] | None:
    """With probability `hole_prob`, the (rows, cols) of one invalid-depth rectangle; else None."""
    if not rng.random() < hole_prob:
        return None
    hh = int(rng.integers(max(1, size // 8), max(2, size // 3) + 1))
    ww = int(rng.integers(max(1, size // 8), max(2, size // 3) + 1))
    top = int(rng.integers(0, size - hh + 1))
    left = int(rng.integers(0, size - ww + 1))
    return slice(top, top + hh), slice(left, left + ww)


def _add_noise(rng: np.random.Generator, image: np.ndarray, noise_std: float) -> np.ndarray:
    if noise_std > 0:
        image = image + rng.normal(0.0, noise_std, size=image.shape)
    return image


def generate_scene(
    rng: np.random.Generator,
    pool: np.ndarray,
    *,
    size: int = 32,
    min_digits: int = 2,
    max_digits: int = 4,
    hole_prob: float = 0.5,
    noise_std: float = 0.03,
    digit_scale: float = 0.6,
) -> DigitScene:
    """Draw one scene from `rng` using glyphs from `pool` (indices into load_digits)."""
    images, targets = _load_glyphs()
    h = w = size
    yy = np.arange(h, dtype=np.float64)[:, None] / (h - 1)

    far = rng.uniform(*BACKGROUND_DEPTH_RANGE)
    tilt = rng.uniform(-0.5, 0.5)
    bg_depth = np.broadcast_to(far + tilt * (yy - 0.5), (h, w)).astype(np.float64)
    bg_colour = rng.uniform(0.05, 0.35, size=3)
    image = bg_colour[:, None, None] * (2.0 / bg_depth)[None]

    n = int(rng.integers(min_digits, max_digits + 1))
    depths = np.sort(rng.uniform(*DIGIT_DEPTH_RANGE, size=n))  # near to far
    sources = rng.choice(pool, size=n, replace=False)
    colours = rng.uniform(0.4, 1.0, size=(n, 3))
    jitter = rng.uniform(0.85, 1.15, size=n)
    sides, corners = _place_digits(rng, depths, jitter, size=size, digit_scale=digit_scale)

    alphas = _render_alphas(images, sources, sides, corners, size)
    amodal = alphas >= MASK_THRESHOLD
    image, owner, soft = _composite(image, alphas, amodal, lambda i: colours[i][:, None, None] * (1.2 / depths[i]))

    depth = np.where(owner >= 0, depths[np.maximum(owner, 0)], bg_depth)
    hole = _draw_hole(rng, size, hole_prob)
    if hole is not None:
        depth[hole] = 0.0
    image = _add_noise(rng, image, noise_std)

    return DigitScene(
        image=image.astype(np.float32),
        depth=depth.astype(np.float32),
        digits=targets[sources].astype(np.int64),
        digit_depths=depths,
        sources=sources.astype(np.int64),
        amodal=amodal,
        owner=owner,
        soft=soft,
    )


def dense_targets(scene: DigitScene) -> dict[str, torch.Tensor]:
    """CityScapes-like sample {image, semantic, depth, instance} of a scene (see module doc)."""
    h, w = scene.owner.shape
    semantic = np.full((h, w), BACKGROUND_CLASS, dtype=np.int64)
    fg = scene.owner >= 0
    semantic[fg] = scene.digits[scene.owner[fg]]
    semantic[scene.soft] = IGNORE_INDEX

    instance = np.full((2, h, w), float(IGNORE_INDEX), dtype=np.float32)
    ys = np.arange(h, dtype=np.float64)[:, None] / (h - 1)
    xs = np.arange(w, dtype=np.float64)[None, :] / (w - 1)
    ys = np.broadcast_to(ys, (h, w))
    xs = np.broadcast_to(xs, (h, w))
    for i in range(len(scene.digits)):
        m = (scene.owner == i) & ~scene.soft
        if not m.any():
            continue
        instance[0][m] = ys[m] - ys[m].mean()
        instance[1][m] = xs[m] - xs[m].mean()

    return {
        "image": torch.from_numpy(scene.image.copy()),
        "semantic": torch.from_numpy(semantic),
        "depth": torch.from_numpy(scene.depth.copy())[None],
        "instance": torch.from_numpy(instance),
    }


def instance_targets(scene: DigitScene, image_id: int, class_agnostic: bool = True) -> dict[str, Any]:
    """MetaGraspNet-like sample {image, depth, target} of a scene (see module doc)."""
    visible = scene.visible
    keep = np.flatnonzero(visible.reshape(len(visible), -1).any(axis=1))
    vis = visible[keep]
    amo = scene.amodal[keep]
    boxes = np.zeros((len(keep), 4), dtype=np.float32)
    for k in range(len(keep)):
        rows = np.flatnonzero(amo[k].any(axis=1))
        cols = np.flatnonzero(amo[k].any(axis=0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    vis_area = vis.reshape(len(keep), -1).sum(axis=1)
    amo_area = amo.reshape(len(keep), -1).sum(axis=1)
    labels = np.ones(len(keep), dtype=np.int64) if class_agnostic else scene.digits[keep] + 1
    target = {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "visible_masks": torch.from_numpy(vis.astype(np.uint8)),
        "amodal_masks": torch.from_numpy(amo.astype(np.uint8)),
        "occluded": torch.from_numpy((vis_area < amo_area).astype(np.int64)),
        "occluded_rate": torch.from_numpy((1.0 - vis_area / amo_area).astype(np.float32)),
        "image_id": int(image_id),
    }
    return {
        "image": torch.from_numpy(scene.image.copy()),
        "depth": torch.from_numpy(scene.depth.copy())[None],
        "target": target,
    }


class DigitScenes(Dataset):
    """Base dataset: scene `index` is generated from SeedSequence([seed, split_code, index]).

    Parameters: split "train"/"test"; length (number of scenes); seed (int >= 0); size (image side,
    16..256, default 32); min_digits/max_digits per scene; hole_prob (probability of one invalid-depth
    rectangle); noise_std (image noise); test_fraction (share of source glyphs in the test pool).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        length: int = 1000,
        seed: int = 0,
        size: int = 32,
        min_digits: int = 2,
        max_digits: int = 4,
        hole_prob: float = 0.5,
        noise_std: float = 0.03,
        test_fraction: float = 0.25,
        digit_scale: float = 0.6,
    ):
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not isinstance(size, (int, np.integer)) or not 16 <= size <= 256:
            raise ValueError(f"size must be an int in [16, 256], got {size!r}")
        if not (isinstance(min_digits, (int, np.integer)) and isinstance(max_digits, (int, np.integer))) or not (
            1 <= min_digits <= max_digits <= 8
        ):
            raise ValueError(f"need 1 <= min_digits <= max_digits <= 8, got {min_digits!r}, {max_digits!r}")
        if not 0.0 <= hole_prob <= 1.0:
            raise ValueError(f"hole_prob must be in [0, 1], got {hole_prob!r}")
        if not noise_std >= 0.0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.split = split
        self.length = int(length)
        self.seed = int(seed)
        self.size = int(size)
        self.min_digits = int(min_digits)
        self.max_digits = int(max_digits)
        self.hole_prob = float(hole_prob)
        self.noise_std = float(noise_std)
        self.test_fraction = float(test_fraction)
        self.digit_scale = float(digit_scale)
        self.pool = source_indices(split, test_fraction)

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"{type(self).__name__} index must be an int, got {type(index).__name__}")
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"{type(self).__name__} index {index} out of range for length {self.length}")
        return int(index)

    def rng(self, index: int) -> np.random.Generator:
        """The scene RNG of item `index` (explicitly seeded, independent of the global RNG)."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_CODE[self.split], self._index(index)]))

    _generate_scene = staticmethod(generate_scene)  # a subclass with other scenes names its generator here

    def scene(self, index: int) -> DigitScene:
        return self._generate_scene(
            self.rng(index),
            self.pool,
            size=self.size,
            min_digits=self.min_digits,
            max_digits=self.max_digits,
            hole_prob=self.hole_prob,
            noise_std=self.noise_std,
            digit_scale=self.digit_scale,
        )


class DigitsDense(DigitScenes):
    """Dense variant: items are {image, semantic, depth, instance} (CityScapes batch keys);
    the default collate gives the CityScapes batch contract."""

    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return dense_targets(self.scene(index))


class DigitsInstances(DigitScenes):
    """Instance variant: items are {image, depth, target} (MetaGraspNet-style target dict);
    batch with `collate_instances`."""

    def __init__(self, split: str = "train", *, class_agnostic: bool = True, **kwargs: Any):
        super().__init__(split, **kwargs)
        self.class_agnostic = bool(class_agnostic)
        self.num_classes = 1 if self.class_agnostic else NUM_DIGITS

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._index(index)
        return instance_targets(self.scene(index), image_id=index, class_agnostic=self.class_agnostic)


def collate_instances(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and depths; keep per-image targets as a list."""
    if not samples:
        raise ValueError("collate_instances got an empty list of samples")
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "depth": torch.stack([s["depth"] for s in samples]),
        "targets": [s["target"] for s in samples],
    }


__all__ = [
    "NUM_CLASSES",
    "NUM_DIGITS",
    "BACKGROUND_CLASS",
    "IGNORE_INDEX",
    "DigitScene",
    "DigitScenes",
    "DigitsDense",
    "DigitsInstances",
    "collate_instances",
    "dense_targets",
    "generate_scene",
    "instance_targets",
    "render_glyph",
    "source_indices",
]
