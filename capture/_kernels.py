"""numba kernels of the capture path: pure functions over arrays, compiled once and cached."""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def backproject_crop(depth, color, rays, depth_scale, z_min, z_max, pose, box_min, box_max, out_pos, out_col):
    """Depth pixels -> points in the participant frame, keeping those inside the crop box.

    ``rays[v, u]`` is the pixel's ray (x/z, y/z) from ``capture.lens.rays``, NaN where the
    lens has none. Writes compacted results into ``out_pos``/``out_col`` (sized H*W) and
    returns the count.
    """
    h, w = depth.shape
    n = 0
    for v in range(h):
        for u in range(w):
            d = depth[v, u]
            if d == 0:
                continue
            z = d * depth_scale
            if z < z_min or z > z_max:
                continue
            rx = rays[v, u, 0]
            if rx != rx:
                continue
            xc = rx * z
            yc = rays[v, u, 1] * z
            px = pose[0, 0] * xc + pose[0, 1] * yc + pose[0, 2] * z + pose[0, 3]
            py = pose[1, 0] * xc + pose[1, 1] * yc + pose[1, 2] * z + pose[1, 3]
            pz = pose[2, 0] * xc + pose[2, 1] * yc + pose[2, 2] * z + pose[2, 3]
            if px < box_min[0] or px > box_max[0]:
                continue
            if py < box_min[1] or py > box_max[1]:
                continue
            if pz < box_min[2] or pz > box_max[2]:
                continue
            out_pos[n, 0] = px
            out_pos[n, 1] = py
            out_pos[n, 2] = pz
            out_col[n, 0] = color[v, u, 0]
            out_col[n, 1] = color[v, u, 1]
            out_col[n, 2] = color[v, u, 2]
            n += 1
    return n
