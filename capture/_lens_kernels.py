"""numba kernels for lens models: distortion, the per-pixel ray table, colour registration.

The coefficient vector ``c`` is OpenCV's order, zero-padded to 8: k1 k2 p1 p2 k3 k4 k5 k6.
``model`` 0 = Brown-Conrady as OpenCV writes it (rational radial term, tangential terms
2·p1·x·y and p2·(r² + 2x²)); 1 = the Azure Kinect's Rational 6KT (tangential terms without
the factor 2). Points are on the normalised z = 1 plane.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

NEWTON_STEPS = 20
NEWTON_TOL = 1e-12  # squared residual on the z = 1 plane, about 1e-6 px


@njit(cache=True, nogil=True)
def distort(x, y, c, model):
    """Undistorted (x, y) on the z = 1 plane -> distorted (x, y)."""
    r2 = x * x + y * y
    r4 = r2 * r2
    r6 = r4 * r2
    a = 1.0 + c[0] * r2 + c[1] * r4 + c[4] * r6
    b = 1.0 + c[5] * r2 + c[6] * r4 + c[7] * r6
    d = a / b if b != 0.0 else a
    xy = x * y
    tx = 2.0 * xy if model == 0 else xy
    xd = x * d + c[2] * tx + c[3] * (r2 + 2.0 * x * x)
    yd = y * d + c[2] * (r2 + 2.0 * y * y) + c[3] * tx
    return xd, yd


@njit(cache=True, nogil=True)
def undistort(xd, yd, c, model):
    """Distorted (x, y) -> undistorted, by Gauss-Newton on ``distort`` (numeric Jacobian).

    Returns (x, y, ok); ``ok`` is False where it did not converge, which is where the model
    folds back on itself beyond the lens's field of view.
    """
    x, y = xd, yd
    h = 1e-7
    for _ in range(NEWTON_STEPS):
        fx, fy = distort(x, y, c, model)
        ex, ey = fx - xd, fy - yd
        if ex * ex + ey * ey < NEWTON_TOL:
            return x, y, True
        ax, ay = distort(x + h, y, c, model)
        bx, by = distort(x, y + h, c, model)
        j00, j10 = (ax - fx) / h, (ay - fy) / h
        j01, j11 = (bx - fx) / h, (by - fy) / h
        det = j00 * j11 - j01 * j10
        if det == 0.0 or not np.isfinite(det):
            return x, y, False
        x -= (j11 * ex - j01 * ey) / det
        y -= (-j10 * ex + j00 * ey) / det
    fx, fy = distort(x, y, c, model)
    ex, ey = fx - xd, fy - yd
    return x, y, ex * ex + ey * ey < NEWTON_TOL


@njit(cache=True, nogil=True)
def ray_table(width, height, fx, fy, cx, cy, c, model, max_radius, out):
    """out[v, u] = (x/z, y/z) of the ray through pixel (u, v); NaN where there is none.

    A pixel has no ray when undistortion fails or lands beyond ``max_radius`` (> 0), the
    radius inside which the calibration is valid.
    """
    pinhole = True
    for i in range(8):
        if c[i] != 0.0:
            pinhole = False
    for v in range(height):
        for u in range(width):
            xd = (u - cx) / fx
            yd = (v - cy) / fy
            if pinhole:
                x, y, ok = xd, yd, True
            else:
                x, y, ok = undistort(xd, yd, c, model)
            if ok and max_radius > 0.0 and x * x + y * y > max_radius * max_radius:
                ok = False
            if ok and not pinhole:
                # a fold of the model can map a far ray onto this pixel: keep only rays whose
                # distortion is still monotonic (radius grows with the undistorted radius)
                x2, y2 = distort(x * 1.001, y * 1.001, c, model)
                if (x2 - xd) * xd + (y2 - yd) * yd < 0.0:
                    ok = False
            if ok:
                out[v, u, 0] = x
                out[v, u, 1] = y
            else:
                out[v, u, 0] = np.nan
                out[v, u, 1] = np.nan


@njit(cache=True, nogil=True)
def _to_color(depth, depth_scale, rays, rotation, translation, v, u):
    """Depth pixel (u, v) -> (x, y, z) in the colour camera's frame; z <= 0 when there is none."""
    d = depth[v, u]
    rx = rays[v, u, 0]
    if d == 0 or rx != rx:
        return 0.0, 0.0, -1.0
    z = d * depth_scale
    px, py = rx * z, rays[v, u, 1] * z
    qx = rotation[0, 0] * px + rotation[0, 1] * py + rotation[0, 2] * z + translation[0]
    qy = rotation[1, 0] * px + rotation[1, 1] * py + rotation[1, 2] * z + translation[1]
    qz = rotation[2, 0] * px + rotation[2, 1] * py + rotation[2, 2] * z + translation[2]
    return qx, qy, qz


@njit(cache=True, nogil=True)
def _to_pixel(qx, qy, qz, fx, fy, cx, cy, c, model, max_radius, iw, ih):
    """A colour-camera point -> its (u, v) in the colour image; (-1, -1) when it is not seen."""
    if qz <= 1e-6:
        return -1.0, -1.0
    x, y = qx / qz, qy / qz
    if max_radius > 0.0 and x * x + y * y > max_radius * max_radius:
        return -1.0, -1.0
    xd, yd = distort(x, y, c, model)
    fu = xd * fx + cx
    fv = yd * fy + cy
    if fu >= -0.5 and fv >= -0.5 and fu <= iw - 0.5 and fv <= ih - 0.5:  # inside a pixel of the image
        return min(max(fu, 0.0), iw - 1.0), min(max(fv, 0.0), ih - 1.0)
    return -1.0, -1.0


@njit(cache=True, nogil=True, parallel=True)
def register_color(depth, depth_scale, rays, rotation, translation, image, fx, fy, cx, cy, c, model,
                   max_radius, occlusion, cell, out_color, out_depth):
    """Colour for every depth pixel: back-project it, move it into the colour camera
    (x_colour = R·x_depth + t), project with the colour lens, sample bilinearly.

    The two cameras sit a few centimetres apart, so the colour camera cannot see some of
    what the depth camera sees (just beside a foreground edge). A z-buffer of the depth
    points in cells of ``cell`` colour pixels (wide enough that neighbouring depth points
    leave no gaps in it) finds them: a point more than
    ``occlusion`` metres (plus 1 % of its depth) behind the nearest point in its cell is
    hidden. ``out_depth`` is ``depth`` with 0 wherever the colour camera does not see the
    point (hidden, out of its image, or no ray), so every kept depth pixel has a colour.
    """
    h, w = depth.shape
    ih, iw = image.shape[0], image.shape[1]
    where = np.empty((h, w, 3), np.float32)  # (u, v) in the colour image, depth there; u < 0: unseen
    for v in prange(h):
        for u in range(w):
            qx, qy, qz = _to_color(depth, depth_scale, rays, rotation, translation, v, u)
            fu, fv = _to_pixel(qx, qy, qz, fx, fy, cx, cy, c, model, max_radius, iw, ih)
            where[v, u, 0] = fu
            where[v, u, 1] = fv
            where[v, u, 2] = qz
    zbuf = np.full(((ih + cell - 1) // cell, (iw + cell - 1) // cell), np.inf, np.float32)
    if occlusion > 0.0:
        for v in range(h):
            for u in range(w):
                if where[v, u, 0] >= 0.0:
                    zu, zv = int(where[v, u, 0] + 0.5) // cell, int(where[v, u, 1] + 0.5) // cell
                    if where[v, u, 2] < zbuf[zv, zu]:
                        zbuf[zv, zu] = where[v, u, 2]
    for v in prange(h):
        for u in range(w):
            fu, fv, qz = where[v, u, 0], where[v, u, 1], where[v, u, 2]
            seen = fu >= 0.0
            if seen and occlusion > 0.0:
                seen = qz <= zbuf[int(fv + 0.5) // cell, int(fu + 0.5) // cell] + occlusion + 0.01 * qz
            if not seen:
                out_depth[v, u] = 0
                out_color[v, u, 0] = 0
                out_color[v, u, 1] = 0
                out_color[v, u, 2] = 0
                continue
            u0 = min(int(fu), iw - 2)
            v0 = min(int(fv), ih - 2)
            au = fu - u0
            av = fv - v0
            for k in range(3):
                top = image[v0, u0, k] * (1.0 - au) + image[v0, u0 + 1, k] * au
                bottom = image[v0 + 1, u0, k] * (1.0 - au) + image[v0 + 1, u0 + 1, k] * au
                out_color[v, u, k] = np.uint8(min(255.0, top * (1.0 - av) + bottom * av + 0.5))
            out_depth[v, u] = depth[v, u]
