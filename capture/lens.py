"""Lens models: the per-pixel ray table that back-projection uses, and colour registration.

Back-projecting through a pinhole is wrong for real depth cameras: an Azure Kinect's
depth image is off by 6-17 cm at its edges at 1.5 m without its distortion model. Undoing
distortion is an iterative solve per pixel, so it is done once per camera: ``rays(k)``
gives, for every pixel, the ray's direction (x/z, y/z), cached for the intrinsics.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from capture._lens_kernels import distort, ray_table, register_color
from capture.types import DISTORTION_MODELS, Intrinsics


def _model(k: Intrinsics) -> int:
    return DISTORTION_MODELS.index(k.distortion_model)


@lru_cache(maxsize=16)
def _rays(k: Intrinsics) -> np.ndarray:
    out = np.empty((k.height, k.width, 2), np.float32)
    ray_table(k.width, k.height, k.fx, k.fy, k.cx, k.cy, k.coefficients, _model(k), k.max_radius, out)
    out.flags.writeable = False
    return out


def rays(k: Intrinsics) -> np.ndarray:
    """(H, W, 2) float32: the ray through each pixel as (x/z, y/z); NaN where the lens
    model has none (outside its valid radius). Read-only and shared: computed once per
    camera."""
    return _rays(k)


def project(points: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Camera-frame points (N, 3) -> distorted pixel coordinates (N, 2); NaN behind the camera."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    out = np.full((len(p), 2), np.nan)
    c, m = k.coefficients, _model(k)
    for i, (x, y, z) in enumerate(p):
        if z > 1e-9:
            xd, yd = distort(x / z, y / z, c, m)
            out[i] = xd * k.fx + k.cx, yd * k.fy + k.cy
    return out


def register(depth: np.ndarray, depth_scale: float, depth_k: Intrinsics, image: np.ndarray, color_k: Intrinsics,
             depth_to_color: np.ndarray, occlusion: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Colour for each depth pixel, seen through the colour camera's own lens.

    Returns (colour uint8 (H, W, 3) the size of depth, depth uint16 with 0 wherever the
    colour camera does not see the point), a registered pair for ``RGBDFrame``. Points the
    colour camera cannot see because something nearer hides them (more than ``occlusion``
    metres behind; 0 = do not check) are dropped rather than painted with the colour of
    what hides them.
    """
    if depth.shape != (depth_k.height, depth_k.width) or depth.dtype != np.uint16:
        raise ValueError(f"depth must be uint16 {depth_k.width}x{depth_k.height}, got {depth.dtype} {depth.shape}")
    if image.shape != (color_k.height, color_k.width, 3) or image.dtype != np.uint8:
        raise ValueError(f"colour must be uint8 {color_k.width}x{color_k.height}x3, got {image.dtype} {image.shape}")
    t = np.asarray(depth_to_color, np.float64)
    if t.shape != (4, 4):
        raise ValueError(f"depth_to_color must be 4x4, got {t.shape}")
    # depth points land about fx_colour / fx_depth colour pixels apart: cells half as wide
    # again have no gaps, so a hidden point always finds the nearer one in its cell
    cell = max(2, math.ceil(1.5 * color_k.fx / depth_k.fx))
    out_color = np.empty((*depth.shape, 3), np.uint8)
    out_depth = np.empty_like(depth)
    register_color(depth, float(depth_scale), rays(depth_k), np.ascontiguousarray(t[:3, :3]),
                   np.ascontiguousarray(t[:3, 3]), np.ascontiguousarray(image), color_k.fx, color_k.fy, color_k.cx,
                   color_k.cy, color_k.coefficients, _model(color_k), color_k.max_radius, float(occlusion), cell,
                   out_color, out_depth)
    return out_color, out_depth
