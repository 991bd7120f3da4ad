"""Dataset loaders on tiny fixtures in the real on-disk formats (mtlcheck.study.data)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from mtlcheck.study.data import cityscapes as cs
from mtlcheck.study.data import metagraspnet as mgn
from mtlcheck.study.data import nyuv2 as nyu
from mtlcheck.study.data.collate import collate_dense, collate_detection
from mtlcheck.study.data.paper import PAPER_BATCH_SIZE, PAPER_IMAGE_SIZE
from mtlcheck.study.data.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_nearest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# the writer of the committed fixtures lives beside them (a script, not part of the installed package)
_spec = importlib.util.spec_from_file_location("fixtures_generate", FIXTURES / "generate.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)
CS_ROOT = FIXTURES / "cityscapes"
NYUD_ROOT = FIXTURES / "nyuv2" / "nyud_mt"
MTAN_ROOT = FIXTURES / "nyuv2" / "mtan"
MGN_ROOT = FIXTURES / "metagraspnet"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixtures")
    assert fx.main([str(out)]) == 0
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# ============================================================================ constants
def test_paper_constants():
    assert PAPER_IMAGE_SIZE == (512, 512)
    assert PAPER_BATCH_SIZE == {"metagraspnet": 4, "cityscapes": 32, "nyuv2": 32}
    assert (cs.PAPER_BATCH_SIZE, nyu.PAPER_BATCH_SIZE, mgn.PAPER_BATCH_SIZE) == (32, 32, 4)
    assert (cs.NUM_CLASSES, cs.NUM_CLASSES_COARSE, cs.IGNORE_INDEX) == (19, 7, 250)
    assert (nyu.NUM_CLASSES, nyu.NUM_CLASSES_MTAN, nyu.IGNORE_INDEX) == (41, 13, 250)
    assert len(cs.VALID_IDS) == 19 and set(cs.COARSE_MAP) == set(cs.VALID_IDS)
    assert not set(cs.VALID_IDS) & set(cs.VOID_IDS)
    assert set(cs.VALID_IDS) | set(cs.VOID_IDS) == set(range(-1, 34))


# ============================================================================ CityScapes
def test_cityscapes_fixture_samples():
    train = cs.CityscapesDataset(CS_ROOT, "train", size=None)
    val = cs.CityscapesDataset(CS_ROOT, "val", size=(16, 32))
    assert train.dropped == ["aachen_000002_000019"] and len(train) == 2
    assert val.dropped == [] and len(val) == 2
    for ds, (h, w) in ((train, (32, 64)), (val, (16, 32))):
        for i in range(len(ds)):
            s = ds[i]
            assert set(s) == {"image", "semantic", "depth", "instance", "name"}
            assert s["image"].dtype == torch.float32 and s["image"].shape == (3, h, w)
            assert s["semantic"].dtype == torch.int64 and s["semantic"].shape == (h, w)
            assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, h, w)
            assert s["instance"].dtype == torch.float32 and s["instance"].shape == (2, h, w)
            assert s["name"] == ds.files[i]["name"]
            sem = s["semantic"]
            assert ((sem >= 0) & (sem < 19) | (sem == 250)).all() and (sem == 250).any()
            ins = s["instance"]
            assert torch.equal(ins[0] == 250, ins[1] == 250)
            assert (ins[0] != 250).any() and ins[ins != 250].abs().max() <= 1
            assert (s["depth"] >= 0).all() and (s["depth"] == 0).any()


def _raw_frame(split: str, city: str, stem: str):
    base = {
        "label": CS_ROOT / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
        "instance": CS_ROOT / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png",
        "disparity": CS_ROOT / "disparity" / split / city / f"{stem}_disparity.png",
        "image": CS_ROOT / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
    }
    return {k: np.array(Image.open(p)) for k, p in base.items()}


def test_cityscapes_targets_match_raw_files():
    raw = _raw_frame("train", "aachen", "aachen_000000_000019")
    s = cs.CityscapesDataset(CS_ROOT, "train", size=None, normalize="cityscapes_bgr")[0]
    lab, inst, disp = raw["label"], raw["instance"].astype(np.int64), raw["disparity"].astype(np.float64)
    np.testing.assert_allclose(s["depth"][0].numpy(), disp / 2729.0680031169923, rtol=1e-6)
    assert torch.equal(s["depth"][0] == 0, torch.from_numpy(disp == 0))
    void = np.isin(lab, cs.VOID_IDS)
    assert torch.equal(s["semantic"] == 250, torch.from_numpy(void))
    for train_id, label_id in enumerate(cs.VALID_IDS):
        assert (s["semantic"].numpy()[lab == label_id] == train_id).all()
    expect_valid = ~void & ~np.isin(inst, cs.NO_INSTANCE_IDS) & (inst != 0)
    assert {26000, 26001, 24000, 26} <= set(np.unique(inst[expect_valid]).tolist())
    assert 30000 in inst and not expect_valid[inst == 30000].any()  # trailer: void semantic
    assert torch.equal(s["instance"][0] != 250, torch.from_numpy(expect_valid))
    for i in np.unique(inst[expect_valid]):  # zero mean per instance
        assert abs(float(s["instance"][:, torch.from_numpy(inst == i)].mean(dim=1).abs().max())) < 1e-6
    # the authors' quirk: BGR channels minus RGB means, / 255
    bgr = raw["image"][:, :, ::-1].astype(np.float64)
    expect = ((bgr - np.array([123.675, 116.28, 103.53])) / 255.0).transpose(2, 0, 1)
    np.testing.assert_allclose(s["image"].numpy(), expect, atol=1e-6)


def test_cityscapes_imagenet_normalisation():
    raw = _raw_frame("val", "frankfurt", "frankfurt_000000_000294")
    s = cs.CityscapesDataset(CS_ROOT, "val", size=None)[0]
    expect = (raw["image"] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(s["image"].numpy(), expect.transpose(2, 0, 1), atol=1e-5)


def test_cityscapes_semantic_mapping_hand_built():
    ids = np.arange(34).reshape(2, 17)
    fine = cs.semantic_from_label_ids(ids).ravel()
    expect = np.full(34, 250)
    expect[list(cs.VALID_IDS)] = np.arange(19)
    assert fine.dtype == np.int64 and np.array_equal(fine, expect)
    assert np.array_equal(
        cs.semantic_from_label_ids(np.array([7, 8, 11, 26, 33, 23, 17, 24, 25, 0, 29])),
        [0, 1, 2, 13, 18, 10, 5, 11, 12, 250, 250],
    )
    coarse = cs.semantic_from_label_ids(np.array([7, 8, 12, 22, 27, 31, 23, 20, 25, 0, 30]), 7)
    assert np.array_equal(coarse, [0, 0, 1, 2, 3, 3, 4, 5, 6, 250, 250])
    with pytest.raises(ValueError, match="0..33"):
        cs.semantic_from_label_ids(np.array([[7, 34]]), source="bad.png")
    with pytest.raises(ValueError, match="num_classes"):
        cs.label_lookup(20)


def test_cityscapes_offsets_hand_built():
    lab = np.array([[26, 26, 7, 24, 24], [26, 26, 7, 24, 0], [29, 29, 7, 26, 26]])
    inst = np.array([[26000, 26000, 7, 24000, 24000], [26000, 26000, 7, 24000, 0], [29000, 29000, 7, 26, 26]])
    t = cs.build_targets(lab, inst, np.ones_like(lab))
    I = 250.0  # noqa: E741
    oy = np.array([[-0.25, -0.25, I, -1 / 6, -1 / 6], [0.25, 0.25, I, 1 / 3, I], [I, I, I, 0, 0]])
    ox = np.array([[-0.125, 0.125, I, -1 / 12, 1 / 6], [-0.125, 0.125, I, -1 / 12, I], [I, I, I, -0.125, 0.125]])
    assert t["instance"].dtype == np.float32 and t["instance"].shape == (2, 3, 5)
    np.testing.assert_allclose(t["instance"][0], oy, atol=1e-6)
    np.testing.assert_allclose(t["instance"][1], ox, atol=1e-6)
    np.testing.assert_array_equal(t["semantic"], [[13, 13, 0, 11, 11], [13, 13, 0, 11, 250], [250, 250, 0, 13, 13]])
    np.testing.assert_allclose(t["depth"], np.full((1, 3, 5), 1 / 2729.0680031169923, np.float32))
    assert (cs.instance_offsets(inst, np.zeros_like(inst, bool)) == 250).all()
    with pytest.raises(ValueError):
        cs.instance_offsets(np.zeros((1, 5)), np.ones((1, 5), bool))


def test_cityscapes_resize_nearest_consistency():
    raw = _raw_frame("train", "aachen", "aachen_000001_000019")
    size = (16, 24)
    s = cs.CityscapesDataset(CS_ROOT, "train", size=size)[1]
    lab_r = resize_nearest(raw["label"], size)
    inst_r = resize_nearest(raw["instance"].astype(np.int64), size)
    assert np.array_equal(s["semantic"].numpy(), cs.semantic_from_label_ids(lab_r))
    expect = cs.instance_offsets(inst_r, cs.instance_valid_mask(inst_r, lab_r))
    assert np.array_equal(s["instance"].numpy(), expect)
    assert set(np.unique(s["instance"].numpy())) >= {250.0}
    np.testing.assert_array_equal(
        s["depth"][0].numpy(), (resize_nearest(raw["disparity"], size) / 2729.0680031169923).astype(np.float32)
    )
    # nearest resize keeps the exact id values and the half-pixel rule
    assert np.array_equal(resize_nearest(np.arange(4)[None].repeat(2, 0), (2, 2)), [[1, 3], [1, 3]])


def test_cityscapes_filtering(tmp_path):
    root = _copy(CS_ROOT, tmp_path)
    rng = np.random.default_rng(0)
    stuff = fx.cityscapes_frame(rng)
    stuff["label_ids"][stuff["label_ids"] >= 24] = 7  # only stuff and void classes remain
    stuff["instance_ids"] = stuff["label_ids"].astype(np.uint16)  # so no instance anywhere
    stuff["instance_ids"][stuff["label_ids"] == 0] = 0
    voidf = fx.cityscapes_frame(rng)
    voidf["label_ids"][:] = 4
    fx.write_cityscapes_frame(root, "val", "frankfurt", "frankfurt_000001_000000", stuff)
    fx.write_cityscapes_frame(root, "val", "frankfurt", "frankfurt_000001_000001", voidf)
    cache = tmp_path / "val_filter.json"
    ds = cs.CityscapesDataset(root, "val", size=(16, 32), filter_cache=cache)
    assert ds.dropped == ["frankfurt_000001_000000", "frankfurt_000001_000001"] and len(ds) == 2
    assert json.loads(cache.read_text())["dropped"] == ds.dropped
    assert cs.CityscapesDataset(root, "val", size=(16, 32), filter_cache=cache).dropped == ds.dropped
    with pytest.raises(ValueError, match="val_filter.json"):
        cs.CityscapesDataset(root, "val", size=(8, 8), filter_cache=cache)
    assert len(cs.CityscapesDataset(root, "val", filter_invalid=False)) == 4
    assert len(cs.CityscapesDataset(CS_ROOT, "train", filter_invalid=False)) == 3


def test_cityscapes_errors(tmp_path):
    root = _copy(CS_ROOT, tmp_path)
    disp = root / "disparity" / "val" / "frankfurt" / "frankfurt_000000_000294_disparity.png"
    disp.unlink()
    with pytest.raises(FileNotFoundError, match="frankfurt_000000_000294_disparity.png"):
        cs.CityscapesDataset(root, "val")
    label = root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    label.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="aachen_000000_000019_gtFine_labelIds.png"):
        cs.CityscapesDataset(root, "train")
    ds = cs.CityscapesDataset(root, "train", filter_invalid=False)
    with pytest.raises(ValueError, match="aachen_000000_000019_gtFine_labelIds.png"):
        ds[0]
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(label)  # RGB instead of 8-bit ids
    with pytest.raises(ValueError, match="mode 'RGB'"):
        ds[0]
    Image.fromarray(np.full((32, 64), 40, np.uint8)).save(label)  # id outside 0..33
    with pytest.raises(ValueError, match="labelIds.png"):
        ds[0]
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        cs.CityscapesDataset(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError):
        cs.CityscapesDataset(root, "train", size=(512,))


# ============================================================================ NYU-v2
def test_nyud_mt_fixture_samples():
    for split, ids in fx.NYUD_MT_SPLITS.items():
        ds = nyu.NYUv2Dataset(NYUD_ROOT, split, size=(32, 40))
        assert [f["name"] for f in ds.files] == ids
        s = ds[1]
        assert set(s) == {"image", "semantic", "depth", "normal", "name"} and s["name"] == ids[1]
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 32, 40)
        assert s["semantic"].dtype == torch.int64 and s["semantic"].shape == (32, 40)
        assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, 32, 40)
        assert s["normal"].dtype == torch.float32 and s["normal"].shape == (3, 32, 40)
        assert ((s["semantic"] >= 0) & (s["semantic"] <= 40)).all()
        torch.testing.assert_close(s["normal"].norm(dim=0), torch.ones(32, 40))


def test_nyud_mt_targets_match_raw_files():
    seg = scipy.io.loadmat(NYUD_ROOT / "segmentation" / "img_5001.mat")["segmentation"].astype(np.int64)
    depth = scipy.io.loadmat(NYUD_ROOT / "depth" / "img_5001.mat")["depth"]
    s41, s40, s14 = (nyu.NYUv2Dataset(NYUD_ROOT, "train", size=None, num_classes=c)[0] for c in (41, 40, 14))
    assert np.array_equal(s41["semantic"].numpy(), seg) and (seg == 0).any()
    assert np.array_equal(s40["semantic"].numpy(), np.where(seg == 0, 250, seg - 1))
    assert np.array_equal(s14["semantic"].numpy(), np.array(nyu.COARSE_MAP_40_TO_13)[seg])
    assert np.array_equal(s41["depth"][0].numpy(), depth) and (depth == 0).any()
    rgb = np.array(Image.open(NYUD_ROOT / "images" / "img_5001.jpg"))
    unit = nyu.NYUv2Dataset(NYUD_ROOT, "train", size=None, normalize="unit")[0]["image"]
    np.testing.assert_allclose(unit.numpy(), rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
    decoded = nyu.decode_normals_jpeg(np.array(Image.open(NYUD_ROOT / "normals" / "img_5001.jpg")))
    assert decoded.shape == (3, 48, 64) and np.abs(np.linalg.norm(decoded, axis=0) - 1).max() < 0.05
    n = s41["normal"].numpy()
    np.testing.assert_allclose(n, decoded / np.linalg.norm(decoded, axis=0), atol=1e-6)
    # depth zeros survive nearest resizing; the semantic map is the nearest resize of the raw one
    small = nyu.NYUv2Dataset(NYUD_ROOT, "train", size=(24, 32))[0]
    assert np.array_equal(small["depth"][0].numpy(), resize_nearest(depth, (24, 32)))
    assert np.array_equal(small["semantic"].numpy(), resize_nearest(seg, (24, 32)))


def test_nyu_semantic_mapping_hand_built():
    seg = np.array([[0, 1, 40, 23, 4]])
    assert np.array_equal(nyu.semantic_from_nyud(seg, 41), seg)
    assert np.array_equal(nyu.semantic_from_nyud(seg, 40), [[250, 0, 39, 22, 3]])
    assert np.array_equal(nyu.semantic_from_nyud(seg, 14), [[0, 12, 7, 2, 1]])
    assert np.array_equal(nyu.semantic_from_mtan(np.array([-1.0, 0.0, 12.0])), [250, 0, 12])
    with pytest.raises(ValueError, match="seg.mat"):
        nyu.semantic_from_nyud(np.array([41]), 41, "seg.mat")
    with pytest.raises(ValueError):
        nyu.semantic_from_nyud(seg, 13)
    with pytest.raises(ValueError, match="lab.npy"):
        nyu.semantic_from_mtan(np.array([13.0]), "lab.npy")
    with pytest.raises(ValueError, match="num_classes"):
        nyu.NYUv2Dataset(MTAN_ROOT, "train", layout="mtan", num_classes=41)


def test_nyu_normals_resize_keeps_invalid_zero():
    n = np.zeros((3, 4, 4), np.float32)
    n[2] = 2.0  # not unit length
    n[:, 0, 0] = 0.0  # invalid
    out = nyu.resize_normals(n, (8, 8))
    assert (out[:, :2, :2] == 0).all()
    valid = np.ones((8, 8), bool)
    valid[:2, :2] = False
    np.testing.assert_allclose(np.linalg.norm(out, axis=0)[valid], 1.0, atol=1e-6)


def test_mtan_fixture_samples():
    ds = nyu.NYUv2Dataset(MTAN_ROOT, "val", layout="mtan", size=None)
    assert len(ds) == 2 and [f["name"] for f in ds.files] == ["0", "1"]
    s = ds[0]
    label = np.load(MTAN_ROOT / "val" / "label" / "0.npy")
    depth = np.load(MTAN_ROOT / "val" / "depth" / "0.npy")
    normal = np.load(MTAN_ROOT / "val" / "normal" / "0.npy")
    assert s["image"].shape == (3, 16, 24) and s["semantic"].shape == (16, 24)
    assert s["depth"].shape == (1, 16, 24) and s["normal"].shape == (3, 16, 24)
    assert s["semantic"].dtype == torch.int64 and (label == -1).any()
    assert np.array_equal(s["semantic"].numpy(), np.where(label == -1, 250, label).astype(np.int64))
    assert np.array_equal(s["depth"].numpy(), np.moveaxis(depth, -1, 0))
    invalid = np.all(normal == 0, axis=-1)
    assert invalid.any() and (s["normal"].numpy()[:, invalid] == 0).all()
    np.testing.assert_allclose(s["normal"].numpy()[:, ~invalid], np.moveaxis(normal, -1, 0)[:, ~invalid], atol=1e-6)
    big = nyu.NYUv2Dataset(MTAN_ROOT, "train", layout="mtan", size=(32, 48))[1]
    assert big["normal"].shape == (3, 32, 48) and big["image"].dtype == torch.float32


def test_nyu_errors(tmp_path):
    root = _copy(NYUD_ROOT, tmp_path)
    (root / "normals" / "img_5002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="img_5002.jpg"):
        nyu.NYUv2Dataset(root, "train")
    (root / "depth" / "img_5003.mat").write_bytes(b"not a mat file at all")
    ds = nyu.NYUv2Dataset(root, "val")
    with pytest.raises(ValueError, match="img_5003.mat"):
        ds[0]
    scipy.io.savemat(root / "depth" / "img_5004.mat", {"wrong": np.zeros((48, 64))})
    with pytest.raises(ValueError, match=r"img_5004.mat.*'depth'"):
        ds[1]
    with pytest.raises(FileNotFoundError, match=r"gt_sets[/\\]val.txt"):
        nyu.NYUv2Dataset(tmp_path / "x", "val")
    mtan = _copy(MTAN_ROOT, tmp_path / "m")
    (mtan / "train" / "label" / "1.npy").write_bytes(b"corrupt")
    ds = nyu.NYUv2Dataset(mtan, "train", layout="mtan")
    with pytest.raises(ValueError, match="1.npy"):
        ds[1]
    (mtan / "val" / "depth" / "0.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"depth[/\\]0.npy"):
        nyu.NYUv2Dataset(mtan, "val", layout="mtan")


# ============================================================================ MetaGraspNet
def test_metagraspnet_fixture_samples():
    ann = json.loads((MGN_ROOT / "annotations.json").read_text())
    for size in (None, (32, 48)):
        ds = mgn.MetaGraspNetDataset(MGN_ROOT, MGN_ROOT / "annotations.json", size=size)
        assert len(ds) == 2
        h, w = size or (64, 64)
        for i in range(2):
            s = ds[i]
            t = s["target"]
            n = sum(a["image_id"] == ds.images[i]["id"] for a in ann["annotations"])
            assert s["image"].dtype == torch.float32 and s["image"].shape == (3, h, w)
            assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, h, w)
            assert 0 <= float(s["depth"].min()) and float(s["depth"].max()) <= 1
            assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (n, 4)
            assert t["labels"].dtype == torch.int64 and (t["labels"] == 1).all()
            for k in ("visible_masks", "amodal_masks"):
                assert t[k].dtype == torch.uint8 and t[k].shape == (n, h, w)
            assert t["occluded"].dtype == torch.int64 and set(t["occluded"].tolist()) == {0, 1}
            assert t["image_id"] == ds.images[i]["id"] and isinstance(t["image_id"], int)
            assert (t["visible_masks"] <= t["amodal_masks"]).all()
            assert torch.equal(t["occluded"], (t["occluded_rate"] >= 0.05).long())
            if size is None:  # boxes are the tight amodal boxes, xyxy with exclusive max
                for box, m in zip(t["boxes"], t["amodal_masks"]):
                    ys, xs = torch.nonzero(m, as_tuple=True)
                    assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    full = mgn.MetaGraspNetDataset(MGN_ROOT, MGN_ROOT / "annotations.json", size=None)[0]["target"]["boxes"]
    small = mgn.MetaGraspNetDataset(MGN_ROOT, MGN_ROOT / "annotations.json", size=(32, 48))[0]["target"]["boxes"]
    torch.testing.assert_close(small, full * torch.tensor([48 / 64, 32 / 64, 48 / 64, 32 / 64]))


def test_metagraspnet_converter_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    h, w = 20, 24
    amodal = np.zeros((4, h, w), bool)
    amodal[0, 2:12, 2:14] = True  # bottom, partly covered by object 2
    amodal[1, 6:16, 8:20] = True  # top
    amodal[2, 14:19, 0:6] = True  # alone, not occluded
    amodal[3, 8:12, 10:14] = True  # under object 2 entirely -> dropped
    layers = [0, 3, 1, 2]
    fx.write_mgn_view(tmp_path / "scene5", 3, amodal, layers, [11, 12, 13, 14], rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = mgn.convert_scenes(tmp_path, out_json=tmp_path / "coco.json")
    assert data == json.loads((tmp_path / "coco.json").read_text())
    assert data["images"] == [
        {
            "id": 1,
            "file_name": "scene5/3_rgb.png",
            "depth_file_name": "scene5/3.npz",
            "height": h,
            "width": w,
            "scene": "scene5",
            "view": 3,
        }
    ]
    anns = data["annotations"]
    assert [a["mgn_object_id"] for a in anns] == [1, 2, 3] and [a["id"] for a in anns] == [1, 2, 3]
    visible = {1: amodal[0] & ~amodal[1], 2: amodal[1], 3: amodal[2]}
    for a in anns:
        k = a["mgn_object_id"]
        vis = mgn.decode_mask(a["visible_mask"], (h, w))
        amo = mgn.decode_mask(a["segmentation"], (h, w))
        occ = mgn.decode_mask(a["occluded_mask"], (h, w))
        assert np.array_equal(vis, visible[k]) and np.array_equal(amo, amodal[k - 1])
        assert np.array_equal(occ, amo & ~vis) and (amo >= vis).all()
        assert a["bbox"] == mgn.mask_bbox_xywh(amodal[k - 1]) and a["area"] == amodal[k - 1].sum()
        assert a["occluded_rate"] == pytest.approx(1 - visible[k].sum() / amodal[k - 1].sum())
        assert a["occluded_rate"] == pytest.approx(a["mgn_occlusion"])
        assert a["mgn_category"] == 10 + k and a["category_id"] == 1
    assert anns[0]["bbox"] == [2.0, 2.0, 12.0, 10.0]
    t = mgn.MetaGraspNetDataset(tmp_path, tmp_path / "coco.json", size=None, class_agnostic=False)[0]["target"]
    assert t["labels"].tolist() == [11, 12, 13] and t["occluded"].tolist() == [1, 0, 0]
    assert t["boxes"][0].tolist() == [2.0, 2.0, 14.0, 12.0]
    assert np.array_equal(t["visible_masks"].numpy(), np.stack([visible[k] for k in (1, 2, 3)]))
    # the committed fixture JSON is exactly what the converter makes of the committed scene
    assert mgn.convert_scenes(MGN_ROOT, ["scene0"]) == json.loads((MGN_ROOT / "annotations.json").read_text())


def test_metagraspnet_converter_cross_checks(tmp_path):
    scene = _copy(MGN_ROOT / "scene0", tmp_path)
    order_path = scene / "0_order.json"
    order = json.loads(order_path.read_text())
    key = next(iter(order))
    order[key]["occlusion"] = order[key]["occlusion"] + 0.5
    order_path.write_text(json.dumps(order))
    with pytest.warns(UserWarning, match=f"0_order.json: object {key}: occlusion"):
        data = mgn.convert_scenes(tmp_path, ["scene0"])
    assert any("0_order.json" in n for n in data["info"]["warnings"])
    del order[key]
    order_path.write_text(json.dumps(order))
    with pytest.raises(ValueError, match=r"not listed in .*0_order.json"):
        mgn.convert_scenes(tmp_path, ["scene0"])
    order_path.unlink()
    with pytest.raises(FileNotFoundError, match="0_order.json"):
        mgn.convert_scenes(tmp_path, ["scene0"])
    (scene / "1.npz").write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(ValueError, match="1.npz"):
        mgn.convert_view(scene / "1_rgb.png", scene / "1.npz", scene / "1_order.json")


def test_metagraspnet_depth_normalisation():
    d = np.array([[10.0, 20.0, np.nan, 15.0]])
    np.testing.assert_allclose(mgn.normalize_depth(d, "min_max_flip"), [[1.0, 0.0, 0.0, 0.5]])
    np.testing.assert_allclose(mgn.normalize_depth(d, "min_max"), [[0.0, 1.0, 1.0, 0.5]])
    np.testing.assert_allclose(mgn.normalize_depth(d, "uoais"), [[0.0, 0.0, 0.0, 0.0]])  # < 25 cm: clipped
    np.testing.assert_allclose(mgn.normalize_depth(np.array([30.0, 200.0, np.nan]), "uoais"), [0.04, 1.0, 0.0])
    np.testing.assert_allclose(mgn.normalize_depth(d, "cm"), [[10.0, 20.0, 0.0, 15.0]])
    np.testing.assert_allclose(mgn.normalize_depth(np.array([5.0, np.nan]), "min_max_flip"), [1.0, 0.0])
    with pytest.raises(ValueError, match="d.npz"):
        mgn.normalize_depth(np.full((2, 2), np.nan), "min_max_flip", "d.npz")
    with pytest.raises(ValueError):
        mgn.normalize_depth(d, "log")


def test_metagraspnet_loader_errors(tmp_path):
    root = _copy(MGN_ROOT, tmp_path)
    ann_path = root / "annotations.json"
    data = json.loads(ann_path.read_text())
    first = data["annotations"][0]
    index = [img["id"] for img in data["images"]].index(first["image_id"])
    first["visible_mask"]["size"] = [10, 10]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"bad.json annotation {first['id']} visible_mask"):
        mgn.MetaGraspNetDataset(root, bad)[index]
    del first["segmentation"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="bad.json"):
        mgn.MetaGraspNetDataset(root, bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        mgn.MetaGraspNetDataset(root, bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        mgn.MetaGraspNetDataset(root, tmp_path / "missing.json")
    data = json.loads(ann_path.read_text())
    data["annotations"][0]["mgn_category"] = 0
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="mgn_category"):
        mgn.MetaGraspNetDataset(root, bad, class_agnostic=False)
    ds = mgn.MetaGraspNetDataset(root, ann_path)
    (root / "scene0" / "0.npz").unlink()
    with pytest.raises(FileNotFoundError, match="0.npz"):
        ds[0]
    (root / "scene0" / "1_rgb.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="1_rgb.png"):
        ds[1]


# ============================================================================ collate
def test_collate():
    ds = mgn.MetaGraspNetDataset(MGN_ROOT, MGN_ROOT / "annotations.json", size=(32, 32))
    batch = collate_detection([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["depth"].shape == (2, 1, 32, 32)
    assert isinstance(batch["target"], list) and [t["image_id"] for t in batch["target"]] == [1, 2]
    assert batch["name"] == [ds.images[0]["file_name"], ds.images[1]["file_name"]]
    dense = collate_dense([nyu.NYUv2Dataset(NYUD_ROOT, "val", size=(16, 16))[i] for i in range(2)])
    assert dense["semantic"].shape == (2, 16, 16) and dense["name"] == ["img_5003", "img_5004"]
    other = mgn.MetaGraspNetDataset(MGN_ROOT, MGN_ROOT / "annotations.json", size=(16, 16))[0]
    with pytest.raises(ValueError, match="'image'"):
        collate_detection([ds[0], other])
    with pytest.raises(ValueError):
        collate_dense([])


# ============================================================================ fixtures
def test_fixtures_committed_small_and_regenerable(regenerated):
    data = (p for p in FIXTURES.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc"))  # not the writer
    committed = sorted(p.relative_to(FIXTURES) for p in data)
    fresh = sorted(p.relative_to(regenerated) for p in regenerated.rglob("*") if p.is_file())
    assert committed == fresh
    assert sum((FIXTURES / p).stat().st_size for p in committed) < 1_000_000
    for rel in committed:
        a, b = FIXTURES / rel, regenerated / rel
        if rel.suffix in (".png", ".json", ".txt"):
            assert a.read_bytes() == b.read_bytes(), rel
        elif rel.suffix == ".npy":
            np.testing.assert_array_equal(np.load(a), np.load(b))
        elif rel.suffix == ".npz":
            with np.load(a) as za, np.load(b) as zb:
                assert sorted(za.files) == sorted(zb.files)
                for k in za.files:
                    np.testing.assert_array_equal(za[k], zb[k])
        elif rel.suffix == ".mat":
            ma, mb = scipy.io.loadmat(a), scipy.io.loadmat(b)
            for k in (k for k in ma if not k.startswith("__")):
                np.testing.assert_array_equal(ma[k], mb[k])
        elif rel.suffix == ".jpg":  # codec versions may differ by a few levels
            diff = np.abs(np.array(Image.open(a), np.int64) - np.array(Image.open(b), np.int64))
            assert diff.max() <= 3, rel
        else:
            pytest.fail(f"unexpected fixture file {rel}")


def test_fixture_writers_deterministic_and_seeded(tmp_path):
    a = fx.cityscapes_frame(np.random.default_rng(3))
    b = fx.cityscapes_frame(np.random.default_rng(3))
    c = fx.cityscapes_frame(np.random.default_rng(4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    fx.write_metagraspnet_raw(tmp_path / "s1", seed=1, views=1)
    with np.load(tmp_path / "s1" / "scene0" / "0.npz") as z:
        inst, seg = z["instances_objects"], z["seg_masks_single"]
        assert inst.dtype == np.int32 and seg.dtype == bool and seg.shape[1:] == (64, 64)
        assert 3 <= seg.shape[0] <= 5 and set(np.unique(inst)) == set(range(seg.shape[0] + 1))
        assert np.isnan(z["depth"]).any()
