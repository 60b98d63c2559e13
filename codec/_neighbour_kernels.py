"""numba kernels of the octree codec's neighbourhoods: every node's 26 neighbours, level by level.

A neighbour is a slot ``(dx + 1) * 9 + (dy + 1) * 3 + dz + 1`` of the node's 3x3x3 block (13
is the node itself). Where a subtree starts, ``root_tables`` finds them by binary search;
below, ``child_neighbours`` derives every child's from its parent's (children of the
parent's neighbours), with no search or hashing. Neighbourhoods are bit masks: a parent's
4x4x4 child-level window (``_WIN64``) gives every child's 26-neighbour mask with a few
shifts, and only the levels that go further keep all 26 neighbour indices. The occupancy
coder (``_occupancy_kernels``) reads a node's mask and the indices of its 7 causal
(negative) neighbours.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._voxel_kernels import _compact, morton

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
    """Where each child's neighbours are: the slots of a node's 7 causal (negative)
    neighbours, and per child index and child-level slot, the parent-level slot of the node
    holding that neighbour and the neighbour's child index in it."""
    negslot = np.array([_slot(*o) for o in [(dx, dy, dz) for dx in (-1, 0) for dy in (-1, 0)
                                            for dz in (-1, 0)][:-1]], np.int64)
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
    return negslot, cn_slot, cn_child


_NEGSLOT, _CN_SLOT, _CN_CHILD = _tables()


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
