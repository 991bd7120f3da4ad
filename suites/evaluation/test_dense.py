"""Tests for mtlcheck.study.evaluation.dense (mIoU, depth, normals, instance offsets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtlcheck.study.evaluation import (
    DepthMetric,
    InstanceOffsetMetric,
    NormalMetric,
    SemanticSegmentationMetric,
)

ALL = [
    lambda: SemanticSegmentationMetric(3),
    lambda: SemanticSegmentationMetric(3, per_image=True),
    DepthMetric,
    NormalMetric,
    InstanceOffsetMetric,
]


def _perfect_batch(metric):
    g = torch.Generator().manual_seed(0)
    if isinstance(metric, SemanticSegmentationMetric):
        t = torch.randint(0, 3, (2, 8, 8), generator=g)
        t[0, 0, :4] = 250
        return t.clone(), t
    if isinstance(metric, DepthMetric):
        t = torch.rand(2, 1, 8, 8, generator=g) + 0.1
        t[0, 0, 0] = 0
        return t.clone(), t
    if isinstance(metric, NormalMetric):
        t = torch.nn.functional.normalize(torch.randn(2, 3, 8, 8, generator=g), dim=1)
        t[0, :, 0, 0] = 0
        return 2.0 * t, t  # length does not matter (x2 is exact in float)
    t = torch.rand(2, 2, 8, 8, generator=g) - 0.5
    t[:, :, :2] = 250
    return t.clone(), t


@pytest.mark.parametrize("make", ALL)
def test_perfect_predictions(make):
    metric = make()
    metric.update(*_perfect_batch(metric))
    out = metric.compute()
    assert set(out) == set(metric.keys) == set(metric.higher_is_better)
    for k, v in out.items():
        assert isinstance(v, float)
        assert v == (1.0 if metric.higher_is_better[k] else 0.0), k


@pytest.mark.parametrize("make", ALL)
def test_compute_without_valid_pixels_raises(make):
    metric = make()
    with pytest.raises(RuntimeError, match="no valid pixel"):
        metric.compute()


@pytest.mark.parametrize("make", ALL)
def test_reset_and_batch_accumulation(make):
    metric = make()
    pred, target = _perfect_batch(metric)
    g = torch.Generator().manual_seed(1)
    if pred.is_floating_point():
        pred = pred + 0.3 * torch.randn(pred.shape, generator=g)
    else:
        pred = torch.randint(0, 3, pred.shape, generator=g)
    metric.update(pred, target)
    whole = metric.compute()
    metric.reset()
    for i in range(pred.shape[0]):
        metric.update(pred[i : i + 1], target[i : i + 1])
    parts = metric.compute()
    assert parts.keys() == whole.keys()
    for k in whole:
        assert parts[k] == pytest.approx(whole[k], rel=1e-12, abs=1e-12), k


# ----------------------------------------------------------------------------------------------
# semantic segmentation


def test_two_class_confusion_matrix_by_hand():
    target = torch.tensor([[[0, 0, 250], [1, 1, 250]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 0]]])  # the ignored pixels are wrong on purpose
    m = SemanticSegmentationMetric(2)
    m.update(pred, target)
    # h = [[1, 1], [0, 2]]: IoU0 = 1 / (2 + 1 - 1) = 1/2, IoU1 = 2 / (2 + 3 - 2) = 2/3
    assert m.confusion_matrix.tolist() == [[1, 1], [0, 2]]
    out = m.compute()
    assert out["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["pixel_acc"] == pytest.approx(3 / 4)
    # logits give the same result as labels
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    m2 = SemanticSegmentationMetric(2)
    m2.update(logits, target)
    assert m2.compute() == out


def test_dataset_level_vs_per_image_miou_by_hand():
    # image A: all class 0, predicted right. image B: gt [0,1,1,1], pred all 1.
    target = torch.tensor([[[0, 0], [0, 0]], [[0, 1], [1, 1]]])
    pred = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]])
    m = SemanticSegmentationMetric(2, per_image=True)
    m.update(pred, target)
    out = m.compute()
    # dataset: h = [[4, 1], [0, 3]] -> IoU0 = 4/5, IoU1 = 3/4
    assert out["miou"] == pytest.approx((4 / 5 + 3 / 4) / 2)
    # per image: A: IoU0 = 1, IoU1 = NaN (absent from A's gt); B: IoU0 = 0, IoU1 = 3/4
    # per class over images: 0 -> 1/2, 1 -> 3/4
    assert out["miou_per_image"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert out["pixel_acc"] == pytest.approx(7 / 8)


def test_absent_class_left_out_but_false_positive_class_counts():
    target = torch.tensor([[[0, 0, 1, 1]]])
    m = SemanticSegmentationMetric(4)
    m.update(target.clone(), target)  # classes 2, 3 absent from gt and pred: undefined
    assert m.compute()["miou"] == 1.0
    iou = m.iou_per_class()
    assert iou[:2].tolist() == [1.0, 1.0] and math.isnan(iou[2]) and math.isnan(iou[3])
    m.reset()
    m.update(torch.tensor([[[0, 0, 1, 2]]]), target)  # class 2 predicted, not in gt: IoU 0
    assert m.compute()["miou"] == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_ignore_index_minus_one_and_numpy_input():
    target = np.array([[[-1, 0, 1]]])
    m = SemanticSegmentationMetric(2, ignore_index=-1)
    m.update(np.array([[[1, 0, 1]]]), target)
    assert m.compute() == {"miou": 1.0, "pixel_acc": 1.0}


def test_semantic_bad_inputs():
    m = SemanticSegmentationMetric(3)
    with pytest.raises(ValueError, match="shape mismatch.*pred"):
        m.update(torch.zeros(2, 4, 5, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape mismatch.*logits"):
        m.update(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target contains values outside 0..2"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 1], [3, 250]]]))
    with pytest.raises(ValueError, match="pred contains labels outside"):
        m.update(torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have an integer dtype"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="3-D pred must be integer"):
        m.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_index"):
        SemanticSegmentationMetric(3, ignore_index=1)
    with pytest.raises(ValueError, match="num_classes"):
        SemanticSegmentationMetric(0)
    with pytest.raises(RuntimeError, match="no valid pixel"):
        m.compute()  # nothing was stored by the failed updates


# ----------------------------------------------------------------------------------------------
# depth


def test_depth_l1_vs_mse_by_hand():
    target = torch.tensor([[[1.0, 2.0, 0.0, 4.0, float("nan")]]])  # 0 and NaN are invalid
    pred = torch.tensor([[[2.0, 2.0, 9.0, 1.0, 5.0]]])
    m = DepthMetric()
    m.update(pred, target)
    out = m.compute()
    # errors on the 3 valid pixels: +1, 0, -3
    assert out["l1"] == pytest.approx(4 / 3)
    assert out["mse"] == pytest.approx(10 / 3)  # what the paper's code reports as "l1"
    assert out["abs_rel"] == pytest.approx((1 / 1 + 0 + 3 / 4) / 3)


def test_depth_valid_mask_and_bad_inputs():
    target = torch.tensor([[[1.0, 2.0, 4.0]]])
    pred = torch.tensor([[[1.0, 5.0, 4.0]]])
    m = DepthMetric()
    m.update(pred, target, valid_mask=torch.tensor([[[True, False, True]]]))
    assert m.compute()["l1"] == 0.0
    with pytest.raises(ValueError, match="shape mismatch.*pred"):
        m.update(pred[..., :2], target)
    with pytest.raises(ValueError, match="shape mismatch"):
        m.update(torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3))  # 2 channels
    with pytest.raises(ValueError, match="valid_mask must have shape"):
        m.update(pred, target, valid_mask=torch.ones(1, 1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid_mask must be a bool"):
        m.update(pred, target, valid_mask=torch.ones(1, 1, 3))
    with pytest.raises(ValueError, match="pred contains non-finite"):
        m.update(torch.tensor([[[float("nan"), 1.0, 1.0]]]), target)
    with pytest.raises(ValueError, match="must be float"):
        m.update(pred.long(), target)


# ----------------------------------------------------------------------------------------------
# surface normals


def _at_angles(degrees: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, N) pred/gt pairs with the given angles, in varied planes and lengths."""
    a = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    gt = torch.zeros(1, 3, 1, len(degrees), dtype=torch.float64)
    gt[0, 2] = 1.0
    pred = torch.stack([torch.sin(a), torch.zeros_like(a), torch.cos(a)])[None, :, None] * 2.5
    return pred, gt


def test_normal_known_angles():
    # columns: x vs y (90), x+y vs x (45), -x vs x (180), zero pred vs x (90 by convention)
    pred = torch.tensor([[[[1.0, 1.0, -1.0, 0.0]], [[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]])
    gt = torch.tensor([[[[0.0, 1.0, 1.0, 1.0]], [[1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]])
    e = NormalMetric.angle_error(pred, gt)
    assert e[0, 0].tolist() == pytest.approx([90.0, 45.0, 180.0, 90.0], abs=1e-12)


def test_normal_statistics_by_hand():
    pred, gt = _at_angles([5.0, 15.0, 25.0, 35.0, 60.0])
    m = NormalMetric()
    m.update(pred, gt)
    out = m.compute()
    assert out["mean"] == pytest.approx(28.0, abs=1e-9)
    assert out["median"] == pytest.approx(25.0, abs=1e-3)
    assert out["within_11_25"] == pytest.approx(1 / 5)
    assert out["within_22_5"] == pytest.approx(2 / 5)
    assert out["within_30"] == pytest.approx(3 / 5)
    # an even count averages the two middle values, like numpy.median
    m.update(*_at_angles([40.0]))
    assert m.compute()["median"] == pytest.approx((25.0 + 35.0) / 2, abs=1e-3)


def test_normal_thresholds_are_strict_and_median_matches_numpy():
    # atan2 reproduces these angles to ~1e-14 deg; strictness is checked with a small margin
    pred, gt = _at_angles([11.25 - 1e-6, 11.25 + 1e-6, 29.999, 30.001])
    m = NormalMetric()
    m.update(pred, gt)
    out = m.compute()
    assert out["within_11_25"] == 0.25 and out["within_30"] == 0.75
    g = torch.Generator().manual_seed(3)
    p = torch.randn(2, 3, 9, 7, generator=g)
    t = torch.nn.functional.normalize(torch.randn(2, 3, 9, 7, generator=g), dim=1)
    m.reset()
    m.update(p, t)
    e = NormalMetric.angle_error(p, t).flatten().numpy()
    out = m.compute()
    assert out["median"] == pytest.approx(float(np.median(e)), abs=1e-3)
    assert out["mean"] == pytest.approx(float(e.mean()), abs=1e-9)


def test_normal_valid_pixels():
    # ground truth (1,-1,0)/sqrt(2) sums to zero but is valid (mtan's sum test would drop it)
    gt = torch.tensor([[[[0.0, 2**-0.5, 1.0]], [[0.0, -(2**-0.5), 0.0]], [[0.0, 0.0, 0.0]]]])
    pred = torch.tensor([[[[5.0, 2**-0.5, 0.0]], [[5.0, -(2**-0.5), 1.0]], [[5.0, 0.0, 0.0]]]])
    m = NormalMetric()
    m.update(pred, gt)  # pixel 0 invalid (zero gt); pixel 1 at 0 deg; pixel 2 at 90 deg
    out = m.compute()
    assert out["mean"] == pytest.approx(45.0)
    m.reset()
    m.update(pred, gt, valid_mask=torch.tensor([[[True, True, False]]]))
    assert m.compute()["mean"] == pytest.approx(0.0, abs=1e-12)


def test_normal_bad_inputs():
    m = NormalMetric()
    with pytest.raises(ValueError, match="shape mismatch.*pred"):
        m.update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="shape mismatch"):
        m.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="pred contains non-finite"):
        m.update(torch.full((1, 3, 1, 1), float("inf")), torch.ones(1, 3, 1, 1))
    with pytest.raises(ValueError, match="median_bin_deg"):
        NormalMetric(median_bin_deg=0)


# ----------------------------------------------------------------------------------------------
# instance offsets


def test_instance_offset_l1_by_hand():
    target = torch.tensor([[[[0.1, 250.0]], [[-0.2, 250.0]]]])  # (1, 2, 1, 2)
    pred = torch.tensor([[[[0.4, 7.0]], [[0.0, -3.0]]]])
    m = InstanceOffsetMetric()
    m.update(pred, target)
    assert m.compute() == {"l1": pytest.approx((0.3 + 0.2) / 2)}
    # entries are ignored one by one, not per pixel
    target[0, 1, 0, 1] = 0.5
    m.reset()
    m.update(pred, target)
    assert m.compute()["l1"] == pytest.approx((0.3 + 0.2 + 3.5) / 3)


def test_instance_offset_bad_inputs():
    m = InstanceOffsetMetric()
    with pytest.raises(ValueError, match="shape mismatch.*pred"):
        m.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 3))
    with pytest.raises(ValueError, match="shape mismatch"):
        m.update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        m.update([[0.0]], torch.zeros(1, 2, 1, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("make", ALL)
def test_cuda_matches_cpu(make):
    cpu, gpu = make(), make()
    pred, target = _perfect_batch(cpu)
    if pred.is_floating_point():
        pred = pred + 0.1
    cpu.update(pred, target)
    gpu.update(pred.cuda(), target.cuda())
    a, b = cpu.compute(), gpu.compute()
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-9, abs=1e-9)
