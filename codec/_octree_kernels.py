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
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._entropy import dec_bit, dec_start, enc_bit, enc_finish, enc_start

N_CONTEXTS = 128 * 8 * 5 * 3 * 2


@njit(cache=True, nogil=True, inline="always")
def _spread(v):
    v = v & 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    v = (v | (v << 2)) & 0x1249249249249249
    return v


@njit(cache=True, nogil=True, inline="always")
def _compact(v):
    v = v & 0x1249249249249249
    v = (v | (v >> 2)) & 0x10C30C30C30C30C3
    v = (v | (v >> 4)) & 0x100F00F00F00F00F
    v = (v | (v >> 8)) & 0x1F0000FF0000FF
    v = (v | (v >> 16)) & 0x1F00000000FFFF
    v = (v | (v >> 32)) & 0x1FFFFF
    return v


@njit(cache=True, nogil=True, inline="always")
def morton(x, y, z):
    return (_spread(x) << 2) | (_spread(y) << 1) | _spread(z)


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
def voxelize(positions, colors, origin, cell, depth):
    """Grid cells of the points inside the volume: sorted unique Morton codes, the mean
    colour of each cell's points, and how many points fell outside."""
    n = positions.shape[0]
    side = 1 << depth
    codes = np.empty(n, np.int64)
    keep = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        x = int(np.floor((positions[i, 0] - origin[0]) / cell))
        y = int(np.floor((positions[i, 1] - origin[1]) / cell))
        z = int(np.floor((positions[i, 2] - origin[2]) / cell))
        if 0 <= x < side and 0 <= y < side and 0 <= z < side:
            codes[m] = morton(x, y, z)
            keep[m] = i
            m += 1
    codes = codes[:m]
    order = radix_argsort(codes, 3 * depth)
    uniq = np.empty(m, np.int64)
    sums = np.zeros((m, 3), np.int64)
    counts = np.zeros(m, np.int64)
    u = -1
    for j in range(m):
        c = codes[order[j]]
        if u < 0 or uniq[u] != c:
            u += 1
            uniq[u] = c
        src = keep[order[j]]
        for ch in range(3):
            sums[u, ch] += colors[src, ch]
        counts[u] += 1
    u += 1
    mean = np.empty((u, 3), np.uint8)
    for j in range(u):
        for ch in range(3):
            mean[j, ch] = (sums[j, ch] + counts[j] // 2) // counts[j]
    return uniq[:u], mean, n - m


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


@njit(cache=True, nogil=True)
def child_neighbours(nbrs, occ):
    """The 26-neighbourhoods of the next level's nodes, from this level's.

    ``nbrs[i, j]`` is the index (in this level's sorted node list) of node i's neighbour at
    offset j = (dx+1)*9 + (dy+1)*3 + dz+1, or -1; ``occ`` are the nodes' child occupancy
    bytes. A child's neighbours are children of its parent or of the parent's neighbours,
    and a child's index is where its parent's children start plus the occupied children
    before it, so the whole level is derived without a single search or hash look-up.
    """
    m = occ.shape[0]
    start = np.empty(m + 1, np.int64)
    start[0] = 0
    for i in range(m):
        start[i + 1] = start[i] + _POPCOUNT[occ[i]]
    out = np.full((start[m], 27), -1, np.int32)
    for pi in range(m):
        o = occ[pi]
        for ci in range(8):
            if not (o >> ci) & 1:
                continue
            me = start[pi] + _POPCOUNT[o & ((1 << ci) - 1)]
            cx, cy, cz = (ci >> 2) & 1, (ci >> 1) & 1, ci & 1
            for dx in range(-1, 2):
                gx = cx + dx
                ox, ncx = (-1 if gx < 0 else (1 if gx > 1 else 0)), gx & 1
                for dy in range(-1, 2):
                    gy = cy + dy
                    oy, ncy = (-1 if gy < 0 else (1 if gy > 1 else 0)), gy & 1
                    for dz in range(-1, 2):
                        j = (dx + 1) * 9 + (dy + 1) * 3 + dz + 1
                        if j == 13:
                            continue
                        gz = cz + dz
                        oz, ncz = (-1 if gz < 0 else (1 if gz > 1 else 0)), gz & 1
                        pj = (ox + 1) * 9 + (oy + 1) * 3 + oz + 1
                        pn = pi if pj == 13 else nbrs[pi, pj]
                        if pn < 0:
                            continue
                        nci = (ncx << 2) | (ncy << 1) | ncz
                        po = occ[pn]
                        if (po >> nci) & 1:
                            out[me, j] = start[pn] + _POPCOUNT[po & ((1 << nci) - 1)]
    return out


def _context_tables():
    """Per child index i: the neighbour slots (offset (dx,dy,dz) -> (dx+1)*9 + (dy+1)*3 +
    dz+1) that its context reads, so that the kernel is a few table look-ups."""
    touch = np.empty((8, 7), np.int64)  # parent-level neighbours touching child i
    far = np.empty((8, 3), np.int64)  # the parent's faces on the other side
    causal = np.empty((8, 7, 3), np.int64)  # (slot or 13 = own parent, child index, face bit)
    for i in range(8):
        c = ((i >> 2) & 1, (i >> 1) & 1, i & 1)
        s = tuple(2 * v - 1 for v in c)

        def slot(dx, dy, dz):
            return (dx + 1) * 9 + (dy + 1) * 3 + dz + 1

        touch[i] = [slot(s[0], 0, 0), slot(0, s[1], 0), slot(0, 0, s[2]), slot(s[0], s[1], 0),
                    slot(s[0], 0, s[2]), slot(0, s[1], s[2]), slot(*s)]
        far[i] = [slot(-s[0], 0, 0), slot(0, -s[1], 0), slot(0, 0, -s[2])]
        offsets = [(dx, dy, dz) for dx in (-1, 0) for dy in (-1, 0) for dz in (-1, 0)][:-1]
        for t, d in enumerate(offsets):
            o = [-1 if (c[a] == 0 and d[a] == -1) else 0 for a in range(3)]
            n = [c[a] + d[a] if o[a] == 0 else 1 for a in range(3)]
            face = {(-1, 0, 0): 1, (0, -1, 0): 2, (0, 0, -1): 4}.get(d, 0)
            causal[i, t] = (slot(*o), (n[0] << 2) | (n[1] << 1) | n[2], face)
    return touch, far, causal


_TOUCH, _FAR, _CAUSAL = _context_tables()


@njit(cache=True, nogil=True, inline="always")
def _context(nb, occ, i, coded):
    a = 0
    for t in range(7):
        if nb[_TOUCH[i, t]] >= 0:
            a |= 1 << t
    far = 0
    for t in range(3):
        if nb[_FAR[i, t]] >= 0:
            far = 1
    k = 0
    ke = 0
    for t in range(7):
        where, ni, face = _CAUSAL[i, t, 0], _CAUSAL[i, t, 1], _CAUSAL[i, t, 2]
        if where == 13:  # a sibling, already coded
            bit = (coded >> ni) & 1
        else:
            idx = nb[where]
            bit = (occ[idx] >> ni) & 1 if idx >= 0 else 0
        if bit:
            if face:
                k |= face
            else:
                ke += 1
    nsib = _POPCOUNT[coded]  # coded holds only the bits below i
    return (((a * 8 + k) * 5 + ke) * 3 + min(nsib, 2)) * 2 + far


@njit(cache=True, nogil=True)
def encode_levels(leaves, depth, start, stop, buf, c0, c1):
    """Code the occupancy of every node of levels ``start``..``stop - 1`` of the octree over
    the sorted unique leaf codes; the decoder must already know the nodes at ``start``."""
    st = enc_start()
    par = unique_shift(leaves, 3 * (depth - start))
    nbrs = root_neighbours(par, start)
    for level in range(start, stop):
        chi = unique_shift(leaves, 3 * (depth - level - 1))
        occ = np.zeros(par.shape[0], np.int64)
        j = 0
        for ci in range(chi.shape[0]):
            while par[j] != chi[ci] >> 3:
                j += 1
            occ[j] |= 1 << (chi[ci] & 7)
        for pi in range(par.shape[0]):
            nb = nbrs[pi]
            o = occ[pi]
            coded = 0
            for i in range(8):
                if i == 7 and coded == 0:
                    break
                bit = (o >> i) & 1
                st, buf = enc_bit(st, buf, c0, c1, _context(nb, occ, i, coded), bit)
                coded |= bit << i
        if level + 1 < stop:
            nbrs = child_neighbours(nbrs, occ)
        par = chi
    return enc_finish(st, buf)


@njit(cache=True, nogil=True)
def decode_levels(buf, roots, start, stop, max_nodes, c0, c1):
    """Inverse of ``encode_levels``: the node codes at level ``stop`` (or fewer levels when
    ``stop`` is lower), and a status: 0 ok, 1 too many nodes, 2 read past the end."""
    st = dec_start(buf)
    par = roots.copy()
    nbrs = root_neighbours(par, start)
    for level in range(start, stop):
        occ = np.zeros(par.shape[0], np.int64)
        n_children = 0
        chi = np.empty(min(8 * par.shape[0], max_nodes + 8), np.int64)
        for pi in range(par.shape[0]):
            nb = nbrs[pi]
            coded = 0
            for i in range(8):
                if i == 7 and coded == 0:
                    bit = 1
                else:
                    bit, st = dec_bit(st, buf, c0, c1, _context(nb, occ, i, coded))
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
            nbrs = child_neighbours(nbrs, occ)
        par = chi[:n_children]
    return par, 0 if st[3] <= 8 else 2
