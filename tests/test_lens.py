"""Lens models: the ray table against OpenCV's own undistortion, and colour registration
against a scene rendered through OpenCV's lens model with a known answer per pixel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from capture import Intrinsics, RGBDFrame, rgbd_to_points
from capture.lens import project, rays, register

cv2 = pytest.importorskip("cv2", reason="OpenCV is the independent reference for the lens model")

# An Azure Kinect's factory lens coefficients (data/rgbd/azure-kinect), at half resolution.
DEPTH_K = Intrinsics(320, 288, 252.3, 252.4, 166.1, 174.2,
                     (0.548, -0.0210, 2.06e-5, -7.21e-5, -0.00265, 0.890, 0.0861, -0.0139), max_radius=1.74)
COLOR_K = Intrinsics(640, 360, 305.9, 306.0, 319.4, 182.7,
                     (0.330, -2.489, -1.62e-4, -1.29e-4, 1.454, 0.209, -2.303, 1.375))
DEPTH_TO_COLOR = np.array([[0.99999923, 0.00118176, -0.00044814, -0.0320834],
                           [-0.00113875, 0.99628061, 0.08616032, -0.0022054],
                           [0.00054829, -0.08615975, 0.99628121, 0.0038837],
                           [0, 0, 0, 1.0]])
SCALE = 1e-4  # depth units: 0.1 mm, so the scene's geometry is not what limits the checks


def cv_rays(k: Intrinsics) -> np.ndarray:
    """Each pixel's ray (x/z, y/z) by OpenCV, an implementation independent of ours."""
    uv = np.stack(np.meshgrid(np.arange(k.width), np.arange(k.height)), -1).reshape(-1, 1, 2).astype(np.float64)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    xy = cv2.undistortPoints(uv, k.matrix, k.coefficients, None, None, criteria=criteria)
    return xy.reshape(k.height, k.width, 2)


def test_ray_table_agrees_with_opencv():
    ours, ref = rays(DEPTH_K), cv_rays(DEPTH_K)
    valid = ~np.isnan(ours[..., 0])
    assert valid.mean() > 0.99
    # 1e-5 on the z = 1 plane is 0.0025 px
    assert np.abs(ours[valid] - ref[valid]).max() < 1e-5


def test_pinhole_rays_are_exact_and_distortion_is_not_a_pinhole():
    pin = dataclasses.replace(DEPTH_K, distortion=(), max_radius=0.0)
    r = rays(pin)
    u, v = 17, 250
    assert r[v, u] == pytest.approx([(u - pin.cx) / pin.fx, (v - pin.cy) / pin.fy], abs=1e-6)
    # the lens bends edge rays by tens of pixels' worth: what a pinhole would get wrong
    assert np.nanmax(np.abs(rays(DEPTH_K)[:, 0, 0] - r[:, 0, 0])) * DEPTH_K.fx > 20


def test_projection_inverts_the_ray_table():
    r = rays(COLOR_K)
    v, u = np.mgrid[0:COLOR_K.height:23, 0:COLOR_K.width:29]
    pts = np.stack([r[v, u, 0], r[v, u, 1], np.ones_like(r[v, u, 0])], -1).reshape(-1, 3) * 2.0
    ok = ~np.isnan(pts[:, 0])
    back = project(pts[ok], COLOR_K)
    assert np.abs(back - np.stack([u.ravel(), v.ravel()], -1)[ok]).max() < 1e-3


def test_rational_6kt_differs_only_in_its_tangential_terms():
    six = dataclasses.replace(DEPTH_K, distortion_model="rational_6kt")
    no_tangential = (*DEPTH_K.distortion[:2], 0.0, 0.0, *DEPTH_K.distortion[4:])
    a = rays(dataclasses.replace(DEPTH_K, distortion=no_tangential))
    b = rays(dataclasses.replace(six, distortion=no_tangential))
    assert np.nanmax(np.abs(a - b)) == 0  # same radial model
    assert np.nanmax(np.abs(rays(six) - rays(DEPTH_K))) > 1e-6


def test_intrinsics_validate_and_round_trip():
    assert Intrinsics.from_dict(DEPTH_K.to_dict()) == DEPTH_K
    with pytest.raises(ValueError, match="distortion"):
        Intrinsics(64, 48, 50, 50, 32, 24, (0.1,) * 9)
    with pytest.raises(ValueError, match="distortion_model"):
        Intrinsics(64, 48, 50, 50, 32, 24, (0.1,), "fisheye")
    with pytest.raises(ValueError, match="unknown"):
        Intrinsics.from_dict({**DEPTH_K.to_dict(), "skew": 0.0})


# --- a scene with a known colour everywhere -------------------------------------------------

PLANE_Z = 1.5  # a wall facing the depth camera, tilted a little: z = PLANE_Z + 0.2 x
PATCH_Z, PATCH_HALF = 0.8, 0.12  # a square card in front of it, in the depth camera's frame


def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth colour over the wall, so bilinear sampling is not what the checks measure."""
    r = 128 + 100 * np.sin(2 * np.pi * x / 0.4)
    g = 128 + 100 * np.cos(2 * np.pi * y / 0.3)
    b = 128 + 60 * np.sin(2 * np.pi * (x + y) / 0.5)
    return np.stack([r, g, b], -1)


def hit(origin: np.ndarray, direction: np.ndarray, with_patch: bool):
    """First surface along each ray (depth camera frame): (points, on_patch)."""
    t_wall = (PLANE_Z - origin[..., 2] + 0.2 * origin[..., 0]) / (direction[..., 2] - 0.2 * direction[..., 0])
    t_patch = (PATCH_Z - origin[..., 2]) / direction[..., 2]
    p_patch = origin + t_patch[..., None] * direction
    on_patch = with_patch & (np.abs(p_patch[..., 0]) < PATCH_HALF) & (np.abs(p_patch[..., 1]) < PATCH_HALF)
    t = np.where(on_patch, t_patch, t_wall)
    return origin + t[..., None] * direction, on_patch


def render(with_patch: bool):
    """Depth image (depth camera) and colour image (colour camera), each through OpenCV's
    lens model; plus each depth pixel's true colour and whether the colour camera sees it."""
    dr = cv_rays(DEPTH_K)
    d_dir = np.concatenate([dr, np.ones((*dr.shape[:2], 1))], -1)
    pts, on_patch = hit(np.zeros(3), d_dir, with_patch)
    depth = np.round(pts[..., 2] / SCALE).astype(np.uint16)
    truth = np.where(on_patch[..., None], [255.0, 0, 0], texture(pts[..., 0], pts[..., 1]))
    # colour camera: rays in its frame -> depth frame
    cr = cv_rays(COLOR_K)
    c_dir = np.concatenate([cr, np.ones((*cr.shape[:2], 1))], -1)
    rot, t = DEPTH_TO_COLOR[:3, :3], DEPTH_TO_COLOR[:3, 3]
    origin = -rot.T @ t
    cpts, c_patch = hit(origin, c_dir @ rot, with_patch)
    image = np.where(c_patch[..., None], [255.0, 0, 0], texture(cpts[..., 0], cpts[..., 1]))
    # is each depth point the first surface the colour camera meets along its ray?
    to_point = pts - origin
    _, blocked = hit(origin, to_point, with_patch)
    visible = on_patch | ~blocked
    return depth, np.clip(np.round(image), 0, 255).astype(np.uint8), truth, visible


def test_registration_gives_each_depth_pixel_its_true_color():
    depth, image, truth, _ = render(with_patch=False)
    color, kept = register(depth, SCALE, DEPTH_K, image, COLOR_K, DEPTH_TO_COLOR)
    seen = kept > 0
    assert seen.mean() > 0.8
    err = np.abs(color[seen].astype(float) - truth[seen])
    assert err.mean() < 1.5 and np.percentile(err, 99) < 6
    # what a registration that ignored the extrinsics or the colour lens would give instead
    for wrong_k, wrong_t in ((COLOR_K, np.eye(4)), (dataclasses.replace(COLOR_K, distortion=()), DEPTH_TO_COLOR)):
        c2, k2 = register(depth, SCALE, DEPTH_K, image, wrong_k, wrong_t)
        both = seen & (k2 > 0)
        assert np.abs(c2[both].astype(float) - truth[both]).mean() > 4 * err.mean()


def test_registration_drops_what_the_color_camera_cannot_see():
    depth, image, truth, visible = render(with_patch=True)
    wall = truth[..., 1] > 0  # the card is pure red; the wall's green never reaches 0
    hidden_wall = wall & ~visible
    assert hidden_wall.sum() > 200  # the scene does have a shadow of the card
    color, kept = register(depth, SCALE, DEPTH_K, image, COLOR_K, DEPTH_TO_COLOR)
    red = (color[..., 0] > 200) & (color[..., 1] < 40)
    assert (red & kept.astype(bool) & hidden_wall).sum() < 0.02 * hidden_wall.sum()
    # without the occlusion check the shadow is painted with the card's colour
    color0, kept0 = register(depth, SCALE, DEPTH_K, image, COLOR_K, DEPTH_TO_COLOR, occlusion=0)
    in_view = wall & visible & (kept0 > 0)
    assert (kept[in_view] > 0).mean() > 0.97  # and what it can see is kept
    red0 = (color0[..., 0] > 200) & (color0[..., 1] < 40)
    assert (red0 & kept0.astype(bool) & hidden_wall).sum() > 0.5 * hidden_wall.sum()


def test_back_projection_uses_the_lens():
    depth, image, truth, _ = render(with_patch=False)
    color, kept = register(depth, SCALE, DEPTH_K, image, COLOR_K, DEPTH_TO_COLOR)
    frame = RGBDFrame(kept, color, DEPTH_K, SCALE, np.eye(4), 0.0)
    positions, _ = rgbd_to_points(frame, box=None)
    # every point lies on the wall: z = 1.5 + 0.2 x (0.1 mm depth steps)
    residual = positions[:, 2] - (PLANE_Z + 0.2 * positions[:, 0])
    assert np.abs(residual).max() < 2e-3
    pin = RGBDFrame(kept, color, dataclasses.replace(DEPTH_K, distortion=()), SCALE, np.eye(4), 0.0)
    p_pin, _ = rgbd_to_points(pin, box=None)
    assert np.abs(p_pin[:, 2] - (PLANE_Z + 0.2 * p_pin[:, 0])).max() > 0.02
