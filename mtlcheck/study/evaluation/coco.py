"""COCO evaluation of amodal instance segmentation (the paper's MetaGraspNet metrics).

The paper's Table 1 reports six numbers per method: ``BBox mAP``, ``BBox mAR``, ``VMask mAP``,
``VMask mAR``, ``AMask mAP`` and ``AMask mAR``. They are computed here as UOAIS does
(gist-ailab/uoais ``adet/evaluation/amodalvisible_evaluation.py``), with pycocotools:

==============  ============================  ===================================
output keys     pycocotools run               ground truth
==============  ============================  ===================================
``bbox_*``      ``COCOeval(..., "bbox")``     amodal boxes
``vmask_*``     ``COCOeval(..., "segm")``     visible masks (area = visible area)
``amask_*``     ``COCOeval(..., "segm")``     amodal masks (area = amodal area)
==============  ============================  ===================================

- ``*_mAP`` = ``COCOeval.stats[0]``: AP averaged over IoU 0.50:0.05:0.95, all areas, 100
  detections per image (101-point interpolated precision, as in pycocotools).
- ``*_mAR`` = ``COCOeval.stats[8]``: AR averaged over the same IoUs, all areas, 100 detections per
  image. That the paper's "mAR" is AR@100 is an assumption (the paper does not define it).

Each detection carries one amodal box, one visible mask, one amodal mask and one score shared by the
three runs. The two ground-truth sets are built from the same objects, so amodal masks scored
against the visible ground truth score lower than the visible masks do (tested).

Conventions (all documented, none silent):

- Predicted masks may be probabilities in [0, 1] (thresholded with ``mask >= mask_threshold``,
  default 0.5, as detectron2's ``paste_masks_in_image`` does) or binary (bool, or integers 0/1).
  Float values outside [0, 1] raise (they look like logits). ``(N, 1, H, W)`` masks, as
  torchvision's Mask R-CNN returns, are accepted and squeezed.
- Categories are the labels as given (``class_agnostic=True`` maps every label to 1, as UOAIS's
  single "object" class). Per-class AP is averaged over the classes that have ground truth
  (pycocotools ignores classes without ground truth, so detections of such a class do not count).
- An image without ground truth is kept: its detections are false positives.
- An image without detections is kept: its ground truth objects are misses.
- No detections in the whole set: every key is 0.0 (pycocotools is still run, on an empty result
  set, since ``COCO.loadRes([])`` itself crashes).
- No ground-truth object in the whole set: AP/AR are undefined (pycocotools would return -1), so
  :meth:`AmodalCocoEvaluator.compute` raises ``ValueError``.
- A ground-truth object whose mask is empty cannot be matched in that evaluation (IoU 0) and counts
  as a miss; the data converters drop objects with an empty visible mask.
- ``COCO.loadRes`` mutates the detection dicts it is given (adds ``area``, ``id``, numpy ``bbox``),
  so every evaluation gets its own deep copy of the detections.
- pycocotools prints progress to stdout; it is silenced.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "EVALUATIONS",
    "METRIC_KEYS",
    "PAPER_COLUMNS",
    "AmodalCocoEvaluator",
    "evaluate_amodal_coco",
]

#: evaluation name -> (pycocotools iouType, ground-truth set, prediction field)
EVALUATIONS: dict[str, tuple[str, str, str]] = {
    "bbox": ("bbox", "amodal", "boxes"),
    "vmask": ("segm", "visible", "visible_masks"),
    "amask": ("segm", "amodal", "amodal_masks"),
}

METRIC_KEYS: tuple[str, ...] = tuple(f"{e}_{m}" for e in EVALUATIONS for m in ("mAP", "mAR"))

#: our output key -> the column header in the paper's Tables 1, 4 and 5.
PAPER_COLUMNS: dict[str, str] = {
    "bbox_mAP": "BBox mAP",
    "bbox_mAR": "BBox mAR",
    "vmask_mAP": "VMask mAP",
    "vmask_mAR": "VMask mAR",
    "amask_mAP": "AMask mAP",
    "amask_mAR": "AMask mAR",
}

# index into COCOeval.stats
_STAT_INDEX = {"mAP": 0, "mAR": 8}


# ----------------------------------------------------------------------------------------------
# input validation and conversion


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _get(d: Mapping, key: str, name: str) -> Any:
    if not isinstance(d, Mapping):
        raise ValueError(f"{name} must be a mapping (dict), got {type(d).__name__}")
    if key not in d:
        raise ValueError(f"{name} has no key {key!r} (keys: {sorted(map(str, d))})")
    return d[key]


def _image_id(value: Any, name: str) -> int:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        size = value.numel() if isinstance(value, torch.Tensor) else value.size
        if size != 1:
            raise ValueError(f"{name} must be a single integer, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _boxes(x: Any, n: int | None, name: str) -> np.ndarray:
    b = _to_numpy(x, name)
    if b.ndim != 2 or b.shape[1] != 4 or (n is not None and b.shape[0] != n):
        want = f"({n}, 4)" if n is not None else "(N, 4)"
        raise ValueError(f"{name} must have shape {want} (xyxy pixels), got {tuple(b.shape)}")
    b = b.astype(np.float64)
    if not np.isfinite(b).all():
        raise ValueError(f"{name} contains non-finite values")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f"{name} must be xyxy with x2 >= x1 and y2 >= y1")
    return b


def _vector(x: Any, n: int, name: str, *, integer: bool) -> np.ndarray:
    v = _to_numpy(x, name)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(v.shape)}")
    if integer:
        if not (np.issubdtype(v.dtype, np.integer) and not np.issubdtype(v.dtype, np.bool_)):
            raise ValueError(f"{name} must have an integer dtype, got {v.dtype}")
        return v.astype(np.int64)
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains non-finite values")
    return v


def _binary_masks(x: Any, n: int, hw: tuple[int, int] | None, name: str, threshold: float | None) -> np.ndarray:
    """Return uint8 (N, H, W) masks in {0, 1}.

    ``threshold=None`` (ground truth): bool or integer 0/1 only. Otherwise float masks must lie in
    [0, 1] and are binarised with ``m >= threshold``.
    """
    m = _to_numpy(x, name)
    if threshold is not None and m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3 or m.shape[0] != n or (hw is not None and tuple(m.shape[1:]) != hw):
        want = f"({n}, {hw[0]}, {hw[1]})" if hw is not None else f"({n}, H, W)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(m.shape)}")
    if m.dtype == np.bool_:
        return m.astype(np.uint8)
    if np.issubdtype(m.dtype, np.integer):
        if m.size and (m.min() < 0 or m.max() > 1):
            raise ValueError(f"{name}: integer masks must contain only 0 and 1")
        return m.astype(np.uint8)
    if not np.issubdtype(m.dtype, np.floating):
        raise ValueError(f"{name} must be bool, integer or float, got {m.dtype}")
    if threshold is None:
        raise ValueError(f"{name}: ground-truth masks must be bool or integer 0/1, got {m.dtype}")
    if m.size and not (np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0):
        raise ValueError(f"{name}: float masks must be probabilities in [0, 1] (apply sigmoid to logits first)")
    return (m >= threshold).astype(np.uint8)


def _encode(masks: np.ndarray) -> list[dict]:
    """Masks (N, H, W) uint8 -> list of compressed RLEs with str counts (JSON-friendly)."""
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def _xywh(b: np.ndarray) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


# ----------------------------------------------------------------------------------------------


class AmodalCocoEvaluator:
    """Accumulate per-image predictions and targets; compute the six COCO metrics at the end.

    Parameters
    ----------
    evaluations:
        Which of ``"bbox"``, ``"vmask"``, ``"amask"`` to run (default all three). Only the
        prediction fields these need are required (``boxes`` for bbox, ``visible_masks`` for
        vmask, ``amodal_masks`` for amask; ``scores`` and ``labels`` always).
    class_agnostic:
        Map every label (ground truth and predictions) to category 1, as UOAIS does.
    mask_threshold:
        Probability masks are binarised with ``mask >= mask_threshold``.

    Target format per image: ``{"boxes": (N, 4) float xyxy pixels (amodal), "labels": (N,) int,
    "visible_masks": (N, H, W) uint8/bool, "amodal_masks": (N, H, W) uint8/bool, "image_id": int}``,
    optionally ``"occluded": (N,) int`` (validated and stored, not scored). Both mask fields are
    always required because they define the image size. Prediction format per image:
    ``{"boxes": (M, 4), "scores": (M,), "labels": (M,), "visible_masks": (M, H, W),
    "amodal_masks": (M, H, W)}`` (masks bool, 0/1 or probabilities), optionally ``"image_id"``
    which must then equal the target's. Tensors or numpy arrays.
    """

    def __init__(
        self,
        evaluations: Sequence[str] = ("bbox", "vmask", "amask"),
        *,
        class_agnostic: bool = False,
        mask_threshold: float = 0.5,
    ) -> None:
        evaluations = tuple(evaluations)
        unknown = [e for e in evaluations if e not in EVALUATIONS]
        if unknown or not evaluations or len(set(evaluations)) != len(evaluations):
            raise ValueError(f"evaluations must be distinct names from {sorted(EVALUATIONS)}, got {evaluations}")
        if not (0.0 < float(mask_threshold) <= 1.0):
            raise ValueError(f"mask_threshold must be in (0, 1], got {mask_threshold}")
        self.evaluations = evaluations
        self.class_agnostic = bool(class_agnostic)
        self.mask_threshold = float(mask_threshold)
        self.keys: tuple[str, ...] = tuple(k for k in METRIC_KEYS if k.split("_")[0] in evaluations)
        self.higher_is_better: dict[str, bool] = {k: True for k in self.keys}
        self.reset()

    def reset(self) -> None:
        self._images: list[dict] = []
        self._image_ids: set[int] = set()
        self._gt: list[dict] = []
        self._dt: list[dict] = []

    def __len__(self) -> int:
        """Number of images seen."""
        return len(self._images)

    # ------------------------------------------------------------------------------------------
    def update(self, predictions: Sequence[Mapping], targets: Sequence[Mapping]) -> None:
        """Add a batch: ``predictions[i]`` belongs to ``targets[i]``."""
        if isinstance(predictions, Mapping) or isinstance(targets, Mapping):
            raise ValueError("predictions and targets must be sequences of per-image dicts")
        if len(predictions) != len(targets):
            raise ValueError(f"predictions has {len(predictions)} images but targets has {len(targets)}")
        # validate the whole batch before storing anything
        images, gts, dts, ids = [], [], [], set()
        for i, (pred, tgt) in enumerate(zip(predictions, targets)):
            image, gt = self._parse_target(tgt, f"targets[{i}]")
            if image["id"] in self._image_ids or image["id"] in ids:
                raise ValueError(f"targets[{i}]['image_id'] = {image['id']} was already seen")
            ids.add(image["id"])
            dts.extend(self._parse_prediction(pred, image, f"predictions[{i}]"))
            images.append(image)
            gts.extend(gt)
        self._images.extend(images)
        self._image_ids |= ids
        self._gt.extend(gts)
        self._dt.extend(dts)

    def _parse_target(self, tgt: Mapping, name: str) -> tuple[dict, list[dict]]:
        image_id = _image_id(_get(tgt, "image_id", name), f"{name}['image_id']")
        labels = _to_numpy(_get(tgt, "labels", name), f"{name}['labels']")
        if labels.ndim != 1:
            raise ValueError(f"{name}['labels'] must have shape (N,), got {tuple(labels.shape)}")
        n = labels.shape[0]
        labels = _vector(labels, n, f"{name}['labels']", integer=True)
        boxes = _boxes(_get(tgt, "boxes", name), n, f"{name}['boxes']")
        vis = _binary_masks(_get(tgt, "visible_masks", name), n, None, f"{name}['visible_masks']", None)
        hw = (int(vis.shape[1]), int(vis.shape[2]))
        amo = _binary_masks(_get(tgt, "amodal_masks", name), n, hw, f"{name}['amodal_masks']", None)
        occluded = None
        if "occluded" in tgt:
            occluded = _vector(tgt["occluded"], n, f"{name}['occluded']", integer=True)
        if self.class_agnostic:
            labels = np.ones_like(labels)
        vis_rle, amo_rle = _encode(vis), _encode(amo)
        vis_area = vis.sum(axis=(1, 2))
        amo_area = amo.sum(axis=(1, 2))
        gts = []
        for k in range(n):
            g = {
                "image_id": image_id,
                "category_id": int(labels[k]),
                "bbox": _xywh(boxes[k]),
                "iscrowd": 0,
                "visible": vis_rle[k],
                "amodal": amo_rle[k],
                "visible_area": float(vis_area[k]),
                "amodal_area": float(amo_area[k]),
            }
            if occluded is not None:
                g["occluded"] = int(occluded[k])
            gts.append(g)
        return {"id": image_id, "height": hw[0], "width": hw[1]}, gts

    def _parse_prediction(self, pred: Mapping, image: dict, name: str) -> list[dict]:
        if "image_id" in pred:
            pid = _image_id(pred["image_id"], f"{name}['image_id']")
            if pid != image["id"]:
                raise ValueError(f"{name}['image_id'] = {pid} does not match the target's image_id {image['id']}")
        scores = _to_numpy(_get(pred, "scores", name), f"{name}['scores']")
        if scores.ndim != 1:
            raise ValueError(f"{name}['scores'] must have shape (M,), got {tuple(scores.shape)}")
        m = scores.shape[0]
        scores = _vector(scores, m, f"{name}['scores']", integer=False)
        labels = _vector(_get(pred, "labels", name), m, f"{name}['labels']", integer=True)
        if self.class_agnostic:
            labels = np.ones_like(labels)
        hw = (image["height"], image["width"])
        fields: dict[str, list] = {}
        if "bbox" in self.evaluations:
            boxes = _boxes(_get(pred, "boxes", name), m, f"{name}['boxes']")
            fields["bbox"] = [_xywh(b) for b in boxes]
        for e, field in (("vmask", "visible_masks"), ("amask", "amodal_masks")):
            if e in self.evaluations:
                masks = _binary_masks(_get(pred, field, name), m, hw, f"{name}['{field}']", self.mask_threshold)
                fields[e] = _encode(masks)
        return [
            {
                "image_id": image["id"],
                "category_id": int(labels[k]),
                "score": float(scores[k]),
                **{e: v[k] for e, v in fields.items()},
            }
            for k in range(m)
        ]

    # ------------------------------------------------------------------------------------------
    def ground_truth(self, which: str) -> dict:
        """The in-memory COCO ground-truth dataset ``which`` in {"amodal", "visible"}.

        ``segmentation`` and ``area`` come from the amodal or the visible masks; ``bbox`` is the
        amodal box in both.
        """
        if which not in ("amodal", "visible"):
            raise ValueError(f"which must be 'amodal' or 'visible', got {which!r}")
        cats = sorted({g["category_id"] for g in self._gt} | {d["category_id"] for d in self._dt})
        anns = []
        for k, g in enumerate(self._gt):
            a = {
                "id": k + 1,  # pycocotools uses id 0 as "unmatched": ids start at 1
                "image_id": g["image_id"],
                "category_id": g["category_id"],
                "bbox": list(g["bbox"]),
                "iscrowd": 0,
                "segmentation": dict(g[which]),
                "area": g[f"{which}_area"],
            }
            if "occluded" in g:
                a["occluded"] = g["occluded"]
            anns.append(a)
        return {
            "images": [dict(im) for im in self._images],
            "annotations": anns,
            "categories": [{"id": c, "name": str(c)} for c in cats],
        }

    def detections(self, evaluation: str) -> list[dict]:
        """Fresh COCO result dicts for ``evaluation`` (a new deep copy on every call)."""
        if evaluation not in self.evaluations:
            raise ValueError(f"evaluation must be one of {self.evaluations}, got {evaluation!r}")
        iou_type = EVALUATIONS[evaluation][0]
        out = []
        for d in self._dt:
            r = {"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"]}
            if iou_type == "bbox":
                r["bbox"] = d["bbox"]
            else:
                r["segmentation"] = d[evaluation]  # no "bbox": loadRes would take area from it
            out.append(r)
        return copy.deepcopy(out)

    def compute(self) -> dict[str, float]:
        """Run pycocotools once per evaluation; return ``{"bbox_mAP": ..., ...}`` as floats."""
        if not self._images:
            raise ValueError("no images were added; call update() before compute()")
        if not self._gt:
            raise ValueError("the ground truth has no objects: COCO AP/AR are undefined (pycocotools would report -1)")
        gts = {}
        results: dict[str, float] = {}
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):
            for e in self.evaluations:
                iou_type, gt_set, _ = EVALUATIONS[e]
                if gt_set not in gts:
                    gts[gt_set] = _coco_from_dict(self.ground_truth(gt_set))
                coco_gt = gts[gt_set]
                coco_dt = _load_results(coco_gt, self.detections(e))
                ev = COCOeval(coco_gt, coco_dt, iou_type)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
                for metric, idx in _STAT_INDEX.items():
                    value = float(ev.stats[idx])
                    if not math.isfinite(value) or value < 0:
                        # cannot happen with >= 1 ground-truth object; never pass -1 or NaN on
                        raise RuntimeError(f"pycocotools returned {value} for {e}_{metric}")
                    results[f"{e}_{metric}"] = value
        return results


def _coco_from_dict(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _load_results(coco_gt: COCO, detections: list[dict]) -> COCO:
    if detections:
        return coco_gt.loadRes(detections)
    # COCO.loadRes([]) raises IndexError (it inspects anns[0]): build the empty result set here
    return _coco_from_dict(
        {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
    )


def evaluate_amodal_coco(
    predictions: Sequence[Mapping],
    targets: Sequence[Mapping],
    *,
    evaluations: Sequence[str] = ("bbox", "vmask", "amask"),
    class_agnostic: bool = False,
    mask_threshold: float = 0.5,
) -> dict[str, float]:
    """One-shot :class:`AmodalCocoEvaluator`: ``update(predictions, targets)``, ``compute()``."""
    ev = AmodalCocoEvaluator(evaluations, class_agnostic=class_agnostic, mask_threshold=mask_threshold)
    ev.update(predictions, targets)
    return ev.compute()
