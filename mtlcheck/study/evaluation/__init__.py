"""Evaluation metrics for the paper's benchmarks.

- :mod:`mtlcheck.study.evaluation.coco`: MetaGraspNet, pycocotools COCO evaluation of amodal boxes,
  visible masks and amodal masks (``bbox_mAP``, ``bbox_mAR``, ``vmask_mAP``, ``vmask_mAR``,
  ``amask_mAP``, ``amask_mAR`` = the paper's "BBox/VMask/AMask mAP/mAR").
- :mod:`mtlcheck.study.evaluation.dense`: CityScapes / NYU-v2, accumulating metrics for semantic
  segmentation (mIoU, pixel accuracy), depth (L1 and MSE), surface normals (angle error) and
  instance offsets (L1).

Every metric has ``update``, ``compute``, ``reset``, ``keys`` and ``higher_is_better``.
"""

from mtlcheck.study.evaluation.coco import (
    EVALUATIONS,
    METRIC_KEYS,
    PAPER_COLUMNS,
    AmodalCocoEvaluator,
    evaluate_amodal_coco,
)
from mtlcheck.study.evaluation.dense import (
    DenseMetric,
    DepthMetric,
    InstanceOffsetMetric,
    NormalMetric,
    SemanticSegmentationMetric,
)

__all__ = [
    "EVALUATIONS",
    "METRIC_KEYS",
    "PAPER_COLUMNS",
    "AmodalCocoEvaluator",
    "DenseMetric",
    "DepthMetric",
    "InstanceOffsetMetric",
    "NormalMetric",
    "SemanticSegmentationMetric",
    "evaluate_amodal_coco",
]
