"""Tiny synthetic samples in the real on-disk formats of CityScapes, NYU-v2 (NYUD_MT and mtan)
and MetaGraspNet (raw scenes plus the converted UOAIS-style COCO JSON).

Deterministic from `seed` (numpy `default_rng`); layouts are those documented in `cityscapes.py`, `nyuv2.py` and
`metagraspnet.py`.
Regenerate the committed copies with::

    python -m mtlcheck.data.fixtures fixtures/          # [--seed 0]

which writes <outdir>/cityscapes, <outdir>/nyuv2/nyud_mt, <outdir>/nyuv2/mtan and
<outdir>/metagraspnet (scene0/ + annotations.json, and the same as train.json and test.json). Each is
a data root as it stands, except that NYU-v2's is one of its two layouts: pass
fixtures/nyuv2/nyud_mt or fixtures/nyuv2/mtan as --data-root. PNG and JSON files are byte-identical across
runs; .npz (zip timestamps), .mat (header timestamp) and JPEG (codec version) files are identical
in content only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CITYSCAPES_SIZE = (32, 64)
NYUD_MT_SIZE = (48, 64)
MTAN_SIZE = (16, 24)
MGN_SIZE = (64, 64)

CITYSCAPES_FRAMES = {
    "train": [
        ("aachen", "aachen_000000_000019", False),
        ("aachen", "aachen_000001_000019", False),
        ("aachen", "aachen_000002_000019", True),
    ],  # True: all-zero disparity (filtered out)
    "val": [("frankfurt", "frankfurt_000000_000294", False), ("frankfurt", "frankfurt_000000_000576", False)],
}
NYUD_MT_SPLITS = {"train": ["img_5001", "img_5002"], "val": ["img_5003", "img_5004"]}


def _save_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", optimize=False)


def _texture(rng: np.random.Generator, label: np.ndarray, noise: int = 12) -> np.ndarray:
    """RGB uint8 image: a fixed colour per label value plus uniform noise."""
    palette = np.random.default_rng(12345).integers(30, 226, size=(int(label.max()) + 1, 3))
    img = palette[label].astype(np.int64) + rng.integers(-noise, noise + 1, size=label.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- CityScapes
def cityscapes_frame(
    rng: np.random.Generator, h: int = 32, w: int = 64, invalid_depth: bool = False
) -> dict[str, np.ndarray]:
    """One synthetic frame: rgb (H,W,3) uint8, label_ids uint8, instance_ids uint16, disparity uint16.

    Sky 23 on top, building 11, road 7 on the bottom half with sidewalk 8 and a pole 17; cars
    26000/26001, a person 24000, a car group 26 (no *1000), a trailer 30000 (void class) and a
    void block 0. Needs w >= 64 for the objects to fit side by side.
    """
    lab = np.full((h, w), 23, np.int64)
    lab[int(0.3 * h) : int(0.5 * h)] = 11
    lab[h // 2 :] = 7
    lab[h // 2 : int(0.6 * h), : w // 4] = 8
    pole = int(rng.integers(w // 2 - 4, w // 2))
    lab[int(0.3 * h) : h // 2 + 2, pole] = 17
    inst = lab.copy()
    vy, vx = int(rng.integers(int(0.3 * h), int(0.5 * h) - 3)), int(rng.integers(w // 2 + 2, w - 8))
    lab[vy : vy + 3, vx : vx + 6] = 0
    inst[vy : vy + 3, vx : vx + 6] = 0
    top = h // 2 + 2
    objects = [  # (label id, instance id, x range start, width, height)
        (26, 26000, 2, 10, 6),
        (26, 26001, 16, 9, 5),
        (24, 24000, 35, 3, 9),
        (26, 26, 44, 5, 4),
        (30, 30000, 54, 6, 5),
    ]
    for label_id, inst_id, x0, ow, oh in objects:
        x = x0 + int(rng.integers(0, 3))
        y = top + int(rng.integers(0, h - top - oh + 1))
        lab[y : y + oh, x : x + ow] = label_id
        inst[y : y + oh, x : x + ow] = inst_id
    rows = np.linspace(3000.0, 20000.0, h)[:, None]
    disp = rows + rng.integers(0, 500, size=(h, w))
    zy, zx = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 8))
    disp[zy : zy + 4, zx : zx + 8] = 0
    if invalid_depth:
        disp[:] = 0
    return {
        "rgb": _texture(rng, lab),
        "label_ids": lab.astype(np.uint8),
        "instance_ids": inst.astype(np.uint16),
        "disparity": disp.astype(np.uint16),
    }


def write_cityscapes_frame(root: str | Path, split: str, city: str, stem: str, frame: dict) -> None:
    """Write one frame in the official layout (leftImg8bit, gtFine labelIds/instanceIds, disparity)."""
    root = Path(root)
    _save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", frame["rgb"])
    _save_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", frame["label_ids"])
    _save_png(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", frame["instance_ids"])
    _save_png(root / "disparity" / split / city / f"{stem}_disparity.png", frame["disparity"])


def write_cityscapes(root: str | Path, seed: int = 0) -> Path:
    """aachen (train, 3 frames, the last with all-zero disparity) and frankfurt (val, 2 frames)."""
    rng = np.random.default_rng([seed, 1])
    for split, frames in CITYSCAPES_FRAMES.items():
        for city, stem, invalid in frames:
            write_cityscapes_frame(root, split, city, stem, cityscapes_frame(rng, *CITYSCAPES_SIZE, invalid))
    return Path(root)


# ----------------------------------------------------------------------------- NYU-v2
def _smooth_normals(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H,W,3) smooth field of unit vectors with positive z."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a, b = rng.uniform(6, 12, size=2)
    n = np.stack([0.6 * np.sin(xx / a), 0.6 * np.cos(yy / b), np.ones_like(xx)], axis=-1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def _nyu_segmentation(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    seg = np.full((h, w), 1, np.int64)  # wall
    seg[int(0.6 * h) :] = 2  # floor
    y, x = int(rng.integers(h // 3, h // 2)), int(rng.integers(0, w // 2))
    seg[y : y + h // 4, x : x + w // 3] = 4  # chair
    seg[: h // 6, int(rng.integers(0, w - 8)) :][:, :8] = int(rng.integers(5, 41))
    seg[-h // 8 :, : w // 5] = 0  # unlabelled
    return seg


def write_nyud_mt(root: str | Path, seed: int = 0) -> Path:
    """NYUD_MT layout, 48x64: train img_5001, img_5002; val img_5003, img_5004."""
    import scipy.io

    root = Path(root)
    rng = np.random.default_rng([seed, 2])
    h, w = NYUD_MT_SIZE
    for d in ("gt_sets", "images", "depth", "normals", "segmentation", "edge"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for split, ids in NYUD_MT_SPLITS.items():
        (root / "gt_sets" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
        for i in ids:
            seg = _nyu_segmentation(rng, h, w)
            Image.fromarray(_texture(rng, seg)).save(root / "images" / f"{i}.jpg", quality=95)
            depth = np.linspace(1.0, 4.0, h, dtype=np.float32)[:, None] + rng.uniform(0, 0.2, (h, w)).astype(np.float32)
            zy, zx = int(rng.integers(0, h - 5)), int(rng.integers(0, w - 6))
            depth[zy : zy + 5, zx : zx + 6] = 0.0
            scipy.io.savemat(root / "depth" / f"{i}.mat", {"depth": depth}, do_compression=True)
            scipy.io.savemat(
                root / "segmentation" / f"{i}.mat", {"segmentation": seg.astype(np.uint8)}, do_compression=True
            )
            p = np.round((_smooth_normals(rng, h, w) + 1.0) / 2.0 * 255.0).astype(np.uint8)
            Image.fromarray(p).save(root / "normals" / f"{i}.jpg", quality=95, subsampling=0)
            _save_png(root / "edge" / f"{i}.png", np.zeros((h, w), np.uint8))
    return root


def write_nyuv2_mtan(root: str | Path, seed: int = 0) -> Path:
    """mtan .npy layout, 16x24: {train,val}/{image,label,depth,normal}/{0,1}.npy (float32)."""
    root = Path(root)
    rng = np.random.default_rng([seed, 3])
    h, w = MTAN_SIZE
    for split in ("train", "val"):
        for i in range(2):
            label = rng.integers(0, 13, size=(h // 4, w // 4)).repeat(4, 0).repeat(4, 1).astype(np.float32)
            label[: h // 4, : w // 3] = -1
            depth = rng.uniform(0.5, 5.0, size=(h, w, 1)).astype(np.float32)
            depth[-3:, -4:] = 0.0
            normal = _smooth_normals(rng, h, w).astype(np.float32)
            normal[-3:, -4:] = 0.0
            arrays = {
                "image": rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32),
                "label": label,
                "depth": depth,
                "normal": normal,
            }
            for key, arr in arrays.items():
                (root / split / key).mkdir(parents=True, exist_ok=True)
                np.save(root / split / key / f"{i}.npy", arr)
    return root


# ----------------------------------------------------------------------------- MetaGraspNet
def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    sh, sw = (int(v) for v in rng.integers(14, 30, size=2))
    y0, x0 = int(rng.integers(0, h - sh)), int(rng.integers(0, w - sw))
    m = np.zeros((h, w), bool)
    if rng.random() < 0.5:
        m[y0 : y0 + sh, x0 : x0 + sw] = True
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        m = ((yy - (y0 + sh / 2)) / (sh / 2)) ** 2 + ((xx - (x0 + sw / 2)) / (sw / 2)) ** 2 <= 1.0
    return m


def layered_visibility(amodal_by_layer: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Visible masks of objects stacked bottom (index 0) to top: amodal minus everything above."""
    covered = np.zeros_like(np.asarray(amodal_by_layer[0], bool))
    visible = [None] * len(amodal_by_layer)
    for i in range(len(amodal_by_layer) - 1, -1, -1):
        a = np.asarray(amodal_by_layer[i], bool)
        visible[i] = a & ~covered
        covered |= a
    return visible


def write_mgn_view(
    scene_dir: str | Path,
    view: int,
    amodal: np.ndarray,
    layers: Sequence[int],
    categories: Sequence[int],
    rng: np.random.Generator,
) -> None:
    """Write `<V>_rgb.png`, `<V>.npz` and `<V>_order.json` for objects k = 1..N.

    `amodal` (N,H,W) bool holds object k at index k-1; `layers[k-1]` is its stacking rank
    (0 = bottom). Visible masks, instances_objects and order.json "occlusion"
    (= 1 - |visible|/|amodal|) follow from them. order.json "parents"/"children" list the
    overlapping objects below/above (fixture semantics; MetaGraspNet's are unverified).
    """
    scene_dir = Path(scene_dir)
    scene_dir.mkdir(parents=True, exist_ok=True)
    amodal = np.asarray(amodal, bool)
    n, h, w = amodal.shape
    by_layer = np.argsort(layers, kind="stable")  # object indices bottom -> top
    vis_layer = layered_visibility([amodal[i] for i in by_layer])
    visible = np.zeros_like(amodal)
    for rank, i in enumerate(by_layer):
        visible[i] = vis_layer[rank]
    inst = np.zeros((h, w), np.int32)
    sem = np.zeros((h, w), np.int32)
    depth = np.float32(80.0) + np.linspace(0, 2, w, dtype=np.float32)[None, :].repeat(h, 0)
    for i in range(n):
        inst[visible[i]] = i + 1
        sem[visible[i]] = categories[i]
        depth[visible[i]] = 80.0 - 3.0 * (layers[i] + 1)
    depth = depth + rng.uniform(0, 0.3, size=(h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.01] = np.nan
    depth[:3, :3] = np.nan
    order = {}
    for i in range(n):
        overlap = [j for j in range(n) if j != i and (amodal[i] & amodal[j]).any()]
        order[str(i + 1)] = {
            "id": i + 1,
            "occlusion": float(1.0 - visible[i].sum() / amodal[i].sum()),
            "layer": int(layers[i]),
            "parents": [j + 1 for j in overlap if layers[j] < layers[i]] or [0],
            "children": [j + 1 for j in overlap if layers[j] > layers[i]],
            "total_covered_edge": 0.0,
        }
    label = np.where(inst > 0, 1 + inst % 7, 0)
    _save_png(scene_dir / f"{view}_rgb.png", _texture(rng, label))
    np.savez_compressed(
        scene_dir / f"{view}.npz",
        depth=depth.astype(np.float32),
        instances_objects=inst,
        instances_semantic=sem,
        seg_masks_single=amodal,
        occlusion=np.zeros((h, w), np.uint8),
    )
    (scene_dir / f"{view}_order.json").write_text(json.dumps(order, indent=1))


def write_metagraspnet_raw(root: str | Path, seed: int = 0, views: int = 2) -> Path:
    """scene0/{0..views-1}: 3-5 rectangles/ellipses in z-order, 64x64; each view has at least one
    object occluded >= 0.05 and one not, and every object is at least partly visible."""
    root = Path(root)
    rng = np.random.default_rng([seed, 4])
    h, w = MGN_SIZE
    for v in range(views):
        while True:
            n = int(rng.integers(3, 6))
            amodal = np.stack([_shape_mask(rng, h, w) for _ in range(n)])
            layers = [int(x) for x in rng.permutation(n)]
            by_layer = np.argsort(layers)
            vis = layered_visibility([amodal[i] for i in by_layer])
            occ = [1.0 - vis[r].sum() / amodal[i].sum() for r, i in enumerate(by_layer)]
            if min(m.sum() for m in vis) >= 10 and max(occ) >= 0.05 and min(occ) < 0.05:
                break
        categories = [int(c) for c in rng.integers(1, 97, size=n)]
        write_mgn_view(root / "scene0", v, amodal, layers, categories, rng)
    return root


def write_metagraspnet(root: str | Path, seed: int = 0) -> Path:
    """Raw scene0 plus `annotations.json` converted from it (file names relative to `root`), and
    the same file as `train.json` and `test.json`, so that `root` is a MetaGraspNet data root
    as it stands (`mtlcheck run --benchmark metagraspnet --data-root fixtures/metagraspnet`)."""
    from mtlcheck.data.metagraspnet import convert_scenes

    root = write_metagraspnet_raw(root, seed)
    text = json.dumps(convert_scenes(root, ["scene0"]), indent=1)
    for name in ("annotations.json", "train.json", "test.json"):
        (root / name).write_text(text)
    return root


def write_all(outdir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Every fixture under `outdir`; returns {name: directory}."""
    outdir = Path(outdir)
    return {
        "cityscapes": write_cityscapes(outdir / "cityscapes", seed),
        "nyud_mt": write_nyud_mt(outdir / "nyuv2" / "nyud_mt", seed),
        "mtan": write_nyuv2_mtan(outdir / "nyuv2" / "mtan", seed),
        "metagraspnet": write_metagraspnet(outdir / "metagraspnet", seed),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlcheck.data.fixtures", description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_all(args.outdir, args.seed).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
