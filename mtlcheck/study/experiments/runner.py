"""Running specs: one run, or a sweep over methods × levels × seeds, through the results store.

Every run goes through `ResultStore.get_or_run`, so a run is computed once however many
processes (xdist workers, several shells, a killed and restarted sweep) ask for it, and a
killed run resumes from its last checkpoint. A sweep first takes every run nobody owns, then
waits for the ones other processes are computing. Where a run executes (data root, device,
pretrained weights) is not part of its key, and a problem there (a wrong data root, a corrupt
file, a missing device or weights file) is a `SetupError`: the run is released, not counted as
failed, and computes once the problem is fixed.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtlcheck import LEVELS
from mtlcheck.aggregators import aggregator_class, level_aliases
from mtlcheck.precision import PortabilityError, Precision
from mtlcheck.study import RUN_OPTIONS
from mtlcheck.study.benchmarks import get_benchmark
from mtlcheck.study.experiments.control import RunStore, get_or_run
from mtlcheck.study.experiments.spec import RunSpec
from mtlcheck.study.experiments.store import (
    DEFAULT_MAX_FAILURES,
    DEFAULT_STALE_AFTER,
    ResultStore,
    RunFailedError,
    RunRecord,
    RunResult,
    SetupError,
)
from mtlcheck.study.training import Checkpointer, RunOutcome, train

# what a sweep runs by default: the paper's 15 methods and its equal-weighting baseline
PAPER_METHODS = (
    "ew",
    "pcgrad",
    "gradvac",
    "graddrop",
    "rgw",
    "mgda",
    "cagrad",
    "nash_mtl",
    "aligned_mtl",
    "uncertainty",
    "gradnorm",
    "imtl",
    "famo",
    "rlw",
    "dwa",
    "cosreg",
)
# methods registered after the paper: runnable one by one (`run`, `sweep --methods`), reported as extra
# rows outside the paper's tables, figures and claims (`paper.reports`)
LATER_METHODS = (
    "upgrad",
    "dualproj",
    "config",
    "fairgrad",
    "gls",
    "db_mtl",
    "stch",
    "excess_mtl",
    "moco",
    "modo",
    "sdmgrad",
    "cr_mogm",
)


@dataclass(frozen=True)
class Where:
    """How and where runs execute (never part of a run's key)."""

    data_root: str | None = None
    device: str = "cpu"
    weights: str | None = None
    progress: bool = False

    def check(self, benchmarks: Iterable[str] = ()) -> None:
        """Usage errors before any run is claimed: the device must exist here, the weights file
        and each benchmark's data root must be there (ValueError / FileNotFoundError)."""
        check_device(self.device)
        if self.weights is not None and not Path(self.weights).is_file():
            raise FileNotFoundError(f"--weights file not found: {self.weights}")
        for name in set(benchmarks):
            get_benchmark(name).check_data_root(self.data_root)


def run_options(options: Mapping[str, Any]) -> tuple[Precision, dict[str, Any]]:
    """A spec's `extra` options as (precision, the value of each of `RUN_OPTIONS`, defaults filled in),
    each value checked against its choices."""
    options = dict(options)
    values = {o.name: o.value(options.pop(o.name, o.default)) for o in RUN_OPTIONS}
    return Precision.from_options(options), values


def _stored_options(values: Mapping[str, Any], level: str, aggregator) -> dict[str, Any]:
    """The `RUN_OPTIONS` values a spec at `level` stores: those away from their default at a level the
    option exists at, each checked against the method (ValueError)."""
    stored = {}
    for o in RUN_OPTIONS:
        if values[o.name] != o.default and level in o.levels:
            o.check(values[o.name], aggregator)
            stored[o.name] = values[o.name]
    return stored


def check_device(device: str) -> None:
    """ValueError unless `device` is a torch device this process can use ('cpu', 'cuda[:N]', ...)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: expected cpu or cuda[:N] ({exc})") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")


def make_spec(
    benchmark: str,
    method: str,
    *,
    level: str | None = None,
    seed: int = 0,
    budget: str = "small",
    steps: int | None = None,
    method_config: dict | None = None,
    extra: dict | None = None,
) -> RunSpec:
    """A RunSpec with the method resolved (aliases like 'mgda_ub' fix the level; asking for
    another level is an error), the level defaulting to 'parameter', and the config checked
    against the constructor's signature and types and reduced to its non-default arguments.
    The aggregator's seed is the run's seed, so `seed` is not a config key."""
    aliases = level_aliases()  # the paper's "-UB" names: a method at the feature level
    if method in aliases:
        name, alias_level = aliases[method]
        if level not in (None, alias_level):
            raise ValueError(
                f"{method!r} is {name!r} at the {alias_level} level; it has no {level} level "
                f"(for {name} at the {level} level, ask for {name!r})"
            )
        method, level = name, alias_level
    level = "parameter" if level is None else level
    get_benchmark(benchmark)
    cls = aggregator_class(method)
    config = dict(method_config or {})
    if "seed" in config:
        raise ValueError(
            f"seed={config['seed']!r} in the method config: the aggregator's seed is the run's seed "
            "(--seed on the command line)"
        )
    config = cls.check_config(config)
    defaults = {p.name: p.default for p in cls._init_parameters()}
    config = {k: v for k, v in config.items() if v != defaults[k]}
    cls(**config)  # validate the values now, not in the middle of a sweep
    if cls().tags().loss_only and level == "feature":
        raise ValueError(f"{method!r} weights the losses only: it has no feature-level variant")
    # validated now, and only non-default settings kept: {"tf32": False} is the same run as {}
    precision, values = run_options(extra or {})
    options = {**precision.options(), **_stored_options(values, level, cls(**config))}
    return RunSpec(
        benchmark=benchmark,
        method=method,
        method_config=config,
        level=level,
        seed=seed,
        budget=budget,
        steps=steps,
        extra=options,
    )


def sweep_specs(
    benchmark: str,
    methods: Sequence[str] | None = None,
    levels: Sequence[str] = LEVELS,
    seeds: Sequence[int] = (0,),
    budget: str = "small",
    steps: int | None = None,
    extra: dict | None = None,
) -> list[RunSpec]:
    """Every method × level × seed (loss-only methods at the parameter level only; an alias such
    as 'mgda_ub' at its own level, which must be among `levels`); by default the paper's methods
    (other registered methods run when named); a method at a level where it cannot run with the
    `RUN_OPTIONS` asked for (the feature-level batch rule "sum": the weighting methods only) is left
    out. No runs at all is a ValueError saying why."""
    methods = PAPER_METHODS if methods is None else tuple(methods)
    for what, values in (("methods", methods), ("levels", levels), ("seeds", seeds)):
        if not values:
            raise ValueError(f"no runs: no {what} given")
    specs = []
    values = run_options(extra or {})[1]
    aliases = level_aliases()
    for method in methods:
        if method in aliases and aliases[method][1] not in levels:
            raise ValueError(
                f"{method!r} is {aliases[method][0]!r} at the {aliases[method][1]} level, "
                f"which is not among the levels {list(levels)}"
            )
        for level in levels:
            name, lv = aliases.get(method, (method, level))
            aggregator = aggregator_class(name)()
            if (lv == "feature" and aggregator.tags().loss_only) or not _runs_with(values, lv, aggregator):
                continue
            for seed in seeds:
                spec = make_spec(benchmark, name, level=lv, seed=seed, budget=budget, steps=steps, extra=extra)
                if spec not in specs:
                    specs.append(spec)
    if not specs:
        raise ValueError(
            f"no runs: {', '.join(methods)} weight(s) the losses only and have no level among "
            f"{list(levels)} (loss-only methods run at the parameter level)"
        )
    return specs


def _runs_with(values: Mapping[str, Any], level: str, aggregator) -> bool:
    """Whether the method can run at `level` with these `RUN_OPTIONS` values."""
    try:
        _stored_options(values, level, aggregator)
    except ValueError:
        return False
    return True


class _GuardedData(torch.utils.data.Dataset):
    """A dataset whose read errors (a missing or corrupt file found mid-run) are `SetupError`s."""

    def __init__(self, dataset, root):
        self.dataset, self.root = dataset, root

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except Exception as exc:  # noqa: BLE001 - any failure to read a sample is the data's
            raise SetupError(f"data under {self.root}: sample {index}: {type(exc).__name__}: {exc}") from exc

    def __getattr__(self, name):
        if name in ("dataset", "root"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def execute(spec: RunSpec, where: Where = Where(), checkpointer: Checkpointer | None = None) -> RunOutcome:
    """Train and evaluate one spec (no store involved). Problems of where it runs (data root,
    data files, device, weights, running out of GPU memory) raise `SetupError`."""
    precision, options = run_options(spec.options)
    if precision.portable and torch.device(where.device).type != "cpu":
        raise SetupError(f"{spec.label} is a portable run: a CPU mode, it cannot run on {where.device}")
    try:
        with precision.engine():  # model, data and training on the portable kernels
            return _execute(spec, where, checkpointer, precision, options)
    except PortabilityError as exc:
        raise SetupError(f"{spec.label} cannot start here: {exc}") from exc


def _execute(spec, where, checkpointer, precision, options) -> RunOutcome:
    bench = get_benchmark(spec.benchmark)
    setup = bench.setup(spec.budget, spec.steps)
    try:
        check_device(where.device)
        root = bench.check_data_root(where.data_root)
        torch.manual_seed(spec.seed)
        model = bench.make_model(spec.budget, where.weights)
    except Exception as exc:  # noqa: BLE001 - none of this is the run's computation
        raise SetupError(f"{spec.label} cannot start here: {type(exc).__name__}: {exc}") from exc
    aggregator = aggregator_class(spec.method)(**spec.config, seed=spec.seed)
    try:
        train_data = bench.make_data("train", spec.budget, root)
        test_data = bench.make_data("test", spec.budget, root)
    except Exception as exc:  # noqa: BLE001
        raise SetupError(f"{spec.label} cannot start here: {type(exc).__name__}: {exc}") from exc
    if root is not None:
        train_data, test_data = _GuardedData(train_data, root), _GuardedData(test_data, root)
    try:
        return train(
            model,
            train_data,
            bench.collate,
            aggregator,
            setup,
            level=spec.level,
            seed=spec.seed,
            device=where.device,
            checkpointer=checkpointer,
            precision=precision,
            **options,  # RUN_OPTIONS: keywords of the step loop
            evaluate=lambda m: bench.evaluate(m, test_data, where.device),
            progress=spec.label if where.progress else False,
        )
    except torch.cuda.OutOfMemoryError as exc:
        raise SetupError(f"{spec.label} ran out of GPU memory on {where.device}: {exc}") from exc


def _run_fn(spec: RunSpec, where: Where):
    def fn(lease) -> RunResult:
        ckpt = Checkpointer(save=lease.save_checkpoint, load=lease.load_checkpoint)
        outcome = execute(spec, where, ckpt)
        timings = dict(outcome.timings)
        if outcome.diverged_step is not None:
            timings["diverged_step"] = outcome.diverged_step
        engine = {**outcome.engine, "data_root": where.data_root}
        return RunResult(outcome.metrics, outcome.trajectory, timings, outcome.status, outcome.error, engine)

    return fn


def _say_waiting(spec: RunSpec):
    def on_wait(record: RunRecord | None) -> None:
        owner = f" by {record.owner}" if record is not None and record.owner else ""
        print(
            f"mtlcheck: waiting for run {spec.label} ({spec.key}): another process is computing it{owner}",
            file=sys.stderr,
            flush=True,
        )

    return on_wait


def run_spec(store: RunStore, spec: RunSpec, where: Where = Where(), *, wait: bool = True) -> RunRecord | None:
    """The stored result of `spec`, computing it here if nobody has (saying so on stderr when it
    waits for another process). `store` is a `ResultStore` or any other `RunStore` (a Ray
    worker's proxy of the driver's store)."""
    where.check([spec.benchmark])  # usage errors, never a failed run
    get_benchmark(spec.benchmark).import_code()  # before the lease: see Benchmark.import_code
    return get_or_run(
        store,
        spec,
        _run_fn(spec, where),
        wait=wait,
        stale_after=DEFAULT_STALE_AFTER,
        max_failures=DEFAULT_MAX_FAILURES,
        on_wait=_say_waiting(spec),
    )


def run_sweep(
    store: ResultStore,
    specs: Iterable[RunSpec],
    where: Where = Where(),
    *,
    progress: bool = True,
    keep_going: bool = True,
) -> list[RunRecord]:
    """Compute every spec once (sharing the work with any other process on the same store).
    A run that fails is recorded as failed (with its traceback) and the sweep goes on."""
    specs = list(specs)
    where.check(s.benchmark for s in specs)
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
            except SetupError:  # the data or device: every other run would meet it too
                raise
            except RunFailedError as exc:  # failed before, out of attempts: one line, not a traceback
                print(f"run {spec.label}: {exc}")
                record = exc.record
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
        except SetupError:
            raise
        except Exception:  # noqa: BLE001
            if not keep_going:
                raise
            records[spec.key] = store.get(spec)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return [records[s.key] for s in specs if records.get(s.key) is not None]
