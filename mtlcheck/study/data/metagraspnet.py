"""MetaGraspNet (RGB-D amodal instance segmentation) in UOAIS-style COCO JSON, and a converter
from raw MetaGraspNet scenes to that JSON.

No loader or model of the paper's authors is public for MetaGraspNet; the format follows UOAIS
(gist-ailab/uoais ``adet/data/uoais.py``), which the paper builds on. Raw scene layout read by `convert_scenes`
(maximiliangilles/MetaGraspNet)::

    <root>/<scene>/<V>_rgb.png      RGB uint8
    <root>/<scene>/<V>.npz          'depth' (H,W) float cm, NaN = invalid;
                                    'instances_objects' (H,W) int: 0 background, k = object k;
                                    'instances_semantic' (H,W) int category id;
                                    'seg_masks_single' (older: 'occlusion_objects') (N,H,W):
                                    per-object full (amodal) masks, index k-1 <-> object k
    <root>/<scene>/<V>_order.json   {"<k>": {"id": k, "occlusion": float, "layer": int, ...}}

COCO JSON written and read here::

    {"images": [{"id", "file_name", "depth_file_name", "height", "width", "scene", "view"}],
     "annotations": [{"id", "image_id", "category_id": 1, "iscrowd": 0,
        "bbox": amodal [x, y, w, h] (pycocotools toBbox convention, w = x_max - x_min + 1),
        "segmentation": amodal RLE, "visible_mask": RLE, "occluded_mask": RLE (amodal & ~visible),
        "occluded_rate": 1 - |visible| / |amodal|, "area": amodal area, "visible_bbox",
        "mgn_object_id": k, "mgn_category": majority of instances_semantic over the visible mask,
        "mgn_occlusion": order.json "occlusion"}],
     "categories": [{"id": 1, "name": "object"}]}

File names are relative to the root given to the converter and the loader. Unverified points
(kept visible): the alignment seg_masks_single[k-1] <-> object k, and whether order.json
"occlusion" equals 1 - |visible|/|amodal|. The converter therefore takes amodal = seg mask OR
visible mask, and warns (`warnings.warn`, also listed in the JSON's "info") when more than
`tolerance` of an object's visible pixels fall outside its seg mask, or when the two occlusion
rates differ by more than `tolerance`. Objects with an empty visible mask are dropped (UOAIS).

Depth input (`depth_norm`), computed at native resolution, then nearest-resized:
"min_max_flip" (default) 1 - (d - min)/(max - min) with NaN -> max (so invalid -> 0);
"min_max" (d - min)/(max - min) with NaN -> max (invalid -> 1); both from the paper code's
``transforms/normalize_depth.py``. "uoais": d in 0.1 mm (cm * 100, unit unverified), clipped to
[2500, 15000], then (d - 2500)/12500, NaN -> 0. "cm": raw centimetres, NaN -> 0.
Boxes are scaled with the image (x * W'/W, y * H'/H); masks are nearest-resized.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from mtlcheck.study.data import _io
from mtlcheck.study.data.paper import PAPER_BATCH_SIZE as _BATCH
from mtlcheck.study.data.paper import PAPER_IMAGE_SIZE
from mtlcheck.study.data.transforms import check_normalize, check_size, image_tensor, resize_nearest

NUM_CLASSES = 2  # background + one class-agnostic "object" class (label 1), as UOAIS
OBJECT_CATEGORY_ID = 1
OCCLUSION_THRESHOLD = 0.05  # an object is "occluded" when occluded_rate >= this (UOAIS)
PAPER_BATCH_SIZE = _BATCH["metagraspnet"]
DEPTH_NORMALIZATIONS = ("min_max_flip", "min_max", "uoais", "cm")
UOAIS_DEPTH_RANGE = (2500.0, 15000.0)  # in 0.1 mm
AMODAL_KEYS = ("seg_masks_single", "occlusion_objects")
_VIEW_RE = re.compile(r"^(\d+)_rgb\.png$")


# ----------------------------------------------------------------------------- RLE helpers
def encode_mask(mask: np.ndarray) -> dict:
    """Binary (H,W) mask -> COCO RLE {"size": [H, W], "counts": str} (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict, shape: tuple[int, int], source: str = "<rle>") -> np.ndarray:
    """COCO RLE (compressed string counts) -> (H,W) uint8; ValueError naming `source` on errors."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"{source}: expected an RLE dict with 'size' and 'counts'")
    if list(rle["size"]) != list(shape):
        raise ValueError(f"{source}: RLE size {list(rle['size'])} != image size {list(shape)}")
    counts = rle["counts"]
    if not isinstance(counts, str):
        raise ValueError(f"{source}: RLE counts must be a compressed string")
    try:
        m = mask_utils.decode({"size": list(rle["size"]), "counts": counts.encode("ascii")})
    except Exception as exc:  # pycocotools raises assorted errors for bad counts
        raise ValueError(f"{source}: cannot decode RLE: {exc}") from exc
    return np.ascontiguousarray(m, dtype=np.uint8)


def mask_bbox_xywh(mask: np.ndarray) -> list[float]:
    """Tight box [x, y, w, h] of a non-empty mask (w = x_max - x_min + 1, as pycocotools toBbox)."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


# ----------------------------------------------------------------------------- depth
def normalize_depth(depth_cm: np.ndarray, mode: str = "min_max_flip", source: str = "<array>") -> np.ndarray:
    """Depth in cm (NaN = invalid) -> float32 model input; see the module docstring."""
    d = np.asarray(depth_cm, dtype=np.float64)
    finite = np.isfinite(d)
    if mode == "cm":
        return np.where(finite, d, 0.0).astype(np.float32)
    if mode == "uoais":
        lo, hi = UOAIS_DEPTH_RANGE
        out = (np.clip(d * 100.0, lo, hi) - lo) / (hi - lo)
        return np.where(finite, out, 0.0).astype(np.float32)
    if mode not in ("min_max", "min_max_flip"):
        raise ValueError(f"unknown depth normalisation {mode!r}; expected one of {DEPTH_NORMALIZATIONS}")
    if not finite.any():
        raise ValueError(f"depth in {source} has no finite value")
    dmin, dmax = d[finite].min(), d[finite].max()
    span = dmax - dmin
    # NaN -> max, i.e. scaled 1; a constant depth map scales to 0 wherever it is valid
    if span > 0:
        scaled = np.where(finite, (np.where(finite, d, dmin) - dmin) / span, 1.0)
    else:
        scaled = np.where(finite, 0.0, 1.0)
    return (1.0 - scaled if mode == "min_max_flip" else scaled).astype(np.float32)


# ----------------------------------------------------------------------------- converter
def _view_files(scene_dir: Path) -> list[tuple[int, Path]]:
    views = []
    for p in scene_dir.iterdir():
        m = _VIEW_RE.match(p.name)
        if m:
            views.append((int(m.group(1)), p))
    return sorted(views)


def _scene_sort_key(p: Path) -> tuple:
    digits = re.findall(r"\d+", p.name)
    return (int(digits[-1]) if digits else -1, p.name)


def convert_view(
    rgb_path: Path, npz_path: Path, order_path: Path, tolerance: float = 0.05
) -> tuple[tuple[int, int], list[dict], list[str]]:
    """One raw view -> ((H, W), annotation dicts without ids, warning messages)."""
    rgb = _io.read_image(rgb_path, _io.RGB_MODES)
    h, w = rgb.shape[:2]
    keys = _io.npz_keys(npz_path)
    amodal_key = next((k for k in AMODAL_KEYS if k in keys), None)
    if amodal_key is None:
        raise ValueError(f"{npz_path} has none of the amodal mask arrays {AMODAL_KEYS} (it has {sorted(keys)})")
    arrays = _io.read_npz(npz_path, ("depth", "instances_objects", "instances_semantic", amodal_key))
    for k in ("depth", "instances_objects", "instances_semantic"):
        _io.check_shape(arrays[k], (h, w), npz_path, repr(k))
    inst = np.asarray(arrays["instances_objects"]).astype(np.int64)
    sem = np.asarray(arrays["instances_semantic"]).astype(np.int64)
    amodal_all = np.asarray(arrays[amodal_key])
    if amodal_all.ndim != 3 or tuple(amodal_all.shape[1:]) != (h, w):
        raise ValueError(f"{amodal_key!r} in {npz_path} has shape {amodal_all.shape}; expected (N, {h}, {w})")
    order = _io.read_json(order_path)
    if not isinstance(order, dict):
        raise ValueError(f"{order_path} must hold a JSON object keyed by object id")
    objects: dict[int, float] = {}
    for key, entry in order.items():
        if not (
            isinstance(entry, dict)
            and str(key).isdigit()
            and entry.get("id", int(key)) == int(key)
            and isinstance(entry.get("occlusion"), (int, float))
        ):
            raise ValueError(f"{order_path}: entry {key!r} must be {{'id': {key}, 'occlusion': float, ...}}")
        objects[int(key)] = float(entry["occlusion"])
    present = set(np.unique(inst).tolist()) - {0}
    unknown = sorted(present - set(objects))
    if unknown:
        raise ValueError(f"{npz_path}: instances_objects ids {unknown} are not listed in {order_path}")
    anns, notes = [], []
    for k in sorted(objects):
        vis = inst == k
        n_vis = int(vis.sum())
        if n_vis == 0:
            continue
        if not 1 <= k <= amodal_all.shape[0]:
            raise ValueError(
                f"{npz_path}: object {k} has no mask {amodal_key}[{k - 1}] (only {amodal_all.shape[0]} masks)"
            )
        seg = amodal_all[k - 1] != 0
        outside = int((vis & ~seg).sum())
        if outside > tolerance * n_vis:
            notes.append(
                f"{npz_path}: object {k}: {outside}/{n_vis} visible pixels lie outside "
                f"{amodal_key}[{k - 1}]; amodal mask taken as their union"
            )
        amodal = seg | vis
        rate = 1.0 - n_vis / float(amodal.sum())
        if abs(rate - objects[k]) > tolerance:
            notes.append(
                f"{order_path}: object {k}: occlusion {objects[k]:.4f} differs from 1 - |visible|/|amodal| = {rate:.4f}"
            )
        cats, counts = np.unique(sem[vis], return_counts=True)
        anns.append(
            {
                "category_id": OBJECT_CATEGORY_ID,
                "iscrowd": 0,
                "bbox": mask_bbox_xywh(amodal),
                "visible_bbox": mask_bbox_xywh(vis),
                "segmentation": encode_mask(amodal),
                "visible_mask": encode_mask(vis),
                "occluded_mask": encode_mask(amodal & ~vis),
                "occluded_rate": rate,
                "area": float(amodal.sum()),
                "mgn_object_id": k,
                "mgn_category": int(cats[np.argmax(counts)]),
                "mgn_occlusion": objects[k],
            }
        )
    return (h, w), anns, notes


def convert_scenes(
    root: str | Path,
    scenes: Iterable[str | Path] | None = None,
    out_json: str | Path | None = None,
    tolerance: float = 0.05,
) -> dict:
    """Raw MetaGraspNet scenes under `root` -> UOAIS-style COCO dict (written to `out_json` if given).

    `scenes`: scene directories (relative to `root` or absolute); default: every `root/scene*`
    directory, in numeric order. Views are every `<V>_rgb.png` of a scene, in numeric order;
    each needs `<V>.npz` and `<V>_order.json`. Split files are the caller's business.
    """
    root = Path(root)
    if scenes is None:
        if not root.is_dir():
            raise FileNotFoundError(f"missing directory: {root}")
        scene_dirs = sorted((p for p in root.glob("scene*") if p.is_dir()), key=_scene_sort_key)
    else:
        scene_dirs = [p if Path(p).is_absolute() else root / p for p in map(Path, scenes)]
    if not scene_dirs:
        raise FileNotFoundError(f"no scene directories under {root}")
    images, annotations, notes = [], [], []
    for scene_dir in scene_dirs:
        if not scene_dir.is_dir():
            raise FileNotFoundError(f"missing scene directory: {scene_dir}")
        views = _view_files(scene_dir)
        if not views:
            raise FileNotFoundError(f"no <V>_rgb.png views in {scene_dir}")
        for v, rgb_path in views:
            npz_path = scene_dir / f"{v}.npz"
            (h, w), anns, view_notes = convert_view(rgb_path, npz_path, scene_dir / f"{v}_order.json", tolerance)
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": rgb_path.relative_to(root).as_posix(),
                    "depth_file_name": npz_path.relative_to(root).as_posix(),
                    "height": h,
                    "width": w,
                    "scene": scene_dir.name,
                    "view": v,
                }
            )
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
            notes.extend(view_notes)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    data = {
        "info": {"description": "MetaGraspNet in UOAIS-style COCO format (mtlcheck converter)", "warnings": notes},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": OBJECT_CATEGORY_ID, "name": "object"}],
    }
    if out_json is not None:
        Path(out_json).write_text(json.dumps(data))
    return data


# ----------------------------------------------------------------------------- dataset
_IMAGE_FIELDS = ("id", "file_name", "depth_file_name", "height", "width")
_ANN_FIELDS = ("id", "image_id", "bbox", "segmentation", "visible_mask", "occluded_rate")


class MetaGraspNetDataset(Dataset):
    """UOAIS-style COCO JSON -> RGB-D samples with amodal instance targets.

    Sample: image (3,H,W) float32, depth (1,H,W) float32, name (file_name), target = {boxes (N,4)
    float32 amodal xyxy pixels, labels (N,) int64 >= 1, visible_masks (N,H,W) uint8,
    amodal_masks (N,H,W) uint8, occluded (N,) int64 (occluded_rate >= OCCLUSION_THRESHOLD),
    occluded_rate (N,) float32, image_id int}.

    Args:
        root: directory the JSON's file names are relative to.
        ann_file: the COCO JSON (e.g. written by `convert_scenes`).
        size: output (H, W); the paper uses 512x512. None keeps the native resolution.
        depth_norm: one of DEPTH_NORMALIZATIONS (module docstring).
        normalize: image normalisation, see `mtlcheck.study.data.transforms`.
        class_agnostic: labels all 1 (UOAIS, default); False uses each annotation's
            `mgn_category`, which must be an int >= 1.
    """

    def __init__(
        self,
        root: str | Path,
        ann_file: str | Path,
        size: Sequence[int] | None = PAPER_IMAGE_SIZE,
        depth_norm: str = "min_max_flip",
        normalize: str = "imagenet",
        class_agnostic: bool = True,
    ) -> None:
        if depth_norm not in DEPTH_NORMALIZATIONS:
            raise ValueError(f"unknown depth normalisation {depth_norm!r}; expected one of {DEPTH_NORMALIZATIONS}")
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.size = check_size(size)
        self.depth_norm = depth_norm
        self.normalize = check_normalize(normalize)
        self.class_agnostic = class_agnostic
        data = _io.read_json(self.ann_file)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
            raise ValueError(f"{self.ann_file} must be a COCO dict with 'images' and 'annotations' lists")
        self.images: list[dict] = []
        for img in data["images"]:
            if not isinstance(img, dict) or any(k not in img for k in _IMAGE_FIELDS):
                raise ValueError(f"{self.ann_file}: image entry {img!r} lacks one of {_IMAGE_FIELDS}")
            self.images.append(img)
        ids = [img["id"] for img in self.images]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.ann_file}: duplicate image ids")
        self.anns: dict[int, list[dict]] = {i: [] for i in ids}
        for ann in data["annotations"]:
            if not isinstance(ann, dict) or any(k not in ann for k in _ANN_FIELDS):
                raise ValueError(
                    f"{self.ann_file}: annotation {ann.get('id') if isinstance(ann, dict) else ann!r} "
                    f"lacks one of {_ANN_FIELDS}"
                )
            if ann["image_id"] not in self.anns:
                raise ValueError(f"{self.ann_file}: annotation {ann['id']} refers to unknown image {ann['image_id']}")
            if len(ann["bbox"]) != 4:
                raise ValueError(f"{self.ann_file}: annotation {ann['id']} bbox must have 4 numbers")
            if not class_agnostic and not (isinstance(ann.get("mgn_category"), int) and ann["mgn_category"] >= 1):
                raise ValueError(
                    f"{self.ann_file}: annotation {ann['id']} needs an integer mgn_category >= 1 "
                    f"when class_agnostic=False"
                )
            self.anns[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        img = self.images[index]
        h, w = int(img["height"]), int(img["width"])
        rgb_path = self.root / img["file_name"]
        depth_path = self.root / img["depth_file_name"]
        rgb = _io.read_image(rgb_path, _io.RGB_MODES)
        _io.check_shape(rgb, (h, w, 3), rgb_path, "image")
        depth = _io.read_npz(depth_path, ("depth",))["depth"]
        _io.check_shape(depth, (h, w), depth_path, "'depth'")
        depth = normalize_depth(depth, self.depth_norm, str(depth_path))
        out_h, out_w = self.size if self.size is not None else (h, w)
        anns = self.anns[img["id"]]
        src = str(self.ann_file)
        vis = [decode_mask(a["visible_mask"], (h, w), f"{src} annotation {a['id']} visible_mask") for a in anns]
        amo = [decode_mask(a["segmentation"], (h, w), f"{src} annotation {a['id']} segmentation") for a in anns]
        vis = np.stack(vis) if anns else np.zeros((0, h, w), np.uint8)
        amo = np.stack(amo) if anns else np.zeros((0, h, w), np.uint8)
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes *= np.array([out_w / w, out_h / h, out_w / w, out_h / h])
        rates = np.array([a["occluded_rate"] for a in anns], dtype=np.float64)
        labels = [OBJECT_CATEGORY_ID if self.class_agnostic else a["mgn_category"] for a in anns]
        target = {
            "boxes": torch.from_numpy(boxes.astype(np.float32)),
            "labels": torch.tensor(labels, dtype=torch.int64).reshape(-1),
            "visible_masks": torch.from_numpy(np.ascontiguousarray(resize_nearest(vis, self.size))),
            "amodal_masks": torch.from_numpy(np.ascontiguousarray(resize_nearest(amo, self.size))),
            "occluded": torch.from_numpy((rates >= OCCLUSION_THRESHOLD).astype(np.int64)),
            "occluded_rate": torch.from_numpy(rates.astype(np.float32)),
            "image_id": int(img["id"]),
        }
        return {
            "image": image_tensor(rgb, self.size, self.normalize),
            "depth": torch.from_numpy(np.ascontiguousarray(resize_nearest(depth, self.size)[None])),
            "target": target,
            "name": str(img["file_name"]),
        }
