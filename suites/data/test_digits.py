"""The embedded digits benchmark: determinism, target formats, occlusion consistency, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtlcheck.study.data import digits as D
from mtlcheck.study.data.digits import (
    BACKGROUND_CLASS,
    IGNORE_INDEX,
    DigitsDense,
    DigitsInstances,
    collate_instances,
    source_indices,
)

SIZE = 32
N_ITEMS = 12


@pytest.fixture(scope="module")
def dense_items():
    ds = DigitsDense("train", length=N_ITEMS, seed=3, size=SIZE)
    return [ds[i] for i in range(N_ITEMS)]


@pytest.fixture(scope="module")
def instance_items():
    ds = DigitsInstances("train", length=N_ITEMS, seed=3, size=SIZE)
    return [ds[i] for i in range(N_ITEMS)]


def _equal_items(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal_items(a[k], b[k]) for k in a)
    return a == b


# ------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("cls", [DigitsDense, DigitsInstances])
def test_same_seed_gives_identical_items(cls):
    a = cls("train", length=5, seed=11, size=SIZE)
    b = cls("train", length=5, seed=11, size=SIZE)
    for i in (4, 0, 2):  # order of access does not matter
        assert _equal_items(a[i], b[i])
    assert _equal_items(a[3], cls("train", length=5, seed=11, size=SIZE)[3])


@pytest.mark.parametrize("cls", [DigitsDense, DigitsInstances])
def test_different_seed_gives_different_items(cls):
    a = cls("train", length=4, seed=0, size=SIZE)
    b = cls("train", length=4, seed=1, size=SIZE)
    assert not any(torch.equal(a[i]["image"], b[i]["image"]) for i in range(4))
    # different indices of one dataset differ as well
    assert not torch.equal(a[0]["image"], a[1]["image"])


def test_generation_leaves_global_rngs_alone():
    np.random.seed(123)
    torch.manual_seed(123)
    expected_np = np.random.random()
    expected_torch = torch.rand(1)
    np.random.seed(123)
    torch.manual_seed(123)
    ds = DigitsDense("train", length=3, seed=0, size=SIZE)
    _ = [ds[i] for i in range(3)]
    _ = DigitsInstances("test", length=2, seed=0, size=SIZE)[1]
    assert np.random.random() == expected_np
    assert torch.equal(torch.rand(1), expected_torch)


def test_dense_and_instance_variants_share_scenes():
    dense = DigitsDense("test", length=3, seed=5, size=SIZE)
    inst = DigitsInstances("test", length=3, seed=5, size=SIZE, class_agnostic=False)
    for i in range(3):
        d, s = dense[i], inst[i]
        assert torch.equal(d["image"], s["image"])
        assert torch.equal(d["depth"], s["depth"])
        t = s["target"]
        sem = d["semantic"]
        for j in range(len(t["labels"])):
            vis = t["visible_masks"][j].bool()
            labelled = vis & (sem != IGNORE_INDEX)
            assert labelled.any()
            assert torch.all(sem[labelled] == t["labels"][j] - 1)
        union = t["visible_masks"].bool().any(dim=0)
        assert torch.all((sem[~union] == BACKGROUND_CLASS) | (sem[~union] == IGNORE_INDEX))
        assert torch.all(sem[union] != BACKGROUND_CLASS)


# -------------------------------------------------------------------------- dense targets


def test_dense_shapes_dtypes_and_values(dense_items):
    for item in dense_items:
        assert set(item) == {"image", "semantic", "depth", "instance"}
        img, sem, dep, ins = item["image"], item["semantic"], item["depth"], item["instance"]
        assert img.shape == (3, SIZE, SIZE) and img.dtype == torch.float32 and torch.isfinite(img).all()
        assert sem.shape == (SIZE, SIZE) and sem.dtype == torch.int64
        assert dep.shape == (1, SIZE, SIZE) and dep.dtype == torch.float32
        assert ins.shape == (2, SIZE, SIZE) and ins.dtype == torch.float32
        values = set(sem.unique().tolist())
        assert values <= set(range(11)) | {IGNORE_INDEX}
        assert BACKGROUND_CLASS in values and values & set(range(10))
        # depth: 0 = invalid (holes only), digits in front of the background plane
        assert torch.all(dep >= 0)
        valid = dep[0] > 0
        lo, hi = D.DIGIT_DEPTH_RANGE
        fg = (sem >= 0) & (sem < 10)
        assert torch.all((dep[0][fg & valid] >= lo) & (dep[0][fg & valid] <= hi))
        bg = sem == BACKGROUND_CLASS
        assert torch.all(dep[0][bg & valid] > hi)
        # instance offsets: ignore exactly on background and ignored pixels
        ignored = ins == IGNORE_INDEX
        assert torch.equal(ignored[0], ignored[1])
        assert torch.equal(ignored[0], (sem == BACKGROUND_CLASS) | (sem == IGNORE_INDEX))
        assert torch.all(ins[~ignored].abs() <= 1.0)


def test_dense_depth_holes_and_ignore_occur(dense_items):
    deps = torch.stack([x["depth"] for x in dense_items])
    sems = torch.stack([x["semantic"] for x in dense_items])
    assert (deps == 0).any(), "no invalid-depth hole in 12 scenes (hole_prob=0.5)"
    assert (sems == IGNORE_INDEX).any()
    no_holes = DigitsDense("train", length=4, seed=3, size=SIZE, hole_prob=0.0)
    assert all(torch.all(no_holes[i]["depth"] > 0) for i in range(4))


def test_instance_offsets_have_zero_mean_per_instance():
    ds = DigitsDense("train", length=4, seed=8, size=SIZE)
    for i in range(4):
        scene = ds.scene(i)
        ins = ds[i]["instance"]
        for k in range(len(scene.digits)):
            m = torch.from_numpy((scene.owner == k) & ~scene.soft)
            if m.any():
                assert abs(float(ins[0][m].mean())) < 1e-5 and abs(float(ins[1][m].mean())) < 1e-5
                # channel 0 is the y offset: it grows downwards within an instance
                ys = torch.nonzero(m)[:, 0].float()
                if ys.max() > ys.min():
                    assert float(ins[0][m][ys.argmax()]) > float(ins[0][m][ys.argmin()])


def test_default_collate_gives_the_cityscapes_batch_contract():
    ds = DigitsDense("train", length=4, seed=0, size=SIZE)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, SIZE, SIZE)
    assert batch["semantic"].shape == (4, SIZE, SIZE) and batch["semantic"].dtype == torch.int64
    assert batch["depth"].shape == (4, 1, SIZE, SIZE)
    assert batch["instance"].shape == (4, 2, SIZE, SIZE)


# ----------------------------------------------------------------------- instance targets


def test_instance_target_format(instance_items):
    for idx, item in enumerate(instance_items):
        assert set(item) == {"image", "depth", "target"}
        assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
        assert item["depth"].shape == (1, SIZE, SIZE) and item["depth"].dtype == torch.float32
        t = item["target"]
        n = len(t["labels"])
        assert n >= 1
        assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and torch.all((t["labels"] >= 1) & (t["labels"] <= 10))
        for key in ("visible_masks", "amodal_masks"):
            assert t[key].shape == (n, SIZE, SIZE) and t[key].dtype == torch.uint8
            assert set(t[key].unique().tolist()) <= {0, 1}
        assert t["occluded"].shape == (n,) and t["occluded"].dtype == torch.int64
        assert t["occluded_rate"].shape == (n,) and t["occluded_rate"].dtype == torch.float32
        assert isinstance(t["image_id"], int) and t["image_id"] == idx
        b = t["boxes"]
        assert torch.all((b[:, 0] < b[:, 2]) & (b[:, 1] < b[:, 3]))
        assert torch.all((b >= 0) & (b <= SIZE))


def test_occlusion_consistency(instance_items):
    n_occ = n_free = 0
    for item in instance_items:
        t = item["target"]
        vis, amo = t["visible_masks"].bool(), t["amodal_masks"].bool()
        assert torch.all(vis <= amo), "visible mask not contained in amodal mask"
        assert torch.all(vis.flatten(1).any(dim=1)), "an instance with an empty visible mask was kept"
        assert torch.all(vis.sum(dim=0) <= 1), "visible masks overlap"
        area_v, area_a = vis.flatten(1).sum(1), amo.flatten(1).sum(1)
        assert torch.equal(t["occluded"], (area_v < area_a).long())
        assert torch.allclose(t["occluded_rate"], 1 - area_v.float() / area_a.float())
        # the amodal box is the tight box of the amodal mask, x2/y2 exclusive
        for j in range(len(t["labels"])):
            rows = torch.nonzero(amo[j].any(dim=1))[:, 0]
            cols = torch.nonzero(amo[j].any(dim=0))[:, 0]
            expected = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
            assert torch.equal(t["boxes"][j], expected)
        n_occ += int(t["occluded"].sum())
        n_free += int((1 - t["occluded"]).sum())
        assert t["occluded"][0] == 0, "the nearest digit cannot be occluded"
    assert n_occ > 0 and n_free > 0


def test_class_agnostic_labels_and_collate():
    ds = DigitsInstances("train", length=3, seed=2, size=SIZE)  # class-agnostic by default
    aware = DigitsInstances("train", length=3, seed=2, size=SIZE, class_agnostic=False)
    for i in range(3):
        scene = aware.scene(i)
        visible = scene.visible.reshape(len(scene.digits), -1).any(axis=1)
        assert aware[i]["target"]["labels"].tolist() == (scene.digits[visible] + 1).tolist()
    batch = collate_instances([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, SIZE, SIZE) and batch["depth"].shape == (3, 1, SIZE, SIZE)
    assert len(batch["targets"]) == 3
    assert all(torch.all(t["labels"] == 1) for t in batch["targets"])
    with pytest.raises(ValueError, match="empty"):
        collate_instances([])


# ------------------------------------------------------------------------------------ splits


def test_train_and_test_source_digits_are_disjoint():
    train, test = source_indices("train"), source_indices("test")
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 0.25 * 1797) <= 1
    for split, pool in (("train", train), ("test", test)):
        for seed in (0, 1):
            ds = DigitsDense(split, length=6, seed=seed, size=SIZE)
            assert np.array_equal(ds.pool, pool)  # the scene seed never changes the pools
            used = np.concatenate([ds.scene(i).sources for i in range(6)])
            assert np.isin(used, pool).all()
    # every digit class is present in both pools
    _, targets = D._load_glyphs()
    assert set(targets[train]) == set(targets[test]) == set(range(10))


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "val"}, "split"),
        ({"length": 0}, "length"),
        ({"seed": -1}, "seed"),
        ({"size": 8}, "size"),
        ({"min_digits": 3, "max_digits": 2}, "min_digits"),
        ({"hole_prob": 1.5}, "hole_prob"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    split = kwargs.pop("split", "train")
    with pytest.raises(ValueError, match=match):
        DigitsDense(split, **kwargs)


def test_index_out_of_range():
    ds = DigitsDense("train", length=2, size=SIZE)
    with pytest.raises(IndexError, match="out of range"):
        ds[2]
    assert torch.equal(ds[-1]["image"], ds[1]["image"])
