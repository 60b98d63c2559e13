"""numba ray caster for the synthetic RGB-D camera: a body of capsules, a floor and a wall."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _capsule_hit(ox, oy, oz, dx, dy, dz, ax, ay, az, bx, by, bz, r):
    """Distance along a unit ray to a capsule (segment a-b, radius r), or -1 (after iq)."""
    bax, bay, baz = bx - ax, by - ay, bz - az
    oax, oay, oaz = ox - ax, oy - ay, oz - az
    baba = bax * bax + bay * bay + baz * baz
    if baba < 1e-12:  # a sphere
        b = dx * oax + dy * oay + dz * oaz
        c = oax * oax + oay * oay + oaz * oaz - r * r
        h = b * b - c
        return -b - math.sqrt(h) if h > 0.0 else -1.0
    bard = bax * dx + bay * dy + baz * dz
    baoa = bax * oax + bay * oay + baz * oaz
    rdoa = dx * oax + dy * oay + dz * oaz
    oaoa = oax * oax + oay * oay + oaz * oaz
    qa = baba - bard * bard
    qb = baba * rdoa - baoa * bard
    qc = baba * oaoa - baoa * baoa - r * r * baba
    h = qb * qb - qa * qc
    if h < 0.0:
        return -1.0
    if qa > 1e-12:
        t = (-qb - math.sqrt(h)) / qa
        y = baoa + t * bard
        if 0.0 < y < baba:
            return t
    else:  # ray parallel to the axis: it meets the nearer cap first
        y = -1.0 if bard > 0.0 else baba + 1.0
    # the caps: spheres at a or b
    if y <= 0.0:
        cx, cy, cz = oax, oay, oaz
    else:
        cx, cy, cz = ox - bx, oy - by, oz - bz
    b = dx * cx + dy * cy + dz * cz
    c = cx * cx + cy * cy + cz * cz - r * r
    h = b * b - c
    return -b - math.sqrt(h) if h > 0.0 else -1.0


@njit(cache=True, nogil=True)
def raycast_scene(caps, cap_colors, cap_stripes, rays, depth_factor, origin, world_to_cam, fx,
                  fy, cx, cy, floor_color, wall_z, wall_color, light, max_range, depth_out,
                  color_out):
    """Render metric depth (along the optical axis, 0 = no return) and shaded colour.

    ``rays`` (H, W, 3) are unit world-space directions of each pixel and ``depth_factor``
    (H, W) turns distance along a ray into depth along the optical axis. Each capsule is
    only tested inside its projected bounding rectangle, which keeps the cost near the
    person's pixel area instead of H*W*K.
    """
    h, w = depth_factor.shape
    tbuf = np.full((h, w), np.inf)
    ibuf = np.full((h, w), -1, dtype=np.int32)
    ox, oy, oz = origin[0], origin[1], origin[2]
    for k in range(caps.shape[0]):
        r = caps[k, 6]
        u_lo, u_hi, v_lo, v_hi = w, -1, h, -1
        z_min = 1e9
        for e in range(2):
            px, py, pz = caps[k, 3 * e], caps[k, 3 * e + 1], caps[k, 3 * e + 2]
            xc = world_to_cam[0, 0] * px + world_to_cam[0, 1] * py + world_to_cam[0, 2] * pz + world_to_cam[0, 3]
            yc = world_to_cam[1, 0] * px + world_to_cam[1, 1] * py + world_to_cam[1, 2] * pz + world_to_cam[1, 3]
            zc = world_to_cam[2, 0] * px + world_to_cam[2, 1] * py + world_to_cam[2, 2] * pz + world_to_cam[2, 3]
            z_min = min(z_min, zc - r)
            if zc > 1e-6:
                u = fx * xc / zc + cx
                v = fy * yc / zc + cy
                u_lo, u_hi = min(u_lo, int(u)), max(u_hi, int(u) + 1)
                v_lo, v_hi = min(v_lo, int(v)), max(v_hi, int(v) + 1)
        if z_min <= 0.05:  # too close to bound in the image: test every pixel
            u_lo, u_hi, v_lo, v_hi = 0, w - 1, 0, h - 1
        else:
            pad_u = int(r * fx / z_min) + 2
            pad_v = int(r * fy / z_min) + 2
            u_lo, u_hi = max(0, u_lo - pad_u), min(w - 1, u_hi + pad_u)
            v_lo, v_hi = max(0, v_lo - pad_v), min(h - 1, v_hi + pad_v)
        for v in range(v_lo, v_hi + 1):
            for u in range(u_lo, u_hi + 1):
                t = _capsule_hit(ox, oy, oz, rays[v, u, 0], rays[v, u, 1], rays[v, u, 2],
                                 caps[k, 0], caps[k, 1], caps[k, 2], caps[k, 3], caps[k, 4],
                                 caps[k, 5], r)
                if 0.0 < t < tbuf[v, u]:
                    tbuf[v, u] = t
                    ibuf[v, u] = k
    for v in range(h):
        for u in range(w):
            dx, dy, dz = rays[v, u, 0], rays[v, u, 1], rays[v, u, 2]
            t = tbuf[v, u]
            k = ibuf[v, u]
            if k >= 0:
                hx, hy, hz = ox + t * dx, oy + t * dy, oz + t * dz
                ax, ay, az = caps[k, 0], caps[k, 1], caps[k, 2]
                bax, bay, baz = caps[k, 3] - ax, caps[k, 4] - ay, caps[k, 5] - az
                baba = bax * bax + bay * bay + baz * baz
                s = 0.0
                if baba > 1e-12:
                    s = min(1.0, max(0.0, ((hx - ax) * bax + (hy - ay) * bay + (hz - az) * baz) / baba))
                nx, ny, nz = hx - ax - s * bax, hy - ay - s * bay, hz - az - s * baz
                nn = math.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
                lam = max(0.0, (nx * light[0] + ny * light[1] + nz * light[2]) / nn)
                shade = 0.35 + 0.65 * lam
                if cap_stripes[k] and int(math.floor(hy * 22.0)) % 2 == 0:
                    shade *= 0.72
                for c in range(3):
                    color_out[v, u, c] = min(255.0, cap_colors[k, c] * shade)
            else:
                t = np.inf
                if dy < -1e-9:  # floor y = 0
                    tf = -oy / dy
                    if tf < t:
                        t = tf
                        fx_, fz_ = ox + t * dx, oz + t * dz
                        check = (int(math.floor(fx_ * 2.0)) + int(math.floor(fz_ * 2.0))) % 2
                        for c in range(3):
                            color_out[v, u, c] = floor_color[c] * (0.85 if check else 1.0)
                if dz < -1e-9:  # back wall z = wall_z
                    tw = (wall_z - oz) / dz
                    if tw < t:
                        t = tw
                        for c in range(3):
                            color_out[v, u, c] = wall_color[c]
                if t == np.inf:
                    for c in range(3):
                        color_out[v, u, c] = 0
            d = t * depth_factor[v, u]
            depth_out[v, u] = d if d <= max_range else 0.0
