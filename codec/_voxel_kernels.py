"""numba kernels of the octree codec's first stage, voxelization: points -> sorted cells.

Morton codes (x, y, z interleaved, x most significant; spread by table), LSD radix sorts,
and ``voxelize``: the cells of a ``2**depth`` grid that hold points, as sorted unique
Morton codes with the rounded mean colour of each cell's points. A large cloud is keyed in
halves, one per core (``packed_keys``), and merged (``merge_cells``); ``split_cells`` cuts
it for slices. A coarser level's nodes are the leaves' codes shifted right by three bits a
level (``unique_shift``, ``prefixes``). The neighbourhoods (``_neighbour_kernels``) and the
occupancy coder (``_occupancy_kernels``) work on these codes.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _compact(v):
    v = v & 0x1249249249249249
    v = (v | (v >> 2)) & 0x10C30C30C30C30C3
    v = (v | (v >> 4)) & 0x100F00F00F00F00F
    v = (v | (v >> 8)) & 0x1F0000FF0000FF
    v = (v | (v >> 16)) & 0x1F00000000FFFF
    v = (v | (v >> 32)) & 0x1FFFFF
    return v


#: byte -> its bits spread three apart: Morton codes by table, twice as fast as by shifts
_SPREAD8 = np.array([sum(((v >> b) & 1) << (3 * b) for b in range(8)) for v in range(256)], np.int64)


@njit(cache=True, nogil=True, inline="always")
def _spread16(v):
    return _SPREAD8[v & 255] | (_SPREAD8[(v >> 8) & 255] << 24)


@njit(cache=True, nogil=True, inline="always")
def morton(x, y, z):
    """Morton code of cell (x, y, z), each coordinate below 2**16 (MAX_DEPTH)."""
    return (_spread16(x) << 2) | (_spread16(y) << 1) | _spread16(z)


@njit(cache=True, nogil=True)
def morton_decode(codes):
    out = np.empty((codes.shape[0], 3), np.int64)
    for i in range(codes.shape[0]):
        c = codes[i]
        out[i, 0] = _compact(c >> 2)
        out[i, 1] = _compact(c >> 1)
        out[i, 2] = _compact(c)
    return out


@njit(cache=True, nogil=True)
def cell_centres(codes, origin, cell):
    """float32 (n, 3) centres of the cells with these Morton codes (metres)."""
    out = np.empty((codes.shape[0], 3), np.float32)
    for i in range(codes.shape[0]):
        c = codes[i]
        out[i, 0] = (np.float64(_compact(c >> 2)) + 0.5) * cell + origin[0]
        out[i, 1] = (np.float64(_compact(c >> 1)) + 0.5) * cell + origin[1]
        out[i, 2] = (np.float64(_compact(c)) + 0.5) * cell + origin[2]
    return out


@njit(cache=True, nogil=True)
def radix_argsort(keys, bits):
    """Stable argsort of non-negative keys below 2**bits: LSD radix with as few passes of
    at most 14 bits as cover the keys (two for grids up to 512 cells a side)."""
    n = keys.shape[0]
    passes = max(1, (bits + 13) // 14)
    digit = (bits + passes - 1) // passes
    mask = (1 << digit) - 1
    order = np.arange(n)
    tmp = np.empty(n, np.int64)
    counts = np.empty((1 << digit) + 1, np.int64)
    for p in range(passes):
        shift = p * digit
        counts[:] = 0
        for i in range(n):
            counts[((keys[i] >> shift) & mask) + 1] += 1
        for d in range(1 << digit):
            counts[d + 1] += counts[d]
        for i in range(n):
            j = order[i]
            d = (keys[j] >> shift) & mask
            tmp[counts[d]] = j
            counts[d] += 1
        order, tmp = tmp, order
    return order


@njit(cache=True, nogil=True)
def radix_sort(keys, lo, bits):
    """``keys`` sorted by their bits ``lo`` .. ``lo + bits`` (stable LSD radix, passes of at
    most 14 bits); used on (Morton code, point index) packed into one integer, so every pass
    moves the keys themselves instead of chasing an index array."""
    n = keys.shape[0]
    passes = max(1, (bits + 13) // 14)
    digit = (bits + passes - 1) // passes
    mask = (1 << digit) - 1
    src = keys.copy()
    dst = np.empty(n, np.int64)
    counts = np.empty((1 << digit) + 1, np.int64)
    for p in range(passes):
        shift = lo + p * digit
        counts[:] = 0
        for i in range(n):
            counts[((src[i] >> shift) & mask) + 1] += 1
        for d in range(1 << digit):
            counts[d + 1] += counts[d]
        for i in range(n):
            k = src[i]
            d = (k >> shift) & mask
            dst[counts[d]] = k
            counts[d] += 1
        src, dst = dst, src
    return src


KEY_BITS = 62  # (Morton code, point index) share one int64 key when they fit in this many


def index_bits(n: int) -> int:
    """Bits that number the points of an n-point cloud (at least 1), as ``voxelize``."""
    return max(1, (int(n) - 1).bit_length())


@njit(cache=True, nogil=True, inline="always")
def _cell_of(positions, i, origin, cell, side):
    """Morton code of point i's cell, or -1 outside the volume (and for NaN)."""
    x = (positions[i, 0] - origin[0]) / cell
    y = (positions[i, 1] - origin[1]) / cell
    z = (positions[i, 2] - origin[2]) / cell
    if 0.0 <= x < side and 0.0 <= y < side and 0.0 <= z < side:  # then truncation = floor
        return morton(np.int64(x), np.int64(y), np.int64(z))
    return -1


@njit(cache=True, nogil=True)
def packed_keys(positions, origin, cell, depth, ibits, lo, hi):
    """Sorted ``code << ibits | index`` of the points ``lo``..``hi`` inside the volume: one
    half of the cloud per core, merged by ``merge_cells``."""
    keys = np.empty(hi - lo, np.int64)
    m = 0
    for i in range(lo, hi):
        c = _cell_of(positions, i, origin, cell, 1 << depth)
        if c >= 0:
            keys[m] = (c << ibits) | i
            m += 1
    return radix_sort(keys[:m], ibits, 3 * depth)


@njit(cache=True, nogil=True)
def mean_runs(codes, sources, colors):
    """Per run of equal ``codes`` (sorted): the code and the rounded mean colour of its
    points ``colors[sources]``."""
    m = codes.shape[0]
    uniq = np.empty(m, np.int64)
    mean = np.empty((m, 3), np.uint8)
    u = 0
    j = 0
    while j < m:
        c = codes[j]
        s0 = s1 = s2 = 0
        count = 0
        while j < m and codes[j] == c:
            src = sources[j]
            s0 += colors[src, 0]
            s1 += colors[src, 1]
            s2 += colors[src, 2]
            count += 1
            j += 1
        uniq[u] = c
        half = count // 2
        mean[u, 0] = (s0 + half) // count
        mean[u, 1] = (s1 + half) // count
        mean[u, 2] = (s2 + half) // count
        u += 1
    return uniq[:u], mean[:u]


@njit(cache=True, nogil=True)
def merge_cells(a, b, colors, ibits):
    """``voxelize``'s cells from two sorted arrays of packed keys (a cell's points may lie
    in both), merged and averaged in one pass."""
    na, nb = a.shape[0], b.shape[0]
    uniq = np.empty(na + nb, np.int64)
    mean = np.empty((na + nb, 3), np.uint8)
    imask = (1 << ibits) - 1
    u = -1
    s0 = s1 = s2 = count = 0
    big = np.int64(0x7FFFFFFFFFFFFFFF)  # past either end: larger than every key
    i = j = 0
    for _ in range(na + nb):
        ka = a[i] if i < na else big
        kb = b[j] if j < nb else big
        from_a = np.int64(ka < kb)  # taken without a branch: the halves interleave at random
        k = kb ^ ((ka ^ kb) & -from_a)
        i += from_a
        j += 1 - from_a
        c = k >> ibits
        if u < 0 or uniq[u] != c:
            if u >= 0:
                half = count // 2
                mean[u, 0], mean[u, 1], mean[u, 2] = (s0 + half) // count, (s1 + half) // count, (s2 + half) // count
            u += 1
            uniq[u] = c
            s0 = s1 = s2 = count = 0
        src = k & imask
        s0 += colors[src, 0]
        s1 += colors[src, 1]
        s2 += colors[src, 2]
        count += 1
    if u >= 0:
        half = count // 2
        mean[u, 0], mean[u, 1], mean[u, 2] = (s0 + half) // count, (s1 + half) // count, (s2 + half) // count
    return uniq[: u + 1], mean[: u + 1]


@njit(cache=True, nogil=True)
def split_cells(a, b, ibits):
    """Where to cut two sorted arrays of packed keys so that both cuts fall at the same
    cell boundary and the two sides hold about equal numbers of keys: (ia, ib). The
    halves of a cloud may cover different parts of it, so the cut cell is searched for
    by bisection over cell codes, counting both arrays."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return a.shape[0], b.shape[0]
    half = (a.shape[0] + b.shape[0]) // 2
    lo = min(a[0], b[0]) >> ibits
    hi = max(a[-1], b[-1]) >> ibits  # the smallest cell with at least half below or at it
    while lo < hi:
        mid = (lo + hi) >> 1
        key = (mid + 1) << ibits  # the first key past cell mid
        if np.searchsorted(a, key) + np.searchsorted(b, key) < half:
            lo = mid + 1
        else:
            hi = mid
    key = lo << ibits  # cut below that cell, or just above it, whichever is nearer half
    ia, ib = np.searchsorted(a, key), np.searchsorted(b, key)
    ja, jb = np.searchsorted(a, key + (1 << ibits)), np.searchsorted(b, key + (1 << ibits))
    if abs(ja + jb - half) < abs(ia + ib - half):
        return ja, jb
    return ia, ib


@njit(cache=True, nogil=True)
def voxelize(positions, colors, origin, cell, depth):
    """Grid cells of the points inside the volume: sorted unique Morton codes, the mean
    colour of each cell's points, and how many points fell outside. (One core; the codec
    keys the two halves of a large cloud on both, see ``octree._voxelize``.)"""
    n = positions.shape[0]
    ibits = 1
    while (1 << ibits) < n:
        ibits += 1
    if 3 * depth + ibits <= KEY_BITS:  # (code, index) fit one key: the fast path
        keys = packed_keys(positions, origin, cell, depth, ibits, 0, n)
        uniq, mean = merge_cells(keys, keys[:0], colors, ibits)
        return uniq, mean, n - keys.shape[0]
    codes = np.empty(n, np.int64)  # grids too fine for that: sort an index array
    keep = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        c = _cell_of(positions, i, origin, cell, 1 << depth)
        if c >= 0:
            codes[m] = c
            keep[m] = i
            m += 1
    order = radix_argsort(codes[:m], 3 * depth)
    uniq, mean = mean_runs(codes[order], keep[order], colors)
    return uniq, mean, n - m


@njit(cache=True, nogil=True)
def unique_shift(codes, shift):
    """Sorted unique ``codes >> shift`` of sorted ``codes``."""
    out = np.empty(codes.shape[0], np.int64)
    m = 0
    for i in range(codes.shape[0]):
        c = codes[i] >> shift
        if m == 0 or out[m - 1] != c:
            out[m] = c
            m += 1
    return out[:m]


@njit(cache=True, nogil=True)
def prefixes(codes, shift, limit):
    """The first ``limit`` sorted unique ``codes >> shift`` of sorted ``codes``, found by
    binary search from one to the next: the cost is the number found, not ``len(codes)``,
    which is what planning slices near the top of a large tree needs."""
    out = np.empty(max(0, min(limit, codes.shape[0])), np.int64)
    m, i, n = 0, 0, codes.shape[0]
    while i < n and m < out.shape[0]:
        p = codes[i] >> shift
        out[m] = p
        m += 1
        lo, hi = i + 1, n  # first index whose prefix is larger
        while lo < hi:
            mid = (lo + hi) >> 1
            if (codes[mid] >> shift) <= p:
                lo = mid + 1
            else:
                hi = mid
        i = lo
    return out[:m]
