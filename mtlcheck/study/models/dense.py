"""Dense-prediction multi-task models for the CityScapes and NYU-v2 benchmarks (paper §3.2, App. 7).

Architecture (the paper fixes only "ResNet18 backbone, ImageNet weights, 512x512 input"; the head
design is not stated):

    image (B,3,H,W) --ResNetTrunk--> [C2, C3, C4, C5];   Z = C5, shape (B, 8*width, ceil(H/32), ceil(W/32))
    for each task t:  y_t = upsample_bilinear(DenseHead_t(Z), size=(H, W))

Choice of Z: the last feature map C5 (layer4 output) is the only tensor every task decoder reads, so
it is the shared representation in the sense of the paper (theta_sh = the trunk, Z = its output).
This is what Pylon's `MultiTaskBaseModel` does (`shared_rep = backbone(x)`, one decoder per task,
outputs upsampled to the input size). At the paper's size (ResNet18 width 64, 512x512) Z is
(B, 512, 16, 16).

Decoders (`DenseHead`) are deliberately light: conv3x3 -> GroupNorm -> ReLU, then `stages` times
(bilinear x2, conv3x3, GroupNorm, ReLU), then a 1x1 predictor. GroupNorm instead of BatchNorm keeps
`task_losses` free of side effects (no running statistics are updated when the gradient engine or a
monitor evaluates the heads several times on the same Z) and keeps the heads vmap-friendly.

Losses (danielmao2019/Pylon @ c94c50b9 `criteria/`, lorenmt/mtan and LibMTL `utils.py`):
- depth:    L1 over valid pixels, mean_{gt>0} |pred - gt|       (0 marks invalid depth)
- semantic: cross-entropy with `ignore_index` (250 on CityScapes; 250 on NYUD_MT where no pixel is 250)
- instance: L1 over the entries of the (2,H,W) centre-offset map whose target is not 250
- normal:   1 - mean_{valid} cos(pred, gt), valid = gt is not the zero vector. Pylon uses
            CosineSimilarity (both vectors normalised); mtan normalises only the prediction and
            assumes unit-length targets. The two agree for unit-length targets. mtan's mask
            `sum(gt, dim=1) != 0` would also drop valid normals whose components sum to 0; here
            the mask is `any(gt != 0)`.
A loss whose valid set is empty in the whole batch raises ValueError (the mean would be NaN); the
loaders drop all-invalid samples (Pylon `_filter_dataset_`), so this flags a broken batch.

Nothing downloads: `weights=PATH` loads a torchvision ResNet18 state dict from a local file
(`backbones.load_pretrained`, FileNotFoundError naming the path when it is missing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlcheck.models._base import MultiTaskModel
from mtlcheck.study.models.backbones import ResNetTrunk, load_pretrained

CITYSCAPES_IGNORE_INDEX = 250
NYUV2_IGNORE_INDEX = 250


def _group_count(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1  # pragma: no cover - 1 always divides


def conv_gn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> nn.Sequential:
    """conv (no bias) -> GroupNorm(<=8 groups) -> ReLU, 'same' padding."""
    pad = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad, dilation=dilation, bias=False),
        nn.GroupNorm(_group_count(out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class DenseHead(nn.Module):
    """Light task decoder: conv3x3-GN-ReLU, `stages` x (bilinear x2, conv3x3-GN-ReLU), conv1x1.

    The output has stride (input stride / 2**stages); callers upsample it to the target size with
    `upsample_to`.
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, stages: int = 0):
        super().__init__()
        if width < 1 or out_channels < 1 or in_channels < 1:
            raise ValueError(
                f"DenseHead needs positive channel counts, got in={in_channels}, width={width}, out={out_channels}"
            )
        if stages < 0:
            raise ValueError(f"DenseHead stages must be >= 0, got {stages}")
        self.entry = conv_gn_relu(in_channels, width)
        self.stages = nn.ModuleList(conv_gn_relu(width, width) for _ in range(stages))
        self.predictor = nn.Conv2d(width, out_channels, kernel_size=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.entry(z)
        for block in self.stages:
            x = block(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return self.predictor(x)


def upsample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) to `size`; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------- losses


def _nonempty(mask: torch.Tensor, task: str, what: str) -> None:
    if not bool(mask.any()):
        raise ValueError(f"task {task!r}: the batch has no valid {what}; the mean loss is undefined")


def depth_l1_loss(pred: torch.Tensor, target: torch.Tensor, task: str = "depth") -> torch.Tensor:
    """mean over valid pixels of |pred - gt|, valid = gt > 0 (Pylon criteria: l1_loss(pred[m], gt[m]))."""
    mask = target > 0
    _nonempty(mask, task, "depth pixel (target > 0)")
    return F.l1_loss(pred[mask], target[mask], reduction="mean")


def semantic_ce_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, task: str = "semantic"
) -> torch.Tensor:
    """Pixel-wise cross-entropy, mean over pixels with target != ignore_index."""
    _nonempty(target != ignore_index, task, f"semantic pixel (target != {ignore_index})")
    num_classes = logits.shape[1]
    valid = target[target != ignore_index]
    if bool(((valid < 0) | (valid >= num_classes)).any()):
        bad = sorted({int(v) for v in valid[(valid < 0) | (valid >= num_classes)].unique()[:5]})
        raise ValueError(
            f"task {task!r}: semantic labels {bad} are outside [0, {num_classes}) "
            f"and not the ignore index {ignore_index}"
        )
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="mean")


def offset_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, ignore_value: float, task: str = "instance"
) -> torch.Tensor:
    """mean over entries with target != ignore_value of |pred - gt| (Pylon instance criterion)."""
    mask = target != ignore_value
    _nonempty(mask, task, f"instance-offset entry (target != {ignore_value})")
    return F.l1_loss(pred[mask], target[mask], reduction="mean")


def normal_cosine_loss(pred: torch.Tensor, target: torch.Tensor, task: str = "normal") -> torch.Tensor:
    """1 - mean over valid pixels of cos(pred, gt); valid = gt is not the zero vector (mtan / Pylon)."""
    mask = (target != 0).any(dim=1)
    _nonempty(mask, task, "normal pixel (non-zero target vector)")
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-8)
    return 1.0 - cos[mask].mean()


# ------------------------------------------------------------------------------- batch checking


def check_tensor(
    batch: Mapping[str, Any],
    key: str,
    *,
    owner: str,
    ndim: int,
    channels: int | None = None,
    floating: bool | None = None,
) -> torch.Tensor:
    """Fetch batch[key] and check rank, channel count (dim 1) and dtype kind; errors name the key."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"{owner}: the batch must be a mapping of tensors, got {type(batch).__name__}")
    if key not in batch:
        raise KeyError(f"{owner}: the batch has no {key!r} entry (keys: {sorted(batch)})")
    t = batch[key]
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{owner}: batch[{key!r}] must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != ndim or (channels is not None and t.shape[1] != channels):
        want = f"{ndim}-D" + (f" with {channels} channels in dim 1" if channels is not None else "")
        raise ValueError(f"{owner}: batch[{key!r}] must be {want}, got shape {tuple(t.shape)}")
    if floating is True and not t.is_floating_point():
        raise ValueError(f"{owner}: batch[{key!r}] must be a floating tensor, got {t.dtype}")
    if floating is False and t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"{owner}: batch[{key!r}] must be an integer tensor, got {t.dtype}")
    return t


def check_batch_size(model: nn.Module, z: torch.Tensor, batch: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Every target batch[k] must have Z's batch size."""
    sizes = {k: int(batch[k].shape[0]) for k in keys}
    bad = {k: n for k, n in sizes.items() if n != z.shape[0]}
    if bad:
        raise ValueError(f"{type(model).__name__}: Z has batch size {z.shape[0]} but the targets have {bad}")


# ------------------------------------------------------------------------------------- models


class DenseMultiTaskModel(MultiTaskModel):
    """ResNet18 trunk -> Z = C5 -> one `DenseHead` per task, outputs upsampled to the target size.

    Subclasses set `task_names`, `_head_channels()` and `_loss(task, out, batch)`.
    `width` scales the trunk (64 = real ResNet18), `decoder_width` the heads, `decoder_stages` the
    number of x2 upsampling conv stages inside each head before the final bilinear resize.
    """

    task_names: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        width: int = 64,
        decoder_width: int = 128,
        decoder_stages: int = 2,
        in_channels: int = 3,
        weights: str | os.PathLike | None = None,
    ):
        super().__init__()
        self.encoder = ResNetTrunk(in_channels=in_channels, width=width)
        if weights is not None:
            load_pretrained(self.encoder, weights)
        z_channels = self.encoder.out_channels[-1]
        self.z_channels = z_channels
        self.heads = nn.ModuleDict(
            {
                task: DenseHead(z_channels, decoder_width, out, stages=decoder_stages)
                for task, out in self._head_channels().items()
            }
        )

    # -- subclass hooks
    def _head_channels(self) -> dict[str, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _loss(self, task: str, out: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _target_size(self, batch: Mapping[str, Any]) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _postprocess(self, task: str, out: torch.Tensor) -> torch.Tensor:
        return out

    # -- contract
    def encode(self, batch: Mapping[str, Any]) -> torch.Tensor:
        image = check_tensor(
            batch, "image", owner=type(self).__name__, ndim=4, channels=self.encoder.in_channels, floating=True
        )
        return self.encoder(image)[-1]

    def _check_z(self, z: Any) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != self.z_channels:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{type(self).__name__}: Z must be a (B, {self.z_channels}, h, w) tensor, got {shape}")
        return z

    def decode(self, z: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Raw head outputs at `size` (no post-processing)."""
        z = self._check_z(z)
        return {task: upsample_to(self.heads[task](z), size) for task in self.task_names}

    def task_losses(self, z: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        z = self._check_z(z)
        size = self._target_size(batch)
        check_batch_size(self, z, batch, self.task_names)
        outs = self.decode(z, size)
        return {task: self._loss(task, outs[task], batch) for task in self.task_names}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Dense outputs at the image size, under no_grad and in the module's current mode
        (call `.eval()` first for evaluation). `semantic` holds logits (B,C,H,W): argmax(dim=1)
        gives labels; `normal` is unit-normalised; `depth`/`instance` are raw regressions."""
        image = check_tensor(
            batch, "image", owner=type(self).__name__, ndim=4, channels=self.encoder.in_channels, floating=True
        )
        outs = self.decode(self.encode(batch), tuple(image.shape[-2:]))
        return {task: self._postprocess(task, out) for task, out in outs.items()}

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters() if p.requires_grad]


class CityScapesModel(DenseMultiTaskModel):
    """CityScapes: depth (1 ch, L1 on gt>0), semantic (19 or 7 classes, CE ignore 250),
    instance (2 ch centre offsets (dy, dx) normalised by (H-1, W-1), L1 ignore 250).

    Batch: image (B,3,H,W) float; semantic (B,H,W) int64; depth (B,1,H,W) float, 0 = invalid;
    instance (B,2,H,W) float, 250 = ignore (as Pylon and SamsungLabs/MTL build the targets).
    """

    task_names = ("depth", "semantic", "instance")

    def __init__(
        self,
        *,
        num_classes: int = 19,
        ignore_index: int = CITYSCAPES_IGNORE_INDEX,
        instance_ignore: float = float(CITYSCAPES_IGNORE_INDEX),
        width: int = 64,
        decoder_width: int = 128,
        decoder_stages: int = 2,
        weights: str | os.PathLike | None = None,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.instance_ignore = float(instance_ignore)
        super().__init__(width=width, decoder_width=decoder_width, decoder_stages=decoder_stages, weights=weights)

    def _head_channels(self) -> dict[str, int]:
        return {"depth": 1, "semantic": self.num_classes, "instance": 2}

    def _target_size(self, batch: Mapping[str, Any]) -> tuple[int, int]:
        return _common_size(self, batch, {"depth": (4, 1), "semantic": (3, None), "instance": (4, 2)})

    def _loss(self, task: str, out: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        if task == "depth":
            return depth_l1_loss(out, batch["depth"], task)
        if task == "semantic":
            return semantic_ce_loss(out, batch["semantic"], self.ignore_index, task)
        return offset_l1_loss(out, batch["instance"], self.instance_ignore, task)


class NYUv2Model(DenseMultiTaskModel):
    """NYU-v2: depth (1 ch, L1 on gt>0), normal (3 ch, 1 - cosine on non-zero targets),
    semantic (default 41 classes with ignore 250 as in the NYUD_MT/astmt setup the paper's code uses;
    use num_classes=40, ignore_index=-1 for the 40-class convention or 13/-1 for mtan's files).

    Batch: image (B,3,H,W) float; semantic (B,H,W) int64; depth (B,1,H,W) float, 0 = invalid;
    normal (B,3,H,W) float, zero vector = invalid.
    """

    task_names = ("depth", "normal", "semantic")

    def __init__(
        self,
        *,
        num_classes: int = 41,
        ignore_index: int = NYUV2_IGNORE_INDEX,
        width: int = 64,
        decoder_width: int = 128,
        decoder_stages: int = 2,
        weights: str | os.PathLike | None = None,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        super().__init__(width=width, decoder_width=decoder_width, decoder_stages=decoder_stages, weights=weights)

    def _head_channels(self) -> dict[str, int]:
        return {"depth": 1, "normal": 3, "semantic": self.num_classes}

    def _target_size(self, batch: Mapping[str, Any]) -> tuple[int, int]:
        return _common_size(self, batch, {"depth": (4, 1), "normal": (4, 3), "semantic": (3, None)})

    def _loss(self, task: str, out: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        if task == "depth":
            return depth_l1_loss(out, batch["depth"], task)
        if task == "normal":
            return normal_cosine_loss(out, batch["normal"], task)
        return semantic_ce_loss(out, batch["semantic"], self.ignore_index, task)

    def _postprocess(self, task: str, out: torch.Tensor) -> torch.Tensor:
        return F.normalize(out, dim=1, eps=1e-8) if task == "normal" else out


def _common_size(
    model: nn.Module, batch: Mapping[str, Any], spec: dict[str, tuple[int, int | None]]
) -> tuple[int, int]:
    """Check each target's rank/channels and that all share one (H, W); return it."""
    owner = type(model).__name__
    sizes = {}
    for key, (ndim, channels) in spec.items():
        t = check_tensor(batch, key, owner=owner, ndim=ndim, channels=channels, floating=(False if ndim == 3 else True))
        sizes[key] = tuple(t.shape[-2:])
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{owner}: targets disagree on their spatial size: {sizes}")
    return next(iter(sizes.values()))


__all__ = [
    "CityScapesModel",
    "NYUv2Model",
    "DenseMultiTaskModel",
    "DenseHead",
    "conv_gn_relu",
    "upsample_to",
    "depth_l1_loss",
    "semantic_ce_loss",
    "offset_l1_loss",
    "normal_cosine_loss",
    "check_tensor",
    "check_batch_size",
]
