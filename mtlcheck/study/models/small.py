"""Small CPU models for the embedded digits benchmark (`mtlcheck.study.data.digits`).

Shared encoder (`SmallEncoder`), GroupNorm throughout (no running statistics, so `task_losses` has
no side effects, train and eval behave alike, and torch.func/vmap work through every layer):

    conv3x3 (in -> w), conv3x3 stride 2 (w -> 2w), conv3x3 (2w -> 2w), conv3x3 stride 2 (2w -> 4w),
    conv3x3 (4w -> 4w), conv3x3 dilation 2 (4w -> 4w). Receptive field 37 px.
    Z = (B, 4w, ceil(H/4), ceil(W/4)), a single tensor (the last encoder feature map, as in the
    dense benchmark models).

Heads: `dense.DenseHead(4w, head_width, out, stages=head_stages)` (conv3x3-GN-ReLU, `head_stages`
x (bilinear x2, conv3x3-GN-ReLU), 1x1 predictor), bilinearly resized to the target size.

`SmallDenseModel` — tasks ("depth", "semantic", "instance") with exactly the CityScapes losses of
`mtlcheck.study.models.dense` (depth L1 on gt>0; CE with ignore 250 over 11 classes; L1 on offsets != 250).

`SmallNYUModel` — tasks ("depth", "normal", "semantic") with exactly the NYU-v2 losses of
`mtlcheck.study.models.dense` (depth L1 on gt>0; 1 - cosine on non-zero normals; CE with ignore 250 over 12
classes), for `mtlcheck.study.data.digits_nyu`.

`SmallInstanceModel` — tasks ("cls", "det", "vsb", "amd", "occ"), named after the MetaGraspNet
losses they stand in for (paper Fig. 2: box classification and regression, visible mask, amodal
mask, occlusion). A single-stage dense formulation: centres and boxes as in CenterNet (Zhou et al.
2019, "Objects as Points"), instance masks from centre-relative coordinates as in CondInst (Tian et
al. 2020, with a fixed rather than a dynamic mask head). K = number of classes (1 = class-agnostic,
the default, as UOAIS/MetaGraspNet; 10 = one class per digit):
- cls: K centre heatmaps. Target Y_k(p) = max over instances of class k of
       exp(-|p - c|^2 / (2 sigma^2)), c = the amodal box's centre pixel, sigma = max(1, min(bw, bh)/6).
       Loss = penalty-reduced focal loss (CornerNet, Law & Deng 2018; CenterNet eq. 1), alpha=2, beta=4:
       -1/N [ sum_{Y=1} (1-p)^2 log p + sum_{Y<1} (1-Y)^4 p^2 log(1-p) ], N = number of instances.
- det: 4 maps (l, t, r, b) = distances from the centre pixel's midpoint (cx+0.5, cy+0.5) to the
       amodal box edges, divided by the image width/height. L1 read at each instance's centre pixel,
       mean over instances x 4.
- vsb: `mask_dim` mask-feature maps; for instance j the predictor conv3x3(mask_dim+2 -> mask_dim),
       ReLU, conv1x1(-> 1) reads cat(features, (x - cx_j - 0.5)/(W/4), (y - cy_j - 0.5)/(H/4)) and
       gives its visible-mask logits over the whole image. BCE-with-logits with pos_weight
       `mask_pos_weight` (default 4: mask pixels are ~5-10% of an image, and an unweighted BCE sits
       at "all background" for the first few hundred steps), mean over instances x pixels.
- amd: the same with its own features and predictor, for the amodal masks.
- occ: 1 occlusion logit map read at each instance's centre pixel; BCE with the UOAIS class
       weights [1, n_not_occluded / n_occluded] (UOAIS `rcnn_heads.py`; weight 1 when a batch has no
       occluded instance), normalised by the sum of the weights as torch's weighted CE is.
Batch: {"image": (B,3,H,W), "depth": (B,1,H,W), "targets": [MetaGraspNet-style dicts]}
(`mtlcheck.study.data.digits.collate_instances`). The encoder reads cat(image, depth) (4 channels) unless
`use_depth=False`.

`predict` decodes detections: 3x3 max-pool peaks of sigmoid(cls) above `score_threshold`, top
`max_detections` per image; box from `det` at the peak; visible/amodal masks = the mask predictors
at the peak's centre, logit > 0, restricted to the predicted box; occlusion score = sigmoid(occ)
at the peak.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlcheck.models._base import MultiTaskModel
from mtlcheck.study.models.dense import (
    DenseHead,
    _group_count,
    check_batch_size,
    check_tensor,
    depth_l1_loss,
    normal_cosine_loss,
    offset_l1_loss,
    semantic_ce_loss,
    upsample_to,
)

DIGITS_NUM_CLASSES = 11  # 10 digits + background (mtlcheck.study.data.digits.NUM_CLASSES)
DIGITS_IGNORE_INDEX = 250
DIGITS_NYU_NUM_CLASSES = 12  # 10 digits + wall + floor (mtlcheck.study.data.digits_nyu.NUM_CLASSES)


def _conv_gn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.GroupNorm(_group_count(cout), cout),
        nn.ReLU(inplace=True),
    )


class SmallEncoder(nn.Module):
    """conv(w); conv s2 (2w); conv (2w); conv s2 (4w); convs (4w) with dilations 1, 2: Z at stride 4, 4w channels."""

    def __init__(self, in_channels: int = 3, width: int = 16):
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"SmallEncoder needs in_channels >= 1 and width >= 1, got {in_channels}, {width}")
        self.in_channels = in_channels
        self.out_channels = 4 * width
        self.stride = 4
        self.body = nn.Sequential(
            _conv_gn_relu(in_channels, width),
            _conv_gn_relu(width, 2 * width, stride=2),
            _conv_gn_relu(2 * width, 2 * width),
            _conv_gn_relu(2 * width, 4 * width, stride=2),
            _conv_gn_relu(4 * width, 4 * width, dilation=1),
            _conv_gn_relu(4 * width, 4 * width, dilation=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SmallEncoder expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.body(x)


class _SmallBase(MultiTaskModel):
    def _check_z(self, z: Any) -> torch.Tensor:
        c = self.encoder.out_channels
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != c:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{type(self).__name__}: Z must be a (B, {c}, h, w) tensor, got {shape}")
        return z

    def decode(self, z: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        z = self._check_z(z)
        return {t: upsample_to(self.heads[t](z), size) for t in self.task_names}

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters() if p.requires_grad]


class _SmallDenseBase(_SmallBase):
    """A dense digits model: the image -> `SmallEncoder` -> one `DenseHead` per task, with
    `head_channels` output channels each."""

    head_channels: dict[str, int | None]  # per task; None = num_classes

    def __init__(
        self, *, num_classes: int, ignore_index: int, width: int, head_width: int, head_stages: int, in_channels: int
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.encoder = SmallEncoder(in_channels, width)
        c = self.encoder.out_channels
        outs = {t: num_classes if k is None else k for t, k in self.head_channels.items()}
        self.heads = nn.ModuleDict({t: DenseHead(c, head_width, outs[t], stages=head_stages) for t in self.task_names})

    def _image(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return check_tensor(
            batch, "image", owner=type(self).__name__, ndim=4, channels=self.encoder.in_channels, floating=True
        )

    def encode(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.encoder(self._image(batch))

    def _decode_targets(
        self, z: torch.Tensor, batch: Mapping[str, Any], targets: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The heads' outputs at the size of the `targets` (the depth first), which must agree on it."""
        size = tuple(targets["depth"].shape[-2:])
        if any(tuple(t.shape[-2:]) != size for t in targets.values()):
            others = ", ".join(f"{k} {tuple(t.shape[-2:])}" for k, t in targets.items() if k != "depth")
            raise ValueError(f"{type(self).__name__}: targets disagree on their spatial size: depth {size}, {others}")
        check_batch_size(self, self._check_z(z), batch, self.task_names)
        return self.decode(z, size)

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Each task's head output (B, channels, H, W) at the image size; current mode."""
        image = self._image(batch)
        return self.decode(self.encode(batch), tuple(image.shape[-2:]))


class SmallDenseModel(_SmallDenseBase):
    """Digits dense variant (CityScapes-like): depth / semantic (11 classes, ignore 250) / instance;
    `predict` gives depth (B,1,H,W), semantic logits (B,C,H,W), instance offsets (B,2,H,W)."""

    task_names = ("depth", "semantic", "instance")
    head_channels = {"depth": 1, "semantic": None, "instance": 2}

    def __init__(
        self,
        *,
        num_classes: int = DIGITS_NUM_CLASSES,
        ignore_index: int = DIGITS_IGNORE_INDEX,
        width: int = 16,
        head_width: int = 32,
        head_stages: int = 1,
        in_channels: int = 3,
    ):
        super().__init__(
            num_classes=num_classes,
            ignore_index=ignore_index,
            width=width,
            head_width=head_width,
            head_stages=head_stages,
            in_channels=in_channels,
        )

    def task_losses(self, z: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        owner = type(self).__name__
        depth = check_tensor(batch, "depth", owner=owner, ndim=4, channels=1, floating=True)
        semantic = check_tensor(batch, "semantic", owner=owner, ndim=3, floating=False)
        instance = check_tensor(batch, "instance", owner=owner, ndim=4, channels=2, floating=True)
        out = self._decode_targets(z, batch, {"depth": depth, "semantic": semantic, "instance": instance})
        return {
            "depth": depth_l1_loss(out["depth"], depth, "depth"),
            "semantic": semantic_ce_loss(out["semantic"], semantic, self.ignore_index, "semantic"),
            "instance": offset_l1_loss(out["instance"], instance, float(self.ignore_index), "instance"),
        }


class SmallNYUModel(_SmallDenseBase):
    """Digits NYU-v2 analog (`mtlcheck.study.data.digits_nyu`): depth / normal / semantic (12
    classes, ignore 250) with exactly the NYU-v2 losses of `mtlcheck.study.models.dense.NYUv2Model`
    (depth L1 on gt>0; 1 - cosine on non-zero normal targets; CE with ignore 250); `predict`
    returns unit normals, as NYUv2Model does."""

    task_names = ("depth", "normal", "semantic")
    head_channels = {"depth": 1, "normal": 3, "semantic": None}

    def __init__(
        self,
        *,
        num_classes: int = DIGITS_NYU_NUM_CLASSES,
        ignore_index: int = DIGITS_IGNORE_INDEX,
        width: int = 16,
        head_width: int = 32,
        head_stages: int = 1,
        in_channels: int = 3,
    ):
        super().__init__(
            num_classes=num_classes,
            ignore_index=ignore_index,
            width=width,
            head_width=head_width,
            head_stages=head_stages,
            in_channels=in_channels,
        )

    def task_losses(self, z: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        owner = type(self).__name__
        depth = check_tensor(batch, "depth", owner=owner, ndim=4, channels=1, floating=True)
        normal = check_tensor(batch, "normal", owner=owner, ndim=4, channels=3, floating=True)
        semantic = check_tensor(batch, "semantic", owner=owner, ndim=3, floating=False)
        out = self._decode_targets(z, batch, {"depth": depth, "normal": normal, "semantic": semantic})
        return {
            "depth": depth_l1_loss(out["depth"], depth, "depth"),
            "normal": normal_cosine_loss(out["normal"], normal, "normal"),
            "semantic": semantic_ce_loss(out["semantic"], semantic, self.ignore_index, "semantic"),
        }

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """depth (B,1,H,W), unit normals (B,3,H,W), semantic logits (B,C,H,W); current mode."""
        out = super().predict(batch)
        out["normal"] = F.normalize(out["normal"], dim=1, eps=1e-8)
        return out


# ----------------------------------------------------------------------------- instance model


def focal_heatmap_loss(
    logits: torch.Tensor, target: torch.Tensor, num_instances: int, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CornerNet/CenterNet penalty-reduced focal loss on sigmoid(logits) vs Gaussian target in [0, 1]."""
    pos = target >= 1.0
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_term = ((1 - p) ** alpha * log_p)[pos].sum()
    neg_term = ((1 - target) ** beta * p**alpha * log_1mp)[~pos].sum()
    return -(pos_term + neg_term) / max(1, num_instances)


class SmallInstanceModel(_SmallBase):
    """Digits instance variant (MetaGraspNet-like): cls / det / vsb / amd / occ (see module doc)."""

    task_names = ("cls", "det", "vsb", "amd", "occ")

    def __init__(
        self,
        *,
        num_classes: int = 1,
        width: int = 16,
        head_width: int = 32,
        head_stages: int = 1,
        mask_dim: int = 8,
        use_depth: bool = True,
        mask_pos_weight: float = 4.0,
        score_threshold: float = 0.1,
        max_detections: int = 20,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if mask_dim < 1:
            raise ValueError(f"mask_dim must be >= 1, got {mask_dim}")
        if not mask_pos_weight > 0:
            raise ValueError(f"mask_pos_weight must be > 0, got {mask_pos_weight!r}")
        self.num_classes = num_classes
        self.use_depth = bool(use_depth)
        self.mask_pos_weight = float(mask_pos_weight)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.encoder = SmallEncoder(4 if self.use_depth else 3, width)
        c = self.encoder.out_channels
        outs = {"cls": num_classes, "det": 4, "vsb": mask_dim, "amd": mask_dim, "occ": 1}
        self.heads = nn.ModuleDict({t: DenseHead(c, head_width, outs[t], stages=head_stages) for t in self.task_names})
        nn.init.constant_(self.heads["cls"].predictor.bias, -math.log((1 - 0.1) / 0.1))  # prior 0.1 (CenterNet)
        # per-instance mask predictors: cat(mask features, 2 centre-relative coordinates) -> 1 logit map
        self.mask_predictors = nn.ModuleDict(
            {
                t: nn.Sequential(
                    nn.Conv2d(mask_dim + 2, mask_dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(mask_dim, 1, 1)
                )
                for t in ("vsb", "amd")
            }
        )

    def _input(self, batch: Mapping[str, Any]) -> torch.Tensor:
        owner = type(self).__name__
        image = check_tensor(batch, "image", owner=owner, ndim=4, channels=3, floating=True)
        if not self.use_depth:
            return image
        depth = check_tensor(batch, "depth", owner=owner, ndim=4, channels=1, floating=True)
        if depth.shape[0] != image.shape[0] or depth.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"{owner}: batch['depth'] {tuple(depth.shape)} does not match batch['image'] {tuple(image.shape)}"
            )
        return torch.cat([image, depth], dim=1)

    def encode(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.encoder(self._input(batch))

    def instance_mask_logits(
        self, task: str, feats: torch.Tensor, img: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor
    ) -> torch.Tensor:
        """(n,H,W) mask logits of the instances centred at pixels (cy, cx) of images `img`.

        Input of the predictor: the image's mask features and the coordinates relative to the centre
        pixel's midpoint, ((x - cx - 0.5) / (W/4), (y - cy - 0.5) / (H/4)) (CondInst-style
        relative coordinates; Tian et al. 2020)."""
        h, w = feats.shape[-2:]
        xs = torch.arange(w, device=feats.device, dtype=feats.dtype)[None, None, :]
        ys = torch.arange(h, device=feats.device, dtype=feats.dtype)[None, :, None]
        rel_x = (xs - (cx.to(feats.dtype)[:, None, None] + 0.5)) / (w / 4.0)
        rel_y = (ys - (cy.to(feats.dtype)[:, None, None] + 0.5)) / (h / 4.0)
        rel = torch.stack([rel_x.expand(-1, h, w), rel_y.expand(-1, h, w)], dim=1)
        return self.mask_predictors[task](torch.cat([feats[img], rel], dim=1))[:, 0]

    # -- targets
    def _targets(
        self, batch: Mapping[str, Any], size: tuple[int, int], device: torch.device
    ) -> dict[str, torch.Tensor]:
        owner = type(self).__name__
        if "targets" not in batch:
            hint = " ('target' is collate_detection's key; the models read 'targets')" if "target" in batch else ""
            raise KeyError(f"{owner}: the batch has no 'targets' entry (keys: {sorted(batch)}){hint}")
        targets = batch["targets"]
        if not isinstance(targets, Sequence) or isinstance(targets, (str, bytes)):
            raise TypeError(
                f"{owner}: batch['targets'] must be a list of per-image dicts, got {type(targets).__name__}"
            )
        h, w = size
        k = self.num_classes
        heat = torch.zeros(len(targets), k, h, w, device=device)
        ys = torch.arange(h, device=device, dtype=torch.float32)[:, None]
        xs = torch.arange(w, device=device, dtype=torch.float32)[None, :]
        img_idx, cy_idx, cx_idx, ltrb, occ, vsb, amd = [], [], [], [], [], [], []
        for i, t in enumerate(targets):
            if not isinstance(t, Mapping):
                raise TypeError(f"{owner}: targets[{i}] must be a dict, got {type(t).__name__}")
            for key in ("boxes", "labels", "visible_masks", "amodal_masks", "occluded"):
                if key not in t:
                    raise KeyError(f"{owner}: targets[{i}] has no {key!r} entry (keys: {sorted(t)})")
            boxes, labels = t["boxes"], t["labels"]
            n = len(labels)
            if boxes.shape != (n, 4) or t["visible_masks"].shape != (n, h, w) or t["amodal_masks"].shape != (n, h, w):
                raise ValueError(
                    f"{owner}: targets[{i}] shapes disagree: boxes {tuple(boxes.shape)}, labels ({n},), "
                    f"visible_masks {tuple(t['visible_masks'].shape)}, "
                    f"amodal_masks {tuple(t['amodal_masks'].shape)}, image {(h, w)}"
                )
            if n and (int(labels.min()) < 1 or int(labels.max()) > k):
                raise ValueError(f"{owner}: targets[{i}]['labels'] must be in 1..{k}, got {labels.tolist()}")
            for j in range(n):
                c = int(labels[j]) - 1
                x1, y1, x2, y2 = (float(v) for v in boxes[j])
                cx = min(max(int((x1 + x2) // 2), 0), w - 1)
                cy = min(max(int((y1 + y2) // 2), 0), h - 1)
                sigma = max(1.0, min(x2 - x1, y2 - y1) / 6.0)
                g = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
                g[cy, cx] = 1.0
                heat[i, c] = torch.maximum(heat[i, c], g)
                px, py = cx + 0.5, cy + 0.5
                ltrb.append([(px - x1) / w, (py - y1) / h, (x2 - px) / w, (y2 - py) / h])
                img_idx.append(i)
                cy_idx.append(cy)
                cx_idx.append(cx)
                occ.append(float(t["occluded"][j]))
                vsb.append(t["visible_masks"][j])
                amd.append(t["amodal_masks"][j])
        if not img_idx:
            raise ValueError(f"{owner}: the batch has no instances; the det/vsb/amd/occ losses are undefined")
        as_long = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
        return {
            "heat": heat,
            "vsb": torch.stack(vsb).to(device=device, dtype=torch.float32),
            "amd": torch.stack(amd).to(device=device, dtype=torch.float32),
            "img": as_long(img_idx),
            "cy": as_long(cy_idx),
            "cx": as_long(cx_idx),
            "ltrb": torch.tensor(ltrb, dtype=torch.float32, device=device),
            "occ": torch.tensor(occ, dtype=torch.float32, device=device),
        }

    def task_losses(self, z: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        owner = type(self).__name__
        image = check_tensor(batch, "image", owner=owner, ndim=4, channels=3, floating=True)
        size = tuple(image.shape[-2:])
        z = self._check_z(z)
        tg = self._targets(batch, size, z.device)
        if len(batch["targets"]) != z.shape[0]:
            raise ValueError(f"{owner}: {len(batch['targets'])} targets for a Z of batch size {z.shape[0]}")
        out = self.decode(z, size)
        n = len(tg["img"])
        where = (tg["img"], tg["cy"], tg["cx"])
        det_pred = out["det"].permute(0, 2, 3, 1)[where]  # (n, 4)
        occ_logit = out["occ"][:, 0][where]
        n_occ = float(tg["occ"].sum())
        ratio = (n - n_occ) / n_occ if n_occ > 0 else 1.0
        weights = torch.where(tg["occ"] > 0.5, torch.full_like(tg["occ"], ratio), torch.ones_like(tg["occ"]))
        pos_weight = torch.tensor(self.mask_pos_weight, dtype=z.dtype, device=z.device)
        masks = {
            t: F.binary_cross_entropy_with_logits(
                self.instance_mask_logits(t, out[t], *where), tg[t], pos_weight=pos_weight
            )
            for t in ("vsb", "amd")
        }
        return {
            "cls": focal_heatmap_loss(out["cls"], tg["heat"], n),
            "det": F.l1_loss(det_pred, tg["ltrb"], reduction="mean"),
            "vsb": masks["vsb"],
            "amd": masks["amd"],
            "occ": (F.binary_cross_entropy_with_logits(occ_logit, tg["occ"], reduction="none") * weights).sum()
            / weights.sum(),
        }

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Any]) -> list[dict[str, torch.Tensor]]:
        """Per image: boxes (M,4) xyxy, labels (M,) 1..K, scores (M,), visible_masks / amodal_masks
        uint8 (M,H,W), occluded (M,) int64 (score > 0.5), occluded_scores (M,). Current module mode."""
        x = self._input(batch)
        h, w = x.shape[-2:]
        out = self.decode(self.encoder(x), (h, w))
        heat = torch.sigmoid(out["cls"])
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        occ = torch.sigmoid(out["occ"][:, 0])
        ys = torch.arange(h, device=x.device)[:, None]
        xs = torch.arange(w, device=x.device)[None, :]
        results = []
        for i in range(x.shape[0]):
            flat = peaks[i].flatten()
            top = torch.topk(flat, min(self.max_detections, flat.numel()))
            keep = top.values > self.score_threshold
            scores, idx = top.values[keep], top.indices[keep]
            cls = idx // (h * w)
            cy = (idx % (h * w)) // w
            cx = idx % w
            ltrb = out["det"][i, :, cy, cx].T.clamp(min=0)  # (M, 4)
            px, py = cx.float() + 0.5, cy.float() + 0.5
            boxes = torch.stack(
                [px - ltrb[:, 0] * w, py - ltrb[:, 1] * h, px + ltrb[:, 2] * w, py + ltrb[:, 3] * h], dim=1
            )
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            inside = (
                (xs[None] >= boxes[:, 0, None, None].floor())
                & (xs[None] < boxes[:, 2, None, None].ceil())
                & (ys[None] >= boxes[:, 1, None, None].floor())
                & (ys[None] < boxes[:, 3, None, None].ceil())
            )
            img = torch.full_like(cy, i)
            masks = {t: self.instance_mask_logits(t, out[t], img, cy, cx) > 0 for t in ("vsb", "amd")}
            occ_scores = occ[i, cy, cx]
            results.append(
                {
                    "boxes": boxes,
                    "labels": cls + 1,
                    "scores": scores,
                    "visible_masks": (masks["vsb"] & inside).to(torch.uint8),
                    "amodal_masks": (masks["amd"] & inside).to(torch.uint8),
                    "occluded": (occ_scores > 0.5).long(),
                    "occluded_scores": occ_scores,
                }
            )
        return results


__all__ = ["SmallEncoder", "SmallDenseModel", "SmallInstanceModel", "SmallNYUModel", "focal_heatmap_loss"]
