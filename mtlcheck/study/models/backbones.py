"""ResNet18 trunks built from torchvision parts, with pretrained weights from a local file only.

`ResNetTrunk` maps (B, C, H, W) to the four stage outputs C2..C5 (strides 4, 8, 16, 32) of
torchvision's ResNet18 (He et al. 2016). `width` scales every stage (64 = the real ResNet18),
so CPU smoke runs can use a narrow network with the same topology. Nothing here downloads:
`load_pretrained` reads a state dict from a path the user gives and fails loudly otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


class ResNetTrunk(nn.Module):
    """ResNet18 without its classifier: returns [C2, C3, C4, C5]."""

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        net = ResNet(BasicBlock, [2, 2, 2, 2], width_per_group=64)
        # rebuild with the requested width: torchvision's ResNet fixes 64 as the stem width
        net.inplanes = width
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        net.bn1 = nn.BatchNorm2d(width)
        net.layer1 = net._make_layer(BasicBlock, width, 2)
        net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
        net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
        net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.in_channels = in_channels
        self.width = width
        self.out_channels = (width, 2 * width, 4 * width, 8 * width)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNetTrunk expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


_TORCHVISION_TO_TRUNK = {"conv1.": "stem.0.", "bn1.": "stem.1."}


def load_pretrained(trunk: ResNetTrunk, path: str | os.PathLike) -> ResNetTrunk:
    """Load ImageNet ResNet18 weights (a torchvision `resnet18` state dict file) into `trunk`.

    The classifier (`fc.*`) is dropped. For `in_channels != 3` (a depth trunk) the RGB stem
    filters are averaged over their input channels and repeated, the usual RGB-D initialisation.
    Raises FileNotFoundError naming the path if it does not exist, and ValueError naming the
    offending keys if the file does not match a width-64 ResNet18.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path} (mtlcheck never downloads weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"could not read pretrained weights from {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    mapped = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        for old, new in _TORCHVISION_TO_TRUNK.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        mapped[key] = value
    stem_key = "stem.0.weight"
    if stem_key in mapped and mapped[stem_key].shape[1] != trunk.in_channels:
        w = mapped[stem_key]
        mapped[stem_key] = w.mean(dim=1, keepdim=True).repeat(1, trunk.in_channels, 1, 1)
    own = trunk.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    wrong = sorted(k for k in own.keys() & mapped.keys() if own[k].shape != mapped[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} is not a ResNet18 state dict for this trunk (width={trunk.width}): "
            f"missing={missing[:5]}, unexpected={unexpected[:5]}, wrong shape={wrong[:5]}"
        )
    trunk.load_state_dict(mapped)
    return trunk
