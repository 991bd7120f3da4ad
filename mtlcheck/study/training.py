"""The step loop for one run: model, data, method, gradient level, seed, budget.

Optimiser as the paper's Appendix 7: SGD (lr, momentum 0.9) with a linear warm-up of the
learning rate over the first `warmup_steps` (Adam is available for the embedded CPU budgets).
Every `monitor_every` steps the engine also returns the parameter-level Gram and the feature
gradients, and GDS, GMS and FD are recorded with the task losses and the method's weights
(`mtlcheck.monitor`). A NaN/inf loss ends the run with status "diverged" and the step it
happened at. Batches are drawn by `StepSampler` from a
per-epoch permutation seeded by (seed, epoch), and the global RNG is re-seeded from (seed, step)
at every step (`step_seed`): runs that share a seed share their initial model (built under
`torch.manual_seed(seed)`), their batches and their in-step randomness whatever the method, so
a run is a deterministic function of its seed on CPU and can resume at any step from a
checkpoint (model, optimiser, method state, RNG states and the trajectory so far).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from mtlcheck.aggregators import Aggregator
from mtlcheck.gradients import NonFiniteLossError, backward_step, stacked_task_losses
from mtlcheck.jacobian import all_finite
from mtlcheck.models import map_tensors
from mtlcheck.monitor import measure
from mtlcheck.precision import Precision, engine_state


@dataclass(frozen=True)
class TrainSetup:
    """Optimisation settings of one budget (Appendix 7 defaults)."""

    steps: int
    batch_size: int
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_steps: int = 0
    monitor_every: int = 10
    checkpoint_every: int = 50
    num_workers: int = 0
    optimizer: str = "sgd"  # "sgd" (the paper's) or "adam" (betas 0.9/0.999; momentum unused)

    def __post_init__(self):
        for name in ("steps", "batch_size", "monitor_every", "checkpoint_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"TrainSetup.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainSetup.lr must be > 0, got {self.lr!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"TrainSetup.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainSetup.warmup_steps must be >= 0, got {self.warmup_steps!r}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up from lr/warmup to lr over the first warmup_steps, then constant."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.lr


class StepSampler(Sampler):
    """Batches of indices for steps [start, stop): epoch e is a permutation seeded by (seed, e);
    partial last batches are dropped, so every step has a full batch."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int):
        if n < batch_size:
            raise ValueError(f"dataset has {n} samples, fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.per_epoch = n // batch_size

    def batch_indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.per_epoch)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=gen)
        return perm[k * self.batch_size : (k + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.batch_indices(step)

    def __len__(self) -> int:
        return self.stop - self.start


def step_seed(seed: int, step: int) -> int:
    """The seed of the global RNG at the start of `step` of a run with `seed`: the randomness a
    step draws there (e.g. the proposal sampling of a detection model) depends on (seed, step)
    only, so runs of different methods with one seed stay paired even when a method runs extra
    forward passes (FAMO's loss after the update), and a resumed run draws what a straight one does."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0])


def reseed(seed: int, device: torch.device) -> None:
    """Seed the generators a step on `device` draws from: the CPU's and, for a CUDA device, every
    CUDA device's. Equal to `torch.manual_seed(seed)` for them, without its cost per call on a
    machine where CUDA is not initialised (each call there records a Python stack trace per lazily
    seeded back end: ~1 ms, 3-4 % of a small step)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor in a (nested) batch to `device`."""
    return map_tensors(batch, lambda t: t.to(device, non_blocking=True))


@dataclass
class RunOutcome:
    status: str  # "done" | "diverged"
    metrics: dict[str, float]
    trajectory: dict[str, list]
    timings: dict[str, float]
    error: str | None = None
    diverged_step: int | None = None
    engine: dict[str, Any] = field(default_factory=dict)  # the kernels it ran on (`engine_state`)


@dataclass
class Checkpointer:
    """Where a run saves and finds its checkpoint: two callables, e.g. a results-store lease's."""

    save: Callable[[dict], None]
    load: Callable[[], dict | None]


@dataclass
class _State:
    step: int = 0
    trajectory: dict[str, list] = field(default_factory=dict)
    train_seconds: float = 0.0


def _record(trajectory: dict[str, list], row: dict[str, float]) -> None:
    for key, value in row.items():
        trajectory.setdefault(key, []).append(value)


def train(
    model: torch.nn.Module,
    dataset,
    collate: Callable,
    aggregator: Aggregator,
    setup: TrainSetup,
    *,
    level: str = "parameter",
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpointer: Checkpointer | None = None,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    progress: bool | str = False,
    precision: Precision = Precision(),
    feature_batch: str = "flatten",
) -> RunOutcome:
    """Train `model` with `aggregator` for `setup.steps` steps; evaluate at the end (in exact
    float32 — no autocast, TF32 off — whatever `precision` the training steps use). The TF32
    switches are set for the training steps only and restored afterwards; a portable precision's
    CPU kernels (`Precision.engine`) for the training and the evaluation. The run options
    (`mtlcheck.study.RUN_OPTIONS`, handed from the spec as keywords): `feature_batch`, the feature
    level's batch rule (`gradients.FEATURE_BATCH_RULES`)."""
    with precision.engine():
        engine = {**engine_state(), "portable": precision.portable}
        outcome = _train(
            model,
            dataset,
            collate,
            aggregator,
            setup,
            level=level,
            seed=seed,
            device=device,
            checkpointer=checkpointer,
            evaluate=evaluate,
            progress=progress,
            precision=precision,
            feature_batch=feature_batch,
        )
    outcome.engine = engine
    return outcome


def _train(
    model,
    dataset,
    collate,
    aggregator,
    setup,
    *,
    level,
    seed,
    device,
    checkpointer,
    evaluate,
    progress,
    precision,
    feature_batch,
) -> RunOutcome:
    device = torch.device(device)
    torch.manual_seed(seed)
    precision.prepare_model(model.to(device)).train()
    # foreach: the multi-tensor kernels (torch's default on CUDA, not on CPU), the same numbers as the
    # per-tensor loop (tests compare them) at a fraction of its per-step cost on small models
    if setup.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=setup.lr, weight_decay=setup.weight_decay, foreach=True)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=setup.lr, momentum=setup.momentum, weight_decay=setup.weight_decay, foreach=True
        )
    state = _State()
    if checkpointer is not None and (saved := checkpointer.load()) is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        aggregator.load_state_dict(saved["aggregator"])
        torch.set_rng_state(saved["rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = _State(saved["step"], saved["trajectory"], saved["train_seconds"])
    names = list(model.task_names)
    sampler = StepSampler(len(dataset), setup.batch_size, seed, state.step, setup.steps)
    # the loader gets its own generator: creating its iterator must not draw from the global RNG,
    # or a resumed run would be shifted by one draw against the straight run
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=setup.num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=setup.steps,
            initial=state.step,
            desc=progress if isinstance(progress, str) else "train",
            unit="step",
            leave=False,
        )
    post_step = aggregator.tags().post_step_update
    t_start = time.perf_counter()
    for step, batch in zip(range(state.step, setup.steps), loader):
        reseed(step_seed(seed, step), device)
        batch = precision.prepare_batch(to_device(batch, device))
        for group in optimizer.param_groups:
            group["lr"] = setup.lr_at(step)
        monitored = step % setup.monitor_every == 0
        optimizer.zero_grad(set_to_none=True)
        result = None  # last step's Jacobian released: the engine refills its blocks instead of allocating
        try:
            with precision.backends():  # TF32 as asked for the step, restored after it
                result = backward_step(
                    model,
                    batch,
                    aggregator,
                    level=level,
                    feature_grads=monitored,
                    param_gram=monitored,
                    precision=precision,
                    feature_batch=feature_batch,
                )
                if not all_finite([p.grad for p in model.parameters() if p.grad is not None]):
                    bad = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
                    raise NonFiniteLossError(f"non-finite gradient in {bad[:3]}")
                optimizer.step()
                if post_step:
                    with torch.no_grad(), precision.forward_context(device):
                        after = stacked_task_losses(model, model.encode(batch), batch)
                    aggregator.after_step(after.double().cpu())
        except FloatingPointError as exc:  # NonFiniteLossError, NonFiniteGradientError
            state.train_seconds += time.perf_counter() - t_start
            if bar is not None:
                bar.close()
            return RunOutcome(
                "diverged",
                {},
                state.trajectory,
                {"train_seconds": state.train_seconds},
                error=str(exc),
                diverged_step=step,
            )
        if monitored:
            row = {"step": step, **measure(result)}
            row.update({f"loss/{n}": float(v) for n, v in zip(names, result.losses)})
            if result.weights is not None:
                row.update({f"weight/{n}": float(v) for n, v in zip(names, result.weights)})
            _record(state.trajectory, row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(result.losses.sum()):.4g}")
        if checkpointer is not None and (step + 1) % setup.checkpoint_every == 0 and step + 1 < setup.steps:
            checkpointer.save(
                {
                    "step": step + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "aggregator": aggregator.state_dict(),
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                    "trajectory": state.trajectory,
                    "train_seconds": state.train_seconds + time.perf_counter() - t_start,
                }
            )
    if bar is not None:
        bar.close()
    state.train_seconds += time.perf_counter() - t_start
    t_eval = time.perf_counter()
    metrics = {}
    if evaluate is not None:
        model.eval()
        with torch.no_grad(), Precision().backends():
            metrics = evaluate(model)
        model.train()
    timings = {
        "train_seconds": state.train_seconds,
        "eval_seconds": time.perf_counter() - t_eval,
        "steps": setup.steps,
        "seconds_per_step": state.train_seconds / max(setup.steps, 1),
    }
    return RunOutcome("done", {k: float(v) for k, v in metrics.items()}, state.trajectory, timings)
