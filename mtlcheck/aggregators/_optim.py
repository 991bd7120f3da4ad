"""Tiny float64 optimizers for the learnable state of loss-balancing methods.

Peers train these parameters (UW's log-variances, IMTL-L's scales, GradNorm's weights) with the
model's optimizer; mtlcheck keeps the aggregator self-contained and steps them inside the
aggregator with the paper's optimizer settings by default (SGD, lr 1e-4, momentum 0.9,
Appendix 7), or Adam where the method's paper says so (FAMO).
"""

from __future__ import annotations

import torch


def sgd_momentum(param: torch.Tensor, grad: torch.Tensor, velocity: torch.Tensor, lr: float, momentum: float):
    """PyTorch's SGD with momentum (dampening 0): v ← μ v + g; θ ← θ − lr v. Returns (θ, v)."""
    velocity = momentum * velocity + grad
    return param - lr * velocity, velocity


def adam(param, grad, state: dict, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """PyTorch's Adam with L2 weight decay (grad += wd·θ). `state` holds m, v, t; returns (θ, state)."""
    grad = grad + weight_decay * param
    t = state["t"] + 1
    m = betas[0] * state["m"] + (1 - betas[0]) * grad
    v = betas[1] * state["v"] + (1 - betas[1]) * grad * grad
    m_hat = m / (1 - betas[0] ** t)
    v_hat = v / (1 - betas[1] ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), {"m": m, "v": v, "t": t}


def check_lr(owner: str, lr: float, momentum: float | None = None) -> None:
    if not lr >= 0:
        raise ValueError(f"{owner}: lr must be >= 0, got {lr!r}")
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"{owner}: momentum must be in [0, 1), got {momentum!r}")


def check_nonnegative_losses(owner, losses: torch.Tensor, objective: str, runaway: str) -> None:
    """Raise ValueError naming `losses` if any is negative: the method's objective in its learnable
    scale is then unbounded below (the scale runs away and the weight becomes inf/NaN)."""
    if bool((losses < 0).any()):
        raise ValueError(
            f"{owner!r}: losses must be >= 0, got {losses.tolist()}; for a negative loss L the "
            f"objective {objective} is unbounded below ({runaway}) and the task weight becomes "
            f"inf/NaN. Shift the loss by a constant lower bound."
        )
