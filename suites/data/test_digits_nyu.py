"""The embedded NYU-v2 analog (`mtlcheck.study.data.digits_nyu`): target formats, normals of unit
length that agree with the depth they come from, holes, classes, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtlcheck.study.data.digits import IGNORE_INDEX, DigitsDense
from mtlcheck.study.data.digits_nyu import FLOOR_CLASS, NUM_CLASSES, WALL_CLASS, DigitsNYU, normals_from_gradient

SIZE = 32
N_ITEMS = 16


@pytest.fixture(scope="module")
def dataset():
    return DigitsNYU("train", length=N_ITEMS, seed=5, size=SIZE)


@pytest.fixture(scope="module")
def items(dataset):
    return [dataset[i] for i in range(N_ITEMS)]


def test_items_have_the_nyuv2_batch_keys_shapes_and_dtypes(items):
    for item in items:
        assert set(item) == {"image", "depth", "normal", "semantic"}
        assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
        assert item["depth"].shape == (1, SIZE, SIZE) and item["depth"].dtype == torch.float32
        assert item["normal"].shape == (3, SIZE, SIZE) and item["normal"].dtype == torch.float32
        assert item["semantic"].shape == (SIZE, SIZE) and item["semantic"].dtype == torch.int64
        labels = set(item["semantic"].unique().tolist())
        assert labels <= set(range(NUM_CLASSES)) | {IGNORE_INDEX}
    seen = set().union(*(set(i["semantic"].unique().tolist()) for i in items))
    assert {WALL_CLASS, FLOOR_CLASS} <= seen and seen & set(range(10))


def test_normals_are_unit_length_face_the_camera_and_are_invalid_exactly_in_depth_holes(items):
    holes = 0
    for item in items:
        n, d = item["normal"], item["depth"][0]
        valid = (n != 0).any(0)
        torch.testing.assert_close(n.norm(dim=0)[valid], torch.ones(int(valid.sum())), atol=1e-5, rtol=0)
        assert bool((n[2][valid] < 0).all()), "a visible surface faces the camera: n_z < 0"
        assert torch.equal(valid, d > 0), "normals are invalid (zero) exactly where depth is (0)"
        holes += int((~valid).sum() > 0)
    assert holes > 0, "hole_prob=0.5 must give some scenes a depth hole"


def _finite_difference_check(scene):
    """Central differences of the depth along x and y, at pixels whose 3x3 neighbourhood lies on
    one surface (the same owner, and for the background the same side of the crease), against the
    slopes the normal gives: d_u = -n_x / n_z, d_v = -n_y / n_z (u = x/(W-1), v = y/(H-1))."""
    d = scene.depth.astype(np.float64)
    n = scene.normal.astype(np.float64)
    h, w = d.shape
    surface = np.where(scene.owner >= 0, scene.owner, np.where(scene.floor, -2, -1))
    surface = np.where(d > 0, surface, -99)  # holes are no surface
    same = np.ones((h - 2, w - 2), dtype=bool)
    centre = surface[1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same &= surface[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] == centre
    same &= centre != -99
    d_u = (d[1:-1, 2:] - d[1:-1, :-2]) / 2 * (w - 1)
    d_v = (d[2:, 1:-1] - d[:-2, 1:-1]) / 2 * (h - 1)
    nc = n[:, 1:-1, 1:-1]
    return d_u[same], -nc[0][same] / nc[2][same], d_v[same], -nc[1][same] / nc[2][same]


def test_normals_agree_with_the_finite_differences_of_the_depth(dataset):
    checked = 0
    for i in range(N_ITEMS):
        du, du_n, dv, dv_n = _finite_difference_check(dataset.scene(i))
        # the surfaces are quadratic: a central difference is exact up to float32 rounding of the depth
        np.testing.assert_allclose(du, du_n, atol=2e-3 * SIZE)
        np.testing.assert_allclose(dv, dv_n, atol=2e-3 * SIZE)
        checked += du.size
    assert checked > N_ITEMS * SIZE * SIZE // 4  # most pixels are interior to one surface


def test_surfaces_are_not_flat_and_the_image_is_shaded_by_them(items):
    n = torch.stack([i["normal"] for i in items])
    valid = (n != 0).any(1)
    angle = torch.rad2deg(torch.acos((-n[:, 2][valid]).clamp(-1, 1)))  # to the viewing direction
    assert float(angle.median()) > 10 and float(angle.quantile(0.9)) > 30
    # shading: on the background (one albedo per scene) the wall and the floor differ in brightness
    differ = 0
    for item in items:
        sem, img = item["semantic"], item["image"].mean(0)
        wall, floor = img[sem == WALL_CLASS], img[sem == FLOOR_CLASS]
        if wall.numel() > 20 and floor.numel() > 20:
            differ += int(abs(float(wall.median() - floor.median())) > 0.01)
    assert differ >= N_ITEMS // 2


def test_normals_from_gradient_is_the_unit_normal_of_the_surface():
    rng = np.random.default_rng(0)
    d_u, d_v = rng.normal(size=(2, 5, 7))
    n = normals_from_gradient(d_u, d_v)
    np.testing.assert_allclose(np.linalg.norm(n, axis=0), 1.0)
    # orthogonal to both tangents of (u, v, d(u, v)): (1, 0, d_u) and (0, 1, d_v)
    np.testing.assert_allclose(n[0] + n[2] * d_u, 0.0, atol=1e-12)
    np.testing.assert_allclose(n[1] + n[2] * d_v, 0.0, atol=1e-12)


def test_items_are_a_function_of_seed_split_and_index():
    a = DigitsNYU("test", length=4, seed=2, size=SIZE)
    b = DigitsNYU("test", length=4, seed=2, size=SIZE)
    for i in (3, 0):
        for key, value in a[i].items():
            assert torch.equal(value, b[i][key])
    assert not torch.equal(a[0]["image"], DigitsNYU("test", length=4, seed=3, size=SIZE)[0]["image"])
    # the same glyph pools as the other digit benchmarks (train and test glyphs disjoint)
    dense = DigitsDense("test", length=4, seed=2, size=SIZE)
    assert np.array_equal(a.pool, dense.pool)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="size"):
        DigitsNYU("train", size=8)
    with pytest.raises(ValueError, match="split"):
        DigitsNYU("val")
