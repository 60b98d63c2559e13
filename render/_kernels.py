"""numba kernels of the renderer: the analytic room (splatting is in ``_splat_kernels``)."""

from __future__ import annotations

import math

from numba import njit

BACKGROUND_ID = -2
ROOM_ID = -1


@njit(cache=True, nogil=True, inline="always")
def _vertical_cylinder(ox, oz, dx, dz, r):
    """Nearest positive ray parameter to the infinite cylinder x^2 + z^2 = r^2, or -1."""
    a = dx * dx + dz * dz
    if a < 1e-12:
        return -1.0
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - r * r
    h = b * b - a * c
    if h < 0.0:
        return -1.0
    t = (-b - math.sqrt(h)) / a
    if t > 0.0:
        return t
    t = (-b + math.sqrt(h)) / a
    return t if t > 0.0 else -1.0


@njit(cache=True, nogil=True)
def draw_room(cam_to_world, fx, fy, cx, cy, table_radius, table_height, seats_xz, image, depth,
              ids):
    """Fill the buffers with the room: backdrop, chequered floor with seat marks, the table.

    Rays are built with camera-space z = 1, so the ray parameter is the depth itself.
    """
    h, w = depth.shape
    ox, oy, oz = cam_to_world[0, 3], cam_to_world[1, 3], cam_to_world[2, 3]
    for v in range(h):
        yc = (v - cy) / fy
        for u in range(w):
            xc = (u - cx) / fx
            dx = cam_to_world[0, 0] * xc + cam_to_world[0, 1] * yc + cam_to_world[0, 2]
            dy = cam_to_world[1, 0] * xc + cam_to_world[1, 1] * yc + cam_to_world[1, 2]
            dz = cam_to_world[2, 0] * xc + cam_to_world[2, 1] * yc + cam_to_world[2, 2]
            best = math.inf
            r, g, b = 0.0, 0.0, 0.0
            # floor
            if dy < -1e-9:
                t = -oy / dy
                if t > 0.0:
                    best = t
                    px, pz = ox + t * dx, oz + t * dz
                    check = (int(math.floor(px)) + int(math.floor(pz))) % 2
                    base = 92.0 if check else 104.0
                    r, g, b = base, base * 0.97, base * 0.92
                    for s in range(seats_xz.shape[0]):
                        ex, ez = px - seats_xz[s, 0], pz - seats_xz[s, 1]
                        d2 = ex * ex + ez * ez
                        if 0.30 * 0.30 < d2 < 0.36 * 0.36:
                            r, g, b = 70.0, 130.0, 190.0
            # table top, its edge and its pedestal
            if abs(dy) > 1e-9:
                t = (table_height - oy) / dy
                if 0.0 < t < best:
                    px, pz = ox + t * dx, oz + t * dz
                    rr = px * px + pz * pz
                    if rr <= table_radius * table_radius:
                        best = t
                        ring = 0.95 + 0.05 * math.cos(math.sqrt(rr) * 40.0)
                        r, g, b = 150.0 * ring, 105.0 * ring, 65.0 * ring
            t = _vertical_cylinder(ox, oz, dx, dz, table_radius)
            if 0.0 < t < best and table_height - 0.04 <= oy + t * dy <= table_height:
                best = t
                r, g, b = 110.0, 75.0, 45.0
            t = _vertical_cylinder(ox, oz, dx, dz, 0.07)
            if 0.0 < t < best and 0.0 <= oy + t * dy <= table_height:
                best = t
                r, g, b = 60.0, 60.0, 66.0
            if best < math.inf:
                # a little distance fog so that depth reads on a flat image
                fog = min(1.0, best / 12.0)
                image[v, u, 0] = r * (1 - fog) + 40.0 * fog
                image[v, u, 1] = g * (1 - fog) + 44.0 * fog
                image[v, u, 2] = b * (1 - fog) + 52.0 * fog
                depth[v, u] = best
                ids[v, u] = ROOM_ID
            else:  # backdrop: a soft vertical gradient
                k = 0.5 + 0.5 * max(-1.0, min(1.0, dy / math.sqrt(dx * dx + dy * dy + dz * dz)))
                image[v, u, 0] = 28.0 + 30.0 * k
                image[v, u, 1] = 32.0 + 36.0 * k
                image[v, u, 2] = 44.0 + 60.0 * k
                depth[v, u] = math.inf
                ids[v, u] = BACKGROUND_ID
