"""The embedded NYU-v2 analog: digit scenes with depth, surface normals and semantic segmentation.

Built from the same source glyphs, splits and scene RNG as `mtlcheck.study.data.digits` (scene
`index` from `SeedSequence([seed, split_code, index])`; nothing is downloaded), but every surface
is smooth and non-flat so that its normals carry information, and the image is shaded by them:

- Geometry: an orthographic view of surfaces z = d(u, v) over image coordinates u = x / (W-1),
  v = y / (H-1) in [0, 1] (y down). The outward normal, towards the camera, of such a surface is
  n = (d_u, d_v, -1) / sqrt(d_u^2 + d_v^2 + 1), channel order (x, y, z): z points away from the
  camera, so valid normals have n_z < 0 (NYU-v2's camera-frame convention). Normals are computed
  from the analytic derivatives of the same d that fills the depth map, so they agree with the
  depth's finite differences away from surface borders.
- Background ("room corner"): a wall d = far + tx (u - 1/2) above a horizon row and a floor
  below it, d = wall - k (v - horizon), continuous at the crease; far ~ U(3.6, 4.4),
  tx ~ U(-0.6, 0.6), horizon ~ U(0.4, 0.7), k ~ U(0.8, 1.5). Semantic classes WALL_CLASS = 10
  and FLOOR_CLASS = 11 (NYU-v2's two most frequent classes are wall and floor).
- `n ~ U{min_digits..max_digits}` digits, each a smooth patch over its glyph's square:
  d_i = c_i + a_i du + b_i dv + q_i (du^2 + dv^2), with (du, dv) relative to the square's centre,
  centre depth c_i ~ U(1.0, 2.0) (always nearer than the background, whose depth is >= 2.4),
  tilts a_i, b_i ~ U(-0.25, 0.25), bulge q_i ~ U(0, 0.4) (convex towards the camera). Sizes,
  positions, glyph rendering, the amodal masks, the painter's order (by the centre depth), the
  visible owner and the soft (ambiguous anti-aliased) pixels are as in `digits`.
- Shading: Lambertian with a fixed light direction L = normalize(-0.5, -0.6, -1) (from the upper
  left, in front): colour = albedo x (0.25 + 0.75 max(0, n.L)) x attenuation, attenuation 1.2/c_i
  for a digit and 2.5/d for the background; albedo U(0.5, 1)^3 (digits), U(0.4, 0.8)^3 (background).
  Composited far to near with alpha = the glyph, then additive Gaussian noise (`noise_std`).
- Depth holes: with probability `hole_prob` one rectangle where depth AND normals are invalid
  (0 and the zero vector, as NYU-v2's normals computed from missing depth).

Items (`DigitsNYU`, the batch keys of `mtlcheck.study.data.nyuv2`):
    image    (3,H,W) float32, roughly in [0, 1]
    depth    (1,H,W) float32: depth of the visible surface, 0 = invalid (hole)
    normal   (3,H,W) float32: unit normal of the visible surface, zero vector = invalid (hole)
    semantic (H,W) int64: digit 0..9, WALL_CLASS 10, FLOOR_CLASS 11, IGNORE_INDEX 250 on soft
             pixels. NUM_CLASSES = 12.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mtlcheck.study.data.digits import (
    IGNORE_INDEX,
    MASK_THRESHOLD,
    DigitScene,
    DigitScenes,
    _add_noise,
    _composite,
    _draw_hole,
    _load_glyphs,
    _place_digits,
    _render_alphas,
)

WALL_CLASS = 10
FLOOR_CLASS = 11
NUM_CLASSES = 12
DIGIT_DEPTH_RANGE = (1.0, 2.0)
LIGHT = np.array([-0.5, -0.6, -1.0]) / np.linalg.norm([-0.5, -0.6, -1.0])


@dataclass(frozen=True)
class NYUScene(DigitScene):
    """A `DigitScene` with the normals of its visible surfaces and the background's floor mask."""

    normal: np.ndarray  # (3,H,W) float32, zero vector = invalid
    floor: np.ndarray  # (H,W) bool: background pixels on the floor (the rest of the background is wall)


def normals_from_gradient(d_u: np.ndarray, d_v: np.ndarray) -> np.ndarray:
    """(3,H,W) unit normals, towards the camera, of a surface z = d(u, v) with these derivatives."""
    n = np.stack([d_u, d_v, -np.ones_like(d_u)])
    return n / np.linalg.norm(n, axis=0, keepdims=True)


def _shade(albedo: np.ndarray, normal: np.ndarray, attenuation) -> np.ndarray:
    lambert = np.clip(np.tensordot(LIGHT, normal, axes=1), 0.0, None)
    return albedo[:, None, None] * (0.25 + 0.75 * lambert)[None] * attenuation


def generate_nyu_scene(
    rng: np.random.Generator,
    pool: np.ndarray,
    *,
    size: int = 32,
    min_digits: int = 2,
    max_digits: int = 4,
    hole_prob: float = 0.5,
    noise_std: float = 0.03,
    digit_scale: float = 0.6,
) -> NYUScene:
    """Draw one NYU-like scene from `rng` using glyphs from `pool` (see the module doc)."""
    images, targets = _load_glyphs()
    h = w = size
    u = np.broadcast_to(np.arange(w, dtype=np.float64)[None, :] / (w - 1), (h, w))
    v = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None] / (h - 1), (h, w))

    far = rng.uniform(3.6, 4.4)
    tx = rng.uniform(-0.6, 0.6)
    horizon = rng.uniform(0.4, 0.7)
    k = rng.uniform(0.8, 1.5)
    floor = v > horizon
    bg_depth = far + tx * (u - 0.5) - k * np.maximum(v - horizon, 0.0)
    bg_normal = normals_from_gradient(np.full((h, w), tx), np.where(floor, -k, 0.0))
    image = _shade(rng.uniform(0.4, 0.8, size=3), bg_normal, 2.5 / bg_depth)

    n = int(rng.integers(min_digits, max_digits + 1))
    centre_depths = np.sort(rng.uniform(*DIGIT_DEPTH_RANGE, size=n))  # near to far
    sources = rng.choice(pool, size=n, replace=False)
    albedos = rng.uniform(0.5, 1.0, size=(n, 3))
    jitter = rng.uniform(0.85, 1.15, size=n)
    tilts = rng.uniform(-0.25, 0.25, size=(n, 2))
    bulges = rng.uniform(0.0, 0.4, size=n)
    sides, corners = _place_digits(rng, centre_depths, jitter, size=size, digit_scale=digit_scale)

    alphas = _render_alphas(images, sources, sides, corners, size)
    depths = np.zeros((n, h, w))
    normals = np.zeros((n, 3, h, w))
    for i in range(n):
        top, left = corners[i]
        s = sides[i]
        du = u - (left + (s - 1) / 2) / (w - 1)
        dv = v - (top + (s - 1) / 2) / (h - 1)
        a, b = tilts[i]
        q = bulges[i]
        depths[i] = centre_depths[i] + a * du + b * dv + q * (du * du + dv * dv)
        normals[i] = normals_from_gradient(a + 2 * q * du, b + 2 * q * dv)
    amodal = alphas >= MASK_THRESHOLD
    image, owner, soft = _composite(
        image, alphas, amodal, lambda i: _shade(albedos[i], normals[i], 1.2 / centre_depths[i])
    )

    fg = owner >= 0
    idx = np.maximum(owner, 0)
    rows, cols = np.indices((h, w))
    depth = np.where(fg, depths[idx, rows, cols], bg_depth)
    normal = np.where(fg[None], normals[idx, :, rows, cols].transpose(2, 0, 1), bg_normal)
    hole = _draw_hole(rng, size, hole_prob)
    if hole is not None:
        depth[hole] = 0.0
        normal[(slice(None), *hole)] = 0.0
    image = _add_noise(rng, image, noise_std)

    return NYUScene(
        image=image.astype(np.float32),
        depth=depth.astype(np.float32),
        digits=targets[sources].astype(np.int64),
        digit_depths=centre_depths,
        sources=sources.astype(np.int64),
        amodal=amodal,
        owner=owner,
        soft=soft,
        normal=normal.astype(np.float32),
        floor=floor & ~fg,
    )


def nyu_targets(scene: NYUScene) -> dict[str, torch.Tensor]:
    """NYU-v2-like sample {image, depth, normal, semantic} of a scene (see the module doc)."""
    semantic = np.where(scene.floor, FLOOR_CLASS, WALL_CLASS).astype(np.int64)
    fg = scene.owner >= 0
    semantic[fg] = scene.digits[scene.owner[fg]]
    semantic[scene.soft] = IGNORE_INDEX
    return {
        "image": torch.from_numpy(scene.image.copy()),
        "depth": torch.from_numpy(scene.depth.copy())[None],
        "normal": torch.from_numpy(scene.normal.copy()),
        "semantic": torch.from_numpy(semantic),
    }


class DigitsNYU(DigitScenes):
    """NYU-v2 analog: items are {image, depth, normal, semantic} (the NYU-v2 batch keys); the
    default collate gives the NYU-v2 batch contract. Parameters as `DigitScenes`."""

    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX

    _generate_scene = staticmethod(generate_nyu_scene)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return nyu_targets(self.scene(index))


__all__ = [
    "FLOOR_CLASS",
    "NUM_CLASSES",
    "WALL_CLASS",
    "DigitsNYU",
    "NYUScene",
    "generate_nyu_scene",
    "normals_from_gradient",
    "nyu_targets",
]
