"""Running specs: one run, or a sweep over methods × levels × seeds, through the results store.

Every run goes through `ResultStore.get_or_run`, so a run is computed once however many
processes (xdist workers, several shells, a killed and restarted sweep) ask for it, and a
killed run resumes from its last checkpoint. A sweep first takes every run nobody owns, then
waits for the ones other processes are computing. Where a run executes (data root, device,
pretrained weights) is not part of its key.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from mtlcheck.aggregators import aggregator_class
from mtlcheck.benchmarks import get_benchmark
from mtlcheck.experiments.spec import RunSpec
from mtlcheck.experiments.store import ResultStore, RunRecord, RunResult
from mtlcheck.gradients import batch_sum_supported, check_feature_batch
from mtlcheck.precision import Precision
from mtlcheck.training import Checkpointer, RunOutcome, train

# the paper's "-UB" names: a method at the feature level
ALIASES = {"mgda_ub": ("mgda", "feature"), "aligned_mtl_ub": ("aligned_mtl", "feature")}
# what a sweep runs by default: the paper's 15 methods and its equal-weighting baseline
PAPER_METHODS = ("ew", "pcgrad", "gradvac", "graddrop", "rgw", "mgda", "cagrad", "nash_mtl", "aligned_mtl",
                 "uncertainty", "gradnorm", "imtl", "famo", "rlw", "dwa", "cosreg")


@dataclass(frozen=True)
class Where:
    """How and where runs execute (never part of a run's key)."""

    data_root: str | None = None
    device: str = "cpu"
    weights: str | None = None
    progress: bool = False


def run_options(options: Mapping[str, Any]) -> tuple[Precision, str]:
    """A spec's `extra` options as (precision, feature-level batch rule): the rule is stored as
    `feature_batch` only when it is not the default "flatten" (gradients.FEATURE_BATCH_RULES), so
    the keys of default runs do not change."""
    options = dict(options)
    feature_batch = options.pop("feature_batch", "flatten")
    check_feature_batch(feature_batch)
    return Precision.from_options(options), feature_batch


def make_spec(benchmark: str, method: str, *, level: str = "parameter", seed: int = 0, budget: str = "small",
              steps: int | None = None, method_config: dict | None = None, extra: dict | None = None) -> RunSpec:
    """A RunSpec with the method resolved (aliases like 'mgda_ub' set the level) and its config
    reduced to the non-default constructor arguments (the aggregator's seed is the run's seed)."""
    if method in ALIASES:
        method, level = ALIASES[method]
    get_benchmark(benchmark)
    cls = aggregator_class(method)
    config = dict(method_config or {})
    config.pop("seed", None)
    defaults = {p.name: p.default for p in cls._init_parameters()}
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {unknown}; it takes {sorted(defaults)}")
    config = {k: v for k, v in config.items() if v != defaults[k]}
    cls(**config)  # validate now, not in the middle of a sweep
    if cls().tags().loss_only and level == "feature":
        raise ValueError(f"{method!r} weights the losses only: it has no feature-level variant")
    # validated now, and only non-default settings kept: {"tf32": False} is the same run as {}; the
    # batch rule only exists at the feature level
    precision, feature_batch = run_options(extra or {})
    options = precision.options()
    if level == "feature" and feature_batch != "flatten":
        check_feature_batch(feature_batch, cls(**config))
        options["feature_batch"] = feature_batch
    return RunSpec(benchmark=benchmark, method=method, method_config=config, level=level, seed=seed,
                   budget=budget, steps=steps, extra=options)


def sweep_specs(benchmark: str, methods: Sequence[str] | None = None, levels: Sequence[str] = ("parameter", "feature"),
                seeds: Sequence[int] = (0,), budget: str = "small", steps: int | None = None,
                extra: dict | None = None) -> list[RunSpec]:
    """Every method × level × seed (loss-only methods at the parameter level only; with the
    feature-level batch rule "sum", only the weighting methods at the feature level); by default
    the paper's methods (other registered methods run when named)."""
    specs = []
    summed = run_options(extra or {})[1] == "sum"
    for method in methods or PAPER_METHODS:
        for level in levels:
            name, lv = ALIASES.get(method, (method, level))
            tags = aggregator_class(name)().tags()
            if lv == "feature" and (tags.loss_only or (summed and not batch_sum_supported(tags))):
                continue
            for seed in seeds:
                spec = make_spec(benchmark, name, level=lv, seed=seed, budget=budget, steps=steps, extra=extra)
                if spec not in specs:
                    specs.append(spec)
    return specs


def execute(spec: RunSpec, where: Where = Where(), checkpointer: Checkpointer | None = None) -> RunOutcome:
    """Train and evaluate one spec (no store involved)."""
    bench = get_benchmark(spec.benchmark)
    root = bench.check_data_root(where.data_root)
    setup = bench.setup(spec.budget, spec.steps)
    torch.manual_seed(spec.seed)
    model = bench.make_model(spec.budget, where.weights)
    aggregator = aggregator_class(spec.method)(**spec.config, seed=spec.seed)
    precision, feature_batch = run_options(spec.options)
    train_data = bench.make_data("train", spec.budget, root)
    test_data = bench.make_data("test", spec.budget, root)
    return train(model, train_data, bench.collate, aggregator, setup, level=spec.level, seed=spec.seed,
                 device=where.device, checkpointer=checkpointer, precision=precision, feature_batch=feature_batch,
                 evaluate=lambda m: bench.evaluate(m, test_data, where.device),
                 progress=spec.label if where.progress else False)


def _run_fn(spec: RunSpec, where: Where):
    def fn(claim) -> RunResult:
        ckpt = Checkpointer(save=claim.save_checkpoint, load=claim.load_checkpoint)
        outcome = execute(spec, where, ckpt)
        timings = dict(outcome.timings)
        if outcome.diverged_step is not None:
            timings["diverged_step"] = outcome.diverged_step
        return RunResult(outcome.metrics, outcome.trajectory, timings, outcome.status, outcome.error)

    return fn


def run_spec(store: ResultStore, spec: RunSpec, where: Where = Where(), *, wait: bool = True) -> RunRecord | None:
    """The stored result of `spec`, computing it here if nobody has."""
    get_benchmark(spec.benchmark).check_data_root(where.data_root)  # a usage error, not a failed run
    return store.get_or_run(spec, _run_fn(spec, where), wait=wait)


def run_sweep(store: ResultStore, specs: Iterable[RunSpec], where: Where = Where(), *, progress: bool = True,
              keep_going: bool = True) -> list[RunRecord]:
    """Compute every spec once (sharing the work with any other process on the same store).
    A run that fails is recorded as failed (with its traceback) and the sweep goes on."""
    specs = list(specs)
    for name in {s.benchmark for s in specs}:
        get_benchmark(name).check_data_root(where.data_root)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), desc="runs", unit="run")
    records: dict[str, RunRecord] = {}
    pending = []
    for spec in specs:  # first pass: everything nobody else is computing
        existing = store.get(spec)
        if existing is not None and existing.is_finished:
            records[spec.key] = existing
        else:
            if bar is not None:
                bar.set_postfix_str(spec.label)
            try:
                record = run_spec(store, spec, where, wait=False)
            except Exception:  # noqa: BLE001 - recorded in the store; the sweep goes on
                if not keep_going:
                    raise
                record = store.get(spec)
                print(f"run {spec.label} failed:\n{traceback.format_exc(limit=3)}")
            if record is None or not (record.is_finished or record.status == "failed"):
                pending.append(spec)
                continue
            records[spec.key] = record
        if bar is not None:
            bar.update(1)
    for spec in pending:  # second pass: wait for (or take over) what others were computing
        try:
            records[spec.key] = run_spec(store, spec, where, wait=True)
        except Exception:  # noqa: BLE001
            if not keep_going:
                raise
            records[spec.key] = store.get(spec)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return [records[s.key] for s in specs if records.get(s.key) is not None]


def default_store_path() -> Path:
    return Path("mtlcheck-results") / "runs.sqlite"
