"""Tests for mtlcheck.study.evaluation.coco (pycocotools amodal / visible evaluation)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mtlcheck.study.evaluation import (
    METRIC_KEYS,
    PAPER_COLUMNS,
    AmodalCocoEvaluator,
    evaluate_amodal_coco,
)

H = W = 48


def _rect(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _scene(image_id: int, rects: list[tuple[int, int, int, int]]) -> dict:
    """Objects in z-order (later = on top); visible = amodal minus everything above it."""
    amodal = np.stack([_rect(*r) for r in rects]) if rects else np.zeros((0, H, W), np.uint8)
    visible = amodal.copy()
    for k in range(len(rects)):
        for above in amodal[k + 1 :]:
            visible[k] &= 1 - above
    boxes = [[x0, y0, x1, y1] for (y0, x0, y1, x1) in rects]
    occ = [int(1 - v.sum() / a.sum() >= 0.05) for v, a in zip(visible, amodal)]
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(rects), dtype=torch.int64),
        "visible_masks": torch.from_numpy(visible),
        "amodal_masks": torch.from_numpy(amodal),
        "occluded": torch.tensor(occ, dtype=torch.int64),
        "image_id": image_id,
    }


def _targets() -> list[dict]:
    # every image has at least one strongly occluded object and one unoccluded object
    return [
        _scene(1, [(2, 2, 22, 22), (12, 12, 30, 30), (32, 4, 44, 20)]),
        _scene(2, [(5, 5, 40, 25), (10, 15, 30, 45)]),
        _scene(3, [(0, 0, 20, 40), (8, 8, 28, 28), (30, 30, 46, 46)]),
    ]


def _perfect(targets: list[dict]) -> list[dict]:
    return [
        {
            "boxes": t["boxes"].clone(),
            "scores": torch.linspace(0.9, 0.5, len(t["labels"])),
            "labels": t["labels"].clone(),
            "visible_masks": t["visible_masks"].float(),
            "amodal_masks": t["amodal_masks"].float(),
        }
        for t in targets
    ]


def test_keys_match_paper_table_1_headers():
    assert METRIC_KEYS == tuple(PAPER_COLUMNS)
    assert list(PAPER_COLUMNS.values()) == [
        "BBox mAP",
        "BBox mAR",
        "VMask mAP",
        "VMask mAR",
        "AMask mAP",
        "AMask mAR",
    ]
    ev = AmodalCocoEvaluator()
    assert ev.keys == METRIC_KEYS
    assert ev.higher_is_better == {k: True for k in METRIC_KEYS}


def test_perfect_predictions_score_one(capsys):
    targets = _targets()
    out = evaluate_amodal_coco(_perfect(targets), targets)
    assert set(out) == set(METRIC_KEYS)
    for k, v in out.items():
        assert isinstance(v, float)
        assert v == pytest.approx(1.0), k
    captured = capsys.readouterr()
    assert captured.out == ""  # pycocotools' progress prints are silenced


def test_probability_masks_are_thresholded_at_half():
    targets = _targets()
    preds = _perfect(targets)
    for p, t in zip(preds, targets):
        # 0.6 inside, 0.4 outside the true masks; 0.5 itself counts as foreground
        p["visible_masks"] = 0.4 + 0.2 * t["visible_masks"].float()
        p["amodal_masks"] = 0.5 * t["amodal_masks"].float() + 0.2 * (1 - t["amodal_masks"].float())
    out = evaluate_amodal_coco(preds, targets)
    assert all(v == pytest.approx(1.0) for v in out.values())


def test_torchvision_style_n1hw_masks_accepted():
    targets = _targets()
    preds = _perfect(targets)
    for p in preds:
        p["visible_masks"] = p["visible_masks"][:, None]
        p["amodal_masks"] = p["amodal_masks"][:, None]
    out = evaluate_amodal_coco(preds, targets)
    assert out["vmask_mAP"] == pytest.approx(1.0)


def test_amodal_masks_against_visible_gt_score_lower():
    targets = _targets()
    preds = _perfect(targets)
    for p in preds:
        p["visible_masks"] = p["amodal_masks"].clone()  # predict amodal where visible is asked
    out = evaluate_amodal_coco(preds, targets)
    assert out["vmask_mAP"] < 0.95 and out["vmask_mAR"] < 0.95
    # the amodal evaluation and the box evaluation are unaffected
    assert out["amask_mAP"] == pytest.approx(1.0) and out["bbox_mAP"] == pytest.approx(1.0)
    # ... and conversely: visible masks against the amodal ground truth
    preds = _perfect(targets)
    for p in preds:
        p["amodal_masks"] = p["visible_masks"].clone()
    out2 = evaluate_amodal_coco(preds, targets)
    assert out2["amask_mAP"] < 0.95 and out2["vmask_mAP"] == pytest.approx(1.0)


def test_repeated_compute_is_stable_and_inputs_untouched():
    targets = _targets()
    preds = _perfect(targets)
    preds[0]["scores"][0] = 0.1
    preds[1]["visible_masks"] = preds[1]["amodal_masks"].clone()
    ev = AmodalCocoEvaluator()
    ev.update(preds, targets)
    stored = copy.deepcopy(ev._dt)
    first = ev.compute()
    second = ev.compute()  # loadRes mutates what it gets: each run needs its own copy
    assert first == second
    assert ev._dt == stored
    a, b = ev.detections("vmask"), ev.detections("vmask")
    assert a == b and a is not b and a[0] is not b[0]


def test_batched_updates_equal_one_shot():
    targets = _targets()
    preds = _perfect(targets)
    preds[2]["amodal_masks"] = preds[2]["visible_masks"].clone()
    ev = AmodalCocoEvaluator()
    for p, t in zip(preds, targets):
        ev.update([p], [t])
    assert len(ev) == 3
    assert ev.compute() == evaluate_amodal_coco(preds, targets)


# ----------------------------------------------------------------------------------------------
# hand-computed cases


def _single(masks_gt: np.ndarray, masks_pred: np.ndarray) -> tuple[dict, dict]:
    n = masks_gt.shape[0]
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * n)
    t = {
        "boxes": box,
        "labels": torch.ones(n, dtype=torch.int64),
        "visible_masks": masks_gt,
        "amodal_masks": masks_gt,
        "image_id": 7,
    }
    m = masks_pred.shape[0]
    p = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]] * m),
        "scores": torch.ones(m),
        "labels": torch.ones(m, dtype=torch.int64),
        "visible_masks": masks_pred,
        "amodal_masks": masks_pred,
    }
    return p, t


def test_mask_iou_078_matches_six_of_ten_thresholds():
    gt = _rect(0, 0, 10, 10)[None]  # 100 px
    pred = gt.copy()
    pred[0, 0, :10] = 0
    pred[0, 1, :10] = 0
    pred[0, 2, :2] = 0  # 78 px inside the ground truth: IoU 0.78
    p, t = _single(gt, pred)
    out = evaluate_amodal_coco([p], [t], evaluations=("vmask",))
    # matched at IoU thresholds 0.50, 0.55, ..., 0.75 (6 of 10): AP and AR are 1 there, 0 elsewhere
    assert out == {"vmask_mAP": pytest.approx(0.6), "vmask_mAR": pytest.approx(0.6)}


def test_box_iou_078_matches_six_of_ten_thresholds():
    gt = _rect(0, 0, 10, 10)[None]
    p, t = _single(gt, gt)
    p["boxes"] = torch.tensor([[0.0, 2.2, 10.0, 10.0]])  # 78 of 100 box area: IoU 0.78
    out = evaluate_amodal_coco([p], [t], evaluations=("bbox",))
    assert out == {"bbox_mAP": pytest.approx(0.6), "bbox_mAR": pytest.approx(0.6)}


def test_half_recall_hand_computed():
    # 2 ground-truth objects, one perfect detection: recall 0.5 at precision 1
    gt = np.stack([_rect(0, 0, 10, 10), _rect(20, 20, 30, 30)])
    p, t = _single(gt, gt[:1])
    out = evaluate_amodal_coco([p], [t], evaluations=("amask",))
    # 101-point interpolated AP: precision 1 at the 51 recall points 0.00..0.50, 0 after
    assert out["amask_mAP"] == pytest.approx(51 / 101)
    assert out["amask_mAR"] == pytest.approx(0.5)


def test_false_positive_on_image_without_gt_hand_computed():
    gt = _rect(0, 0, 10, 10)[None]
    p1, t1 = _single(gt, gt)
    p1["scores"] = torch.tensor([0.8])
    empty = np.zeros((0, H, W), np.uint8)
    t2 = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "visible_masks": empty,
        "amodal_masks": empty,
        "image_id": 8,
    }
    fp = _rect(30, 30, 40, 40)[None]
    p2 = {
        "boxes": torch.tensor([[30.0, 30.0, 40.0, 40.0]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.ones(1, dtype=torch.int64),
        "visible_masks": fp,
        "amodal_masks": fp,
    }
    out = evaluate_amodal_coco([p1, p2], [t1, t2])
    # ranked: FP (0.9), TP (0.8) -> precision 0.5 at recall 1; interpolated precision 0.5 throughout
    for e in ("bbox", "vmask", "amask"):
        assert out[f"{e}_mAP"] == pytest.approx(0.5)
        assert out[f"{e}_mAR"] == pytest.approx(1.0)


def test_wrong_labels_and_class_agnostic():
    targets = _targets()
    preds = _perfect(targets)
    for p in preds:
        p["labels"] = torch.full_like(p["labels"], 2)
    out = evaluate_amodal_coco(preds, targets)
    assert all(v == 0.0 for v in out.values())
    out = evaluate_amodal_coco(preds, targets, class_agnostic=True)
    assert all(v == pytest.approx(1.0) for v in out.values())


# ----------------------------------------------------------------------------------------------
# no detections / no ground truth


def _no_detections(n_images: int) -> list[dict]:
    e = torch.zeros(0, H, W)
    return [
        {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
            "visible_masks": e,
            "amodal_masks": e,
        }
        for _ in range(n_images)
    ]


def test_no_detections_anywhere_gives_zero():
    targets = _targets()
    out = evaluate_amodal_coco(_no_detections(3), targets)
    assert out == {k: 0.0 for k in METRIC_KEYS}


def test_image_without_detections_counts_as_misses():
    targets = _targets()
    preds = _perfect(targets)
    preds[1] = _no_detections(1)[0]  # image 2 has 2 of the 8 objects
    out = evaluate_amodal_coco(preds, targets)
    for e in ("bbox", "vmask", "amask"):
        assert out[f"{e}_mAR"] == pytest.approx(6 / 8)
        assert out[f"{e}_mAP"] == pytest.approx(76 / 101)  # recall points 0.00..0.75


def test_no_ground_truth_at_all_raises():
    empty = np.zeros((0, H, W), np.uint8)
    t = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "visible_masks": empty,
        "amodal_masks": empty,
        "image_id": 1,
    }
    with pytest.raises(ValueError, match="no objects"):
        evaluate_amodal_coco(_no_detections(1), [t])
    with pytest.raises(ValueError, match="no images"):
        AmodalCocoEvaluator().compute()


# ----------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    "where, key, value, match",
    [
        ("pred", "visible_masks", torch.zeros(3, H, W + 1), r"predictions\[0\]\['visible_masks'\]"),
        ("pred", "amodal_masks", torch.zeros(2, H, W), r"predictions\[0\]\['amodal_masks'\]"),
        ("pred", "amodal_masks", torch.full((3, H, W), 2.0), r"amodal_masks'\].*\[0, 1\]"),
        ("pred", "boxes", torch.zeros(3, 3), r"predictions\[0\]\['boxes'\]"),
        ("pred", "boxes", torch.tensor([[5.0, 0, 1, 1]] * 3), r"predictions\[0\]\['boxes'\].*x2 >= x1"),
        ("pred", "scores", torch.zeros(4), r"predictions\[0\]\['labels'\]"),
        ("pred", "labels", torch.ones(3), r"predictions\[0\]\['labels'\].*integer"),
        ("pred", "image_id", 99, r"predictions\[0\]\['image_id'\]"),
        ("target", "amodal_masks", torch.zeros(3, H - 1, W, dtype=torch.uint8), r"targets\[0\]\['amodal_masks'\]"),
        ("target", "visible_masks", torch.zeros(3, H, W), r"targets\[0\]\['visible_masks'\].*ground-truth"),
        ("target", "boxes", torch.zeros(2, 4), r"targets\[0\]\['boxes'\]"),
        ("target", "occluded", torch.zeros(5, dtype=torch.int64), r"targets\[0\]\['occluded'\]"),
        ("target", "image_id", 1.5, r"targets\[0\]\['image_id'\]"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(where, key, value, match):
    targets = _targets()[:1]
    preds = _perfect(targets)
    (preds if where == "pred" else targets)[0][key] = value
    with pytest.raises(ValueError, match=match):
        evaluate_amodal_coco(preds, targets)


def test_missing_key_and_length_mismatch_and_duplicate_ids():
    targets = _targets()
    preds = _perfect(targets)
    del preds[1]["scores"]
    with pytest.raises(ValueError, match=r"predictions\[1\] has no key 'scores'"):
        evaluate_amodal_coco(preds, targets)
    with pytest.raises(ValueError, match="3 images but targets has 2"):
        evaluate_amodal_coco(_perfect(targets), targets[:2])
    ev = AmodalCocoEvaluator()
    ev.update(_perfect(targets[:1]), targets[:1])
    with pytest.raises(ValueError, match="image_id.*already seen"):
        ev.update(_perfect(targets[:1]), targets[:1])
    assert len(ev) == 1  # a failed batch leaves nothing behind
    with pytest.raises(ValueError, match="evaluations"):
        AmodalCocoEvaluator(("bbox", "segm"))


def test_only_needed_prediction_fields_are_required():
    targets = _targets()
    preds = _perfect(targets)
    for p in preds:
        del p["visible_masks"], p["amodal_masks"]
    out = evaluate_amodal_coco(preds, targets, evaluations=("bbox",))
    assert out == {"bbox_mAP": pytest.approx(1.0), "bbox_mAR": pytest.approx(1.0)}
