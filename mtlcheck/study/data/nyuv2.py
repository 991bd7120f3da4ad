"""NYU-v2 with depth (DE), surface normals (NE) and semantic segmentation (SS).

Two on-disk layouts:

``layout="nyud_mt"`` (default; facebookresearch/astmt NYUD_MT, used by the paper code,
danielmao2019/Pylon ``datasets/nyud_mt.py``)::

    <root>/gt_sets/<split>.txt        one image id per line (any string)
    <root>/images/<id>.jpg            RGB uint8
    <root>/depth/<id>.mat             loadmat(...)['depth']: metres, 0 = invalid
    <root>/normals/<id>.jpg           RGB uint8, n = 2 p / 255 - 1
    <root>/segmentation/<id>.mat      loadmat(...)['segmentation']: 0..40, 0 = unlabelled
    (<root>/edge/<id>.png exists in the release but is not used or required here)

``layout="mtan"`` (lorenmt/mtan ``im2im_pred/create_dataset.py``, also LibMTL)::

    <root>/<split>/image/<i>.npy      float (H,W,3) in [0,1]
    <root>/<split>/label/<i>.npy      float (H,W): -1 = unlabelled, 0..12 (13 classes)
    <root>/<split>/depth/<i>.npy      float (H,W,1) metres, 0 = invalid
    <root>/<split>/normal/<i>.npy     float (H,W,3) unit vectors, 0 = invalid
    (i = 0..N-1; the sample order is numeric)

Semantic classes (`num_classes`), always with IGNORE_INDEX = 250 for ignored pixels:
- 41 (default for nyud_mt; paper code): the segmentation value as is, 0 = unlabelled is a class;
  nothing is ignored.
- 40: value - 1, unlabelled -> IGNORE_INDEX (the convention astmt attributes to related work).
- 14: 13 coarse classes + unlabelled 0, via COARSE_MAP_40_TO_13 (Pylon HEAD's CLASS_MAP_C).
  Applied as a lookup table; Pylon HEAD applies it with sequential in-place replacement, which
  merges classes (e.g. 1 -> 12 and then 12 -> 6), so its effective map differs.
- 13 (mtan layout only, its default): labels 0..12, -1 -> IGNORE_INDEX.

Other targets: depth (1,H,W) float32 metres, 0 = invalid (NaN is read as 0), nearest resize.
Normals (3,H,W) float32: decoded, bilinear resized, then re-normalised to unit length (Pylon
``ResizeNormals``); pixels whose source vector is exactly zero stay zero (invalid, mtan
convention). Image: `normalize="imagenet"` by default; the paper code uses "unit" (ToTensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mtlcheck.study.data import _io
from mtlcheck.study.data.paper import PAPER_BATCH_SIZE as _BATCH
from mtlcheck.study.data.paper import PAPER_IMAGE_SIZE
from mtlcheck.study.data.transforms import check_normalize, check_size, image_tensor, resize_bilinear, resize_nearest

IGNORE_INDEX = 250
NUM_CLASSES = 41  # nyud_mt default (paper code)
NUM_CLASSES_MTAN = 13
NUM_CLASSES_OPTIONS = {"nyud_mt": (41, 40, 14), "mtan": (13,)}
PAPER_BATCH_SIZE = _BATCH["nyuv2"]
LAYOUTS = ("nyud_mt", "mtan")
SPLITS = ("train", "val")
# NYU 40-class id (index 0..40; 0 = unlabelled) -> 13-class coarse id + unlabelled 0.
COARSE_MAP_40_TO_13 = (
    0,
    12,
    5,
    6,
    1,
    4,
    9,
    10,
    12,
    13,
    6,
    8,
    6,
    13,
    10,
    6,
    13,
    6,
    7,
    7,
    5,
    7,
    3,
    2,
    6,
    11,
    7,
    7,
    7,
    7,
    7,
    7,
    6,
    7,
    7,
    7,
    7,
    7,
    7,
    6,
    7,
)


def semantic_from_nyud(seg: np.ndarray, num_classes: int = NUM_CLASSES, source: str | Path = "<array>") -> np.ndarray:
    """NYUD_MT segmentation values 0..40 -> int64 classes for `num_classes` in (41, 40, 14)."""
    seg = np.asarray(seg)
    if seg.size and (seg.min() < 0 or seg.max() > 40 or not np.all(seg == np.round(seg))):
        raise ValueError(f"segmentation in {source} must hold integers 0..40")
    seg = seg.astype(np.int64)
    if num_classes == 41:
        return seg
    if num_classes == 40:
        return np.where(seg == 0, IGNORE_INDEX, seg - 1)
    if num_classes == 14:
        return np.asarray(COARSE_MAP_40_TO_13, dtype=np.int64)[seg]
    raise ValueError(f"num_classes for the nyud_mt layout must be one of (41, 40, 14), got {num_classes}")


def semantic_from_mtan(label: np.ndarray, source: str | Path = "<array>") -> np.ndarray:
    """mtan label values -1, 0..12 -> int64 0..12 with -1 -> IGNORE_INDEX."""
    label = np.asarray(label)
    ok = (label == -1) | ((label >= 0) & (label <= 12) & (label == np.round(label)))
    if not ok.all():
        raise ValueError(f"labels in {source} must be -1 or integers 0..12")
    out = label.astype(np.int64)
    out[out == -1] = IGNORE_INDEX
    return out


def decode_normals_jpeg(rgb: np.ndarray) -> np.ndarray:
    """NYUD_MT normal image (H,W,3) uint8 -> (3,H,W) float32, n = 2 p / 255 - 1 (not unit length)."""
    return (2.0 * np.asarray(rgb, dtype=np.float32) / 255.0 - 1.0).transpose(2, 0, 1)


def resize_normals(normal: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(3,H,W) normals -> bilinear resize, unit length; exactly-zero source pixels stay zero."""
    invalid = resize_nearest(np.all(normal == 0, axis=0), size)
    n = resize_bilinear(torch.from_numpy(np.ascontiguousarray(normal, dtype=np.float32)), size).numpy()
    norm = np.linalg.norm(n, axis=0, keepdims=True)
    n = np.where(norm > 0, n / np.maximum(norm, 1e-12), 0.0)
    n[:, invalid] = 0.0
    return n.astype(np.float32)


def _depth(depth: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    depth = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0)
    return resize_nearest(depth, size)[None].astype(np.float32)


class NYUv2Dataset(Dataset):
    """NYU-v2 DE + NE + SS; sample keys: image (3,H,W) float32, semantic (H,W) int64
    (IGNORE_INDEX = 250), depth (1,H,W) float32 (0 = invalid), normal (3,H,W) float32, name (str).

    Args:
        root: dataset root of the chosen layout (see the module docstring).
        split: "train" or "val".
        layout: "nyud_mt" (paper code) or "mtan".
        size: output (H, W); the paper uses 512x512. None keeps the native resolution.
        num_classes: None for the layout's default (41 nyud_mt, 13 mtan), or an allowed option.
        normalize: image normalisation, see `mtlcheck.study.data.transforms`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        layout: str = "nyud_mt",
        size: Sequence[int] | None = PAPER_IMAGE_SIZE,
        num_classes: int | None = None,
        normalize: str = "imagenet",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if num_classes is None:
            num_classes = NUM_CLASSES if layout == "nyud_mt" else NUM_CLASSES_MTAN
        if num_classes not in NUM_CLASSES_OPTIONS[layout]:
            raise ValueError(
                f"num_classes for layout {layout!r} must be one of {NUM_CLASSES_OPTIONS[layout]}, got {num_classes}"
            )
        self.root = Path(root)
        self.split = split
        self.layout = layout
        self.size = check_size(size)
        self.num_classes = num_classes
        self.normalize = check_normalize(normalize)
        self.files = self._list_nyud_mt() if layout == "nyud_mt" else self._list_mtan()

    def _list_nyud_mt(self) -> list[dict]:
        ids = _io.read_lines(self.root / "gt_sets" / f"{self.split}.txt")
        if not ids:
            raise ValueError(f"{self.root / 'gt_sets' / f'{self.split}.txt'} lists no image ids")
        files = []
        for i in ids:
            entry = {
                "name": i,
                "image": self.root / "images" / f"{i}.jpg",
                "depth": self.root / "depth" / f"{i}.mat",
                "normal": self.root / "normals" / f"{i}.jpg",
                "semantic": self.root / "segmentation" / f"{i}.mat",
            }
            for key in ("image", "depth", "normal", "semantic"):
                _io.require_file(entry[key])
            files.append(entry)
        return files

    def _list_mtan(self) -> list[dict]:
        base = self.root / self.split
        image_dir = base / "image"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"missing directory: {image_dir}")
        stems = [p.stem for p in image_dir.glob("*.npy")]
        bad = [s for s in stems if not s.isdigit()]
        if bad:
            raise ValueError(f"unexpected file {image_dir / (bad[0] + '.npy')}: mtan names are <int>.npy")
        if not stems:
            raise FileNotFoundError(f"no .npy images under {image_dir}")
        files = []
        for s in sorted(stems, key=int):
            entry = {"name": s, **{k: base / k / f"{s}.npy" for k in ("image", "label", "depth", "normal")}}
            for key in ("image", "label", "depth", "normal"):
                _io.require_file(entry[key])
            files.append(entry)
        return files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        entry = self.files[index]
        if self.layout == "nyud_mt":
            rgb = _io.read_image(entry["image"], _io.RGB_MODES).astype(np.float32)
            hw = rgb.shape[:2]
            depth = _io.read_mat(entry["depth"], "depth")
            _io.check_shape(depth, hw, entry["depth"], "depth")
            normal_rgb = _io.read_image(entry["normal"], _io.RGB_MODES)
            _io.check_shape(normal_rgb, hw + (3,), entry["normal"], "normals")
            normal = decode_normals_jpeg(normal_rgb)
            seg = _io.read_mat(entry["semantic"], "segmentation")
            _io.check_shape(seg, hw, entry["semantic"], "segmentation")
            semantic = semantic_from_nyud(seg, self.num_classes, entry["semantic"])
        else:
            image = _io.read_npy(entry["image"])
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image in {entry['image']} has shape {image.shape}; expected (H, W, 3)")
            rgb = image.astype(np.float32) * 255.0
            hw = image.shape[:2]
            label = _io.read_npy(entry["label"])
            _io.check_shape(label, hw, entry["label"], "label")
            semantic = semantic_from_mtan(label, entry["label"])
            depth = _io.read_npy(entry["depth"])
            _io.check_shape(depth, hw + (1,), entry["depth"], "depth")
            depth = depth[..., 0]
            normal = _io.read_npy(entry["normal"])
            _io.check_shape(normal, hw + (3,), entry["normal"], "normal")
            normal = np.asarray(normal, dtype=np.float32).transpose(2, 0, 1)
        return {
            "image": image_tensor(rgb, self.size, self.normalize),
            "semantic": torch.from_numpy(np.ascontiguousarray(resize_nearest(semantic, self.size))),
            "depth": torch.from_numpy(np.ascontiguousarray(_depth(depth, self.size))),
            "normal": torch.from_numpy(np.ascontiguousarray(resize_normals(normal, self.size))),
            "name": entry["name"],
        }
