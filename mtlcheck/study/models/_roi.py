"""Region proposal network and UOAIS-Net RoI heads, built from torchvision parts.

Used by `mtlcheck.study.models.grasp` (the MetaGraspNet model). Two modules:

* `GraspRPN`: torchvision's `RegionProposalNetwork` (anchors, matching, balanced sampling,
  proposal filtering), with its own loss step so that the box-regression loss uses a configurable
  smooth-L1 beta and losses can be computed in either train or eval mode.
* `AmodalRoIHeads`: torchvision's `RoIHeads` (proposal/GT matching and RoI sampling are reused
  as is) with UOAIS-Net heads (Back et al., ICRA 2022): an MLC box head of 4 convs and no FC,
  class-agnostic box regression, and the hierarchical occlusion modelling (HOM) chain
  visible mask (V) -> amodal mask (A) -> occlusion (O) with "concat" guidance and multi-level
  coding (MLC) from the box head's first conv.

Differences from UOAIS's detectron2 code that remain (on purpose or because torchvision fixes them):
* `MultiScaleRoIAlign` uses `roi_align(aligned=False)`; detectron2's ROIAlignV2 uses
  `aligned=True`. Mask targets come from `project_masks_on_boxes` (also `aligned=False`) and are
  soft (bilinear averages in [0, 1]); detectron2 thresholds them at 0.5.
* The occlusion classifier `Linear(C*7*7, 2)` is initialised N(0, 0.01). UOAIS re-initialises it
  with MSRA fill (fan_out = 2, i.e. std 1), which gives huge initial logits.
* UOAIS's occlusion head also computes an unused `deconv` output; it is left out, so that every
  head parameter receives a gradient.
* The occlusion loss weights `[1, n_not_occluded / n_occluded]` become `[1, 1]` when a class is
  absent among the foreground RoIs (UOAIS divides by zero there: an infinite weight when nothing is
  occluded, which is harmless, and NaN when everything is occluded).

Samplers (RPN anchors, RoIs) draw from the global torch RNG, as in torchvision: seed with
`torch.manual_seed` to reproduce a sample.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image, project_masks_on_boxes
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import boxes as box_ops

from mtlcheck.study.models.roi_align import TwiceDifferentiableMultiScaleRoIAlign

ROI_LEVELS = ["0", "1", "2", "3"]  # P2..P5: RoI heads pool these (P6 only feeds the RPN)


def _zero_loss(*tensors: Tensor) -> Tensor:
    """A scalar 0 that stays attached to the graph of `tensors` (so autograd.grad still works)."""
    return sum(t.sum() for t in tensors) * 0.0


def _msra_fill(module: nn.Module) -> None:
    """detectron2's c2_msra_fill: kaiming normal (fan_out, relu), zero bias."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    _msra_fill(conv)
    return conv


def _conv_relu_stack(channels: Sequence[int], stride_at: int | None = None) -> nn.Sequential:
    """3x3 conv + ReLU layers mapping channels[0] -> channels[1] -> ... ; `stride_at` gets stride 2."""
    layers: list[nn.Module] = []
    for k, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        layers += [_conv3(cin, cout, 2 if k == stride_at else 1), nn.ReLU(inplace=False)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------
# RPN
# --------------------------------------------------------------------------------------------------


class GraspRPN(RegionProposalNetwork):
    """torchvision RPN on all FPN levels; `run` returns proposals and (optionally) the two losses.

    Losses (as torchvision): objectness = binary cross-entropy averaged over the sampled anchors
    (`batch_size_per_image` per image, `positive_fraction` positives); box regression = smooth-L1
    (`smooth_l1_beta`; 0 is plain L1, detectron2's default; torchvision hard-codes 1/9) summed over
    the sampled positive anchors and divided by the number of sampled anchors. detectron2 divides
    both sums by batch_size_per_image x images instead, which is the same whenever every image fills
    its anchor sample. With no ground truth in the batch every sampled anchor is a negative and the
    box loss is exactly 0.
    """

    def __init__(
        self,
        channels: int,
        *,
        anchor_sizes: Sequence[Sequence[int]],
        aspect_ratios: Sequence[float],
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: tuple[int, int] = (2000, 1000),
        post_nms_top_n: tuple[int, int] = (1000, 1000),
        nms_thresh: float = 0.7,
        smooth_l1_beta: float = 0.0,
    ):
        sizes = tuple(tuple(int(s) for s in level) for level in anchor_sizes)
        ratios = (tuple(float(r) for r in aspect_ratios),) * len(sizes)
        anchor_generator = AnchorGenerator(sizes, ratios)
        head = RPNHead(channels, anchor_generator.num_anchors_per_location()[0])
        super().__init__(
            anchor_generator,
            head,
            fg_iou_thresh,
            bg_iou_thresh,
            batch_size_per_image,
            positive_fraction,
            {"training": int(pre_nms_top_n[0]), "testing": int(pre_nms_top_n[1])},
            {"training": int(post_nms_top_n[0]), "testing": int(post_nms_top_n[1])},
            nms_thresh,
        )
        self.smooth_l1_beta = float(smooth_l1_beta)

    def run(
        self,
        features: OrderedDict[str, Tensor],
        images: ImageList,
        targets: list[dict[str, Tensor]] | None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals per image (detached) and, when `targets` is given, {"rcls", "rdet"}."""
        feats = list(features.values())
        objectness, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        num_images = len(anchors)
        num_anchors_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.box_coder.decode(deltas.detach(), anchors).view(num_images, -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, num_anchors_per_level)
        if targets is None:
            return boxes, {}
        labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
        regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
        return boxes, self._losses(objectness, deltas, labels, regression_targets)

    def _losses(
        self, objectness: Tensor, deltas: Tensor, labels: list[Tensor], reg_targets: list[Tensor]
    ) -> dict[str, Tensor]:
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos_masks))[0]
        neg = torch.where(torch.cat(neg_masks))[0]
        sampled = torch.cat([pos, neg])
        objectness = objectness.flatten()
        if sampled.numel() == 0:  # every anchor between the IoU thresholds: nothing to learn from
            zero = _zero_loss(objectness, deltas)
            return {"rcls": zero, "rdet": zero.clone()}
        labels_all = torch.cat(labels)
        targets_all = torch.cat(reg_targets)
        rcls = F.binary_cross_entropy_with_logits(objectness[sampled], labels_all[sampled])
        rdet = F.smooth_l1_loss(deltas[pos], targets_all[pos], beta=self.smooth_l1_beta, reduction="sum")
        rdet = rdet / sampled.numel()
        if pos.numel() == 0:
            rdet = rdet + _zero_loss(deltas)  # exactly 0, still attached to the RPN head's output
        return {"rcls": rcls, "rdet": rdet}


# --------------------------------------------------------------------------------------------------
# RoI heads
# --------------------------------------------------------------------------------------------------


class MLCBoxHead(nn.Module):
    """UOAIS `MLCFastRCNNConvFCHead` with 4 convs and no FC: returns (flattened output, conv1 output)."""

    def __init__(self, channels: int, num_convs: int = 4):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.convs = nn.ModuleList(_conv3(channels, channels) for _ in range(num_convs))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first = F.relu(self.convs[0](x))
        x = first
        for conv in self.convs[1:]:
            x = F.relu(conv(x))
        return x.flatten(1), first


class AgnosticBoxPredictor(nn.Module):
    """Class scores over (background + num_classes) and one class-agnostic box delta per RoI."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class HOMBranch(nn.Module):
    """One branch of UOAIS-Net's hierarchical occlusion modelling.

    guidance: 3 convs on cat(pooled RoI features, features of the previous branches)
    (n_inputs * C -> n_inputs * C -> n_inputs * C -> C); conv1; MLC: cat(conv1, box-head codes) then
    3 convs (2C -> 2C -> 2C -> C); 3 more convs (the first with stride 2 for the occlusion branch).
    A mask branch ends in deconv(2x) + ReLU + 1x1 conv (28x28 class-agnostic logits); the occlusion
    branch in Linear(C * 7 * 7, 2). `forward` returns (logits, branch features at 14x14 or 7x7).
    """

    def __init__(self, channels: int, n_inputs: int, kind: str, pooled_size: int = 14):
        super().__init__()
        if kind not in ("mask", "occlusion"):
            raise ValueError(f"kind must be 'mask' or 'occlusion', got {kind!r}")
        c, nc = channels, n_inputs * channels
        self.kind = kind
        self.guidance = _conv_relu_stack([nc, nc, nc, c])
        self.conv1 = _conv_relu_stack([c, c])
        self.mlc = _conv_relu_stack([2 * c, 2 * c, 2 * c, c])
        self.convs = _conv_relu_stack([c, c, c, c], stride_at=0 if kind == "occlusion" else None)
        if kind == "mask":
            self.deconv = nn.ConvTranspose2d(c, c, 2, stride=2)
            _msra_fill(self.deconv)
            self.predictor = nn.Conv2d(c, 1, 1)
            nn.init.normal_(self.predictor.weight, std=0.001)
            nn.init.zeros_(self.predictor.bias)
        else:
            side = (pooled_size + 1) // 2
            self.predictor = nn.Linear(c * side * side, 2)
            nn.init.normal_(self.predictor.weight, std=0.01)
            nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor, mlc_codes: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv1(self.guidance(x))
        x = self.mlc(torch.cat([x, mlc_codes], dim=1))
        feats = self.convs(x)
        if self.kind == "mask":
            return self.predictor(F.relu(self.deconv(feats))), feats
        return self.predictor(feats.flatten(1)), feats


class AmodalRoIHeads(RoIHeads):
    """Box head (cls, det) and the HOM chain V -> A -> O (vsb, amd, occ) on P2..P5.

    Training (`losses`): torchvision's `select_training_samples` (GT boxes appended to the
    proposals, IoU 0.5 matching, `batch_size_per_image` RoIs per image with `positive_fraction`
    positives, box coder weights (10, 10, 5, 5)). Losses:
      cls  cross-entropy over all sampled RoIs (background = 0);
      det  smooth-L1 (`smooth_l1_beta`, 0 = L1) of the class-agnostic deltas of positive RoIs,
           summed and divided by the number of sampled RoIs;
      vsb, amd  binary cross-entropy between 28x28 logits and the visible / amodal GT mask of the
           matched instance projected onto the positive RoI, averaged over pixels and RoIs;
      occ  cross-entropy of the positive RoIs' occlusion logits against the matched instance's
           `occluded` flag, class weights [1, n_not_occluded / n_occluded] (UOAIS).
    With no positive RoI (no instance in the batch) det, vsb, amd and occ are exactly 0, still
    attached to the graph (the heads run on zero RoIs), so autograd.grad returns zeros, not errors.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        *,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        smooth_l1_beta: float = 0.0,
        box_pool_size: int = 7,
        mask_pool_size: int = 14,
    ):
        super().__init__(
            box_roi_pool=TwiceDifferentiableMultiScaleRoIAlign(ROI_LEVELS, box_pool_size, 0),
            box_head=MLCBoxHead(channels),
            box_predictor=AgnosticBoxPredictor(channels * box_pool_size * box_pool_size, num_classes),
            fg_iou_thresh=fg_iou_thresh,
            bg_iou_thresh=bg_iou_thresh,
            batch_size_per_image=batch_size_per_image,
            positive_fraction=positive_fraction,
            bbox_reg_weights=None,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        if mask_pool_size != 2 * box_pool_size:
            raise ValueError(
                f"mask_pool_size must be twice box_pool_size (MLC upsamples the box head's codes 2x), "
                f"got {mask_pool_size} and {box_pool_size}"
            )
        self.num_classes = num_classes
        self.smooth_l1_beta = float(smooth_l1_beta)
        # mask_roi_pool is a separate attribute name: RoIHeads.has_mask() must stay False so that
        # its check_targets does not demand a "masks" key.
        self.hom_roi_pool = TwiceDifferentiableMultiScaleRoIAlign(ROI_LEVELS, mask_pool_size, 0)
        self.mlc_extract = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, 2, stride=2),
            *_conv_relu_stack([channels, channels, channels]),
        )
        _msra_fill(self.mlc_extract[0])
        self.visible_head = HOMBranch(channels, 1, "mask", mask_pool_size)
        self.amodal_head = HOMBranch(channels, 2, "mask", mask_pool_size)
        self.occlusion_head = HOMBranch(channels, 3, "occlusion", mask_pool_size)

    # -- shared pieces ----------------------------------------------------------------------------
    def _box_forward(self, features, boxes, image_shapes):
        pooled = self.box_roi_pool(features, boxes, image_shapes)
        flat, first = self.box_head(pooled)
        class_logits, deltas = self.box_predictor(flat)
        return class_logits, deltas, first

    def _hom_forward(self, features, boxes, image_shapes, first_conv: Tensor):
        pooled = self.hom_roi_pool(features, boxes, image_shapes)
        codes = self.mlc_extract(first_conv)
        v_logits, v_feats = self.visible_head(pooled, codes)
        a_logits, a_feats = self.amodal_head(torch.cat([pooled, v_feats], 1), codes)
        o_logits, _ = self.occlusion_head(torch.cat([pooled, v_feats, a_feats], 1), codes)
        return v_logits[:, 0], a_logits[:, 0], o_logits

    # -- training ---------------------------------------------------------------------------------
    def losses(
        self,
        features: OrderedDict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, deltas, first = self._box_forward(features, proposals, image_shapes)
        labels_all = torch.cat(labels)
        reg_all = torch.cat(regression_targets)
        if labels_all.numel() == 0:  # no RoI at all (no proposal and no GT): nothing to classify
            cls = _zero_loss(class_logits)
        else:
            cls = F.cross_entropy(class_logits, labels_all)
        pos = torch.where(labels_all > 0)[0]
        det = F.smooth_l1_loss(deltas[pos], reg_all[pos], beta=self.smooth_l1_beta, reduction="sum")
        det = det / max(labels_all.numel(), 1)
        if pos.numel() == 0:
            det = det + _zero_loss(deltas)  # exactly 0, still attached to the box head's output

        fg_boxes, fg_matched = [], []
        for props, lab, idx in zip(proposals, labels, matched_idxs):
            keep = lab > 0
            fg_boxes.append(props[keep])
            fg_matched.append(idx[keep])
        v_logits, a_logits, o_logits = self._hom_forward(features, fg_boxes, image_shapes, first[pos])
        if pos.numel() == 0:
            zero_v, zero_a, zero_o = _zero_loss(v_logits), _zero_loss(a_logits), _zero_loss(o_logits)
            return {"cls": cls, "det": det, "vsb": zero_v, "amd": zero_a, "occ": zero_o}

        side = v_logits.shape[-1]
        vis_t, amo_t, occ_t = [], [], []
        for boxes, idx, tgt in zip(fg_boxes, fg_matched, targets):
            if boxes.shape[0] == 0:
                continue
            vis_t.append(project_masks_on_boxes(tgt["visible_masks"], boxes, idx, side))
            amo_t.append(project_masks_on_boxes(tgt["amodal_masks"], boxes, idx, side))
            occ_t.append(tgt["occluded"][idx])
        vsb = F.binary_cross_entropy_with_logits(v_logits, torch.cat(vis_t))
        amd = F.binary_cross_entropy_with_logits(a_logits, torch.cat(amo_t))
        occ_labels = torch.cat(occ_t).to(torch.int64)
        n_occ = int(occ_labels.sum())
        n_not = occ_labels.numel() - n_occ
        w1 = n_not / n_occ if n_occ > 0 and n_not > 0 else 1.0
        weight = torch.tensor([1.0, w1], dtype=o_logits.dtype, device=o_logits.device)
        occ = F.cross_entropy(o_logits, occ_labels, weight=weight)
        return {"cls": cls, "det": det, "vsb": vsb, "amd": amd, "occ": occ}

    # -- inference --------------------------------------------------------------------------------
    def detect(
        self,
        features: OrderedDict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Per image: boxes, scores, labels, visible/amodal mask probabilities at image size,
        occluded_scores (softmax probability of the "occluded" class)."""
        class_logits, deltas, first = self._box_forward(features, proposals, image_shapes)
        scores_all = F.softmax(class_logits, -1)
        boxes_all = self.box_coder.decode(deltas, proposals)[:, 0]  # (R, 4): class-agnostic
        counts = [p.shape[0] for p in proposals]
        det_boxes, det_scores, det_labels, det_src = [], [], [], []
        offset = 0
        for boxes, scores, shape, n in zip(boxes_all.split(counts), scores_all.split(counts), image_shapes, counts):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            k = scores.shape[1] - 1
            src = torch.arange(n, device=boxes.device).repeat_interleave(k) + offset
            boxes = boxes.repeat_interleave(k, dim=0)
            labels = torch.arange(1, k + 1, device=boxes.device).repeat(n)
            scores = scores[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels, src = boxes[keep], scores[keep], labels[keep], src[keep]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels, src = boxes[keep], scores[keep], labels[keep], src[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            det_boxes.append(boxes[keep])
            det_scores.append(scores[keep])
            det_labels.append(labels[keep])
            det_src.append(src[keep])
            offset += n
        # like UOAIS: masks pool at the refined boxes, MLC codes come from the source proposal
        v_logits, a_logits, o_logits = self._hom_forward(features, det_boxes, image_shapes, first[torch.cat(det_src)])
        sizes = [b.shape[0] for b in det_boxes]
        results = []
        per_image = zip(det_boxes, det_scores, det_labels, v_logits.split(sizes), a_logits.split(sizes))
        for (boxes, scores, labels, v, a), o, shape in zip(per_image, o_logits.split(sizes), image_shapes):
            vis = paste_masks_in_image(v.sigmoid()[:, None], boxes, shape, padding=1)[:, 0]
            amo = paste_masks_in_image(a.sigmoid()[:, None], boxes, shape, padding=1)[:, 0]
            results.append(
                {
                    "boxes": boxes,
                    "scores": scores,
                    "labels": labels,
                    "visible_masks": vis,
                    "amodal_masks": amo,
                    "occluded_scores": F.softmax(o, -1)[:, 1],
                }
            )
        return results
