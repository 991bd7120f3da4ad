"""Toy multi-task models for tests and the conformance kit (CPU, milliseconds).

`ToyRegression`: a tanh MLP encoder (Z of shape (B, hidden)) with one linear head and MSE loss
per task. `IdentityEncoder`: Z = θ itself (batch 1), so parameter-level and feature-level
gradients coincide — the setting in which a method and its fast surrogate must agree.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlcheck.models._base import MultiTaskModel


class ToyRegression(MultiTaskModel):
    def __init__(self, n_tasks: int = 3, in_features: int = 6, hidden: int = 8, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.task_names = tuple(f"task{i}" for i in range(n_tasks))
        self.encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(n_tasks))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def encode(self, batch):
        return self.encoder(batch["x"])

    def task_losses(self, z, batch):
        y = batch["y"]
        return {
            name: ((head(z).squeeze(-1) - y[:, i]) ** 2).mean()
            for i, (name, head) in enumerate(zip(self.task_names, self.heads))
        }

    def predict(self, batch):
        z = self.encode(batch)
        return {name: head(z).squeeze(-1) for name, head in zip(self.task_names, self.heads)}

    def shared_parameters(self):
        return list(self.encoder.named_parameters(prefix="encoder"))

    @staticmethod
    def make_batch(n_tasks: int = 3, batch_size: int = 5, in_features: int = 6, seed: int = 1, dtype=torch.float32):
        gen = torch.Generator().manual_seed(seed)
        return {
            "x": torch.randn(batch_size, in_features, generator=gen, dtype=dtype),
            "y": torch.randn(batch_size, n_tasks, generator=gen, dtype=dtype),
        }


class IdentityEncoder(MultiTaskModel):
    """Z = θ (shape (1, d)); task i's loss is a fixed smooth function of Z."""

    def __init__(self, n_tasks: int = 3, dim: int = 5, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.task_names = tuple(f"task{i}" for i in range(n_tasks))
        self.theta = nn.Parameter(torch.randn(1, dim, generator=gen, dtype=torch.float64))
        self.register_buffer("targets", torch.randn(n_tasks, dim, generator=gen, dtype=torch.float64))
        self.register_buffer("scales", torch.rand(n_tasks, generator=gen, dtype=torch.float64) + 0.5)

    def encode(self, batch):
        return self.theta * 1.0

    def task_losses(self, z, batch):
        return {
            name: self.scales[i] * ((z[0] - self.targets[i]) ** 2).sum() + torch.sin(z[0]).sum() * 0.1
            for i, name in enumerate(self.task_names)
        }

    def predict(self, batch):
        return {"z": self.encode(batch)}

    def shared_parameters(self):
        return [("theta", self.theta)]
