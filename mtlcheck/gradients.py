"""The gradient engine: per-task gradients, aggregation, and the write into `.grad`.

Every step is a two-stage step:

1. z = model.encode(batch); the heads run on a detached copy z̃ (requires_grad), so the per-task
   feature gradients ∇_Z L_i come from T cheap backward passes through the heads only;
2. the shared encoder is back-propagated from Z:
   * loss-only methods (EW, RLW, UW, DWA, FAMO): once, with Σ_i w_i ∇_Z L_i — the cost of a plain
     backward of Σ_i w_i L_i, whatever T is;
   * gradient methods at the feature level ("fast surrogate", e.g. MGDA-UB): once, with the
     aggregated direction over the flattened B×F Jacobian of Z;
   * gradient methods at the parameter level: T vector-Jacobian products give the rows g_i
     (kept as per-parameter blocks), then the aggregated direction is written per parameter.
   The two-stage parameter-level Jacobian is bitwise equal to T separate autograd.grad(L_i)
   calls (suites/pipeline/test_gradients.py).

Head parameters: under gradient methods each head gets the unweighted gradient of the losses
that reach it (its own loss, paper §2); under loss-only methods every parameter gets the
gradient of the weighted loss. Second-order methods (CosReg) differentiate their penalty with
double backprop instead. Loss-only methods have no feature-level variant: asking for one raises.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mtlcheck import LEVELS
from mtlcheck.aggregators import Aggregator
from mtlcheck.jacobian import Jacobian
from mtlcheck.models._base import MultiTaskModel, as_tuple, named_shared_parameters
from mtlcheck.precision import Precision

# How the feature level treats the batch axis of Z: "flatten" solves on the rows ∇_Z L_i over
# the flattened batch × features (Sener & Koltun's MGDA-UB; nash-mtl, Aligned-MTL's code, TorchJD);
# "sum" solves on the batch-summed rows Σ_b ∇_{Z_b} L_i and applies the weights to the per-sample
# gradients (LibMTL, `rep_grad=True`). They differ for B > 1 (MGDA-UB, Aligned-MTL-UB, IMTL).
FEATURE_BATCH_RULES = ("flatten", "sum")


class NonFiniteLossError(FloatingPointError):
    """A task loss is NaN or inf: the run has diverged at this step."""


@dataclass
class StepResult:
    """What one engine step computed (all detached).

    losses: (T,) float64 task losses. weights: the method's task weights, or None.
    jacobian: the Jacobian the method saw (parameter or feature level), when one was built.
    feature_grads: per Z tensor, the (T, *Z.shape) feature gradients ∇_Z L_i, when computed.
    param_gram: the (T, T) float64 Gram of the parameter-level gradients, when computed.
    """

    losses: torch.Tensor
    weights: torch.Tensor | None
    jacobian: Jacobian | None = None
    feature_grads: tuple[torch.Tensor, ...] | None = None
    param_gram: torch.Tensor | None = None


def _accumulate(params, grads, buffers: tuple[torch.Tensor, ...] = ()) -> None:
    """p.grad = g, or p.grad + g where p already has one; a g that shares memory with the engine's
    reusable Jacobian `buffers` (an aggregator may return a row as it is) is copied first, so that
    no `.grad` is overwritten by the next step."""
    reused = {b.untyped_storage().data_ptr() for b in buffers}
    for p, g in zip(params, grads):
        if g is None:
            continue
        g = g.detach()
        if reused and g.untyped_storage().data_ptr() in reused:
            g = g.clone()
        p.grad = g if p.grad is None else p.grad + g


# Per model, the (T, n_k) blocks of its last parameter-level Jacobian, kept for the next step:
# filled in place, they spare a step the allocation of T fresh copies of the shared gradients
# (44 MB each for a ResNet18), which glibc's default malloc returns to the OS on free and
# page-faults in anew on every step.
_JACOBIAN_BUFFERS: weakref.WeakKeyDictionary[torch.nn.Module, tuple] = weakref.WeakKeyDictionary()


_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)  # torch's own count of a storage's users


def _only_owner(block: torch.Tensor) -> bool:
    """Whether `block` is the only tensor on its memory (no view of it, no other tensor holding it);
    the count includes the storage object created to ask it. Where torch does not expose the
    count, False: every step gets new blocks (slower, never wrong)."""
    if _storage_use_count is None:
        return False
    return _storage_use_count(block.untyped_storage()._cdata) == 2


def jacobian_buffers(model: torch.nn.Module, params, n_tasks: int) -> tuple[torch.Tensor, ...]:
    """(T, n_k) blocks to write the parameter-level Jacobian of `model` into: last step's blocks
    when they fit (same T, sizes, dtypes, devices) and nothing else refers to them any more (a
    `StepResult` still held, a view of a row), fresh ones otherwise (then kept for the next step).
    So a Jacobian handed out is never overwritten while it can still be read."""
    key = (n_tasks, tuple((p.numel(), p.dtype, p.device) for p in params))
    kept = _JACOBIAN_BUFFERS.get(model)
    if kept is None or kept[0] != key or not all(_only_owner(b) for b in kept[1]):
        kept = (key, tuple(torch.empty(n_tasks, p.numel(), dtype=p.dtype, device=p.device) for p in params))
        _JACOBIAN_BUFFERS[model] = kept
    return tuple(b.view_as(b) for b in kept[1])  # views: while one lives, its block is not reused


def stacked_task_losses(model: MultiTaskModel, z, batch) -> torch.Tensor:
    losses = model.task_losses(z, batch)
    names = tuple(losses)
    if names != tuple(model.task_names):
        raise ValueError(
            f"{type(model).__name__}.task_losses returned tasks {names}, expected {tuple(model.task_names)}"
        )
    for name, value in losses.items():
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            raise ValueError(f"loss {name!r} must be a scalar tensor, got {getattr(value, 'shape', type(value))}")
    stacked = torch.stack(list(losses.values()))
    if not torch.isfinite(stacked).all():
        bad = [n for n, v in losses.items() if not torch.isfinite(v)]
        raise NonFiniteLossError(f"non-finite task loss(es) {bad}: {[float(v.detach()) for v in losses.values()]}")
    return stacked


def _zeros_for_none(grads, like):
    return [torch.zeros_like(r) if g is None else g for g, r in zip(grads, like)]


def parameter_jacobian(
    zs: tuple[torch.Tensor, ...],
    feature_grads: list[list[torch.Tensor]],
    shared: list[tuple[str, torch.nn.Parameter]],
    *,
    batched: bool = False,
    retain_graph: bool = False,
    buffers: tuple[torch.Tensor, ...] | None = None,
) -> Jacobian:
    """Rows g_i = (∂Z/∂θ)ᵀ ∇_Z L_i by T vector-Jacobian products through the encoder
    (or one batched product with `batched=True`), written into `buffers` ((T, n_k) blocks, e.g.
    from `jacobian_buffers`) when given, into new blocks otherwise."""
    names = [n for n, _ in shared]
    params = [p for _, p in shared]
    n_tasks = len(feature_grads)
    if batched:
        outs = [torch.stack([feature_grads[i][k] for i in range(n_tasks)]) for k in range(len(zs))]
        grads = torch.autograd.grad(
            zs, params, outs, retain_graph=retain_graph, allow_unused=True, is_grads_batched=True
        )
        per_task = [[None if g is None else g[i] for g in grads] for i in range(n_tasks)]
        return Jacobian.from_task_grads(per_task, params, names, level="parameter")
    # each task's gradients go straight into their row, so only one task's set is alive at a
    # time (peak: J plus one gradient set, not J plus T sets)
    blocks = buffers or [torch.empty(n_tasks, p.numel(), dtype=p.dtype, device=p.device) for p in params]
    if len(blocks) != len(params) or any(
        b.shape != (n_tasks, p.numel()) or b.dtype != p.dtype for b, p in zip(blocks, params)
    ):
        raise ValueError("parameter_jacobian: buffers must be one (T, numel) block per parameter, in its dtype")
    for i in range(n_tasks):
        keep = retain_graph or i < n_tasks - 1
        grads = torch.autograd.grad(zs, params, feature_grads[i], retain_graph=keep, allow_unused=True)
        for block, p, g in zip(blocks, params, grads):
            if g is None:
                block[i].zero_()
            else:
                block[i].view(p.shape).copy_(g)
        del grads
    return Jacobian(tuple(blocks), tuple(p.shape for p in params), tuple(names), "parameter")


def batch_sum_supported(tags) -> bool:
    """Whether a method can run with feature_batch="sum": a first-order gradient weighting method."""
    return tags.weighted and not tags.loss_only and not tags.second_order


def check_feature_batch(feature_batch: str, aggregator: Aggregator | None = None) -> None:
    """ValueError unless `feature_batch` is one of FEATURE_BATCH_RULES (and, given a feature-level
    `aggregator`, a rule it supports)."""
    if feature_batch not in FEATURE_BATCH_RULES:
        raise ValueError(f"feature_batch must be one of {FEATURE_BATCH_RULES}, got {feature_batch!r}")
    if aggregator is None:
        return
    if feature_batch == "sum" and not batch_sum_supported(aggregator.tags()):
        raise ValueError(
            f"feature_batch='sum' solves on batch-summed feature gradients and applies the task "
            f"weights to the per-sample ones: it needs a gradient weighting method, and {aggregator!r} "
            "returns no such weights"
        )


def feature_jacobian(zs, feature_grads: list[list[torch.Tensor]]) -> Jacobian:
    """Rows ∇_Z L_i flattened over batch × features (Sener & Koltun's MGDA-UB convention)."""
    return Jacobian.from_task_grads(
        feature_grads, zs, [f"z{k}" for k in range(len(zs))], level="feature", activations=zs
    )


def backward_step(
    model: MultiTaskModel,
    batch: Mapping[str, Any],
    aggregator: Aggregator,
    *,
    level: str = "parameter",
    feature_grads: bool = False,
    param_gram: bool = False,
    batched: bool = False,
    precision: Precision | None = None,
    feature_batch: str = "flatten",
) -> StepResult:
    """Forward `batch`, aggregate the task gradients with `aggregator`, and accumulate the result
    into every parameter's `.grad` (call `optimizer.zero_grad()` before, `optimizer.step()` after).

    level: "parameter" (gradients w.r.t. shared parameters) or "feature" (w.r.t. Z).
    feature_grads / param_gram: also return ∇_Z L_i (for FD) / the parameter-level Gram (for
    GDS and GMS) even when the method does not need them (monitoring steps).
    batched: one batched vjp (is_grads_batched) instead of T vjps for the parameter Jacobian.
    feature_batch: at the feature level, "flatten" (default) or "sum" (`FEATURE_BATCH_RULES`);
    "sum" needs a weighting method (the weights are what carries over to the per-sample rows).
    Memory: the parameter-level Jacobian is written into blocks the engine keeps per model and
    refills at the next step once nothing refers to them (`jacobian_buffers`): drop the previous
    `StepResult` (or its `jacobian`) before the next step to get that reuse; one still held is
    left intact and the step allocates new blocks. `.grad` never shares memory with the blocks.
    precision: only its autocast applies here — the forward pass (encoder and heads) runs in
    it, the backward passes outside, as autocast requires. TF32 and channels-last are process
    and model settings: `train` applies them (`Precision.backends`, `prepare_model`).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    tags = aggregator.tags()
    check_feature_batch(feature_batch, aggregator if level == "feature" else None)
    if tags.loss_only and level == "feature":
        raise ValueError(
            f"{aggregator!r} weights the losses only; it has no feature-level variant (the encoder gradient "
            "would be the same weighted loss gradient). Use level='parameter'."
        )
    # a frozen shared parameter (requires_grad=False, as in fine-tuning) gets no gradient, as in
    # plain PyTorch: the method sees the gradients of the trainable ones only
    shared = [(name, p) for name, p in named_shared_parameters(model) if p.requires_grad]
    heads = [p for _, p in model.head_parameters()]
    forward = _forward_context(precision, shared)
    if tags.second_order:
        return _second_order_step(model, batch, aggregator, level, shared, heads, feature_grads, param_gram, forward)

    with forward:  # encoder, then the heads on a detached Z
        z = model.encode(batch)
        zs = as_tuple(z)
        detached = tuple(t.detach().requires_grad_(True) for t in zs)
        z_in = detached[0] if isinstance(z, torch.Tensor) else detached
        L = stacked_task_losses(model, z_in, batch)
    n_tasks = L.shape[0]
    L64 = L.detach().to(torch.float64).cpu()
    inputs = list(detached) + heads
    K = len(detached)

    def buffers():  # the batched product makes its own (T, *shape) gradients
        return None if batched else jacobian_buffers(model, [p for _, p in shared], n_tasks)

    need_per_task = (not tags.loss_only) or feature_grads or param_gram
    per_task_z: list[list[torch.Tensor]] = []
    if need_per_task:
        for i in range(n_tasks):
            grads = torch.autograd.grad(L[i], inputs, retain_graph=True, allow_unused=True)
            per_task_z.append(_zeros_for_none(grads[:K], detached))
            if not tags.loss_only:
                _accumulate(heads, grads[K:])
    fgrads = None
    if feature_grads:
        fgrads = tuple(torch.stack([per_task_z[i][k] for i in range(n_tasks)]) for k in range(K))

    gram = None
    if tags.loss_only:
        out = aggregator(None, L64)
        w = out.weights.to(dtype=L.dtype, device=L.device)
        grads = torch.autograd.grad((w * L).sum(), inputs, allow_unused=True)
        _accumulate(heads, grads[K:])
        # With the T rows computed anyway, Σ w_i g_i saves the encoder backward — but only when
        # every non-shared parameter is a head parameter (got a gradient above): an encoder
        # parameter left out of shared_parameters() is reached by the encoder backward alone.
        if param_gram and all(g is not None for g in grads[K:]):
            J = parameter_jacobian(zs, per_task_z, shared, batched=batched, buffers=buffers())
            gram = J.gram()
            _accumulate(
                [p for _, p in shared], [b.reshape(s) for b, s in zip(J.combine(out.weights), J.shapes)], J.blocks
            )
        else:
            if param_gram:
                gram = parameter_jacobian(
                    zs, per_task_z, shared, batched=batched, retain_graph=True, buffers=buffers()
                ).gram()
            torch.autograd.backward(zs, _zeros_for_none(grads[:K], detached))
        return StepResult(L64, out.weights, None, fgrads, gram)

    if level == "feature":
        J = feature_jacobian(detached, per_task_z)
        seen = J.batch_summed() if feature_batch == "sum" else J
        out = aggregator(seen, L64)
        if seen is not J:  # the weights carry over to the per-sample rows
            out = type(out)(J.combine(out.weights), out.weights)
        if param_gram:
            gram = parameter_jacobian(
                zs, per_task_z, shared, batched=batched, retain_graph=True, buffers=buffers()
            ).gram()
        torch.autograd.backward(zs, [b.reshape(s) for b, s in zip(out.blocks, J.shapes)])
        return StepResult(L64, out.weights, seen, fgrads, gram)

    J = parameter_jacobian(zs, per_task_z, shared, batched=batched, buffers=buffers())
    out = aggregator(J, L64)
    _accumulate([p for _, p in shared], [b.reshape(s) for b, s in zip(out.blocks, J.shapes)], J.blocks)
    return StepResult(L64, out.weights, J, fgrads, J.gram() if param_gram else None)


def _forward_context(precision: Precision | None, shared):
    if precision is None:
        return contextlib.nullcontext()
    return precision.forward_context(shared[0][1].device if shared else "cpu")


def _second_order_step(model, batch, aggregator, level, shared, heads, want_feature_grads, want_param_gram, forward):
    """Σ_i L_i + penalty(g_1..g_T), the g_i taken with create_graph=True (double backprop)."""
    with forward:
        z = model.encode(batch)
        zs = as_tuple(z)
        L = stacked_task_losses(model, z, batch)
    n_tasks = L.shape[0]
    shared_params = [p for _, p in shared]
    wrt = list(zs) if level == "feature" else shared_params
    rows = [
        _zeros_for_none(torch.autograd.grad(L[i], wrt, create_graph=True, allow_unused=True), wrt)
        for i in range(n_tasks)
    ]
    blocks = [torch.stack([rows[i][k].reshape(-1) for i in range(n_tasks)]) for k in range(len(wrt))]
    penalty = aggregator.penalty_term(blocks)
    names = [f"z{k}" for k in range(len(wrt))] if level == "feature" else [n for n, _ in shared]
    J = Jacobian(
        tuple(b.detach() for b in blocks),
        tuple(t.shape for t in wrt),
        tuple(names),
        level,
        tuple(t.detach() for t in zs) if level == "feature" else None,
    )
    fgrads = None
    if level == "feature":
        fgrads = tuple(b.detach().reshape(n_tasks, *t.shape) for b, t in zip(blocks, zs))
    elif want_feature_grads:
        fz = [
            _zeros_for_none(torch.autograd.grad(L[i], list(zs), retain_graph=True, allow_unused=True), zs)
            for i in range(n_tasks)
        ]
        fgrads = tuple(torch.stack([fz[i][k] for i in range(n_tasks)]) for k in range(len(zs)))
    gram = J.gram() if want_param_gram and level == "parameter" else None
    if want_param_gram and gram is None:
        rows_p = [
            _zeros_for_none(
                torch.autograd.grad(L[i], shared_params, retain_graph=True, allow_unused=True), shared_params
            )
            for i in range(n_tasks)
        ]
        gram = Jacobian.from_task_grads(rows_p, shared_params, [n for n, _ in shared]).gram()
    params = shared_params + heads
    grads = torch.autograd.grad(L.sum() + penalty, params, allow_unused=True)
    _accumulate(params, grads)
    weights = torch.ones(n_tasks, dtype=torch.float64)
    return StepResult(L.detach().to(torch.float64).cpu(), weights, J, fgrads, gram)
