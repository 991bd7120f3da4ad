"""Dense-prediction metrics for CityScapes and NYU-v2, accumulated over a whole dataset.

Every metric follows the same protocol: ``update(pred, target)`` per batch, ``compute()`` at the
end (a dict of Python floats), ``reset()``; ``keys`` lists the output keys and
``higher_is_better[key]`` says which direction is better. Sums are accumulated in float64 on the
device of the first batch and pooled over all valid pixels of the dataset (not averaged per batch,
as mtan and LibMTL do). ``compute()`` raises ``RuntimeError`` when no valid pixel was seen: a
metric over nothing is undefined, and we never return a silent NaN.

Sources of the formulas: mtan ``im2im_pred/utils.py`` (= LibMTL ``examples/nyu/utils.py``), the
paper's code base Pylon (``metrics/``), SamsungLabs/MTL ``code/evaluation/cityscapes.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "DenseMetric",
    "DepthMetric",
    "InstanceOffsetMetric",
    "NormalMetric",
    "SemanticSegmentationMetric",
]


def _tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _same_device(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target is on {target.device}")


def _is_float(t: torch.Tensor) -> bool:
    return t.dtype.is_floating_point


def _is_int(t: torch.Tensor) -> bool:
    return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool


def _check_pair(pred: torch.Tensor, target: torch.Tensor, expected: str, ok: bool) -> None:
    if not ok:
        raise ValueError(
            f"pred/target shape mismatch: expected {expected}; got pred {tuple(pred.shape)}, "
            f"target {tuple(target.shape)}"
        )


def _float_maps(pred: Any, target: Any, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pred and target as float tensors of one shape (B, channels, H, W) on one device, or ValueError."""
    pred, target = _tensor(pred, "pred"), _tensor(target, "target")
    _same_device(pred, target)
    _check_pair(
        pred,
        target,
        f"equal shapes (B, {channels}, H, W)",
        pred.shape == target.shape and target.ndim == 4 and target.shape[1] == channels,
    )
    if not (_is_float(pred) and _is_float(target)):
        raise ValueError(f"pred and target must be float, got {pred.dtype} and {target.dtype}")
    return pred, target


def _valid_mask(mask: Any, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
    if mask is None:
        return None
    m = _tensor(mask, "valid_mask")
    if m.dtype != torch.bool:
        raise ValueError(f"valid_mask must be a bool tensor, got {m.dtype}")
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"valid_mask must have shape {tuple(shape)}, got {tuple(m.shape)}")
    return m.to(device)


class DenseMetric:
    """Base class: accumulating metric with ``update`` / ``compute`` / ``reset``."""

    #: output key -> True if a larger value is better
    higher_is_better: dict[str, bool] = {}

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.higher_is_better)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, pred: Any, target: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _acc(self, name: str, value: torch.Tensor) -> None:
        """Add a float64/int64 tensor to the accumulator ``name`` (created on first use)."""
        cur = self._sums.get(name)
        self._sums[name] = value if cur is None else cur + value.to(cur.device)

    def _require_data(self, count_key: str) -> int:
        n = int(self._sums[count_key].item()) if count_key in self._sums else 0
        if n == 0:
            raise RuntimeError(
                f"{type(self).__name__}.compute(): no valid pixel was seen "
                "(update() was never called, or every pixel was invalid/ignored)"
            )
        return n


# ----------------------------------------------------------------------------------------------
class SemanticSegmentationMetric(DenseMetric):
    """Semantic segmentation: mIoU and pixel accuracy from a dataset-level confusion matrix.

    ``pred`` is either logits/scores ``(B, C, H, W)`` (float; argmax over C) or labels
    ``(B, H, W)`` (integer); ``target`` is ``(B, H, W)`` integer with classes ``0..C-1`` and
    ``ignore_index`` (default 250, the paper's code; mtan/LibMTL use -1) for ignored pixels.
    Any other target value, or a predicted label outside ``0..C-1`` at a non-ignored pixel, raises
    ``ValueError``.

    Confusion matrix ``h[t, p]`` summed over all non-ignored pixels of the dataset (mtan
    ``ConfMatrix``, LibMTL ``SegMetric``, SamsungLabs/MTL):

    - ``IoU_c = h_cc / (sum_p h_cp + sum_t h_tc - h_cc)``; a class with zero union (absent from
      both ground truth and predictions) is undefined and left out of the mean
      (``nanmean``, as SamsungLabs/MTL; mtan/LibMTL ``torch.mean`` would give NaN);
      ``miou = mean over defined classes``.
    - ``pixel_acc = trace(h) / sum(h)``.

    With ``per_image=True`` the extra key ``miou_per_image`` follows Pylon HEAD: per image,
    ``IoU_c`` with NaN for classes absent from that image's ground truth, then ``nanmean`` over
    images per class, then ``nanmean`` over classes. Which of the two the paper reports is unknown.
    Values are fractions in [0, 1] (the paper's tables show percentages).
    """

    def __init__(self, num_classes: int, *, ignore_index: int = 250, per_image: bool = False):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not isinstance(ignore_index, int) or 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index must be an int outside 0..{num_classes - 1}, got {ignore_index!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_image = bool(per_image)
        hib = {"miou": True, "pixel_acc": True}
        if self.per_image:
            hib["miou_per_image"] = True
        self.higher_is_better = hib
        super().__init__()

    def reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}

    def _labels(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not _is_int(target):
            raise ValueError(f"target must have an integer dtype, got {target.dtype}")
        if target.ndim != 3:
            raise ValueError(f"target must have shape (B, H, W), got {tuple(target.shape)}")
        c = self.num_classes
        if pred.ndim == 4:
            _check_pair(
                pred,
                target,
                f"pred (B, {c}, H, W) logits and target (B, H, W)",
                pred.shape[1] == c and pred.shape[:1] + pred.shape[2:] == target.shape,
            )
            if not _is_float(pred):
                raise ValueError(f"4-D pred must be float logits, got {pred.dtype}")
            return pred.argmax(dim=1)
        _check_pair(
            pred, target, "pred (B, H, W) labels or (B, C, H, W) logits, target (B, H, W)", pred.shape == target.shape
        )
        if not _is_int(pred):
            raise ValueError(f"3-D pred must be integer labels, got {pred.dtype}")
        return pred

    def update(self, pred: Any, target: Any) -> None:
        pred, target = _tensor(pred, "pred"), _tensor(target, "target")
        _same_device(pred, target)
        labels = self._labels(pred, target).long()
        target = target.long()
        c = self.num_classes
        valid = target != self.ignore_index
        bad_t = valid & ((target < 0) | (target >= c))
        if bool(bad_t.any()):
            raise ValueError(
                f"target contains values outside 0..{c - 1} that are not "
                f"ignore_index={self.ignore_index}: {torch.unique(target[bad_t]).tolist()[:10]}"
            )
        if bool((valid & ((labels < 0) | (labels >= c))).any()):
            raise ValueError(f"pred contains labels outside 0..{c - 1} at non-ignored pixels")
        b = target.shape[0]
        img = torch.arange(b, device=target.device).view(b, 1, 1).expand_as(target)
        idx = (img * c * c + target * c + labels)[valid]
        per_img = torch.bincount(idx, minlength=b * c * c).view(b, c, c)
        self._acc("confusion", per_img.sum(0))
        if self.per_image:
            inter = per_img.diagonal(dim1=1, dim2=2).double()
            gt = per_img.sum(2).double()
            union = gt + per_img.sum(1).double() - inter
            present = gt > 0
            iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
            self._acc("img_iou_sum", iou.sum(0))
            self._acc("img_iou_count", present.sum(0))

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """int64 ``(C, C)`` matrix, rows = ground truth, columns = prediction."""
        if "confusion" not in self._sums:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        return self._sums["confusion"].clone()

    def iou_per_class(self) -> torch.Tensor:
        """float64 ``(C,)`` dataset-level IoU per class; NaN where the union is zero."""
        h = self.confusion_matrix.double()
        inter = h.diagonal()
        union = h.sum(0) + h.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, math.nan))

    def compute(self) -> dict[str, float]:
        h = self.confusion_matrix
        if int(h.sum()) == 0:
            raise RuntimeError(
                f"{type(self).__name__}.compute(): no valid pixel was seen "
                "(update() was never called, or every pixel was ignored)"
            )
        iou = self.iou_per_class()
        out = {
            "miou": float(iou[~iou.isnan()].mean()),
            "pixel_acc": float(h.diagonal().sum().double() / h.sum().double()),
        }
        if self.per_image:
            count = self._sums["img_iou_count"]
            per_class = self._sums["img_iou_sum"][count > 0] / count[count > 0]
            out["miou_per_image"] = float(per_class.mean())
        return out


# ----------------------------------------------------------------------------------------------
class DepthMetric(DenseMetric):
    """Depth estimation errors over valid pixels (``target > 0``; 0 and NaN mark invalid depth).

    With ``e = pred - target`` over the ``n`` valid pixels of the whole dataset:

    - ``l1 = sum|e| / n``      (mtan/LibMTL "abs err"; the paper's tables say "L1")
    - ``mse = sum e^2 / n``    (what the paper's code, Pylon ``metrics/depth_estimation.py``,
      computes and names ``l1``; SamsungLabs/MTL calls it "MSE")
    - ``abs_rel = sum(|e| / target) / n``   (mtan/LibMTL "rel err")

    Which of ``l1`` and ``mse`` the paper's "DE (L1)" columns contain is uncertain; both are
    reported. ``pred`` and ``target`` must have the same shape, ``(B, 1, H, W)`` or ``(B, H, W)``.
    ``update(..., valid_mask=m)`` further restricts the valid pixels to a bool mask ``m`` of that
    shape. A non-finite prediction at a valid pixel raises ``ValueError``.
    """

    higher_is_better = {"l1": False, "mse": False, "abs_rel": False}

    def reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}

    def update(self, pred: Any, target: Any, valid_mask: Any = None) -> None:
        pred, target = _tensor(pred, "pred"), _tensor(target, "target")
        _same_device(pred, target)
        _check_pair(
            pred,
            target,
            "equal shapes (B, 1, H, W) or (B, H, W)",
            pred.shape == target.shape and (target.ndim == 3 or (target.ndim == 4 and target.shape[1] == 1)),
        )
        if not (_is_float(pred) and _is_float(target)):
            raise ValueError(f"pred and target must be float, got {pred.dtype} and {target.dtype}")
        valid = target > 0
        m = _valid_mask(valid_mask, target.shape, target.device)
        if m is not None:
            valid &= m
        p, g = pred[valid].double(), target[valid].double()
        if not bool(torch.isfinite(p).all()):
            raise ValueError("pred contains non-finite values at valid pixels")
        e = p - g
        self._acc("n", torch.tensor(p.numel(), dtype=torch.int64, device=p.device))
        self._acc("abs", e.abs().sum())
        self._acc("sq", (e * e).sum())
        self._acc("rel", (e.abs() / g).sum())

    def compute(self) -> dict[str, float]:
        n = self._require_data("n")
        return {
            "l1": float(self._sums["abs"]) / n,
            "mse": float(self._sums["sq"]) / n,
            "abs_rel": float(self._sums["rel"]) / n,
        }


# ----------------------------------------------------------------------------------------------
class NormalMetric(DenseMetric):
    """Surface-normal angle error in degrees over valid pixels, pooled over the dataset.

    ``pred`` and ``target`` are ``(B, 3, H, W)``. Per pixel the error is the angle between the two
    vectors, ``e = degrees(acos(clamp(p.g / (|p||g|), -1, 1)))`` (mtan/LibMTL, which normalise
    ``pred``; Pylon's ``CosineSimilarity`` normalises both), computed as the equal
    ``degrees(atan2(|p x g|, p.g))``, which keeps full precision near 0 degrees. A zero-length
    prediction counts as 90 degrees (cosine similarity with eps gives 0, as in Pylon).

    Valid pixels: ground truth not the zero vector (any component != 0) and finite. mtan tests
    ``sum(gt, dim=1) != 0``, which also drops non-zero normals whose components sum to 0; we do
    not. ``update(..., valid_mask=m)`` with bool ``m`` of shape ``(B, H, W)`` restricts further.

    Outputs: ``mean``, ``median`` (degrees), and ``within_11_25``, ``within_22_5``, ``within_30``,
    the fractions in [0, 1] of pixels with ``e < 11.25``, ``e < 22.5``, ``e < 30`` (strict, as
    mtan). The median comes from a histogram of bin width ``median_bin_deg`` (default 1e-3
    degrees; bin centres clipped to the observed min/max error, averaging the two middle order
    statistics for an even count), so it is exact to within one bin width (and exact when all
    errors are equal, e.g. 0 for a perfect prediction); mean and fractions are exact.
    """

    higher_is_better = {
        "mean": False,
        "median": False,
        "within_11_25": True,
        "within_22_5": True,
        "within_30": True,
    }
    thresholds = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}

    def __init__(self, *, median_bin_deg: float = 1e-3) -> None:
        if not (0 < median_bin_deg <= 1.0):
            raise ValueError(f"median_bin_deg must be in (0, 1], got {median_bin_deg}")
        self.median_bin_deg = float(median_bin_deg)
        self.num_bins = int(math.ceil(180.0 / self.median_bin_deg))
        super().__init__()

    def reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}

    @staticmethod
    def angle_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel angle in degrees between ``(B, 3, H, W)`` fields, float64 ``(B, H, W)``."""
        p, g = pred.double(), target.double()
        dot = (p * g).sum(1)
        cross = torch.linalg.cross(p, g, dim=1).norm(dim=1)
        e = torch.rad2deg(torch.atan2(cross, dot))
        return torch.where(p.norm(dim=1) > 0, e, torch.full_like(e, 90.0))

    def update(self, pred: Any, target: Any, valid_mask: Any = None) -> None:
        pred, target = _float_maps(pred, target, 3)
        valid = (target != 0).any(1) & torch.isfinite(target).all(1)
        m = _valid_mask(valid_mask, valid.shape, target.device)
        if m is not None:
            valid &= m
        if not bool(torch.isfinite(pred).all(1)[valid].all()):
            raise ValueError("pred contains non-finite values at valid pixels")
        e = self.angle_error(pred, target)[valid]
        self._acc("n", torch.tensor(e.numel(), dtype=torch.int64, device=e.device))
        self._acc("sum", e.sum())
        for key, t in self.thresholds.items():
            self._acc(key, (e < t).sum())
        bins = (e / self.median_bin_deg).floor().long().clamp_(0, self.num_bins - 1)
        self._acc("hist", torch.bincount(bins, minlength=self.num_bins))
        if e.numel():
            lo, hi = e.min(), e.max()
            self._sums["min"] = torch.minimum(self._sums["min"], lo) if "min" in self._sums else lo
            self._sums["max"] = torch.maximum(self._sums["max"], hi) if "max" in self._sums else hi

    def _order_statistic(self, cum: torch.Tensor, r: int) -> float:
        """Bin centre of the r-th (0-based) smallest error, clipped to the observed [min, max]."""
        b = int(torch.searchsorted(cum, torch.tensor([r + 1], device=cum.device)).item())
        centre = (b + 0.5) * self.median_bin_deg
        return min(max(centre, float(self._sums["min"])), float(self._sums["max"]))

    def compute(self) -> dict[str, float]:
        n = self._require_data("n")
        cum = self._sums["hist"].cumsum(0)
        if n % 2:
            median = self._order_statistic(cum, n // 2)
        else:
            lo, hi = self._order_statistic(cum, n // 2 - 1), self._order_statistic(cum, n // 2)
            median = 0.5 * (lo + hi)
        out = {"mean": float(self._sums["sum"]) / n, "median": median}
        for key in self.thresholds:
            out[key] = int(self._sums[key]) / n
        return out


# ----------------------------------------------------------------------------------------------
class InstanceOffsetMetric(DenseMetric):
    """Instance-offset regression (CityScapes "IS"): mean absolute error over valid entries.

    ``pred`` and ``target`` are ``(B, 2, H, W)`` (offset to the instance centroid in y and x).
    Entries where ``target == ignore_value`` (default 250, the paper's code) are ignored, entry by
    entry over both channels, as Pylon's ``l1_loss(pred[m], gt[m])`` with ``m = gt != 250``:
    ``l1 = sum_valid |pred - target| / #valid entries``.
    """

    higher_is_better = {"l1": False}

    def __init__(self, *, ignore_value: float = 250.0) -> None:
        self.ignore_value = float(ignore_value)
        super().__init__()

    def reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}

    def update(self, pred: Any, target: Any) -> None:
        pred, target = _float_maps(pred, target, 2)
        valid = target != self.ignore_value
        p, g = pred[valid].double(), target[valid].double()
        if not bool(torch.isfinite(p).all()):
            raise ValueError("pred contains non-finite values at valid entries")
        if not bool(torch.isfinite(g).all()):
            raise ValueError("target contains non-finite values that are not ignore_value")
        self._acc("n", torch.tensor(p.numel(), dtype=torch.int64, device=p.device))
        self._acc("abs", (p - g).abs().sum())

    def compute(self) -> dict[str, float]:
        n = self._require_data("n")
        return {"l1": float(self._sums["abs"]) / n}
