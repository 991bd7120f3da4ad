"""The MetaGraspNet multi-task model of the paper (§3.1, Fig. 2, Eq. 4), from torchvision parts.

Architecture (UOAIS-Net, Back et al. 2022, config `R50_rgbdconcat_mlc_occatmask_hom_concat`,
with ResNet18 trunks as in the paper):

* two `ResNetTrunk`s, one on RGB and one on depth (replicated to 3 channels, as UOAIS does);
  stage-wise fusion `Conv2d(2C, C, 1)` on cat(rgb_Ck, depth_Ck) for C2..C5 (UOAIS `FUSE_TYPE: conv`);
* torchvision `FeaturePyramidNetwork` + `LastLevelMaxPool`: P2..P6, `fpn_channels` each;
* `GraspRPN` (anchors 16..256 on P2..P6, ratios 0.5/1/2): losses **rcls**, **rdet**;
* `AmodalRoIHeads` on P2..P5: amodal box classification **cls** and regression **det**, then the
  hierarchical occlusion chain visible mask **vsb** -> amodal mask **amd** -> occlusion **occ**.

The shared representation Z is the FPN output (P2, P3, P4, P5, P6) as a tuple of tensors, the
only place where all seven losses split; the shared parameters theta_sh are both trunks, the fusion
convs and the FPN. RPN proposals are detached, so the RoI losses never reach the RPN head, and the
RoI losses never use P6: their feature-level gradient on P6 is `None` (read it as zeros). The heads
are not task-private (cls/det share the box head, vsb/amd/occ share the HOM chain and the box
head's first conv through multi-level coding).

Inputs are used as given: normalisation (ImageNet mean/std for RGB, depth scaling) is the
loader's job. Every image must be `image_size`; boxes are amodal XYXY in pixels.
Pretrained ImageNet weights come only from a local torchvision `resnet18` state dict
(`weights=PATH`, loaded into both trunks); nothing is ever downloaded.

Module-level configs: `SMOKE_CONFIG` (seconds on a CPU) and `PAPER_CONFIG` (the appendix setup).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mtlcheck.models._base import MultiTaskModel, Representation, as_tuple
from mtlcheck.study.models._roi import AmodalRoIHeads, GraspRPN
from mtlcheck.study.models.backbones import ResNetTrunk, load_pretrained

__all__ = ["MetaGraspNetModel", "make_synthetic_batch", "SMOKE_CONFIG", "PAPER_CONFIG"]

_FPN_KEYS = ("0", "1", "2", "3", "pool")  # torchvision's names for P2..P6

SMOKE_CONFIG: dict[str, Any] = {
    "width": 8,
    "fpn_channels": 16,
    "image_size": 64,
    "rpn_pre_nms_top_n": (200, 100),
    "rpn_post_nms_top_n": (100, 50),
    "rpn_batch_size_per_image": 64,
    "roi_batch_size_per_image": 64,
}
PAPER_CONFIG: dict[str, Any] = {"width": 64, "fpn_channels": 256, "image_size": 512}


def _image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, bool):
        raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    elif isinstance(image_size, Sequence) and len(image_size) == 2 and all(isinstance(v, int) for v in image_size):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
    if any(v <= 0 or v % 32 for v in hw):
        raise ValueError(f"image_size must be positive multiples of 32 (the stride of P5), got {image_size!r}")
    return hw


def _halve(n: int) -> int:
    return -(-n // 2)


class MetaGraspNetModel(MultiTaskModel):
    """RGB-D ResNet18 + FPN + RPN + UOAIS-Net RoI heads; seven losses (paper Eq. 4), returned separately.

    Args:
        num_classes: foreground classes (labels 1..num_classes). UOAIS is class-agnostic: 1.
        width: ResNet stem width (64 = ResNet18; 8 for CPU smoke runs).
        fpn_channels: FPN output channels, also the width of every RoI head (UOAIS: 256).
        image_size: input size, int or (H, W), multiples of 32 (paper: 512).
        weights: path of a local torchvision resnet18 state dict for both trunks (needs width 64);
            FileNotFoundError naming the path if it does not exist. None = random init.
        depth_in_channels: 3 replicates the depth map to 3 channels (UOAIS); 1 feeds it as is
            (the pretrained stem is then averaged over its RGB filters by `load_pretrained`).
        rpn_*: RPN settings; `*_top_n` are (training, testing); pre-NMS top-n is per FPN level.
        roi_*: RoI sampling (per image) for the box and mask heads.
        box_score_thresh, box_nms_thresh, detections_per_img: `predict` post-processing.
        smooth_l1_beta: beta of the rdet and det smooth-L1 losses; 0 = L1 (detectron2/UOAIS),
            1/9 = torchvision's Faster R-CNN.
        anchor_sizes, aspect_ratios: one anchor size tuple per level P2..P6.
    """

    task_names = ("rcls", "rdet", "cls", "det", "vsb", "amd", "occ")
    level_names = ("p2", "p3", "p4", "p5", "p6")

    def __init__(
        self,
        num_classes: int = 1,
        width: int = 64,
        fpn_channels: int = 256,
        image_size: int | Sequence[int] = 512,
        weights: str | os.PathLike | None = None,
        *,
        depth_in_channels: int = 3,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
        rpn_post_nms_top_n: tuple[int, int] = (1000, 1000),
        rpn_nms_thresh: float = 0.7,
        roi_batch_size_per_image: int = 512,
        roi_positive_fraction: float = 0.25,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        smooth_l1_beta: float = 0.0,
        anchor_sizes: Sequence[Sequence[int]] = ((16,), (32,), (64,), (128,), (256,)),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    ):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 1:
            raise ValueError(f"fpn_channels must be a positive int, got {fpn_channels!r}")
        if depth_in_channels not in (1, 3):
            raise ValueError(f"depth_in_channels must be 1 or 3, got {depth_in_channels!r}")
        if len(anchor_sizes) != len(_FPN_KEYS):
            raise ValueError(f"anchor_sizes needs one entry per level P2..P6 (5), got {len(anchor_sizes)}")
        if smooth_l1_beta < 0:
            raise ValueError(f"smooth_l1_beta must be >= 0, got {smooth_l1_beta!r}")
        self.num_classes = num_classes
        self.image_hw = _image_hw(image_size)
        self.fpn_channels = fpn_channels
        self.depth_in_channels = depth_in_channels

        self.rgb_trunk = ResNetTrunk(3, width)
        self.depth_trunk = ResNetTrunk(depth_in_channels, width)
        if weights is not None:
            load_pretrained(self.rgb_trunk, weights)
            load_pretrained(self.depth_trunk, weights)
        stage_channels = self.rgb_trunk.out_channels
        self.fusion = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in stage_channels)
        self.fpn = FeaturePyramidNetwork(list(stage_channels), fpn_channels, extra_blocks=LastLevelMaxPool())
        self.rpn = GraspRPN(
            fpn_channels,
            anchor_sizes=anchor_sizes,
            aspect_ratios=aspect_ratios,
            fg_iou_thresh=rpn_fg_iou_thresh,
            bg_iou_thresh=rpn_bg_iou_thresh,
            batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=rpn_positive_fraction,
            pre_nms_top_n=tuple(rpn_pre_nms_top_n),
            post_nms_top_n=tuple(rpn_post_nms_top_n),
            nms_thresh=rpn_nms_thresh,
            smooth_l1_beta=smooth_l1_beta,
        )
        self.roi_heads = AmodalRoIHeads(
            fpn_channels,
            num_classes,
            batch_size_per_image=roi_batch_size_per_image,
            positive_fraction=roi_positive_fraction,
            score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh,
            detections_per_img=detections_per_img,
            smooth_l1_beta=smooth_l1_beta,
        )

    # -- the MultiTaskModel contract ----------------------------------------------------------------
    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """theta_sh: RGB trunk, depth trunk, fusion convs, FPN (in that order)."""
        out: list[tuple[str, nn.Parameter]] = []
        for prefix in ("rgb_trunk", "depth_trunk", "fusion", "fpn"):
            out += [(f"{prefix}.{n}", p) for n, p in getattr(self, prefix).named_parameters() if p.requires_grad]
        return out

    def feature_shapes(self, batch_size: int) -> tuple[tuple[int, int, int, int], ...]:
        """Shapes of Z = (P2, ..., P6) for a batch of `batch_size` images."""
        h, w = self.image_hw
        h, w = _halve(_halve(h)), _halve(_halve(w))  # stem conv + max-pool: stride 4
        shapes = []
        for _ in _FPN_KEYS:
            shapes.append((batch_size, self.fpn_channels, h, w))
            h, w = _halve(h), _halve(w)
        return tuple(shapes)

    def encode(self, batch: Mapping[str, Any]) -> tuple[Tensor, ...]:
        """Z = (P2, P3, P4, P5, P6): the FPN outputs, strides 4, 8, 16, 32, 64."""
        image, depth = self._check_inputs(batch)
        if self.depth_in_channels == 3:
            depth = depth.expand(-1, 3, -1, -1)
        rgb_feats = self.rgb_trunk(image)
        depth_feats = self.depth_trunk(depth)
        fused = OrderedDict(
            (str(k), fuse(torch.cat([r, d], dim=1)))
            for k, (fuse, r, d) in enumerate(zip(self.fusion, rgb_feats, depth_feats))
        )
        pyramid = self.fpn(fused)
        return tuple(pyramid[k] for k in _FPN_KEYS)

    def task_losses(self, z: Representation, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The seven losses of Eq. 4 from Z alone (proposals and RoI sampling happen here).

        Every value is a finite scalar. With no instance in the batch: rcls is the objectness
        BCE over negative anchors only, cls the cross-entropy over background RoIs only, and
        rdet, det, vsb, amd, occ are exactly 0 (still attached to Z, with zero gradients).
        """
        levels = self._check_z(z, batch)
        batch_size = levels[0].shape[0]
        targets = self._check_targets(batch, batch_size, levels[0].device)
        features = OrderedDict(zip(_FPN_KEYS, levels))
        images = self._image_list(levels[0])
        proposals, rpn_losses = self.rpn.run(features, images, targets)
        roi_losses = self.roi_heads.losses(features, proposals, images.image_sizes, targets)
        losses = {**rpn_losses, **roi_losses}
        return {name: losses[name] for name in self.task_names}

    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, Tensor]]:
        """Detections per image (call `model.eval()` first), the input of the COCO evaluation.

        Each dict: "boxes" (N, 4) amodal XYXY, "scores" (N,), "labels" (N,) int64 >= 1,
        "visible_masks" and "amodal_masks" (N, H, W) float probabilities at image size,
        "occluded_scores" (N,) probability that the object is occluded; plus "image_id" when
        the batch carries targets with one.
        """
        if self.training:
            raise RuntimeError("MetaGraspNetModel.predict needs eval mode: call model.eval() first")
        with torch.no_grad():
            levels = self.encode(batch)
            features = OrderedDict(zip(_FPN_KEYS, levels))
            images = self._image_list(levels[0])
            proposals, _ = self.rpn.run(features, images, None)
            results = self.roi_heads.detect(features, proposals, images.image_sizes)
        targets = batch.get("targets")
        if targets is not None:
            for res, tgt in zip(results, targets):
                if isinstance(tgt, Mapping) and "image_id" in tgt:
                    res["image_id"] = tgt["image_id"]
        return results

    # -- validation -------------------------------------------------------------------------------
    def _image_list(self, like: Tensor) -> ImageList:
        batch_size = like.shape[0]
        # a zero-channel placeholder: anchors and RoI scales only need the image size
        placeholder = like.new_empty((batch_size, 0, *self.image_hw))
        return ImageList(placeholder, [self.image_hw] * batch_size)

    def _check_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch must be a mapping with 'image' and 'depth', got {type(batch).__name__}")
        h, w = self.image_hw
        out = []
        for key, channels in (("image", 3), ("depth", 1)):
            if key not in batch:
                raise KeyError(f"batch has no {key!r} (keys: {sorted(batch)})")
            t = batch[key]
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"batch[{key!r}] must be a float tensor, got {getattr(t, 'dtype', type(t).__name__)}")
            if t.ndim != 4 or t.shape[1] != channels or tuple(t.shape[2:]) != (h, w):
                raise ValueError(f"batch[{key!r}] must have shape (B, {channels}, {h}, {w}), got {tuple(t.shape)}")
            out.append(t)
        if out[0].shape[0] != out[1].shape[0]:
            raise ValueError(f"batch['image'] has {out[0].shape[0]} images but batch['depth'] has {out[1].shape[0]}")
        return out[0], out[1]

    def _check_z(self, z: Representation, batch: Mapping[str, Any]) -> tuple[Tensor, ...]:
        levels = as_tuple(z)
        if len(levels) != len(_FPN_KEYS):
            raise ValueError(f"z must be the {len(_FPN_KEYS)} FPN levels P2..P6, got {len(levels)} tensors")
        expected = self.feature_shapes(levels[0].shape[0])
        for name, t, shape in zip(self.level_names, levels, expected):
            if tuple(t.shape) != shape:
                raise ValueError(f"z level {name} must have shape {shape}, got {tuple(t.shape)}")
        return levels

    def _check_targets(
        self, batch: Mapping[str, Any], batch_size: int, device: torch.device
    ) -> list[dict[str, Tensor]]:
        if not isinstance(batch, Mapping) or "targets" not in batch:
            raise KeyError("batch has no 'targets' (one dict per image) needed for the losses")
        targets = batch["targets"]
        if not isinstance(targets, Sequence) or len(targets) != batch_size:
            n = len(targets) if isinstance(targets, Sequence) else type(targets).__name__
            raise ValueError(f"batch['targets'] must be a list of {batch_size} dicts (one per image), got {n}")
        return [
            _check_target(f"batch['targets'][{i}]", tgt, self.image_hw, self.num_classes, device)
            for i, tgt in enumerate(targets)
        ]


_TARGET_KEYS = ("boxes", "labels", "visible_masks", "amodal_masks", "occluded")


def _spec_error(where: str, key: str, spec: str, t: Tensor) -> ValueError:
    return ValueError(f"{where}[{key!r}] must be {spec}, got {t.dtype} of shape {tuple(t.shape)}")


def _check_target(
    where: str, tgt: Any, image_hw: tuple[int, int], num_classes: int, device: torch.device
) -> dict[str, Tensor]:
    """Validate one image's target dict (see `MetaGraspNetModel` for the format)."""
    if not isinstance(tgt, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(tgt).__name__}")
    missing = [k for k in _TARGET_KEYS if k not in tgt]
    if missing:
        raise KeyError(f"{where} lacks {missing}")
    for key in _TARGET_KEYS:
        t = tgt[key]
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}[{key!r}] must be a tensor, got {type(t).__name__}")
        if t.device != device:
            raise ValueError(f"{where}[{key!r}] is on {t.device} but z is on {device}")
    boxes, labels, occluded = tgt["boxes"], tgt["labels"], tgt["occluded"]
    if not boxes.is_floating_point() or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise _spec_error(where, "boxes", "a float (N, 4) tensor", boxes)
    n = boxes.shape[0]
    if n and (not torch.isfinite(boxes).all() or (boxes[:, 2:] <= boxes[:, :2]).any()):
        raise ValueError(f"{where}['boxes'] must be finite XYXY boxes with x2 > x1 and y2 > y1")
    if labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        raise _spec_error(where, "labels", f"int64 of shape ({n},)", labels)
    if n and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(
            f"{where}['labels'] must lie in 1..{num_classes} (num_classes), "
            f"got {labels.min().item()}..{labels.max().item()}"
        )
    for key in ("visible_masks", "amodal_masks"):
        m = tgt[key]
        if m.dtype not in (torch.uint8, torch.bool) or tuple(m.shape) != (n, *image_hw):
            raise _spec_error(where, key, f"uint8 (or bool) of shape ({n}, {image_hw[0]}, {image_hw[1]})", m)
    if occluded.dtype not in (torch.int64, torch.bool) or tuple(occluded.shape) != (n,):
        raise _spec_error(where, "occluded", f"int64 (or bool) of shape ({n},)", occluded)
    if n and ((occluded != 0) & (occluded != 1)).any():
        raise ValueError(f"{where}['occluded'] must contain only 0 and 1")
    return dict(tgt)


# --------------------------------------------------------------------------------------------------
# synthetic data for tests and benchmarks
# --------------------------------------------------------------------------------------------------


def make_synthetic_batch(
    batch_size: int,
    image_size: int,
    generator: torch.Generator,
    *,
    min_instances: int = 1,
    max_instances: int = 4,
    num_classes: int = 1,
) -> dict[str, Any]:
    """A random valid batch: axis-aligned rectangles stacked in z-order (later = nearer).

    Each image gets `min_instances`..`max_instances` rectangles with sides in [S/5, S/2]; the
    visible mask of an object is its amodal rectangle minus the rectangles above it; objects left
    with no visible pixel are dropped (so an image may end with fewer than `min_instances`, never
    with zero when `min_instances >= 1`: the top object stays whole). `occluded` = 1 when more than
    5% of the amodal area is hidden (UOAIS's rule). RGB paints each object's colour in z-order over
    noise; depth is 1 on the background and smaller for nearer objects. Batch format: see
    `MetaGraspNetModel`.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if image_size < 10:
        raise ValueError(f"image_size must be >= 10, got {image_size}")
    if not 0 <= min_instances <= max_instances:
        raise ValueError(f"need 0 <= min_instances <= max_instances, got {min_instances}, {max_instances}")
    s = image_size
    g = generator

    def randint(lo: int, hi: int) -> int:  # inclusive
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    images, depths, targets = [], [], []
    for index in range(batch_size):
        image = torch.rand((3, s, s), generator=g) * 0.2
        depth = torch.ones((1, s, s))
        n = randint(min_instances, max_instances)
        amodal = torch.zeros((n, s, s), dtype=torch.uint8)
        boxes = torch.zeros((n, 4))
        for k in range(n):
            bw, bh = randint(s // 5, s // 2), randint(s // 5, s // 2)
            x0, y0 = randint(0, s - bw), randint(0, s - bh)
            amodal[k, y0 : y0 + bh, x0 : x0 + bw] = 1
            boxes[k] = torch.tensor([x0, y0, x0 + bw, y0 + bh], dtype=torch.float32)
            colour = torch.rand((3, 1, 1), generator=g) * 0.8 + 0.2
            image[:, y0 : y0 + bh, x0 : x0 + bw] = colour
            depth[:, y0 : y0 + bh, x0 : x0 + bw] = 0.9 - 0.5 * (k + 1) / (n + 1)
        visible = amodal.clone()
        for k in range(n):
            above = amodal[k + 1 :].amax(dim=0) if k + 1 < n else torch.zeros((s, s), dtype=torch.uint8)
            visible[k] = amodal[k] & (1 - above)
        vis_area = visible.flatten(1).sum(1).float()
        amo_area = amodal.flatten(1).sum(1).float()
        keep = vis_area > 0
        occluded = ((1 - vis_area / amo_area.clamp(min=1)) >= 0.05).to(torch.int64)
        labels = torch.randint(1, num_classes + 1, (n,), generator=g, dtype=torch.int64)
        targets.append(
            {
                "boxes": boxes[keep],
                "labels": labels[keep],
                "visible_masks": visible[keep],
                "amodal_masks": amodal[keep],
                "occluded": occluded[keep],
                "image_id": index,
            }
        )
        images.append(image)
        depths.append(depth)
    return {"image": torch.stack(images), "depth": torch.stack(depths), "targets": targets}
