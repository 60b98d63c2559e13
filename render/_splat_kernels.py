"""numba kernels of the splat renderer: one packed 64-bit z-buffer, filled by both cores.

A pixel of the buffer is one uint64: its depth in fixed point (1/65536 m, up to 65 km;
all ones = nothing there) in the high 32 bits, then a cloud code (8 bits: the cloud's index, or
ROOM_CODE / BACKGROUND_CODE) and the RGB colour (24 bits). The nearest point wins by a
plain integer min, so depth, colour and owner always travel together.

Each thread splats its share of the points into a buffer of its own and the buffers are
merged by a pixelwise min; one pass then closes cracks, unpacks and softens edges.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

ROOM_CODE = 254
BACKGROUND_CODE = 255
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)  # a point that was not drawn


DEPTH_UNITS = 65536.0  # per metre
FAR = 0xFFFFFFFF  # the depth field of "nothing there"


@njit(cache=True, nogil=True, inline="always")
def _depth_field(z):
    q = z * DEPTH_UNITS
    return np.uint64(q) if q < FAR else np.uint64(FAR)


@njit(cache=True, nogil=True, inline="always")
def pack(z, code, r, g, b):
    return (_depth_field(z) << np.uint64(32)) | (np.uint64(code) << np.uint64(24)) | (
        np.uint64(r) << np.uint64(16)) | (np.uint64(g) << np.uint64(8)) | np.uint64(b)


@njit(cache=True, nogil=True, parallel=True)
def pack_layer(image, depth, codes, out):
    """The room layer (image, depth, per-pixel code) as packed keys."""
    h, w = depth.shape
    for v in prange(h):
        for u in range(w):
            out[v, u] = pack(depth[v, u], codes[v, u], image[v, u, 0], image[v, u, 1], image[v, u, 2])


@njit(cache=True, nogil=True, parallel=True)
def splat_cloud(positions, colors, m, fx, fy, cx, cy, near, size_m, fixed_side, code, bufs):
    """Project and splat one cloud. Thread t takes the t-th slice of the points and mins
    their keys into its own buffer ``bufs[t]`` (``merge`` joins them), so no two threads
    ever write one pixel: numba has no atomic min on the CPU.

    ``fixed_side`` > 0 gives every splat that many pixels a side; otherwise a splat covers
    ``size_m`` metres at the point's depth (at least one pixel). Returns the points drawn.
    """
    n_threads, h, w = bufs.shape
    n = positions.shape[0]
    drawn = np.zeros(n_threads, np.int64)
    for t in prange(n_threads):
        buf = bufs[t]
        count = 0
        for i in range(n * t // n_threads, n * (t + 1) // n_threads):
            px, py, pz = positions[i, 0], positions[i, 1], positions[i, 2]
            z = m[2, 0] * px + m[2, 1] * py + m[2, 2] * pz + m[2, 3]
            if not z >= near:  # also NaN
                continue
            x = m[0, 0] * px + m[0, 1] * py + m[0, 2] * pz + m[0, 3]
            y = m[1, 0] * px + m[1, 1] * py + m[1, 2] * pz + m[1, 3]
            uf = fx * x / z + cx
            vf = fy * y / z + cy
            if not (uf >= -0.5 and vf >= -0.5 and uf < w - 0.5 and vf < h - 0.5):
                continue
            side = fixed_side if fixed_side > 0 else max(1, min(64, int(size_m * fx / z + 0.5)))
            back = 0.5 * (side - 1) - 64.5  # int() truncates; the offset keeps it a floor
            u0 = int(uf - back) - 64
            v0 = int(vf - back) - 64
            key = pack(z, code, colors[i, 0], colors[i, 1], colors[i, 2])
            count += 1
            for v in range(max(0, v0), min(h, v0 + side)):
                for u in range(max(0, u0), min(w, u0 + side)):
                    if key < buf[v, u]:
                        buf[v, u] = key
        drawn[t] = count
    return drawn.sum()


@njit(cache=True, nogil=True, parallel=True)
def merge(bufs):
    """bufs[0] = the pixelwise min of all threads' buffers."""
    n_threads, h, w = bufs.shape
    for v in prange(h):
        for t in range(1, n_threads):
            for u in range(w):
                if bufs[t, v, u] < bufs[0, v, u]:
                    bufs[0, v, u] = bufs[t, v, u]


@njit(cache=True, nogil=True, inline="always")
def _is_cloud(key):
    return ((key >> np.uint64(24)) & np.uint64(0xFF)) < np.uint64(ROOM_CODE)


@njit(cache=True, nogil=True, inline="always")
def _filled(zbuf, v, u):
    """The pixel's key, or, where it is not a cloud's and cloud points nearer than it lie on
    two opposite sides (left-right, up-down or a diagonal), the nearer of those: splats
    sized from the point spacing leave such one-pixel cracks where sampling is uneven,
    while wider gaps (real silhouettes) stay open."""
    own = zbuf[v, u]
    if _is_cloud(own):
        return own
    best = own
    for k in range(4):
        if k == 0:
            a, b = zbuf[v, u - 1], zbuf[v, u + 1]
        elif k == 1:
            a, b = zbuf[v - 1, u], zbuf[v + 1, u]
        elif k == 2:
            a, b = zbuf[v - 1, u - 1], zbuf[v + 1, u + 1]
        else:
            a, b = zbuf[v - 1, u + 1], zbuf[v + 1, u - 1]
        if _is_cloud(a) and _is_cloud(b):
            best = min(best, min(a, b))
    return best


@njit(cache=True, nogil=True, parallel=True)
def finish(zbuf, layer, fill_holes, soft_edges, image, depth, ids):
    """Unpack the buffer into the image, the depth (inf where nothing) and the owner ids
    (cloud index, -1 room, -2 background), closing cracks on the way (``fill_holes``).

    With ``soft_edges``, a cloud pixel beside a pixel that is not of a cloud is blended
    half-and-half with the room behind it, which takes the stair-steps off silhouettes.
    """
    h, w = zbuf.shape
    for v in prange(h):
        for u in range(w):
            inner = 0 < v < h - 1 and 0 < u < w - 1
            key = _filled(zbuf, v, u) if fill_holes and inner else zbuf[v, u]
            code = (key >> np.uint64(24)) & np.uint64(0xFF)
            field = key >> np.uint64(32)
            depth[v, u] = np.inf if field == np.uint64(FAR) else np.float32(np.float64(field) / DEPTH_UNITS)
            r = np.int64((key >> np.uint64(16)) & np.uint64(0xFF))
            g = np.int64((key >> np.uint64(8)) & np.uint64(0xFF))
            b = np.int64(key & np.uint64(0xFF))
            if code < ROOM_CODE:
                ids[v, u] = np.int16(code)
                if soft_edges and inner and not (_is_cloud(zbuf[v, u - 1]) and _is_cloud(zbuf[v, u + 1])
                                                 and _is_cloud(zbuf[v - 1, u]) and _is_cloud(zbuf[v + 1, u])):
                    back = layer[v, u]
                    r = (r + np.int64((back >> np.uint64(16)) & np.uint64(0xFF)) + 1) // 2
                    g = (g + np.int64((back >> np.uint64(8)) & np.uint64(0xFF)) + 1) // 2
                    b = (b + np.int64(back & np.uint64(0xFF)) + 1) // 2
            elif code == ROOM_CODE:
                ids[v, u] = -1
            else:
                ids[v, u] = -2
            image[v, u, 0] = r
            image[v, u, 1] = g
            image[v, u, 2] = b
