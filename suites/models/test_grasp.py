"""The MetaGraspNet model (mtlcheck.study.models.grasp) at smoke size on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from mtlcheck.models import MultiTaskModel
from mtlcheck.study.models.grasp import SMOKE_CONFIG, MetaGraspNetModel, make_synthetic_batch

TASKS = ("rcls", "rdet", "cls", "det", "vsb", "amd", "occ")
RPN_TASKS = ("rcls", "rdet")
ROI_TASKS = ("cls", "det", "vsb", "amd", "occ")
SIZE = SMOKE_CONFIG["image_size"]


def _batch(seed: int = 0, batch_size: int = 2, **kwargs):
    return make_synthetic_batch(batch_size, SIZE, torch.Generator().manual_seed(seed), **kwargs)


def _detached(z):
    return tuple(t.detach().requires_grad_(True) for t in z)


def _as_zeros(grads, like):
    """What the gradient engine does with autograd's None: a zero block."""
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Smoke-size convs gain nothing from intra-op threads, and when the cores are shared (xdist
    workers, other jobs) OpenMP threads oversubscribe them: 0.3 s of work took 15-27 s wall on
    2 busy cores with 2 threads, 0.3-0.5 s with 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MetaGraspNetModel(**SMOKE_CONFIG)


@pytest.fixture(scope="module")
def batch():
    b = _batch(seed=0)
    assert all(t["boxes"].shape[0] > 0 for t in b["targets"])
    assert any(int(t["occluded"].sum()) > 0 for t in b["targets"])
    return b


@pytest.fixture(scope="module")
def empty_batch():
    b = _batch(seed=1, min_instances=0, max_instances=0)
    assert all(t["boxes"].shape[0] == 0 for t in b["targets"])
    return b


def _losses_on_detached(model, batch, seed=0):
    model.train()
    torch.manual_seed(seed)
    z = _detached(model.encode(batch))
    return z, model.task_losses(z, batch)


# --- contract -------------------------------------------------------------------------------------


def test_is_a_multitask_model_with_the_seven_tasks(model):
    assert isinstance(model, MultiTaskModel)
    assert model.task_names == TASKS


def test_forward_backward_returns_seven_finite_losses(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    z = model.encode(batch)
    assert isinstance(z, tuple) and len(z) == 5
    assert tuple(tuple(t.shape) for t in z) == model.feature_shapes(2)
    losses = model.task_losses(z, batch)
    assert tuple(losses) == TASKS
    for name, loss in losses.items():
        assert loss.ndim == 0, name
        assert torch.isfinite(loss), (name, loss)
        assert loss.requires_grad, name
        assert loss.item() > 0, name  # every task has positives in this batch
    sum(losses.values()).backward()
    grads = [p.grad for _, p in model.shared_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


def test_task_losses_never_calls_encode(model, batch, monkeypatch):
    model.train()
    z = _detached(model.encode(batch))

    def forbidden(_batch):
        raise AssertionError("task_losses called encode")

    monkeypatch.setattr(model, "encode", forbidden)
    losses = model.task_losses(z, batch)
    assert tuple(losses) == TASKS


def test_shared_and_head_parameters_partition_the_model(model):
    shared = model.shared_parameters()
    heads = model.head_parameters()
    shared_ids = {id(p) for _, p in shared}
    head_ids = {id(p) for _, p in heads}
    assert len(shared_ids) == len(shared) and len(head_ids) == len(heads)
    assert shared_ids.isdisjoint(head_ids)
    assert shared_ids | head_ids == {id(p) for p in model.parameters()}
    assert {n.split(".")[0] for n, _ in shared} == {"rgb_trunk", "depth_trunk", "fusion", "fpn"}
    assert {n.split(".")[0] for n, _ in heads} == {"rpn", "roi_heads"}
    assert [n for n, _ in shared] == [n for n, _ in model.shared_parameters()]  # fixed order


# --- gradients ------------------------------------------------------------------------------------


def test_feature_level_gradients(model, batch):
    z, losses = _losses_on_detached(model, batch)
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, z, retain_graph=True, allow_unused=True)
        if name in ROI_TASKS:
            # the RoI heads pool P2..P5 only: P6 is unused (the engine reads None as zeros)
            assert grads[-1] is None, name
            assert all(g is not None for g in grads[:-1]), name
        else:
            assert all(g is not None for g in grads), name  # the RPN head sees every level
        dense = _as_zeros(grads, z)
        assert all(torch.isfinite(g).all() for g in dense), name
        assert sum(float(g.norm()) for g in dense) > 0, name


def test_parameter_level_gradients(model, batch):
    model.train()
    torch.manual_seed(0)
    z = model.encode(batch)
    losses = model.task_losses(z, batch)
    params = [p for _, p in model.shared_parameters()]
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        dense = _as_zeros(grads, params)
        assert all(torch.isfinite(g).all() for g in dense), name
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in dense))
        assert norm > 0, name
        if name not in ("rcls", "vsb"):  # one loss with a None level (P6) and one without suffice
            continue
        # chain rule through Z, with None read as zeros, gives the same parameter gradient
        gz = _as_zeros(torch.autograd.grad(loss, z, retain_graph=True, allow_unused=True), z)
        chained = _as_zeros(torch.autograd.grad(z, params, gz, retain_graph=True, allow_unused=True), params)
        diff = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(dense, chained)))
        assert diff <= 1e-4 * norm + 1e-12, (name, diff, norm)


def test_rpn_losses_do_not_reach_roi_heads_and_roi_losses_do_not_reach_rpn(model, batch):
    _, losses = _losses_on_detached(model, batch)
    rpn = list(model.rpn.parameters())
    roi = list(model.roi_heads.parameters())
    for name in RPN_TASKS:
        assert all(g is None for g in torch.autograd.grad(losses[name], roi, retain_graph=True, allow_unused=True))
    for name in ROI_TASKS:
        assert all(g is None for g in torch.autograd.grad(losses[name], rpn, retain_graph=True, allow_unused=True))


@pytest.mark.parametrize("method, level", [("ew", "parameter"), ("mgda", "feature")])
def test_gradient_engine_step(model, batch, method, level):
    """The engine reads the RoI losses' None gradient on P6 as zeros and fills every .grad."""
    from mtlcheck.aggregators import get_aggregator
    from mtlcheck.gradients import backward_step

    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    result = backward_step(model, batch, get_aggregator(method), level=level, feature_grads=True)
    assert result.losses.shape == (7,)
    assert [tuple(g.shape[1:]) for g in result.feature_grads] == list(model.feature_shapes(2))
    assert float(result.feature_grads[-1][2:].abs().max()) == 0.0  # RoI tasks: P6 gradient is zero
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("level", ["parameter", "feature"])
def test_cosreg_differentiates_through_the_roi_heads(model, batch, level):
    """CosReg's penalty needs a double backward through RoIAlign (torchvision has none); it must
    run and change the shared gradients."""
    from mtlcheck.aggregators import CosReg
    from mtlcheck.gradients import backward_step

    model.train()
    grads = []
    for penalty in (0.0, 10.0):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        backward_step(model, batch, CosReg(penalty=penalty), level=level)
        grads.append(torch.cat([p.grad.reshape(-1) for _, p in model.shared_parameters()]))
        assert torch.isfinite(grads[-1]).all()
    assert not torch.allclose(grads[0], grads[1])
    model.zero_grad(set_to_none=True)


# --- empty and mixed batches ----------------------------------------------------------------------


def test_zero_instances_give_finite_losses_and_zero_gradients(model, empty_batch):
    z, losses = _losses_on_detached(model, empty_batch)
    assert tuple(losses) == TASKS
    for name, loss in losses.items():
        assert loss.ndim == 0 and torch.isfinite(loss), (name, loss)
        grads = _as_zeros(torch.autograd.grad(loss, z, retain_graph=True, allow_unused=True), z)
        assert all(torch.isfinite(g).all() for g in grads), name
    # only negatives exist: objectness and background classification are positive, the rest is 0
    assert losses["rcls"].item() > 0 and losses["cls"].item() > 0
    for name in ("rdet", "det", "vsb", "amd", "occ"):
        assert losses[name].item() == 0.0, name
    sum(losses.values()).backward()


def test_batch_mixing_empty_and_filled_images(model):
    full = _batch(seed=2, batch_size=1)
    empty = _batch(seed=3, batch_size=1, min_instances=0, max_instances=0)
    mixed = {
        "image": torch.cat([full["image"], empty["image"]]),
        "depth": torch.cat([full["depth"], empty["depth"]]),
        "targets": full["targets"] + empty["targets"],
    }
    _, losses = _losses_on_detached(model, mixed)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["vsb"].item() > 0


def test_occlusion_loss_when_every_positive_is_occluded_or_none_is(model, batch):
    for value in (0, 1):
        b = {**batch, "targets": [{**t, "occluded": torch.full_like(t["occluded"], value)} for t in batch["targets"]]}
        _, losses = _losses_on_detached(model, b)
        assert torch.isfinite(losses["occ"]) and losses["occ"].item() > 0, value


def test_multi_class_labels():
    torch.manual_seed(0)
    m = MetaGraspNetModel(num_classes=3, **SMOKE_CONFIG)
    b = make_synthetic_batch(2, SIZE, torch.Generator().manual_seed(4), num_classes=3)
    _, losses = _losses_on_detached(m, b)
    assert all(torch.isfinite(v) for v in losses.values())
    m.eval()
    for det in m.predict(b):
        assert det["labels"].numel() == 0 or int(det["labels"].max()) <= 3


# --- predict --------------------------------------------------------------------------------------


def test_predict_output_format(model, batch):
    model.eval()
    try:
        out = model.predict(batch)
    finally:
        model.train()
    assert isinstance(out, list) and len(out) == 2
    for i, det in enumerate(out):
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["boxes"].dtype == torch.float32
        assert det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert det["labels"].dtype == torch.int64
        assert det["visible_masks"].shape == (n, SIZE, SIZE) and det["amodal_masks"].shape == (n, SIZE, SIZE)
        assert det["visible_masks"].is_floating_point() and det["amodal_masks"].is_floating_point()
        assert det["occluded_scores"].shape == (n,)
        assert det["image_id"] == batch["targets"][i]["image_id"]
        if n:
            assert (det["labels"] >= 1).all()
            for key in ("scores", "visible_masks", "amodal_masks", "occluded_scores"):
                assert float(det[key].min()) >= 0 and float(det[key].max()) <= 1, key
            assert (det["boxes"][:, 2:] >= det["boxes"][:, :2]).all()
            assert float(det["boxes"].min()) >= 0 and float(det["boxes"].max()) <= SIZE


def test_predict_in_training_mode_is_an_error(model, batch):
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.predict(batch)


# --- weights --------------------------------------------------------------------------------------


def test_missing_weights_file_names_the_path(tmp_path):
    path = tmp_path / "no_such_resnet18.pth"
    with pytest.raises(FileNotFoundError, match="no_such_resnet18.pth"):
        MetaGraspNetModel(weights=path, **SMOKE_CONFIG)


def test_weights_load_into_both_trunks(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    m = MetaGraspNetModel(width=64, fpn_channels=8, image_size=64, weights=str(path))
    assert torch.equal(m.rgb_trunk.stem[0].weight, state["conv1.weight"])
    assert torch.equal(m.depth_trunk.stem[0].weight, state["conv1.weight"])  # depth replicated to 3 channels
    assert torch.equal(m.depth_trunk.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    with pytest.raises(ValueError, match="width=8"):
        MetaGraspNetModel(weights=str(path), **SMOKE_CONFIG)


# --- validation -----------------------------------------------------------------------------------


def test_wrong_image_size_is_rejected(model):
    b = make_synthetic_batch(1, 2 * SIZE, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"batch\['image'\]"):
        model.encode(b)


def test_bad_targets_are_rejected_by_name(model, batch):
    z = _detached(model.encode(batch))
    t0 = batch["targets"][0]
    cases = {
        "labels": {**t0, "labels": t0["labels"] + 5},
        "boxes": {**t0, "boxes": t0["boxes"][:, [2, 3, 0, 1]]},
        "visible_masks": {**t0, "visible_masks": t0["visible_masks"].float()},
        "occluded": {**t0, "occluded": t0["occluded"] + 2},
    }
    for key, bad in cases.items():
        b = {**batch, "targets": [bad] + batch["targets"][1:]}
        with pytest.raises(ValueError, match=rf"targets'\]\[0\]\['{key}'\]"):
            model.task_losses(z, b)
    with pytest.raises(KeyError, match="targets"):
        model.task_losses(z, {k: v for k, v in batch.items() if k != "targets"})
    with pytest.raises(ValueError, match="p3"):
        model.task_losses((z[0], z[0], *z[2:]), batch)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="multiples of 32"):
        MetaGraspNetModel(**{**SMOKE_CONFIG, "image_size": 100})
    with pytest.raises(ValueError, match="num_classes"):
        MetaGraspNetModel(num_classes=0, **SMOKE_CONFIG)
    with pytest.raises(ValueError, match="depth_in_channels"):
        MetaGraspNetModel(depth_in_channels=2, **SMOKE_CONFIG)


# --- synthetic data -------------------------------------------------------------------------------


def test_synthetic_batch_is_valid_and_reproducible():
    a, b = _batch(seed=5, batch_size=3), _batch(seed=5, batch_size=3)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    assert a["image"].shape == (3, 3, SIZE, SIZE) and a["depth"].shape == (3, 1, SIZE, SIZE)
    for ta, tb in zip(a["targets"], b["targets"]):
        assert torch.equal(ta["boxes"], tb["boxes"])
        vis, amo = ta["visible_masks"].bool(), ta["amodal_masks"].bool()
        assert ta["visible_masks"].dtype == torch.uint8
        assert not (vis & ~amo).any()  # visible within amodal
        assert vis.flatten(1).any(1).all()  # no fully hidden object kept
        for box, m in zip(ta["boxes"], amo):
            ys, xs = torch.where(m)
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        hidden = 1 - vis.flatten(1).sum(1) / amo.flatten(1).sum(1)
        assert torch.equal(ta["occluded"], (hidden >= 0.05).long())
    with pytest.raises(TypeError, match="Generator"):
        make_synthetic_batch(1, SIZE, 0)
