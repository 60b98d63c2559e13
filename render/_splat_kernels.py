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
    # through int64: a float -> uint64 conversion takes x86 several instructions
    return np.uint64(np.int64(q)) if q < FAR else np.uint64(FAR)


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
def splat_clouds(positions, colors, transforms, sizes, codes, fx, fy, cx, cy, near, fixed_side, bufs):
    """Project and splat several clouds (tuples of positions and colours; per cloud a
    camera-from-cloud 4x4, a point size in metres and an owner code) in one parallel
    launch. Thread t takes the t-th slice of every cloud's points and mins their keys into
    its own buffer ``bufs[t]`` (``merge`` joins them), so no two threads ever write one
    pixel: numba has no atomic min on the CPU.

    ``fixed_side`` > 0 gives every splat that many pixels a side; otherwise a splat covers
    its cloud's size in metres at the point's depth (at least one pixel). Returns the
    points drawn and the points left out for a NaN or infinite coordinate.
    """
    n_threads = bufs.shape[0]
    drawn = np.zeros(n_threads, np.int64)
    nonfinite = np.zeros(n_threads, np.int64)
    for t in prange(n_threads):
        for j in range(len(positions)):
            n = positions[j].shape[0]  # (a tuple of arrays: one compiled loop for its length)
            d, bad = splat_range(positions[j], colors[j], n * t // n_threads, n * (t + 1) // n_threads,
                                 transforms[j], fx, fy, cx, cy, near, sizes[j], fixed_side, codes[j], bufs[t])
            drawn[t] += d
            nonfinite[t] += bad
    return drawn.sum(), nonfinite.sum()


@njit(cache=True, nogil=True)
def splat_range(positions, colors, lo, hi, m, fx, fy, cx, cy, near, size_m, fixed_side, code, buf):
    """``splat_clouds``' work for points ``lo``..``hi`` of one cloud into one buffer. A plain function,
    not the body of a parallel loop: numba compiles that body with the transform's
    entries reloaded at every point and the pixel loops unspecialized, 2x slower.
    One-pixel splats (most points, at the codec's spacing) take a path of their own.

    A NaN or infinite coordinate makes z NaN or infinite (through a finite transform), and
    an infinite z makes u and v NaN, so such points fall out at the depth or the view test
    and are counted there, off the hot path; returns (points drawn, non-finite points)."""
    h, w = buf.shape
    m00, m01, m02, m03 = m[0, 0], m[0, 1], m[0, 2], m[0, 3]
    m10, m11, m12, m13 = m[1, 0], m[1, 1], m[1, 2], m[1, 3]
    m20, m21, m22, m23 = m[2, 0], m[2, 1], m[2, 2], m[2, 3]
    reach = size_m * fx  # a splat's side in pixels, times depth
    # beyond this depth a splat is one pixel: its side rounds to 1 (or is fixed at 1)
    one_pixel = reach / 1.5 if fixed_side == 0 else (0.0 if fixed_side == 1 else np.inf)
    umax, vmax = w - 0.5, h - 0.5
    count = 0
    nonfinite = 0
    for i in range(lo, hi):
        px, py, pz = positions[i, 0], positions[i, 1], positions[i, 2]
        z = m20 * px + m21 * py + m22 * pz + m23
        if not z >= near:  # also NaN
            if not z > -np.inf:  # NaN or -inf: counted off the hot path
                nonfinite += 1
            continue
        inv = 1.0 / z
        uf = fx * (m00 * px + m01 * py + m02 * pz + m03) * inv + cx
        vf = fy * (m10 * px + m11 * py + m12 * pz + m13) * inv + cy
        if not (uf >= -0.5 and vf >= -0.5 and uf < umax and vf < vmax):  # z = inf makes them NaN
            if z == np.inf:
                nonfinite += 1
            continue
        key = pack(z, code, colors[i, 0], colors[i, 1], colors[i, 2])
        count += 1
        if z > one_pixel:  # the pixel the point falls in
            u, v = int(uf + 0.5), int(vf + 0.5)
            if key < buf[v, u]:
                buf[v, u] = key
            continue
        side = fixed_side if fixed_side > 0 else max(1, min(64, int(reach * inv + 0.5)))
        back = 0.5 * (side - 1) - 64.5  # int() truncates; the offset keeps it a floor
        u0 = int(uf - back) - 64
        v0 = int(vf - back) - 64
        u1, v1 = min(w, u0 + side), min(h, v0 + side)
        u0, v0 = max(0, u0), max(0, v0)
        for v in range(v0, v1):
            row = buf[v]
            for u in range(u0, u1):
                if key < row[u]:
                    row[u] = key
    return count, nonfinite


@njit(cache=True, nogil=True, parallel=True)
def reset(bufs, layer, others):
    """Start a frame: the first buffer holds the room; with ``others``, the other threads'
    buffers are emptied too (``merge`` leaves them empty, so only the first frame needs it)."""
    n_threads, h, w = bufs.shape
    for v in prange(h):
        bufs[0, v] = layer[v]
        if others:
            for t in range(1, n_threads):
                bufs[t, v] = EMPTY


@njit(cache=True, nogil=True, parallel=True)
def merge(bufs):
    """bufs[0] = the pixelwise min of all threads' buffers; the others are left empty for
    the next frame."""
    n_threads, h, w = bufs.shape
    for v in prange(h):
        for t in range(1, n_threads):
            for u in range(w):
                key = bufs[t, v, u]
                if key < bufs[0, v, u]:
                    bufs[0, v, u] = key
                bufs[t, v, u] = EMPTY


@njit(cache=True, nogil=True, inline="always")
def _is_cloud(key):
    return ((key >> np.uint64(24)) & np.uint64(0xFF)) < np.uint64(ROOM_CODE)


@njit(cache=True, nogil=True, inline="always")
def _fill(a, b, best):
    """The nearer of ``best`` and the pair a, b when both are cloud keys."""
    if _is_cloud(a) and _is_cloud(b):
        return min(best, min(a, b))
    return best


@njit(cache=True, nogil=True, parallel=True)
def finish(zbuf, layer, fill_holes, soft_edges, mask, image, depth, ids):
    """Unpack the buffer into the image, the depth (inf where nothing) and the owner ids
    (cloud index, -1 room, -2 background), closing cracks on the way (``fill_holes``): a
    pixel that is not a cloud's, with cloud points nearer than it on two opposite sides
    (left-right, up-down or a diagonal), takes the nearer of those. Splats sized from the
    point spacing leave such one-pixel cracks where sampling is uneven, while wider gaps
    (real silhouettes) stay open. A first pass marks the cloud pixels in ``mask`` (bytes,
    the size of the image), so the test costs a few byte loads per pixel.

    With ``soft_edges``, a cloud pixel beside a pixel that is not of a cloud is blended
    half-and-half with the room behind it, which takes the stair-steps off silhouettes.
    """
    h, w = zbuf.shape
    for v in prange(h):
        for u in range(w):
            mask[v, u] = ((zbuf[v, u] >> np.uint64(24)) & np.uint64(0xFF)) < np.uint64(ROOM_CODE)
    for v in prange(h):
        _unpack_row(zbuf, layer, fill_holes, soft_edges, mask, image, depth, ids, v)


@njit(cache=True, nogil=True)
def _unpack_row(zbuf, layer, fill_holes, soft_edges, mask, image, depth, ids, v):
    """``finish``'s second pass over row v (a function of its own: numba compiles the body
    of a parallel loop less tightly, as in ``splat_clouds``)."""
    h, w = zbuf.shape
    inner = 0 < v < h - 1
    fill = np.zeros(w, np.uint8)  # the crack pixels of this row, found with byte operations
    if fill_holes and inner:
        up, mid, down = mask[v - 1], mask[v], mask[v + 1]
        for u in range(1, w - 1):
            fill[u] = (1 - mid[u]) & ((mid[u - 1] & mid[u + 1]) | (up[u] & down[u]) | (up[u - 1] & down[u + 1])
                                      | (up[u + 1] & down[u - 1]))
    for u in range(w):
        key = zbuf[v, u]
        if fill[u]:
            key = _fill(zbuf[v, u - 1], zbuf[v, u + 1], key)
            key = _fill(zbuf[v - 1, u], zbuf[v + 1, u], key)
            key = _fill(zbuf[v - 1, u - 1], zbuf[v + 1, u + 1], key)
            key = _fill(zbuf[v - 1, u + 1], zbuf[v + 1, u - 1], key)
        code = np.int64((key >> np.uint64(24)) & np.uint64(0xFF))
        field = key >> np.uint64(32)
        far = field == np.uint64(FAR)
        depth[v, u] = np.float32(np.inf) if far else np.float32(np.float64(field) * (1.0 / DEPTH_UNITS))
        ids[v, u] = code if code < ROOM_CODE else ROOM_CODE - 1 - code  # room -1, background -2
        r = np.int64((key >> np.uint64(16)) & np.uint64(0xFF))
        g = np.int64((key >> np.uint64(8)) & np.uint64(0xFF))
        b = np.int64(key & np.uint64(0xFF))
        if soft_edges and inner and 0 < u < w - 1 and code < ROOM_CODE and not (
                mask[v, u - 1] & mask[v, u + 1] & mask[v - 1, u] & mask[v + 1, u]):
            back = layer[v, u]
            r = (r + np.int64((back >> np.uint64(16)) & np.uint64(0xFF)) + 1) // 2
            g = (g + np.int64((back >> np.uint64(8)) & np.uint64(0xFF)) + 1) // 2
            b = (b + np.int64(back & np.uint64(0xFF)) + 1) // 2
        image[v, u, 0] = r
        image[v, u, 1] = g
        image[v, u, 2] = b
