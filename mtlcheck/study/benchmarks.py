"""Benchmarks: data + model + task losses + metrics + the training setup of each budget.

Six benchmarks. The three embedded ones run anywhere from data generated on the fly from
scikit-learn's bundled handwritten digits (`--benchmark all` runs the three, one report); the
paper's three read the user's copy of the real dataset from `--data-root`:

| name            | tasks                             | like                        |
|-----------------|-----------------------------------|-----------------------------|
| digits-dense    | depth, semantic, instance offsets | CityScapes (Tables 2, 6)    |
| digits-instance | cls, det, vsb, amd, occ           | MetaGraspNet (Tables 1, 4, 5) |
| digits-nyu      | depth, surface normals, semantic  | NYU-v2 (Tables 3, 7)        |
| cityscapes      | depth, semantic, instance offsets | CityScapes, paper §3.2      |
| nyuv2           | depth, normal, semantic           | NYU-v2, paper §3.2          |
| metagraspnet    | rcls, rdet, cls, det, vsb, amd, occ | MetaGraspNet, paper §3.1  |

Budgets: "smoke" runs in seconds on a CPU (tests, CI), "small" is the embedded default study
(minutes on a laptop CPU; Adam; digits-dense and digits-nyu 250 steps of batch 16 at 24×24,
digits-instance 150 steps of batch 8 at 32×32 with a width-8 model; measures every 10 steps),
"paper" is Appendix 7: 512×512 images, batch 4 (MetaGraspNet) or 32 (CityScapes, NYU-v2), SGD lr
1e-4 momentum 0.9 with linear warm-up, measures every 10 steps, about 3k iterations (stated for
MetaGraspNet; used for all three).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from mtlcheck.study.data.paper import PAPER_BATCH_SIZE, PAPER_IMAGE_SIZE
from mtlcheck.study.training import TrainSetup, to_device


@dataclass(frozen=True)
class Metric:
    key: str
    higher_is_better: bool
    label: str


@dataclass(frozen=True)
class Benchmark:
    """One benchmark. `make_data(split, budget, data_root)` returns a Dataset,
    `make_model(budget, weights)` a MultiTaskModel, `evaluate(model, dataset, device)` metrics.
    `paper_tables` names the paper's tables this benchmark reproduces: (results, feature-vs-
    parameter relative change or None, ranking similarity). `code` names the modules its
    factories import when first called (lazily, so that `mtlcheck list` starts at once);
    `import_code` imports them before a run is leased (see there)."""

    name: str
    description: str
    task_names: tuple[str, ...]
    metrics: tuple[Metric, ...]
    setups: dict[str, TrainSetup]
    make_data: Callable[[str, str, Path | None], Dataset]
    make_model: Callable[[str, str | None], torch.nn.Module]
    evaluate: Callable[[torch.nn.Module, Dataset, Any], dict[str, float]]
    paper_tables: tuple[str, str | None, str] = ("table2", None, "table6")
    collate: Callable = default_collate
    needs_data_root: bool = False
    code: tuple[str, ...] = ()

    def import_code(self) -> None:
        """Import what the factories need, before a run is leased: torchvision's first import
        takes seconds, and a Ctrl-C that lands inside it (inside a library's import code or a
        dataclass built by `exec`) can be swallowed, or make `python -m` exit by SIGINT after the
        interrupt was handled; from the training loop it is handled, and reported, as such."""
        for module in self.code:
            importlib.import_module(module)

    def setup(self, budget: str, steps: int | None = None) -> TrainSetup:
        if budget not in self.setups:
            raise ValueError(f"benchmark {self.name!r} has no budget {budget!r}; choose from {sorted(self.setups)}")
        base = self.setups[budget]
        return base if steps is None else TrainSetup(**{**base.__dict__, "steps": steps})

    def check_data_root(self, data_root: str | Path | None) -> Path | None:
        if not self.needs_data_root:
            return None
        if data_root is None:
            raise ValueError(f"benchmark {self.name!r} reads the real dataset: pass --data-root (see README)")
        root = Path(data_root)
        if not root.is_dir():
            raise FileNotFoundError(f"data root for {self.name!r} not found: {root}")
        return root

    @property
    def higher_is_better(self) -> dict[str, bool]:
        return {m.key: m.higher_is_better for m in self.metrics}


def _batches(model, dataset, device, batch_size, collate):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in loader:
        batch = to_device(batch, device)
        yield batch, model.predict(batch)


def _evaluate_dense(
    tasks: dict[str, Any], num_classes: int, ignore_index: int, batch_size: int, collate=default_collate
):
    """Evaluation of a dense benchmark: dataset-level mIoU, depth L1/MSE, offsets L1, normals."""
    from mtlcheck.study.evaluation import DepthMetric, InstanceOffsetMetric, NormalMetric, SemanticSegmentationMetric

    def evaluate(model, dataset, device):
        meters = {}
        if "semantic" in tasks:
            meters["semantic"] = SemanticSegmentationMetric(num_classes, ignore_index=ignore_index)
        if "depth" in tasks:
            meters["depth"] = DepthMetric()
        if "instance" in tasks:
            meters["instance"] = InstanceOffsetMetric(ignore_value=float(ignore_index))
        if "normal" in tasks:
            meters["normal"] = NormalMetric()
        for batch, pred in _batches(model, dataset, device, batch_size, collate):
            if "semantic" in meters:
                meters["semantic"].update(pred["semantic"].argmax(1).cpu(), batch["semantic"].cpu())
            if "depth" in meters:
                meters["depth"].update(pred["depth"].cpu(), batch["depth"].cpu())
            if "instance" in meters:
                meters["instance"].update(pred["instance"].cpu(), batch["instance"].cpu())
            if "normal" in meters:
                meters["normal"].update(pred["normal"].cpu(), batch["normal"].cpu())
        out = {}
        for task, meter in meters.items():
            out.update({f"{task}/{k}": float(v) for k, v in meter.compute().items()})
        return out

    return evaluate


def _evaluate_coco(batch_size: int, collate, class_agnostic: bool):
    from mtlcheck.study.evaluation import AmodalCocoEvaluator

    def evaluate(model, dataset, device):
        evaluator = AmodalCocoEvaluator(class_agnostic=class_agnostic)
        for batch, preds in _batches(model, dataset, device, batch_size, collate):
            preds = [{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in p.items()} for p in preds]
            targets = [
                {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in batch["targets"]
            ]
            evaluator.update(preds, targets)
        return {k: float(v) for k, v in evaluator.compute().items()}

    return evaluate


# -------------------------------------------------------------------------------------------
# embedded digits benchmarks
# -------------------------------------------------------------------------------------------
_DIGITS_DATA = {  # budget -> (train scenes, test scenes, image size)
    "smoke": (64, 32, 32),
    "small": (2400, 300, 32),
    "paper": (20000, 1000, 48),
}
# Adam: the embedded budgets must learn in CPU minutes (SGD at lr 0.05 left the instance model at
# 0 mAP after 200 steps; Adam 3e-3 reached BBox mAP 0.27 in 150). The paper's benchmarks use SGD.
_DIGITS_SETUPS = {
    "smoke": TrainSetup(
        steps=12, batch_size=8, lr=3e-3, warmup_steps=2, monitor_every=3, checkpoint_every=6, optimizer="adam"
    ),
    "small": TrainSetup(
        steps=150, batch_size=16, lr=3e-3, warmup_steps=15, monitor_every=10, checkpoint_every=50, optimizer="adam"
    ),
    "paper": TrainSetup(
        steps=3000, batch_size=32, lr=1e-3, warmup_steps=300, monitor_every=10, checkpoint_every=200, optimizer="adam"
    ),
}
# The dense default study (small): 3 seeds x 27 runs on a 2-core CPU in minutes, with every task
# clearly above its trivial predictor (`mtlcheck.study.evaluation.trivial`). Its semantic task is what
# takes long: 32x32 scenes of 2-4 digits stayed at ~0.10 mIoU (background-only: 0.078) after 300
# steps even when trained alone. Scenes of 1-2 larger digits at 24x24 (less occlusion, more
# labelled pixels) at a higher learning rate learn it at a lower cost; the heads predict at Z's
# resolution (head_stages=0) and the measures are taken every 10 steps, as in the paper. A step of
# this model is mostly per-operation overhead (batch 16 costs ~1.4x batch 8 on one thread), so
# 250 steps of 16 cost ~0.9x what 400 steps of 8 do; EW, seeds 0-2, reached the same test metrics
# (SS 0.135 vs 0.134 mIoU, DE 0.415 vs 0.412, IS 0.045 vs 0.044); 200 steps of 16 left SS at 0.109.
_DIGITS_DENSE_SCENES = {"small": {"size": 24, "digit_scale": 0.9, "min_digits": 1, "max_digits": 2}}
_DIGITS_DENSE_SETUPS = {
    **_DIGITS_SETUPS,
    "small": TrainSetup(
        steps=250, batch_size=16, lr=1e-2, warmup_steps=20, monitor_every=10, checkpoint_every=50, optimizer="adam"
    ),
}
_DIGITS_DENSE_TRAIN_SCENES = {"small": 3200}  # 1.25 epochs of the small budget (250 x 16)
# The instance study (small) took 49 min on the idle 2-core machine, nearly all of it in training: the
# evaluation (pycocotools on 300 test scenes) is ~1.5 s of CPU per run, the data ~1.5 s once per
# process, and a step's cost is the T = 5 task backward passes at 32x32 (full-resolution upsampling,
# the per-instance mask predictors, the first convolutions), which scales with the batch and hardly
# with the width (MGDA at the parameter level: 218 ms/step at width 16, 205 at width 8, 89 at width 8
# and batch 8; one thread, CPU time). Batch 8 and width 8 halve a run's CPU time (EW 13.2-13.6 s ->
# 6.4-7.4 s, MGDA at the parameter level 31.1 -> 15.2 s, seed 0) at the same test metrics within
# the seed-to-seed spread (EW seeds 0/1: BBox mAP 0.278/0.143 -> 0.259/0.261, AMask mAP 0.045/0.039
# -> 0.041/0.048; MGDA seed 0: BBox 0.162 -> 0.188, AMask 0.035 -> 0.019).
_DIGITS_INSTANCE_SETUPS = {
    **_DIGITS_SETUPS,
    "small": TrainSetup(
        steps=150, batch_size=8, lr=3e-3, warmup_steps=15, monitor_every=10, checkpoint_every=50, optimizer="adam"
    ),
}


class _Materialised(Dataset):
    """A generated dataset's items, computed once: every run of a sweep in a process reads the
    same scenes without generating them again (they are a pure function of their index)."""

    def __init__(self, dataset: Dataset):
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


@functools.lru_cache(maxsize=6)  # both splits of the three embedded benchmarks (`--benchmark all`)
def _digits_cached(kind: str, split: str, budget: str) -> Dataset:
    from mtlcheck.study.data.digits import DigitsDense, DigitsInstances
    from mtlcheck.study.data.digits_nyu import DigitsNYU

    train, test, size = _DIGITS_DATA[budget]
    scenes = {"size": size}
    if kind in ("dense", "nyu"):  # the NYU-v2 analog: the dense scenes' sizes and budget
        scenes.update(_DIGITS_DENSE_SCENES.get(budget, {}))
        train = _DIGITS_DENSE_TRAIN_SCENES.get(budget, train)
    cls = {"dense": DigitsDense, "instance": DigitsInstances, "nyu": DigitsNYU}[kind]
    return _Materialised(cls(split, length=train if split == "train" else test, seed=0, **scenes))


def _digits_data(kind: str):
    def make(split: str, budget: str, data_root) -> Dataset:
        return _digits_cached(kind, split, budget)

    return make


def _digits_dense_model(budget: str, weights=None):
    from mtlcheck.study.models.small import SmallDenseModel

    if budget == "smoke":
        return SmallDenseModel(width=8)
    return SmallDenseModel(width=16, head_stages=0 if budget == "small" else 1)


def _digits_nyu_model(budget: str, weights=None):
    from mtlcheck.study.models.small import SmallNYUModel

    if budget == "smoke":
        return SmallNYUModel(width=8)
    return SmallNYUModel(width=16, head_stages=0 if budget == "small" else 1)


def _digits_instance_model(budget: str, weights=None):
    from mtlcheck.study.models.small import SmallInstanceModel

    return SmallInstanceModel(width=16 if budget == "paper" else 8)


def _collate_instances(samples):
    from mtlcheck.study.data.digits import collate_instances

    return collate_instances(samples)


# labels are the paper's column names (reference/paper/table*.json), so our tables and the
# paper's can be compared and the same claims evaluated on both
DENSE_METRICS = (
    Metric("depth/l1", False, "DE"),
    Metric("semantic/miou", True, "SS"),
    Metric("instance/l1", False, "IS"),
)
# NE is the mean angle error, as the paper's Table 3 ("angle in degrees"); the evaluation also
# stores normal/median and the fractions within 11.25, 22.5 and 30 degrees in every run's metrics
NYU_METRICS = (
    Metric("depth/l1", False, "DE"),
    Metric("normal/mean", False, "NE"),
    Metric("semantic/miou", True, "SS"),
)
COCO_METRICS = tuple(
    Metric(f"{kind}_{stat}", True, f"{label} {stat}")
    for kind, label in (("bbox", "BBox"), ("vmask", "VMask"), ("amask", "AMask"))
    for stat in ("mAP", "mAR")
)

DIGITS_DENSE = Benchmark(
    name="digits-dense",
    description="embedded: scenes of overlapping handwritten digits; depth, semantic, instance offsets",
    task_names=("depth", "semantic", "instance"),
    metrics=DENSE_METRICS,
    setups=_DIGITS_DENSE_SETUPS,
    make_data=_digits_data("dense"),
    make_model=_digits_dense_model,
    code=("mtlcheck.study.data.digits", "mtlcheck.study.models.small", "mtlcheck.study.evaluation"),
    evaluate=_evaluate_dense({"depth", "semantic", "instance"}, 11, 250, 64),
)

DIGITS_INSTANCE = Benchmark(
    name="digits-instance",
    description="embedded: the same scenes as instances with occlusion; amodal box, visible/amodal mask, occlusion",
    task_names=("cls", "det", "vsb", "amd", "occ"),
    paper_tables=("table1", "table4", "table5"),
    metrics=COCO_METRICS,
    setups=_DIGITS_INSTANCE_SETUPS,
    make_data=_digits_data("instance"),
    make_model=_digits_instance_model,
    code=("mtlcheck.study.data.digits", "mtlcheck.study.models.small", "mtlcheck.study.evaluation"),
    evaluate=_evaluate_coco(64, _collate_instances, class_agnostic=False),
    collate=_collate_instances,
)


DIGITS_NYU = Benchmark(
    name="digits-nyu",
    description="embedded: digit scenes on a wall and floor with smooth shaded surfaces; depth, surface normals, "
    "semantic",
    task_names=("depth", "normal", "semantic"),
    paper_tables=("table3", None, "table7"),
    metrics=NYU_METRICS,
    setups=_DIGITS_DENSE_SETUPS,
    make_data=_digits_data("nyu"),
    make_model=_digits_nyu_model,
    code=("mtlcheck.study.data.digits_nyu", "mtlcheck.study.models.small", "mtlcheck.study.evaluation"),
    evaluate=_evaluate_dense({"depth", "normal", "semantic"}, 12, 250, 64),
)


# -------------------------------------------------------------------------------------------
# the paper's benchmarks (real data from --data-root)
# -------------------------------------------------------------------------------------------
def _real_setups(benchmark: str) -> dict[str, TrainSetup]:
    """The budgets of a paper benchmark; "paper" at the paper's batch size (Appendix 7)."""
    return {
        "smoke": TrainSetup(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, monitor_every=2, checkpoint_every=2),
        "small": TrainSetup(steps=300, batch_size=8, lr=1e-3, warmup_steps=30, monitor_every=10),
        "paper": TrainSetup(
            steps=3000,
            batch_size=PAPER_BATCH_SIZE[benchmark],
            lr=1e-4,
            momentum=0.9,
            warmup_steps=300,
            monitor_every=10,
            checkpoint_every=100,
            num_workers=4,
        ),
    }


_REAL_SIZE = {"smoke": (32, 64), "small": (256, 256), "paper": PAPER_IMAGE_SIZE}


def _cityscapes_data(split, budget, data_root):
    from mtlcheck.study.data.cityscapes import CityscapesDataset

    return CityscapesDataset(data_root, "train" if split == "train" else "val", size=_REAL_SIZE[budget])


def _nyu_data(split, budget, data_root):
    from mtlcheck.study.data.nyuv2 import NYUv2Dataset

    root = Path(data_root)
    layouts = [d for d in ("nyud_mt", "mtan") if (root / d).is_dir()]
    if layouts and not (root / "gt_sets").is_dir() and not (root / "train" / "image").is_dir():
        raise FileNotFoundError(
            f"{root} holds the layout folder(s) {layouts}, not a dataset: pass --data-root {root / layouts[0]}"
        )
    layout = "mtan" if (root / "train" / "image").is_dir() else "nyud_mt"
    return NYUv2Dataset(
        data_root, "train" if split == "train" else "val", layout=layout, size=_REAL_SIZE[budget], num_classes=None
    )


def _metagraspnet_data(split, budget, data_root):
    from mtlcheck.study.data.metagraspnet import MetaGraspNetDataset

    ann = Path(data_root) / f"{'train' if split == 'train' else 'test'}.json"
    if not ann.is_file():
        raise FileNotFoundError(
            f"MetaGraspNet annotations not found: {ann} (expected train.json and test.json in the "
            "data root, e.g. written by mtlcheck.study.data.metagraspnet.convert_scenes)"
        )
    size = (64, 64) if budget == "smoke" else _REAL_SIZE[budget]
    return MetaGraspNetDataset(data_root, ann, size=size)


def _width(budget):
    return {"smoke": 8, "small": 32, "paper": 64}[budget]


def _dense_model(class_name: str):
    def make(budget, weights=None):
        from mtlcheck.study.models import dense

        w = _width(budget)
        return getattr(dense, class_name)(width=w, decoder_width=2 * w, weights=weights)

    return make


def _metagraspnet_model(budget, weights=None):
    from mtlcheck.study.models import grasp

    config = {
        "smoke": grasp.SMOKE_CONFIG,
        "small": {**grasp.PAPER_CONFIG, "image_size": 256},
        "paper": grasp.PAPER_CONFIG,
    }[budget]
    return grasp.MetaGraspNetModel(**{**config, "weights": weights})


def _collate_detection(samples):
    from mtlcheck.study.data.collate import collate_detection

    batch = collate_detection(samples)
    if "targets" not in batch and "target" in batch:
        batch["targets"] = batch.pop("target")
    return batch


CITYSCAPES = Benchmark(
    name="cityscapes",
    description="CityScapes (official leftImg8bit/gtFine/disparity layout): depth, 19-class semantic, instance offsets",
    task_names=("depth", "semantic", "instance"),
    metrics=DENSE_METRICS,
    setups=_real_setups("cityscapes"),
    make_data=_cityscapes_data,
    make_model=_dense_model("CityScapesModel"),
    code=("mtlcheck.study.data.cityscapes", "mtlcheck.study.models.dense", "mtlcheck.study.evaluation"),
    evaluate=_evaluate_dense({"depth", "semantic", "instance"}, 19, 250, 8),
    needs_data_root=True,
)

NYUV2 = Benchmark(
    name="nyuv2",
    description="NYU-v2 (NYUD-MT or mtan .npy layout): depth, surface normals, semantic",
    task_names=("depth", "normal", "semantic"),
    paper_tables=("table3", None, "table7"),
    metrics=NYU_METRICS,
    setups=_real_setups("nyuv2"),
    make_data=_nyu_data,
    make_model=_dense_model("NYUv2Model"),
    code=("mtlcheck.study.data.nyuv2", "mtlcheck.study.models.dense", "mtlcheck.study.evaluation"),
    evaluate=_evaluate_dense({"depth", "normal", "semantic"}, 41, 250, 8),
    needs_data_root=True,
)

METAGRASPNET = Benchmark(
    name="metagraspnet",
    description="MetaGraspNet (UOAIS-style COCO JSON train.json/test.json): 7 detection and amodal-mask losses",
    task_names=("rcls", "rdet", "cls", "det", "vsb", "amd", "occ"),
    paper_tables=("table1", "table4", "table5"),
    metrics=COCO_METRICS,
    setups=_real_setups("metagraspnet"),
    make_data=_metagraspnet_data,
    make_model=_metagraspnet_model,
    code=(
        "mtlcheck.study.data.metagraspnet",
        "mtlcheck.study.data.collate",
        "mtlcheck.study.models.grasp",
        "mtlcheck.study.evaluation",
    ),
    evaluate=_evaluate_coco(4, _collate_detection, class_agnostic=True),
    collate=_collate_detection,
    needs_data_root=True,
)

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b for b in (DIGITS_DENSE, DIGITS_INSTANCE, DIGITS_NYU, CITYSCAPES, NYUV2, METAGRASPNET)
}
DEFAULT_BENCHMARK = "digits-dense"
# `--benchmark all`: the embedded analogs of the paper's datasets, in the paper's order (MetaGraspNet:
# Tables 1, 4, 5 and Figure 5; CityScapes: Tables 2, 6; NYU-v2: Tables 3, 7)
EMBEDDED_ANALOGS = ("digits-instance", "digits-dense", "digits-nyu")


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        from mtlcheck._names import did_you_mean

        raise ValueError(
            f"unknown benchmark {name!r}{did_you_mean(name, BENCHMARKS)}; known: {', '.join(BENCHMARKS)}"
        ) from None
