"""CityScapes with depth (DE), semantic (SS) and instance-offset (IS) targets.

Reads the official Cityscapes release (packages leftImg8bit, gtFine, disparity); mtan's .npy
version has no instance maps and is not supported. Layout::

    <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png       RGB uint8
    <root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png        uint8 label ids 0..33
    <root>/gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png     16-bit: labelId*1000+k for
                                    instances, the plain labelId for stuff and groups (e.g. 26)
    <root>/disparity/<split>/<city>/<stem>_disparity.png          uint16, 0 = invalid

The image list is sorted(<root>/leftImg8bit/<split>/*/*.png), as in the paper code.

Targets, as built by the paper code (danielmao2019/Pylon @ c94c50b9c, `datasets/city_scapes.py`,
itself following SamsungLabs/MTL `code/data/datasets/cityscapes.py`):

- semantic (H, W) int64: label ids VALID_IDS -> 0..18 in that order, every other id -> 250.
  `num_classes=7` uses the 7-class coarse map of Pylon HEAD instead (COARSE_MAP).
- instance (2, H, W) float32, channels (y, x): a pixel is an instance pixel when its semantic is
  valid, its instanceId is not a stuff id (NO_INSTANCE_IDS) and not 0. For each remaining id
  (group ids such as 26 included, as in the paper code) and each pixel p of it,
  off_y = y_p/(H-1) - mean_{q in id} y_q/(H-1), and the same for x; IGNORE_INDEX elsewhere.
  Coordinates are normalised to [0, 1] as in Pylon (SamsungLabs/MTL uses raw pixels).
- depth (1, H, W) float32: disparity_png / 2729.0680031169923 (the raw PNG value divided by its
  dataset std; no (p - 1)/256 conversion, as in both references); 0 = invalid.
- Resizing (paper: 512x512): image bilinear; label ids, instance ids and disparity nearest; the
  instance **id map** is resized before the offsets are computed (Pylon HEAD resizes the offset
  map bilinearly, which smears the 250 sentinel into valid pixels).
- image: `normalize="imagenet"` (default) gives RGB/255 standardised with ImageNet mean/std.
  The authors' quirk is available as `normalize="cityscapes_bgr"`: BGR channel order minus the RGB
  means [123.675, 116.28, 103.53], divided by 255 (see `mtlcheck.study.data.transforms`).
- Filtering: a sample is dropped when its depth is all 0, its semantic map all ignore, or its
  instance map all ignore, computed on the resized targets when the dataset is built (the paper
  code hard-codes the resulting indices: 9 train and 7 val images, leaving 2966 / 493).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mtlcheck.study.data import _io
from mtlcheck.study.data.paper import PAPER_BATCH_SIZE as _BATCH
from mtlcheck.study.data.paper import PAPER_IMAGE_SIZE
from mtlcheck.study.data.transforms import check_normalize, check_size, image_tensor, resize_nearest

NUM_CLASSES = 19
NUM_CLASSES_COARSE = 7
IGNORE_INDEX = 250
DEPTH_SCALE = 2729.0680031169923  # disparity PNG value / DEPTH_SCALE = depth target
PAPER_BATCH_SIZE = _BATCH["cityscapes"]
SPLITS = ("train", "val", "test")

MAX_LABEL_ID = 33
VOID_IDS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, -1)
VALID_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
NO_INSTANCE_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23)  # stuff: never an instance
# Pylon HEAD coarse map: flat, construction, nature, vehicle, sky, object, human.
COARSE_MAP = {
    7: 0,
    8: 0,
    11: 1,
    12: 1,
    13: 1,
    21: 2,
    22: 2,
    26: 3,
    27: 3,
    28: 3,
    31: 3,
    32: 3,
    33: 3,
    23: 4,
    17: 5,
    19: 5,
    20: 5,
    24: 6,
    25: 6,
}

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
DISPARITY_SUFFIX = "_disparity.png"


def label_lookup(num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Lookup table label id (0..33) -> train id (0..num_classes-1) or IGNORE_INDEX."""
    lut = np.full(MAX_LABEL_ID + 1, IGNORE_INDEX, dtype=np.int64)
    if num_classes == NUM_CLASSES:
        for train_id, label_id in enumerate(VALID_IDS):
            lut[label_id] = train_id
    elif num_classes == NUM_CLASSES_COARSE:
        for label_id, train_id in COARSE_MAP.items():
            lut[label_id] = train_id
    else:
        raise ValueError(f"num_classes must be {NUM_CLASSES} or {NUM_CLASSES_COARSE}, got {num_classes}")
    return lut


def semantic_from_label_ids(
    label_ids: np.ndarray, num_classes: int = NUM_CLASSES, source: str | Path = "<array>"
) -> np.ndarray:
    """Map a labelIds array to train ids (int64), IGNORE_INDEX for void ids.

    Raises ValueError naming `source` for ids outside 0..33.
    """
    ids = np.asarray(label_ids)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_LABEL_ID):
        raise ValueError(
            f"label ids in {source} must lie in 0..{MAX_LABEL_ID}; found range {int(ids.min())}..{int(ids.max())}"
        )
    return label_lookup(num_classes)[ids.astype(np.int64)]


def instance_valid_mask(instance_ids: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """Pixels that carry an instance offset: valid semantic, not a stuff id, not 0."""
    ids = np.asarray(instance_ids)
    semantic_valid = label_lookup(NUM_CLASSES)[np.asarray(label_ids, dtype=np.int64)] != IGNORE_INDEX
    return semantic_valid & ~np.isin(ids, NO_INSTANCE_IDS) & (ids != 0)


def instance_offsets(instance_ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(2, H, W) float32 offsets (y, x) of each valid pixel to its instance's centroid.

    Coordinates are y/(H-1) and x/(W-1); pixels outside `valid` get IGNORE_INDEX.
    """
    ids = np.asarray(instance_ids)
    if ids.ndim != 2 or min(ids.shape) < 2:
        raise ValueError(f"instance id map must be 2-D with both sides >= 2, got shape {ids.shape}")
    h, w = ids.shape
    out = np.full((2, h, w), IGNORE_INDEX, dtype=np.float32)
    ys, xs = np.nonzero(valid)
    if ys.size == 0:
        return out
    _, inverse = np.unique(ids[ys, xs], return_inverse=True)
    inverse = inverse.ravel()
    yn = ys / (h - 1.0)
    xn = xs / (w - 1.0)
    count = np.bincount(inverse)
    out[0, ys, xs] = yn - (np.bincount(inverse, yn) / count)[inverse]
    out[1, ys, xs] = xn - (np.bincount(inverse, xn) / count)[inverse]
    return out


def build_targets(
    label_ids: np.ndarray,
    instance_ids: np.ndarray,
    disparity: np.ndarray,
    size: tuple[int, int] | None = None,
    num_classes: int = NUM_CLASSES,
) -> dict[str, np.ndarray]:
    """semantic (H,W) int64, instance (2,H,W) float32, depth (1,H,W) float32 from the raw maps.

    The three maps are nearest-resized to `size` first (so offsets come from the resized id map).
    """
    label_ids = resize_nearest(np.asarray(label_ids), size)
    instance_ids = resize_nearest(np.asarray(instance_ids), size)
    disparity = resize_nearest(np.asarray(disparity), size)
    semantic = semantic_from_label_ids(label_ids, num_classes)
    valid = instance_valid_mask(instance_ids, label_ids)
    return {
        "semantic": semantic,
        "instance": instance_offsets(instance_ids, valid),
        "depth": (disparity.astype(np.float64) / DEPTH_SCALE).astype(np.float32)[None],
    }


class CityscapesDataset(Dataset):
    """CityScapes DE + SS + IS; sample keys: image (3,H,W) float32, semantic (H,W) int64
    (IGNORE_INDEX = 250), depth (1,H,W) float32 (0 = invalid), instance (2,H,W) float32
    (IGNORE_INDEX = 250), name (the file stem, e.g. "aachen_000000_000019").

    Args:
        root: directory holding leftImg8bit/, gtFine/ and disparity/.
        split: "train", "val" or "test".
        size: output (H, W); the paper uses 512x512. None keeps the native resolution.
        num_classes: 19 (default, paper code) or 7 (coarse).
        normalize: image normalisation, see `mtlcheck.study.data.transforms` ("imagenet" default).
        filter_invalid: drop samples with all-invalid depth, semantic or instance targets.
        filter_cache: optional JSON file recording the dropped names; written when absent, read
            (and checked against the current file list and size) when present.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: Sequence[int] | None = PAPER_IMAGE_SIZE,
        num_classes: int = NUM_CLASSES,
        normalize: str = "imagenet",
        filter_invalid: bool = True,
        filter_cache: str | Path | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        label_lookup(num_classes)  # validates num_classes
        self.root = Path(root)
        self.split = split
        self.size = check_size(size)
        self.num_classes = num_classes
        self.normalize = check_normalize(normalize)
        self.files = self._list_files()
        self.dropped: list[str] = []
        if filter_invalid:
            self.dropped = self._dropped_names(filter_cache)
            drop = set(self.dropped)
            self.files = [f for f in self.files if f["name"] not in drop]

    def _list_files(self) -> list[dict]:
        image_dir = self.root / "leftImg8bit" / self.split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"missing directory: {image_dir}")
        images = sorted(image_dir.glob("*/*.png"))
        if not images:
            raise FileNotFoundError(f"no images under {image_dir}/<city>/*.png")
        files = []
        for img in images:
            if not img.name.endswith(IMAGE_SUFFIX):
                raise ValueError(f"unexpected file {img}: names must end with {IMAGE_SUFFIX!r}")
            stem = img.name[: -len(IMAGE_SUFFIX)]
            city = img.parent.name
            entry = {
                "name": stem,
                "image": img,
                "label": self.root / "gtFine" / self.split / city / (stem + LABEL_SUFFIX),
                "instance": self.root / "gtFine" / self.split / city / (stem + INSTANCE_SUFFIX),
                "disparity": self.root / "disparity" / self.split / city / (stem + DISPARITY_SUFFIX),
            }
            for key in ("label", "instance", "disparity"):
                _io.require_file(entry[key])
            files.append(entry)
        return files

    def _read_label_maps(self, entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        label_ids = _io.read_image(entry["label"], _io.LABEL_MODES)
        instance_ids = _io.read_image(entry["instance"], _io.UINT16_MODES)
        disparity = _io.read_image(entry["disparity"], _io.UINT16_MODES)
        _io.check_shape(instance_ids, label_ids.shape, entry["instance"], "instance ids")
        _io.check_shape(disparity, label_ids.shape, entry["disparity"], "disparity")
        semantic_from_label_ids(label_ids, NUM_CLASSES, entry["label"])  # range check naming the file
        return label_ids, instance_ids, disparity

    def _is_valid(self, entry: dict) -> bool:
        label_ids, instance_ids, disparity = (resize_nearest(a, self.size) for a in self._read_label_maps(entry))
        if not (disparity != 0).any():
            return False
        if not (semantic_from_label_ids(label_ids, self.num_classes) != IGNORE_INDEX).any():
            return False
        return bool(instance_valid_mask(instance_ids, label_ids).any())

    def _dropped_names(self, cache: str | Path | None) -> list[str]:
        names = [f["name"] for f in self.files]
        size = list(self.size) if self.size is not None else None
        if cache is not None and Path(cache).exists():
            data = _io.read_json(cache)
            if (
                not isinstance(data, dict)
                or data.get("names") != names
                or data.get("size") != size
                or data.get("split") != self.split
                or not isinstance(data.get("dropped"), list)
            ):
                raise ValueError(
                    f"filter cache {cache} does not match split {self.split!r}, size {size} "
                    f"and the current file list; delete it to recompute"
                )
            return list(data["dropped"])
        dropped = [f["name"] for f in self.files if not self._is_valid(f)]
        if cache is not None:
            Path(cache).write_text(
                json.dumps({"split": self.split, "size": size, "names": names, "dropped": dropped}, indent=1)
            )
        return dropped

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        entry = self.files[index]
        label_ids, instance_ids, disparity = self._read_label_maps(entry)
        rgb = _io.read_image(entry["image"], _io.RGB_MODES)
        _io.check_shape(rgb, label_ids.shape + (3,), entry["image"], "image")
        t = build_targets(label_ids, instance_ids, disparity, self.size, self.num_classes)
        return {
            "image": image_tensor(rgb, self.size, self.normalize),
            "semantic": torch.from_numpy(t["semantic"]),
            "depth": torch.from_numpy(t["depth"]),
            "instance": torch.from_numpy(t["instance"]),
            "name": entry["name"],
        }
