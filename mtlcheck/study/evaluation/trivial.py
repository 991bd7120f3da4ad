"""Trivial predictors of the dense tasks: what a model scores without looking at the image.

A trained model's metric means something only next to the score of a predictor that ignores
its input. `ConstantDensePredictor` is fit on the training targets and predicts the same value
at every pixel of every image:

- depth:    the median of the valid training depths (target > 0), the constant that minimises
            the L1 error over the training pixels (the mean would minimise the squared error);
- semantic: the most frequent non-ignored training class (on the digits benchmark: background),
            so mIoU = IoU of that class / number of classes with a non-empty union;
- instance: zero offsets (every pixel at its instance's centre);
- normal:   the mean training normal, normalised (the constant direction closest on average).

`trivial_metrics` scores it with the benchmark's own evaluation, so both numbers share one
definition. Detection benchmarks have no such table: a predictor that returns no detection
scores 0 on every COCO mAP and mAR.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

__all__ = ["ConstantDensePredictor", "trivial_metrics"]


class ConstantDensePredictor:
    """Predicts one constant per task (see the module docstring); `fit` sets the constants."""

    def __init__(self, num_classes: int, ignore_index: int = 250):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.depth: float | None = None
        self.semantic: int | None = None
        self.normal: torch.Tensor | None = None

    def fit(self, batches: Iterable[Mapping[str, Any]]) -> ConstantDensePredictor:
        depths, counts, normal_sum = [], torch.zeros(self.num_classes, dtype=torch.int64), None
        for batch in batches:
            if "depth" in batch:
                d = batch["depth"].double()
                depths.append(d[d > 0])
            if "semantic" in batch:
                s = batch["semantic"]
                s = s[s != self.ignore_index].long()
                counts += torch.bincount(s, minlength=self.num_classes)
            if "normal" in batch:
                n = batch["normal"].double().sum(dim=(0, 2, 3))
                normal_sum = n if normal_sum is None else normal_sum + n
        if depths:
            self.depth = float(torch.cat(depths).median())
        if int(counts.sum()):
            self.semantic = int(counts.argmax())
        if normal_sum is not None and float(normal_sum.norm()) > 0:
            self.normal = (normal_sum / normal_sum.norm()).float()
        return self

    def predict(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        b, _, h, w = image.shape
        out = {"instance": torch.zeros(b, 2, h, w)}
        if self.depth is not None:
            out["depth"] = torch.full((b, 1, h, w), self.depth)
        if self.semantic is not None:
            logits = torch.zeros(b, self.num_classes, h, w)
            logits[:, self.semantic] = 1.0
            out["semantic"] = logits
        if self.normal is not None:
            out["normal"] = self.normal.view(1, 3, 1, 1).expand(b, 3, h, w).clone()
        return out


def trivial_metrics(
    benchmark: str, budget: str = "small", data_root: str | Path | None = None, num_classes: int | None = None
) -> dict[str, float]:
    """The test metrics of `ConstantDensePredictor` fit on the training split of a dense
    benchmark, computed by the benchmark's own `evaluate`."""
    from mtlcheck.study.benchmarks import get_benchmark

    bench = get_benchmark(benchmark)
    if not {"depth/l1", "semantic/miou"} & set(bench.higher_is_better):
        raise ValueError(
            f"benchmark {benchmark!r} is not dense (its metrics are {sorted(bench.higher_is_better)}); "
            "a predictor with no detection scores 0 on every COCO metric"
        )
    root = bench.check_data_root(data_root)
    train = bench.make_data("train", budget, root)
    test = bench.make_data("test", budget, root)
    classes = num_classes or getattr(train, "num_classes", None) or _num_classes(bench)
    loader = DataLoader(train, batch_size=64, shuffle=False, collate_fn=bench.collate)
    predictor = ConstantDensePredictor(classes).fit(loader)
    return bench.evaluate(predictor, test, "cpu")


def _num_classes(bench) -> int:
    model = bench.make_model("smoke", None)
    return int(model.num_classes)
