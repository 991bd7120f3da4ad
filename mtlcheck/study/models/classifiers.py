"""The model of `mtlcheck bench` ("Model A"): a ResNet18 trunk and T light classification heads."""

from __future__ import annotations

from torch import nn

from mtlcheck.models._base import MultiTaskModel
from mtlcheck.study.models.backbones import ResNetTrunk


class ResNetClassifiers(MultiTaskModel):
    """ResNet18 trunk + T light classification heads (1×1 conv to 64 channels, ReLU, global pooling, linear)."""

    def __init__(self, n_tasks: int = 3, n_classes: int = 10, width: int = 64):
        super().__init__()
        self.task_names = tuple(f"task{i}" for i in range(n_tasks))
        self.trunk = ResNetTrunk(3, width)
        c5 = self.trunk.out_channels[-1]
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c5, 64, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes)
            )
            for _ in range(n_tasks)
        )

    def encode(self, batch):
        return self.trunk(batch["image"])[-1]

    def task_losses(self, z, batch):
        return {
            name: nn.functional.cross_entropy(head(z), batch["labels"][:, i])
            for i, (name, head) in enumerate(zip(self.task_names, self.heads))
        }

    def predict(self, batch):
        z = self.encode(batch)
        return {name: head(z).argmax(1) for name, head in zip(self.task_names, self.heads)}

    def shared_parameters(self):
        return list(self.trunk.named_parameters(prefix="trunk"))
