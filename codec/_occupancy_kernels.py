"""numba kernels of the octree codec's occupancy coding: the octree <-> bits.

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
The neighbours come from ``_neighbour_kernels``, the node codes from ``_voxel_kernels``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._entropy import BYTES_PER_BIT, dec_bit, dec_start, enc_bit, enc_finish, enc_start, reserve
from codec._neighbour_kernels import _slot, child_neighbours, root_tables
from codec._voxel_kernels import unique_shift

N_CONTEXTS = 128 * 8 * 5 * 3 * 2


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
    return touch, farmask, causal, isface, negwin, sibctx


_TOUCH, _FARMASK, _CAUSAL, _ISFACE, _NEGWIN, _SIBCTX = _tables()


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
