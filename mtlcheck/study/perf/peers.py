"""Side by side with the real peers: TorchJD's `mtl_backward` and LibMTL's weighting `backward`.

The model and batch of `mtlcheck bench` (ResNet18 trunk, T light heads, random B×3×S×S images)
go through, for each method that a peer also implements:

* mtlcheck: `backward_step` at the parameter level, and at the feature level;
* TorchJD 0.18 (github.com/TorchJD/torchjd): `autojac.mtl_backward(losses, features=z, ...)`
  then `autojac.jac_to_grad(shared_params, aggregator)`, as its MTL example does;
* LibMTL 1.1.5 (github.com/median-research-group/LibMTL): its weighting class mixed into its
  `HPS` architecture the way its `Trainer` builds the model (`class MTLmodel(HPS, weighting)`,
  `init_param()`, the losses stacked into a (T,) tensor, `model.backward(losses, **weight_args)`
  with the defaults of its `config.py`), the parameter level (`rep_grad=False`) and, for the
  methods that support it, the representation level (`rep_grad=True`; with an encoder that
  returns one tensor, HPS keeps one representation per task, so this level back-propagates the
  encoder T times, weighted, where mtlcheck's feature level does it once);
* LibMTL's source tree (`--libmtl-tree DIR`, a checkout of the same repository) for its methods
  after the paper, which 1.1.5 lacks (`LIBMTL_TREE`; the paper's methods stay 1.1.5's), built the
  same way with the tree's own `HPS`; its MoDo and SDMGrad take (3, T) losses from three batches,
  here the same batch three times.

Each cell (peer, method, level) runs in a fresh process so that its peak memory is its own:
the growth of the kernel's peak resident set (VmHWM, reset through /proc/self/clear_refs) over
two steps, as a ratio to the EW step's in a process of its own. In the same process the cell's
step and mtlcheck's EW step alternate for `repeats` repeats after a warm-up (time ratios taken
repeat by repeat: median and IQR). Last, from fresh method state, the cell's step and
mtlcheck's step of the same method and level write the shared parameters' `.grad`: the table
gives their cosine and the norm ratio |peer| / |mtlcheck| next to the ratio the documented
scale conventions predict (a cosine below 1 or an unexplained norm ratio is a different update).

What the LibMTL adapter provides, and why (LibMTL 1.1.5 as published does not run on the
torch/torchvision this package needs):
* `import LibMTL` fails: LibMTL/model/resnet.py imports `torchvision.models.utils`, which
  current torchvision no longer has. The weighting and architecture subpackages do not need it,
  so they are imported under a bare `LibMTL` package (`_import_libmtl`); their code is unchanged.
* `zero_grad_share_params` is LibMTL's `self.encoder.zero_grad()`, which since torch 2.0 sets the
  gradients to None, so `_reset_grad` (`param.grad.data = ...`) raises AttributeError in every
  parameter-level gradient method. The adapter zeroes them in place
  (`zero_grad(set_to_none=False)`), as LibMTL's repository does after 1.1.5.
* The encoder is the trunk returning its last feature map (LibMTL's encoders return one
  tensor); the decoders are mtlcheck's heads; the device is the CPU. Nothing else is overridden.

    mtlcheck bench --peers --size 128 --tasks 3 7 --batch-size 2 8 --repeats 7 --out peers.md
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import random
import statistics
import sys
import types

import torch

from mtlcheck.study.perf.harness import (
    applicable,
    model_and_batch,
    model_options,
    no_collection,
    quartiles,
    run_in_process,
    seconds,
    step_peak_mib,
)

PEERS_EXTRA = 'pip install "mtlcheck[peers]"'
REQUIRED = {"torchjd": "0.18.0", "LibMTL": "1.1.5", "cvxpy": None}  # cvxpy: TorchJD's CAGrad and Nash-MTL
METHODS = ("mgda", "pcgrad", "cagrad", "nash_mtl", "imtl", "aligned_mtl", "gradvac")
# methods after the paper that a peer ships (run when named with --methods; TorchJD's UPGrad and
# DualProj need its quadprog-projector extra, in the peers extra)
LATER = (
    "upgrad",
    "dualproj",
    "config",
    "fairgrad",
    "gls",
    "excess_mtl",
    "modo",
    "sdmgrad",
    "cr_mogm",
    "db_mtl",
    "moco",
)
TORCHJD_LATER = ("upgrad", "dualproj", "config", "fairgrad", "excess_mtl", "modo", "sdmgrad", "cr_mogm")
# ExcessMTL is the same method in TorchJD and here only with a warm-up: without one, TorchJD's
# first exponentiated step uses the raw excess risk (its baseline does not exist yet), ours the
# paper's scale processing (uniform weights). One warm-up step, on both sides, everywhere in the bench.
OPTIONS = {"excess_mtl": {"warmup_steps": 1}}
# the stateful methods are compared at their second step from fresh state, on another batch (the
# first of ExcessMTL is its warm-up's uniform weights, CR-MOGM's is its base's; on the same batch
# again ExcessMTL's excess ratios are all equal and CR-MOGM's average is its base's)
STATEFUL = ("excess_mtl", "modo", "sdmgrad", "cr_mogm", "db_mtl", "moco")
CAGRAD_C = 0.5  # mtlcheck's, LibMTL's (`calpha`) and the official default; TorchJD has none
# LibMTL's weighting classes with the `weight_args` its config.py gives them by default
LIBMTL = {
    "ew": ("EW", {}),
    "mgda": ("MGDA", {"mgda_gn": "none"}),
    "pcgrad": ("PCGrad", {}),
    "cagrad": ("CAGrad", {"calpha": CAGRAD_C, "rescale": 1}),
    "imtl": ("IMTL", {}),
    "gradvac": ("GradVac", {"beta": 0.5}),
    "gls": ("GLS", {}),
}
LIBMTL_REP_GRAD = ("mgda", "imtl")  # the others raise "No support ... rep_grad=True"
# LibMTL's methods after the paper, only in its source tree (PyPI's 1.1.5 lacks them): run where
# `--libmtl-tree` (the MTLCHECK_LIBMTL_TREE variable) names a checkout. weight_args: ours where its
# config.py's defaults differ (DB-MTL σ 0, ExcessMTL step 1e-2, MoDo γ 1e-3), so that the same
# method is compared; its SDMGrad has lr 5 in its code, so ours runs with lr=5 against it
LIBMTL_TREE_ENV = "MTLCHECK_LIBMTL_TREE"
LIBMTL_TREE = {
    "upgrad": ("UPGrad", {"UPGrad_norm_eps": 1e-4, "UPGrad_reg_eps": 1e-4}),  # its defaults (TorchJD's)
    "fairgrad": ("FairGrad", {"FairGrad_alpha": 1.0}),
    "db_mtl": ("DB_MTL", {"DB_beta": 0.9, "DB_beta_sigma": 0.5}),
    "excess_mtl": ("ExcessMTL", {"robust_step_size": 1.0}),
    "moco": (
        "MoCo",
        {"MoCo_beta": 0.5, "MoCo_beta_sigma": 0.5, "MoCo_gamma": 0.1, "MoCo_gamma_sigma": 0.5, "MoCo_rho": 0},
    ),
    "modo": ("MoDo", {"MoDo_gamma": 0.1, "MoDo_rho": 0.1}),
    "sdmgrad": ("SDMGrad", {"SDMGrad_lamda": 0.3, "SDMGrad_niter": 20}),
}
LIBMTL_THREE_BATCHES = ("modo", "sdmgrad")  # its backward takes (3, T) losses: here one batch three times
LIBMTL_OPTIONS = {"sdmgrad": {"lr": 5.0}}  # ours against LibMTL's (its inner SGD's lr is fixed at 5)


def libmtl_tree() -> str | None:
    """The LibMTL source tree the bench runs, or None (the installed LibMTL 1.1.5)."""
    return os.environ.get(LIBMTL_TREE_ENV) or None


def libmtl_methods() -> dict:
    """LibMTL's (class name, weight_args) per method: 1.1.5's, and the tree's where one is named."""
    return {**LIBMTL, **LIBMTL_TREE} if libmtl_tree() else LIBMTL


PEERS = ("mtlcheck", "torchjd", "libmtl")


class MissingExtraError(RuntimeError):
    """The peers are not installed (or not at the pinned versions)."""


def missing_requirements() -> list[str]:
    """The packages of the `peers` extra that are absent or at another version."""
    from importlib import metadata

    missing = []
    for name, version in REQUIRED.items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name} (not installed)")
            continue
        if version is not None and found != version:
            missing.append(f"{name} {found} (the bench is written against {version})")
    return missing


def check_extra() -> None:
    missing = missing_requirements()
    if missing:
        raise MissingExtraError(
            f"`mtlcheck bench --peers` needs the peers extra, missing: {', '.join(missing)}; run: {PEERS_EXTRA}"
        )


def cells(n_tasks: int) -> list[tuple[str, str, str]]:
    """Every (peer, method, level) that runs, EW (the memory reference) first."""
    out = [("mtlcheck", "ew", "parameter")]
    for m in METHODS + LATER:
        out.append(("mtlcheck", m, "parameter"))
        if applicable(m, "feature"):
            out.append(("mtlcheck", m, "feature"))
        if m in METHODS or m in TORCHJD_LATER:
            out.append(("torchjd", m, "parameter"))
        if m in libmtl_methods():
            out.append(("libmtl", m, "parameter"))
        if m in LIBMTL_REP_GRAD:
            out.append(("libmtl", m, "feature"))
    return out + [("libmtl", "ew", "parameter")]


def expected_norm_ratio(peer: str, method: str, n_tasks: int) -> float:
    """|peer's .grad| / |mtlcheck's| predicted by the documented scale conventions (the method
    modules' docstrings): CAGrad is ×T/(1 + c²) here (the official code), plain in TorchJD and
    ÷(1 + c²) in LibMTL; TorchJD's Aligned-MTL uses the mean preference B 1/T."""
    if peer == "torchjd" and method == "cagrad":
        return (1 + CAGRAD_C**2) / n_tasks
    if peer == "libmtl" and method == "cagrad":
        return 1 / n_tasks
    if peer == "torchjd" and method == "aligned_mtl":
        return 1 / n_tasks
    if peer == "libmtl" and method == "excess_mtl":  # its weights sum to T
        return float(n_tasks)
    return 1.0


# ---------------------------------------------------------------- the peers' steps (in the child)


def _import_libmtl(method: str | None = None):
    """LibMTL's `weighting` and `architecture` subpackages, imported under a bare `LibMTL`
    package: its __init__ imports LibMTL.model, which needs `torchvision.models.utils`. The
    installed release's, or for a method of `LIBMTL_TREE` where a tree is named, the tree's."""
    import importlib
    import importlib.util

    if method in LIBMTL_TREE and libmtl_tree():
        return _import_libmtl_tree(libmtl_tree())
    if "LibMTL" not in sys.modules:
        spec = importlib.util.find_spec("LibMTL")
        if spec is None:
            raise MissingExtraError(f"LibMTL is not installed; run: {PEERS_EXTRA}")
        package = types.ModuleType("LibMTL")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["LibMTL"] = package
    return importlib.import_module("LibMTL.weighting"), importlib.import_module("LibMTL.architecture")


@functools.cache
def _import_libmtl_tree(root: str):
    """The tree's `weighting` and `architecture`, imported under a bare `LibMTL` package with
    sys.modules restored after (the installed release stays what `import LibMTL` gives; the tree's
    modules import nothing later, so they keep working outside sys.modules)."""
    import importlib

    if not os.path.isdir(os.path.join(root, "LibMTL", "weighting")):
        raise MissingExtraError(f"{LIBMTL_TREE_ENV}={root!r} holds no LibMTL/weighting directory")
    saved = {k: v for k, v in sys.modules.items() if k == "LibMTL" or k.startswith("LibMTL.")}
    for k in saved:
        del sys.modules[k]
    try:
        package = types.ModuleType("LibMTL")
        package.__path__ = [os.path.join(root, "LibMTL")]
        sys.modules["LibMTL"] = package
        return importlib.import_module("LibMTL.weighting"), importlib.import_module("LibMTL.architecture")
    finally:
        for k in [k for k in sys.modules if k == "LibMTL" or k.startswith("LibMTL.")]:
            del sys.modules[k]
        sys.modules.update(saved)


class _Trunk(torch.nn.Module):
    """The encoder LibMTL expects: one tensor out (the trunk's last feature map)."""

    def __init__(self, trunk):
        super().__init__()
        self.trunk = trunk

    def forward(self, x):
        return self.trunk(x)[-1]


def libmtl_step(model, method: str, rep_grad: bool):
    """A step function running LibMTL's `backward` of `method` on `model`'s modules (shared, not
    copied), built as LibMTL's Trainer builds its model."""
    weighting, architecture = _import_libmtl(method)
    cls_name, weight_args = libmtl_methods()[method]

    class MTLModel(architecture.HPS, getattr(weighting, cls_name)):
        def __init__(self):
            super().__init__(
                list(model.task_names),
                lambda: _Trunk(model.trunk),
                torch.nn.ModuleDict(dict(zip(model.task_names, model.heads))),
                rep_grad,
                False,
                torch.device("cpu"),
            )
            self.init_param()

        def zero_grad_share_params(self):  # in place: see the module docstring
            self.encoder.zero_grad(set_to_none=False)

    lib = MTLModel()

    def task_losses(batch):
        preds = lib(batch["image"])
        losses = torch.zeros(lib.task_num)
        for i, task in enumerate(lib.task_name):
            losses[i] = torch.nn.functional.cross_entropy(preds[task], batch["labels"][:, i])
        return losses

    def step(batch):
        if method in LIBMTL_THREE_BATCHES:
            lib.backward(torch.stack([task_losses(batch) for _ in range(3)]), **weight_args)
        else:
            lib.backward(task_losses(batch), **weight_args)

    return step


def torchjd_aggregator(method: str, n_tasks: int):
    from torchjd import aggregation as tjd

    return {
        "mgda": lambda: tjd.MGDA(),
        "pcgrad": lambda: tjd.PCGrad(),
        "cagrad": lambda: tjd.CAGrad(c=CAGRAD_C),
        "nash_mtl": lambda: tjd.NashMTL(n_tasks=n_tasks),
        "imtl": lambda: tjd.IMTLG(),
        "aligned_mtl": lambda: tjd.AlignedMTL(),
        "gradvac": lambda: tjd.GradVac(),
        "upgrad": lambda: tjd.UPGrad(),  # its default projector: the Gram + 1e-4·I (README findings)
        "dualproj": lambda: tjd.DualProj(),
        "config": lambda: tjd.ConFIG(),
        "fairgrad": lambda: tjd.FairGrad(alpha=1.0),
        "excess_mtl": lambda: tjd.ExcessMTL(n_warmup_steps=OPTIONS["excess_mtl"]["warmup_steps"]),
        # TorchJD ships these three as weightings of a matrix the caller forms (for MoDo and SDMGrad
        # it means J₁J₂ᵀ of two independent batches, which their convergence results need); one
        # batch's Gram G Gᵀ (what an aggregator of one batch has) is how mtlcheck runs them
        "modo": lambda: tjd.GramianWeightedAggregator(tjd.MoDoWeighting()),
        "sdmgrad": lambda: tjd.GramianWeightedAggregator(tjd.SDMGradWeighting()),
        "cr_mogm": lambda: tjd.GramianWeightedAggregator(tjd.CRMOGMWeighting(tjd.MGDAWeighting())),  # our base
    }[method]()


def torchjd_step(model, method: str):
    """A step function: TorchJD's `mtl_backward` on the task losses and Z, then `jac_to_grad`."""
    from torchjd.autojac import jac_to_grad, mtl_backward

    aggregator = torchjd_aggregator(method, len(model.task_names))
    shared = [p for _, p in model.shared_parameters()]
    heads = [list(h.parameters()) for h in model.heads]

    def step(batch):
        z = model.encode(batch)
        losses = list(model.task_losses(z, batch).values())
        mtl_backward(losses, features=z, tasks_params=heads, shared_params=shared)
        jac_to_grad(shared, aggregator)

    return step


def mtlcheck_step(model, method: str, level: str, feature_batch: str = "flatten", options: dict | None = None):
    from mtlcheck.aggregators import aggregator_class
    from mtlcheck.gradients import backward_step

    aggregator = aggregator_class(method)(**OPTIONS.get(method, {}), **(options or {}))

    def step(batch):
        backward_step(model, batch, aggregator, level=level, feature_batch=feature_batch)

    return step


def make_step(model, peer: str, method: str, level: str):
    if peer == "mtlcheck":
        return mtlcheck_step(model, method, level)
    if peer == "torchjd":
        return torchjd_step(model, method)
    return libmtl_step(model, method, rep_grad=level == "feature")


def reference_step(model, peer: str, method: str, level: str):
    """mtlcheck's step that a cell is compared with: the same method and level; at the feature
    level LibMTL solves on batch-summed rows (mtlcheck's feature_batch="sum"); against LibMTL's
    SDMGrad, its learning rate."""
    feature_batch = "sum" if (peer, level) == ("libmtl", "feature") else "flatten"
    return mtlcheck_step(model, method, level, feature_batch, LIBMTL_OPTIONS.get(method) if peer == "libmtl" else None)


def _shared_grad(model) -> torch.Tensor:
    return torch.cat(
        [
            (torch.zeros(p.numel(), dtype=torch.float64) if p.grad is None else p.grad.detach().reshape(-1).double())
            for _, p in model.shared_parameters()
        ]
    )


def _seed_all(seed: int = 0) -> None:
    torch.manual_seed(seed)  # TorchJD's PCGrad and GradVac draw from it
    random.seed(seed)  # LibMTL's PCGrad and GradVac draw from it


def _another_batch(batch: dict) -> dict:
    """The bench's batch with its images mirrored and each task given the next task's labels."""
    return {"image": batch["image"].flip(-1), "labels": batch["labels"].roll(1, dims=1)}


def compare(model, batch, peer: str, method: str, level: str) -> dict:
    """The cosine and norm ratio |peer| / |mtlcheck| of the shared parameters' `.grad` written by
    one step of each from fresh method state on the same batch: the first step of training, or for
    a stateful method the second, taken on `_another_batch` after a first on `batch`."""
    batches = [batch, _another_batch(batch)] if method in STATEFUL else [batch]

    def last_grad(step):
        _seed_all()
        for b in batches:
            model.zero_grad(set_to_none=True)
            step(b)
        return _shared_grad(model)

    theirs = last_grad(make_step(model, peer, method, level))
    ours = last_grad(reference_step(model, peer, method, level))
    model.zero_grad(set_to_none=True)
    return {
        "cosine": float(theirs @ ours / (theirs.norm() * ours.norm())),
        "norm_ratio": float(theirs.norm() / ours.norm()),
    }


def run_cell(
    peer: str,
    method: str,
    level: str,
    size: int,
    batch_size: int,
    n_tasks: int,
    repeats: int,
    warmup: int = 1,
    width: int = 64,
) -> dict:
    """In this process: peak memory of two steps, the interleaved time ratios to mtlcheck's EW
    step, and the cosine / norm ratio of the shared `.grad` against mtlcheck's from fresh state."""
    model, batch = model_and_batch(size, batch_size, n_tasks, width=width)
    out = {
        "peer": peer,
        "method": method,
        "level": level,
        "threads": torch.get_num_threads(),
        "shared_parameters": sum(p.numel() for _, p in model.shared_parameters()),
    }
    try:
        _seed_all()
        step = make_step(model, peer, method, level)
        ew = mtlcheck_step(model, "ew", "parameter")

        def one_step():
            model.zero_grad(set_to_none=True)
            step(batch)

        out["peak_mib"] = step_peak_mib(one_step)

        def timed(fn):
            model.zero_grad(set_to_none=True)
            return seconds(lambda: fn(batch))

        for _ in range(warmup):
            timed(ew), timed(step)
        out["ew_s"], out["step_s"] = [], []
        with no_collection():  # as `mtlcheck bench`: no collection inside a timed step
            for r in range(repeats):  # alternate which goes first
                if r % 2 == 0:
                    t_ew, t_step = timed(ew), timed(step)
                else:
                    t_step, t_ew = timed(step), timed(ew)
                out["ew_s"].append(t_ew)
                out["step_s"].append(t_step)

        out.update(compare(model, batch, peer, method, level))
    except MissingExtraError:
        raise
    except Exception as exc:  # noqa: BLE001 - a peer failing on this input is a result of the bench
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
    return out


# ---------------------------------------------------------------- the parent: one process per cell


def machine(malloc: str) -> dict:
    """The CPU model, its cores, and the software under the measurements."""
    from importlib import metadata

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    versions = {}
    for name in ("torch", "torchjd", "LibMTL", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    if libmtl_tree():
        versions["LibMTL"] = (
            f"{versions['LibMTL']} and, for the methods after the paper, the source tree {libmtl_tree()}"
        )
    libc = " ".join(platform.libc_ver()).strip() or "unknown libc"
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        "allocator": (
            f"{libc} malloc, defaults (what a library user gets)"
            if malloc == "default"
            else f"{libc} malloc tuned by mtlcheck (what the `mtlcheck` command uses)"
        ),
    }


def run_setting(
    size: int,
    batch_size: int,
    n_tasks: int,
    repeats: int,
    threads: int | None,
    malloc: str,
    methods=None,
    peers=PEERS,
    progress: bool = True,
    width: int = 64,
) -> dict:
    """Every cell of one (T, B) setting, each in its own process."""
    chosen = [
        c
        for c in cells(n_tasks)
        if c == ("mtlcheck", "ew", "parameter")
        or (c[0] in peers and (c[1] in METHODS + ("ew",) if methods is None else c[1] in methods))
    ]
    env = {**os.environ, "MTLCHECK_MALLOC": malloc}
    iterator = chosen
    if progress:
        from tqdm import tqdm

        iterator = tqdm(chosen, desc=f"peers T={n_tasks} B={batch_size}", unit="process")
    rows = []
    for peer, method, level in iterator:
        args = ["--cell", peer, method, level, *model_options(size, batch_size, n_tasks, threads)]
        args += ["--repeats", str(repeats), "--malloc", malloc, "--width", str(width)]
        rows.append(run_in_process("mtlcheck.study.perf.peers", args, env, f"peers cell {peer}/{method}/{level}"))
    ew_peak = rows[0].get("peak_mib", float("nan"))
    for r in rows:
        r["expected_norm_ratio"] = expected_norm_ratio(r["peer"], r["method"], n_tasks)
        if "error" in r:
            continue
        ratios = [s / e for s, e in zip(r["step_s"], r["ew_s"])]
        q1, med, q3 = quartiles(ratios)
        r["time_ratio"], r["time_ratio_iqr"] = med, q3 - q1
        r["ew_ms"] = 1e3 * statistics.median(r["ew_s"])
        r["memory_ratio"] = r["peak_mib"] / ew_peak if ew_peak > 0 else float("nan")
    return {
        "size": size,
        "batch_size": batch_size,
        "tasks": n_tasks,
        "repeats": repeats,
        "width": width,
        "shared_parameters": rows[0].get("shared_parameters"),
        "rows": rows,
    }


def run(
    sizes=(128,),
    tasks=(3, 7),
    batch_sizes=(2, 8),
    repeats: int = 7,
    threads: int | None = None,
    malloc: str = "default",
    methods=None,
    peers=PEERS,
    progress: bool = True,
    width: int = 64,
) -> dict:
    check_extra()
    settings = [
        run_setting(s, b, t, repeats, threads, malloc, methods, peers, progress, width)
        for s in sizes
        for t in tasks
        for b in batch_sizes
    ]
    threads_used = settings[0]["rows"][0].get("threads")
    return {"machine": {**machine(malloc), "torch_threads": threads_used}, "settings": settings}


def _fmt(x, spec=".2f"):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def to_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
        f"{m['torch_threads']} torch threads; Python {m['python']}, torch {m['torch']}, TorchJD {m['torchjd']}, "
        f"LibMTL {m['LibMTL']}, numpy {m['numpy']}; allocator: {m['allocator']}.",
        "",
        "Each cell in its own process. × EW: the step time over mtlcheck's EW step in the same process, median "
        "(IQR) of the per-repeat ratios of interleaved repeats; memory: growth of the peak resident set (VmHWM) "
        "over two steps, over EW's in a process of its own. 1 − cos / norm ratio: the shared parameters' `.grad` "
        "against "
        "mtlcheck's (same method and level, same weights and batch, fresh method state; the stateful methods' "
        "second step, on another batch, ExcessMTL with one warm-up step on both sides); 'expected' is the norm "
        "ratio the documented scale conventions predict. LibMTL's feature level is its `rep_grad=True` "
        '(compared with mtlcheck\'s feature_batch="sum").',
    ]
    for s in result["settings"]:
        ew = next(r for r in s["rows"] if (r["peer"], r["method"]) == ("mtlcheck", "ew"))
        trunk = "ResNet18 trunk" if s["width"] == 64 else f"ResNet18 trunk of width {s['width']}"
        lines += [
            "",
            f"**{trunk} ({s['shared_parameters']:,} shared parameters), T = {s['tasks']} light heads, "
            f"batch {s['batch_size']}×3×{s['size']}²** ({s['repeats']} repeats; "
            f"EW step {_fmt(ew.get('ew_ms'), '.0f')} ms, EW peak +{_fmt(ew.get('peak_mib'), '.0f')} MiB)",
            "",
            "| method | peer | level | × EW (IQR) | memory × EW | 1 − cos | norm ratio (expected) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in s["rows"]:
            head = f"| {r['method']} | {r['peer']} | {r['level']} |"
            if "error" in r:
                lines.append(f"{head} fails: {r['error']} | | | |")
                continue
            lines.append(
                f"{head} {_fmt(r['time_ratio'])} ({_fmt(r['time_ratio_iqr'])}) | {_fmt(r['memory_ratio'])} | "
                f"{_fmt(1.0 - r['cosine'], '.1e')} | {_fmt(r['norm_ratio'], '.4f')} "
                f"({_fmt(r['expected_norm_ratio'], '.4f')}) |"
            )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `mtlcheck bench --peers` on `parser`."""
    parser.prog = "mtlcheck bench --peers"
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--peers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs="+", default=[128], help="image sizes S (default 128)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 7], help="task counts T (default 3 7)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[2, 8], help="batch sizes B (default 2 8)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in each process (default: torch's)")
    parser.add_argument(
        "--malloc",
        choices=["default", "tuned"],
        default="default",
        help="glibc malloc as a library user gets it (default) or as the `mtlcheck` command tunes it",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=METHODS + LATER + ("ew",),
        help=f"default: the paper's {', '.join(METHODS)} and EW; the methods after the paper a peer has: "
        f"{', '.join(LATER)}",
    )
    parser.add_argument(
        "--libraries",
        nargs="+",
        default=list(PEERS),
        choices=PEERS,
        help="which libraries (mtlcheck's EW always runs: it is the reference)",
    )
    parser.add_argument(
        "--out", default="bench-peers.md", help="write the Markdown table here (default bench-peers.md)"
    )
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    parser.add_argument(
        "--libmtl-tree",
        default=None,
        metavar="DIR",
        help="a checkout of github.com/median-research-group/LibMTL: also run its methods after the paper "
        f"({', '.join(LIBMTL_TREE)}), which its PyPI release 1.1.5 lacks (the paper's methods stay 1.1.5's)",
    )
    parser.add_argument("--width", type=int, default=64, help=argparse.SUPPRESS)  # a narrower trunk, for tests
    parser.add_argument("--cell", nargs=3, metavar=("PEER", "METHOD", "LEVEL"), help=argparse.SUPPRESS)
    parser.set_defaults(bench=command)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(argv)
    return command(args, parser)


def command(args, parser) -> int:
    """The side-by-side bench of the parsed `args` (`parser` says usage errors)."""
    if args.width < 1:
        parser.error(f"--width must be positive, got {args.width}")
    for name in ("size", "tasks", "batch_size"):
        if any(v < 1 for v in getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be positive, got {args.repeats}")
    if args.libmtl_tree is not None:
        if not os.path.isdir(os.path.join(args.libmtl_tree, "LibMTL", "weighting")):
            parser.error(f"--libmtl-tree {args.libmtl_tree!r} holds no LibMTL/weighting directory (a LibMTL checkout)")
        os.environ[LIBMTL_TREE_ENV] = os.path.abspath(args.libmtl_tree)  # the cells' processes inherit it
    try:
        if args.cell:  # the child process of one cell
            if args.threads:
                torch.set_num_threads(args.threads)
            if args.malloc == "tuned":
                from mtlcheck.allocator import tune_malloc

                tune_malloc()
            print(
                json.dumps(
                    run_cell(
                        *args.cell, args.size[0], args.batch_size[0], args.tasks[0], args.repeats, width=args.width
                    )
                )
            )
            return 0
        result = run(
            tuple(args.size),
            tuple(args.tasks),
            tuple(args.batch_size),
            args.repeats,
            args.threads,
            args.malloc,
            args.methods,
            tuple(args.libraries),
            width=args.width,
        )
    except MissingExtraError as exc:
        print(f"mtlcheck: error: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(result)
    print(text)
    with open(args.out, "w") as fh:
        fh.write(text + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
