"""Dense benchmark models (CityScapes, NYU-v2) and the small digits models, at smoke size on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mtlcheck.models import MultiTaskModel
from mtlcheck.study.data.digits import DigitsDense, DigitsInstances, collate_instances
from mtlcheck.study.models.dense import (
    CityScapesModel,
    NYUv2Model,
    depth_l1_loss,
    normal_cosine_loss,
    offset_l1_loss,
    semantic_ce_loss,
)
from mtlcheck.study.models.small import SmallDenseModel, SmallInstanceModel, focal_heatmap_loss

H, W, B = 64, 64, 2
SMOKE = dict(width=8, decoder_width=8, decoder_stages=1)


def cityscapes_batch(h=H, w=W, b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    semantic = torch.randint(0, 19, (b, h, w), generator=g)
    semantic[:, :4] = 250
    depth = torch.rand(b, 1, h, w, generator=g) + 0.1
    depth[:, :, :, :5] = 0.0
    instance = torch.rand(b, 2, h, w, generator=g) - 0.5
    instance[:, :, h // 2 :] = 250.0
    return {"image": torch.randn(b, 3, h, w, generator=g), "semantic": semantic, "depth": depth, "instance": instance}


def nyu_batch(h=H, w=W, b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    normal = F.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)
    normal[:, :, :3] = 0.0
    depth = torch.rand(b, 1, h, w, generator=g) + 0.5
    depth[:, :, -2:] = 0.0
    return {
        "image": torch.rand(b, 3, h, w, generator=g),
        "semantic": torch.randint(0, 41, (b, h, w), generator=g),
        "depth": depth,
        "normal": normal,
    }


def digits_dense_batch():
    return next(iter(DataLoader(DigitsDense("train", length=B, seed=0, size=32), batch_size=B)))


def digits_instance_batch():
    ds = DigitsInstances("train", length=B, seed=0, size=32)
    return collate_instances([ds[i] for i in range(B)])


CASES = {
    "cityscapes": (lambda: CityScapesModel(**SMOKE), cityscapes_batch),
    "nyuv2": (lambda: NYUv2Model(**SMOKE), nyu_batch),
    "digits_dense": (lambda: SmallDenseModel(width=4, head_width=4), digits_dense_batch),
    "digits_instances": (lambda: SmallInstanceModel(width=4, head_width=4), digits_instance_batch),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    make_model, make_batch = CASES[request.param]
    return make_model(), make_batch()


def test_expected_task_names():
    assert CityScapesModel.task_names == ("depth", "semantic", "instance")
    assert NYUv2Model.task_names == ("depth", "normal", "semantic")
    assert SmallDenseModel.task_names == ("depth", "semantic", "instance")
    assert len(SmallInstanceModel.task_names) >= 3


def test_forward_backward_returns_named_finite_losses(case):
    model, batch = case
    assert isinstance(model, MultiTaskModel)
    losses = model.task_losses(model.encode(batch), batch)
    assert tuple(losses) == model.task_names
    for name, loss in losses.items():
        assert loss.ndim == 0 and torch.isfinite(loss), name
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    shared = [p for _, p in model.shared_parameters()]
    assert any(p.grad.abs().sum() > 0 for p in shared)


def test_per_task_gradients_wrt_detached_z(case):
    model, batch = case
    z = model.encode(batch)
    assert isinstance(z, torch.Tensor)  # a single tensor Z, as documented
    z_leaf = z.detach().requires_grad_(True)
    model.encode = None  # task_losses must never call encode
    losses = model.task_losses(z_leaf, batch)
    for name in model.task_names:
        (g,) = torch.autograd.grad(losses[name], z_leaf, retain_graph=True)
        assert g.shape == z.shape and torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, f"dL_{name}/dZ is identically zero"
    # nothing flowed into the encoder through the detached copy
    assert all(p.grad is None for _, p in model.shared_parameters())


def test_per_task_gradients_wrt_shared_parameters(case):
    model, batch = case
    named = model.shared_parameters()
    shared = [p for _, p in named]
    names = {n for n, _ in model.named_parameters()}
    assert {n for n, _ in named} <= names and all(n.startswith("encoder.") for n, _ in named)
    head_ids = {id(p) for _, p in model.head_parameters()}
    assert head_ids and not head_ids & {id(p) for p in shared}
    losses = model.task_losses(model.encode(batch), batch)
    rows = []
    for name in model.task_names:
        grads = torch.autograd.grad(losses[name], shared, retain_graph=True)
        row = torch.cat([g.flatten() for g in grads])
        assert torch.isfinite(row).all() and row.abs().sum() > 0, name
        rows.append(row)
    gram = torch.stack(rows).double() @ torch.stack(rows).double().T
    assert gram.shape == (len(model.task_names),) * 2


def test_task_losses_do_not_touch_running_statistics():
    # GroupNorm heads: evaluating the heads several times has no side effect
    model = CityScapesModel(**SMOKE)
    batch = cityscapes_batch()
    z = model.encode(batch).detach()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):
        model.task_losses(z, batch)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------------- predict


def test_dense_predict_outputs_at_image_size():
    h, w = 50, 70  # not a multiple of 32
    cs = CityScapesModel(**SMOKE).eval()
    out = cs.predict(cityscapes_batch(h, w))
    assert out["depth"].shape == (B, 1, h, w)
    assert out["semantic"].shape == (B, 19, h, w)
    assert out["instance"].shape == (B, 2, h, w)
    assert not any(t.requires_grad for t in out.values())
    ny = NYUv2Model(**SMOKE).eval()
    out = ny.predict(nyu_batch(h, w))
    assert out["semantic"].shape == (B, 41, h, w) and out["depth"].shape == (B, 1, h, w)
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(B, h, w), atol=1e-4)
    losses = ny.task_losses(ny.encode(nyu_batch(h, w)), nyu_batch(h, w))
    assert all(torch.isfinite(v) for v in losses.values())


def test_small_model_predictions():
    dense = SmallDenseModel(width=4, head_width=4).eval()
    out = dense.predict(digits_dense_batch())
    assert out["semantic"].shape == (B, 11, 32, 32) and out["instance"].shape == (B, 2, 32, 32)
    inst = SmallInstanceModel(width=4, head_width=4, score_threshold=0.0, max_detections=5).eval()
    preds = inst.predict(digits_instance_batch())
    assert len(preds) == B
    for p in preds:
        m = len(p["labels"])
        assert m == 5
        assert p["boxes"].shape == (m, 4) and p["scores"].shape == (m,)
        assert p["labels"].dtype == torch.int64 and torch.all((p["labels"] >= 1) & (p["labels"] <= 10))
        assert p["visible_masks"].shape == (m, 32, 32) and p["visible_masks"].dtype == torch.uint8
        assert p["amodal_masks"].shape == (m, 32, 32) and p["occluded"].dtype == torch.int64
        assert torch.all(p["boxes"][:, :2] <= p["boxes"][:, 2:])
        assert torch.all((p["boxes"] >= 0) & (p["boxes"] <= 32))


# ---------------------------------------------------------------------------------- losses


def test_losses_use_only_valid_pixels():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[2.0, 0.0], [3.0, 10.0]]]])
    assert torch.isclose(depth_l1_loss(pred, gt), torch.tensor((1.0 + 0.0 + 6.0) / 3))
    logits = torch.randn(1, 3, 2, 2)
    target = torch.tensor([[[0, 250], [2, 1]]])
    valid = target != 250
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert torch.isclose(semantic_ce_loss(logits, target, 250), manual)
    off_gt = torch.tensor([[[[0.1, 250.0]], [[-0.2, 250.0]]]])
    off_pred = torch.zeros(1, 2, 1, 2)
    assert torch.isclose(offset_l1_loss(off_pred, off_gt, 250.0), torch.tensor(0.15))


def test_normal_loss_is_one_minus_cosine_on_valid_pixels():
    gt = F.normalize(torch.randn(1, 3, 4, 4), dim=1)
    assert torch.isclose(normal_cosine_loss(gt * 3.0, gt), torch.tensor(0.0), atol=1e-6)
    assert torch.isclose(normal_cosine_loss(-gt, gt), torch.tensor(2.0), atol=1e-6)
    e = torch.zeros(1, 3, 1, 2)
    e[0, 0] = 1.0
    orth = torch.zeros(1, 3, 1, 2)
    orth[0, 1] = 1.0
    assert torch.isclose(normal_cosine_loss(orth, e), torch.tensor(1.0))
    # a zero target vector marks an invalid pixel; (1, -1, 0)/sqrt2 sums to 0 but is valid
    gt2 = torch.zeros(1, 3, 1, 2)
    gt2[0, :, 0, 0] = torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2)
    pred2 = torch.zeros(1, 3, 1, 2)
    pred2[0, :, 0, 0] = gt2[0, :, 0, 0]
    pred2[0, 2, 0, 1] = 1.0
    assert torch.isclose(normal_cosine_loss(pred2, gt2), torch.tensor(0.0), atol=1e-6)


def test_empty_valid_set_raises_naming_the_task():
    with pytest.raises(ValueError, match="'depth'"):
        depth_l1_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="'semantic'"):
        semantic_ce_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 250), 250)
    with pytest.raises(ValueError, match="outside"):
        semantic_ce_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 7), 250)


def test_focal_loss_is_small_for_a_confident_correct_heatmap():
    target = torch.zeros(1, 1, 9, 9)
    target[0, 0, 4, 4] = 1.0
    good = torch.full((1, 1, 9, 9), -9.0)
    good[0, 0, 4, 4] = 9.0
    assert focal_heatmap_loss(good, target, 1) < 1e-3 < focal_heatmap_loss(-good, target, 1)


# ------------------------------------------------------------------------ errors and weights


def test_missing_batch_key_is_named():
    model = CityScapesModel(**SMOKE)
    batch = cityscapes_batch()
    z = model.encode(batch)
    del batch["instance"]
    with pytest.raises(KeyError, match="'instance'"):
        model.task_losses(z, batch)
    with pytest.raises(ValueError, match="'depth'"):
        model.task_losses(z, {**cityscapes_batch(), "depth": torch.rand(B, H, W)})
    with pytest.raises(ValueError, match="batch size"):
        model.task_losses(z[:1], cityscapes_batch())
    with pytest.raises(ValueError, match="Z must be"):
        model.task_losses(torch.zeros(B, 5, 2, 2), cityscapes_batch())
    inst = SmallInstanceModel(width=4, head_width=4)
    b = digits_instance_batch()
    b["target"] = b.pop("targets")
    with pytest.raises(KeyError, match="targets"):
        inst.task_losses(inst.encode(b), b)


@pytest.mark.parametrize("cls", [CityScapesModel, NYUv2Model])
def test_missing_weights_file_raises_naming_the_path(cls, tmp_path):
    path = tmp_path / "no_such_resnet18.pth"
    with pytest.raises(FileNotFoundError, match="no_such_resnet18.pth"):
        cls(width=64, decoder_width=8, decoder_stages=0, weights=path)


def test_local_imagenet_weights_are_loaded(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = CityScapesModel(width=64, decoder_width=8, decoder_stages=0, weights=path)
    assert torch.equal(model.encoder.stem[0].weight, reference.conv1.weight)
    assert torch.equal(model.encoder.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_shared_parameters_must_be_name_parameter_pairs():
    """A model whose shared_parameters() yields bare parameters gets an error saying so, from the
    engine and from head_parameters (a (2, k) parameter would otherwise unpack silently)."""
    from mtlcheck.aggregators import get_aggregator
    from mtlcheck.gradients import backward_step

    class Bare(MultiTaskModel):
        task_names = ("a", "b")

        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(3, 2)
            self.heads = torch.nn.ModuleList(torch.nn.Linear(2, 1) for _ in range(2))

        def encode(self, batch):
            return self.encoder(batch["x"])

        def task_losses(self, z, batch):
            return {n: h(z).pow(2).mean() for n, h in zip(self.task_names, self.heads)}

        def shared_parameters(self):
            return list(self.encoder.parameters())  # the mistake: no names

    model = Bare()
    message = (
        r"Bare.shared_parameters\(\) must yield \(name, parameter\) pairs.*item 0 is a bare Parameter of shape \(2, 3\)"
    )
    with pytest.raises(TypeError, match=message):
        model.head_parameters()
    with pytest.raises(TypeError, match=message):
        backward_step(model, {"x": torch.randn(4, 3)}, get_aggregator("mgda"), level="parameter")
