"""Metrics on cases small enough to compute by hand."""

import math

import numpy as np
import pytest

from codec import _kdtree
from codec.metrics import estimate_normals, quality, rgb_to_yuv

GREY = np.array([[128, 128, 128]], np.uint8)


def test_kdtree_finds_the_same_neighbours_as_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (3000, 3))
    queries = rng.uniform(-10, 110, (500, 3))
    idx, d2 = _kdtree.nearest(pts, _kdtree.build(pts), queries)
    brute = ((queries[:, None, :] - pts[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2, brute.min(1))
    knn = _kdtree.knn(pts, _kdtree.build(pts), queries, 5)
    np.testing.assert_array_equal(np.sort(brute, 1)[:, :5], np.take_along_axis(brute, knn, 1))


def test_identical_clouds_are_perfect():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    col = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    q = quality(pts, col, pts, col, depth=8)
    assert q.d1_mse == 0 and q.d1_psnr == math.inf and q.y_psnr == math.inf and q.hausdorff == 0


def test_d1_is_symmetric_by_the_larger_mse_and_psnr_uses_the_grid_peak():
    # A = {(0,0,0)}, B = {(0,0,0), (3,0,0)}: A->B has MSE 0, B->A has (0 + 9) / 2 = 4.5
    a = np.array([[0.0, 0, 0]])
    b = np.array([[0.0, 0, 0], [3.0, 0, 0]])
    q = quality(a, GREY, b, np.repeat(GREY, 2, 0), depth=10, normals_a=np.array([[1.0, 0, 0]]))
    assert q.d1_mse == pytest.approx(4.5)
    assert q.d1_psnr == pytest.approx(10 * math.log10(3 * 1023**2 / 4.5))
    assert q.hausdorff == pytest.approx(9.0)
    # the error (3,0,0) lies along the normal (1,0,0): point-to-plane equals point-to-point
    assert q.d2_mse == pytest.approx(4.5)


def test_d2_ignores_error_along_the_surface():
    a = np.array([[0.0, 0, 0]])
    b = np.array([[2.0, 0, 0]])
    q = quality(a, GREY, b, GREY, depth=8, normals_a=np.array([[0.0, 0, 1.0]]))
    assert q.d1_mse == pytest.approx(4.0) and q.d2_mse == pytest.approx(0.0)
    assert q.d2_psnr == math.inf


def test_color_psnr_of_a_known_luma_error():
    pts = np.array([[0.0, 0, 0]])
    white, black = np.array([[255, 255, 255]], np.uint8), np.array([[0, 0, 0]], np.uint8)
    q = quality(pts, white, pts, black, depth=8, normals_a=np.array([[0, 0, 1.0]]))
    assert q.y_psnr == pytest.approx(0.0)  # MSE 1 on the [0, 1] scale
    assert q.u_psnr == math.inf and q.v_psnr == math.inf  # greys have no chroma
    grey = np.array([[255, 255, 255]], np.uint8) - 51  # Y differs by 51/255 = 0.2
    q = quality(pts, white, pts, grey.astype(np.uint8), depth=8, normals_a=np.array([[0, 0, 1.0]]))
    assert q.y_psnr == pytest.approx(10 * math.log10(1 / 0.04))
    assert q.yuv_psnr == math.inf  # (6Y + U + V) / 8 with U and V perfect


def test_bt709_conversion():
    yuv = rgb_to_yuv(np.array([[255, 0, 0], [255, 255, 255]], np.uint8))
    np.testing.assert_allclose(yuv[0], [0.2126, -0.1146 + 0.5, 1.0])
    np.testing.assert_allclose(yuv[1], [1.0, 0.5, 0.5], atol=1e-12)


def test_normals_of_a_plane_point_along_its_axis():
    g = np.stack(np.meshgrid(np.arange(10), np.arange(10), [0.0]), -1).reshape(-1, 3)
    n = estimate_normals(g)
    np.testing.assert_allclose(np.abs(n[:, 2]), 1.0, atol=1e-9)
