"""numba kernels of the octree geometry coder: Morton codes, voxel merging, occupancy coding.

Breadth-first: level by level, each occupied node's 8-bit child occupancy is coded bit by
bit with the adaptive binary range coder of ``_entropy``. The context of child bit i:
- which of the 7 parent-level neighbours that touch child i (3 faces, 3 edges, 1 corner)
  are occupied (the whole parent level is known to the decoder): 7 bits;
- which already-coded child-level neighbours in -x, -y, -z are occupied: 3 bits, and how
  many of the 4 causal edge/corner neighbours are (0..4). Every neighbour in
  {-1, 0}^3 has a smaller Morton code, so it is either an earlier sibling or a child of an
  earlier parent whose occupancy byte is already known: no child-level look-ups needed;
- how many siblings are occupied so far (0, 1, 2+) and whether any of the parent's faces
  opposite child i is occupied.
These choices were measured on the MVUB frames (ideal code length, see docs/codec.md).
Bit 7 is not coded when bits 0-6 are all zero (a node has at least one child).
Child index i = (x << 2) | (y << 1) | z, matching the Morton interleave (x most significant).

Speed comes from doing per node what does not depend on the bit being decoded: the
context is linear in its parts (``a*240 + k*30 + ke*6 + siblings*2 + far``), so a node's
neighbours give each child a base once (``_bases``) and the siblings coded so far add a
table entry (``_SIBCTX``); the decoder's bit-to-bit dependency is one load and one add.
Neighbourhoods are bit masks: a parent's 4x4x4 child-level window (``_WIN64``) gives every
child's 26-neighbour mask with a few shifts, and only the levels that go further keep all
26 neighbour indices.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._entropy import BYTES_PER_BIT, dec_bit, dec_start, enc_bit, enc_finish, enc_start, reserve

N_CONTEXTS = 128 * 8 * 5 * 3 * 2


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


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int64)


@njit(cache=True, nogil=True)
def root_neighbours(nodes, level):
    """26-neighbourhoods of the sorted ``nodes`` of ``level`` by binary search: used once,
    where a subtree starts (a few nodes), before ``child_neighbours`` takes over."""
    n = nodes.shape[0]
    out = np.full((n, 27), -1, np.int32)
    side = 1 << level
    for i in range(n):
        x, y, z = _compact(nodes[i] >> 2), _compact(nodes[i] >> 1), _compact(nodes[i])
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    j = (dx + 1) * 9 + (dy + 1) * 3 + dz + 1
                    qx, qy, qz = x + dx, y + dy, z + dz
                    if j == 13 or min(qx, qy, qz) < 0 or max(qx, qy, qz) >= side:
                        continue
                    q = morton(qx, qy, qz)
                    k = np.searchsorted(nodes, q)
                    if k < n and nodes[k] == q:
                        out[i, j] = k
    return out


def _slot(dx, dy, dz):
    return (dx + 1) * 9 + (dy + 1) * 3 + dz + 1


def _tables():
    """Per child index i, which bits of a node's masks and windows its context reads."""
    touch = np.empty((8, 7), np.int64)
    farmask = np.empty(8, np.int64)
    causal = np.empty((8, 7), np.int64)  # cell bit of each causal neighbour in the window
    isface = np.empty((8, 7), np.int64)  # face weight (1, 2, 4) or 0 for edge/corner
    for i in range(8):
        c = ((i >> 2) & 1, (i >> 1) & 1, i & 1)
        s = tuple(2 * v - 1 for v in c)
        touch[i] = [_slot(s[0], 0, 0), _slot(0, s[1], 0), _slot(0, 0, s[2]), _slot(s[0], s[1], 0),
                    _slot(s[0], 0, s[2]), _slot(0, s[1], s[2]), _slot(*s)]
        farmask[i] = (1 << _slot(-s[0], 0, 0)) | (1 << _slot(0, -s[1], 0)) | (1 << _slot(0, 0, -s[2]))
        offsets = [(dx, dy, dz) for dx in (-1, 0) for dy in (-1, 0) for dz in (-1, 0)][:-1]
        for t, d in enumerate(offsets):
            causal[i, t] = _slot(c[0] + d[0], c[1] + d[1], c[2] + d[2])
            isface[i, t] = {(-1, 0, 0): 1, (0, -1, 0): 2, (0, 0, -1): 4}.get(d, 0)
    # child-level window around a node's children: cell u in {-1,0,1}^3 at bit _slot(u);
    # cells with a -1 lie in one of the 7 negative neighbours
    negslot = np.array([_slot(*o) for o in [(dx, dy, dz) for dx in (-1, 0) for dy in (-1, 0)
                                            for dz in (-1, 0)][:-1]], np.int64)
    negwin = np.zeros((7, 256), np.int64)
    for t, o in enumerate([(dx, dy, dz) for dx in (-1, 0) for dy in (-1, 0) for dz in (-1, 0)][:-1]):
        for ux in (-1, 0, 1):
            for uy in (-1, 0, 1):
                for uz in (-1, 0, 1):
                    u = (ux, uy, uz)
                    if min(u) >= 0 or tuple(min(v, 0) for v in u) != o:
                        continue
                    n = ((ux & 1) << 2) | ((uy & 1) << 1) | (uz & 1)
                    for byte in range(256):
                        if (byte >> n) & 1:
                            negwin[t, byte] |= 1 << _slot(*u)
    sibwin = np.zeros(256, np.int64)
    for byte in range(256):
        for i in range(8):
            if (byte >> i) & 1:
                sibwin[byte] |= 1 << _slot((i >> 2) & 1, (i >> 1) & 1, i & 1)
    # child_neighbours: for child ci and child-level slot j, the parent-level slot of the
    # node holding that neighbour and the neighbour's child index in it
    cn_slot = np.empty((8, 27), np.int64)
    cn_child = np.empty((8, 27), np.int64)
    for ci in range(8):
        c = ((ci >> 2) & 1, (ci >> 1) & 1, ci & 1)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    g = (c[0] + dx, c[1] + dy, c[2] + dz)
                    o = tuple(-1 if v < 0 else (1 if v > 1 else 0) for v in g)
                    cn_slot[ci, _slot(dx, dy, dz)] = _slot(*o)
                    cn_child[ci, _slot(dx, dy, dz)] = ((g[0] & 1) << 2) | ((g[1] & 1) << 1) | (g[2] & 1)
    # context = a*240 + k*30 + ke*6 + min(siblings, 2)*2 + far: linear, and the siblings'
    # share (their face and edge bits, their count) is a table of (child, coded so far)
    sibctx = np.zeros((8, 256), np.int64)
    for i in range(8):
        for coded in range(1 << i):
            w = sibwin[coded]
            k = ke = 0
            for t in range(7):
                if (w >> causal[i, t]) & 1:
                    if isface[i, t]:
                        k += isface[i, t]
                    else:
                        ke += 1
            sibctx[i, coded] = k * 30 + ke * 6 + min(bin(coded).count("1"), 2) * 2
    return touch, farmask, causal, isface, negslot, negwin, cn_slot, cn_child, sibctx


_TOUCH, _FARMASK, _CAUSAL, _ISFACE, _NEGSLOT, _NEGWIN, _CN_SLOT, _CN_CHILD, _SIBCTX = _tables()


def _plane_tables():
    """``_bases`` reads a child's touch pattern and its causal neighbours' share of the
    context two x-planes (9 bits) at a time: per child, per plane, a 512-entry table."""
    touch = np.zeros((8, 2, 512), np.uint8)  # planes dx = 0 and dx = the child's side
    causal = np.zeros((8, 2, 512), np.uint8)  # window planes ux = cx - 1 and ux = cx
    for i in range(8):
        cx = (i >> 2) & 1
        for p in range(2):
            for bits in range(512):
                plane = bits << (9 * ((0 if p == 0 else 2 * cx - 1) + 1))
                touch[i, p, bits] = sum(1 << t for t in range(7) if (plane >> _TOUCH[i, t]) & 1)
                plane = bits << (9 * (cx - 1 + p + 1))
                k = sum(_ISFACE[i, t] for t in range(7) if (plane >> _CAUSAL[i, t]) & 1)
                ke = sum(1 for t in range(7) if (plane >> _CAUSAL[i, t]) & 1 and not _ISFACE[i, t])
                causal[i, p, bits] = k * 30 + ke * 6
    return touch, causal


_TOUCH_PLANES, _CAUSAL_PLANES = _plane_tables()


@njit(cache=True, nogil=True, inline="always")
def _bases(nb, nbm, occ, base):
    """The part of each child bit's context that the neighbours decide (not the siblings):
    ``a*240 + k*30 + ke*6 + far`` from the node's neighbour mask and the causal window of
    its negative neighbours' children."""
    win = 0
    for t in range(7):
        idx = nb[t]
        if idx >= 0:
            win |= _NEGWIN[t, occ[idx]]
    mid = (nbm >> 9) & 511
    for i in range(8):
        cx = (i >> 2) & 1
        side = (nbm >> (18 * cx)) & 511  # plane dx = -1 or +1
        a = _TOUCH_PLANES[i, 0, mid] | _TOUCH_PLANES[i, 1, side]
        c = (np.int64(_CAUSAL_PLANES[i, 0, (win >> (9 * cx)) & 511])
             + np.int64(_CAUSAL_PLANES[i, 1, (win >> (9 * cx + 9)) & 511]))
        base[i] = np.int64(a) * 240 + c + (1 if nbm & _FARMASK[i] else 0)


def _win_tables():
    # a parent's 4x4x4 child-level window: cell (x, y, z) in [-1, 2]^3 at bit
    # (x+1)*16 + (y+1)*4 + (z+1); the neighbour in parent slot s with occupancy byte b
    # fills its children's cells that lie in the window
    win64 = np.zeros((27, 256), np.uint64)
    for ox in (-1, 0, 1):
        for oy in (-1, 0, 1):
            for oz in (-1, 0, 1):
                for n in range(8):
                    x, y, z = 2 * ox + ((n >> 2) & 1), 2 * oy + ((n >> 1) & 1), 2 * oz + (n & 1)
                    if not (-1 <= x <= 2 and -1 <= y <= 2 and -1 <= z <= 2):
                        continue
                    bit = np.uint64(1) << np.uint64((x + 1) * 16 + (y + 1) * 4 + (z + 1))
                    for b in range(256):
                        if (b >> n) & 1:
                            win64[_slot(ox, oy, oz), b] |= bit
    return win64


_WIN64 = _win_tables()


@njit(cache=True, nogil=True, inline="always")
def _child_mask(w, ci):
    """The 27-bit neighbour mask of child ci (own slot cleared) from its parent's window."""
    cx, cy, cz = (ci >> 2) & 1, (ci >> 1) & 1, ci & 1
    m = 0
    for dx in range(3):
        for dy in range(3):
            row = (w >> np.uint64((cx + dx) * 16 + (cy + dy) * 4 + cz)) & np.uint64(7)
            m |= np.int64(row) << (dx * 9 + dy * 3)
    return m & ~(1 << 13)


@njit(cache=True, nogil=True)
def child_neighbours(nbrs, occ, full):
    """Next level's neighbour masks, the indices of each node's 7 causal (negative)
    neighbours, and, when ``full``, all 27 neighbour indices (to go one level further)."""
    m = occ.shape[0]
    start = np.empty(m + 1, np.int64)
    start[0] = 0
    for i in range(m):
        start[i + 1] = start[i] + _POPCOUNT[occ[i]]
    n = start[m]
    out = np.empty((n if full else 0, 27), np.int32)
    neg = np.empty((n, 7), np.int32)
    masks = np.empty(n, np.int64)
    locc = np.empty(27, np.int64)
    lstart = np.empty(27, np.int64)
    for pi in range(m):
        w = np.uint64(0)
        for s in range(27):
            pn = pi if s == 13 else nbrs[pi, s]
            if pn >= 0:
                po = occ[pn]
                locc[s] = po
                lstart[s] = start[pn]
                w |= _WIN64[s, po]
            else:
                locc[s] = 0
                lstart[s] = 0
        o = occ[pi]
        me = start[pi]
        for ci in range(8):
            if not (o >> ci) & 1:
                continue
            masks[me] = _child_mask(w, ci)
            if full:
                for j in range(27):
                    ps = _CN_SLOT[ci, j]
                    nci = _CN_CHILD[ci, j]
                    po = locc[ps]
                    bit = (po >> nci) & 1
                    out[me, j] = (lstart[ps] + _POPCOUNT[po & ((1 << nci) - 1)] + 1) * bit - 1
                out[me, 13] = -1
                for t in range(7):
                    neg[me, t] = out[me, _NEGSLOT[t]]
            else:
                for t in range(7):
                    j = _NEGSLOT[t]
                    ps = _CN_SLOT[ci, j]
                    nci = _CN_CHILD[ci, j]
                    po = locc[ps]
                    bit = (po >> nci) & 1
                    neg[me, t] = (lstart[ps] + _POPCOUNT[po & ((1 << nci) - 1)] + 1) * bit - 1
            me += 1
    return out, neg, masks


@njit(cache=True, nogil=True)
def root_tables(nodes, level):
    """``child_neighbours``' three tables for the nodes where a subtree starts."""
    nbrs = root_neighbours(nodes, level)
    n = nodes.shape[0]
    neg = np.empty((n, 7), np.int32)
    masks = np.empty(n, np.int64)
    for i in range(n):
        m = 0
        for j in range(27):
            if nbrs[i, j] >= 0:
                m |= 1 << j
        masks[i] = m
        for t in range(7):
            neg[i, t] = nbrs[i, _NEGSLOT[t]]
    return nbrs, neg, masks


@njit(cache=True, nogil=True)
def level_nodes(nodes, level, start):
    """The sorted unique node codes of every level from ``level`` (``nodes``) up to
    ``start``, as ``out[level - l]``: each level from the one below, so the work is the
    node count."""
    cur = nodes
    out = [nodes]
    for _ in range(level - start):
        nxt = np.empty(cur.shape[0], np.int64)
        m = 0
        for i in range(cur.shape[0]):
            c = cur[i] >> 3
            if m == 0 or nxt[m - 1] != c:
                nxt[m] = c
                m += 1
        cur = nxt[:m]
        out.append(cur)
    return out


@njit(cache=True, nogil=True)
def encode_levels(leaves, depth, start, stop, buf, counts, probs):
    """Code the occupancy of every node of levels ``start``..``stop - 1`` of the octree over
    the sorted unique leaf codes; the decoder must already know the nodes at ``start``."""
    st = enc_start(buf)
    bottom = leaves if stop == depth else unique_shift(leaves, 3 * (depth - stop))
    arrays = level_nodes(bottom, stop, start)  # arrays[stop - level]: that level's nodes
    par = arrays[stop - start]
    nbrs, neg, masks = root_tables(par, start)
    base = np.empty(8, np.int64)
    for level in range(start, stop):
        chi = arrays[stop - level - 1]
        occ = np.zeros(par.shape[0], np.int64)
        j = 0
        for ci in range(chi.shape[0]):
            while par[j] != chi[ci] >> 3:
                j += 1
            occ[j] |= 1 << (chi[ci] & 7)
        buf = reserve(buf, st, 8 * BYTES_PER_BIT * par.shape[0])
        for pi in range(par.shape[0]):
            _bases(neg[pi], masks[pi], occ, base)
            o = occ[pi]
            coded = 0
            for i in range(8):
                if i == 7 and coded == 0:
                    break
                bit = (o >> i) & 1
                st = enc_bit(st, buf, counts, probs, base[i] + _SIBCTX[i, coded], bit)
                coded |= bit << i
        if level + 1 < stop:
            nbrs, neg, masks = child_neighbours(nbrs, occ, level + 2 < stop)
        par = chi
    return enc_finish(st, buf)


@njit(cache=True, nogil=True)
def decode_levels(buf, roots, start, stop, max_nodes, counts, probs):
    """Inverse of ``encode_levels``: the node codes at level ``stop`` (or fewer levels when
    ``stop`` is lower), and a status: 0 ok, 1 too many nodes, 2 read past the end."""
    st = dec_start(buf)
    par = roots.copy()
    nbrs, neg, masks = root_tables(par, start)
    base = np.empty(8, np.int64)
    for level in range(start, stop):
        occ = np.zeros(par.shape[0], np.int64)
        n_children = 0
        chi = np.empty(min(8 * par.shape[0], max_nodes + 8), np.int64)
        for pi in range(par.shape[0]):
            _bases(neg[pi], masks[pi], occ, base)
            coded = 0
            for i in range(8):
                if i == 7 and coded == 0:
                    bit = 1
                else:
                    bit, st = dec_bit(st, buf, counts, probs, base[i] + _SIBCTX[i, coded])
                coded |= bit << i
                if bit:
                    if n_children >= max_nodes:
                        return chi[:0], 1
                    chi[n_children] = (par[pi] << 3) | i
                    n_children += 1
            occ[pi] = coded
            if st[3] > 8:
                return chi[:0], 2
        if level + 1 < stop:
            nbrs, neg, masks = child_neighbours(nbrs, occ, level + 2 < stop)
        par = chi[:n_children]
    return par, 0 if st[3] <= 8 else 2
