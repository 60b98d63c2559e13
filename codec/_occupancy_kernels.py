"""numba kernels of the octree codec's occupancy coding: the octree <-> bits.

Breadth-first: level by level, each occupied node's 8-bit child occupancy is coded bit by
bit (child index i = (x << 2) | (y << 1) | z, the Morton interleave) with the binary range
coder of ``_entropy``. Bit 7 is not coded when bits 0-6 are all zero (a node has a child).
Three context models predict each bit and a logistic mixer (``_mixing``) combines them
(issue 19; each model alone, and their mix, measured in docs/codec.md):

1. **neighbour context** (direct, ``N_CONTEXTS``): which of the 7 parent-level neighbours
   touching child i are occupied; which causal child-level face neighbours (-x, -y, -z) are,
   and how many of the 4 causal edge/corner ones; siblings so far (0, 1, 2+); any far face
   occupied. Every neighbour in {-1, 0}^3 has a smaller Morton code, so it is an earlier
   sibling or a child of an earlier parent. Linear in its parts: a node's neighbours give
   each child a base once (``_bases``), the siblings add a table entry (``_SIBCTX``).
2. **window** (hashed, 2^WINDOW_BITS): the child's 26 child-level neighbours, each known
   occupied, known empty or unknown, with the siblings coded so far. A cell outside the
   parent is known when its parent is empty or was coded before this node (the decoder
   knows exactly that much); the part outside the parent is hashed once per child and
   node (``_windows``), the siblings coded so far pick the entry within its block.
3. **faces** (direct, ``FACE_CONTEXTS``): child index, siblings coded so far (exactly, as
   G-PCC's occupancy contexts do) and the three face neighbours outside the parent.

The mixer's weight set is the child index with its count of occupied face neighbours. The
neighbours come from ``_neighbour_kernels``, the node codes from ``_voxel_kernels``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._entropy import (
    BYTES_PER_BIT,
    _update,
    count,
    dec_p,
    dec_start,
    enc_finish,
    enc_p,
    enc_start,
    prob_of,
    reserve,
)
from codec._mixing import ONE, hash_key, learn3, mix3, stretch
from codec._neighbour_kernels import _WIN64, _slot, child_neighbours, root_tables
from codec._voxel_kernels import unique_shift

N_CONTEXTS = 128 * 8 * 5 * 3 * 2
#: Table size (log2) of the hashed window model; the face model's size; the mixer's
#: weight sets (known occupied face neighbours 0..6 x child index).
WINDOW_BITS = 20
FACE_CONTEXTS = 8 * 27 * 128
N_SETS = 7 * 8
_W0 = (3 * ONE) // 10  # every weight starts at 0.3
_BIAS = 256  # the mixer's constant input
_RATE = 48  # the mixer's learning rate: 12-72 swept on the tuning frames (docs/codec.md)
#: rows of the per-node work array ``encode_node`` and ``decode_node`` take: (SCRATCH_ROWS, 8)
SCRATCH_ROWS = 5


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


def _window_tables():
    """Per child index: the bits of a parent's 4x4x4 child-level window (``_WIN64``'s
    layout) that are the child's 3x3x3 neighbourhood outside the parent (19 cells: the
    other 7 are siblings, told by the bits coded so far), and the window bit positions of
    its 3 face neighbours outside the parent."""
    outer = np.zeros(8, np.uint64)
    outer_faces = np.zeros((8, 3), np.uint64)  # bit positions
    for i in range(8):
        c = ((i >> 2) & 1, (i >> 1) & 1, i & 1)
        k = 0
        for d in [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)]:
            x, y, z = c[0] + d[0], c[1] + d[1], c[2] + d[2]
            bit = np.uint64(1) << np.uint64((x + 1) * 16 + (y + 1) * 4 + (z + 1))
            inside = min(x, y, z) >= 0 and max(x, y, z) <= 1
            if not inside:
                outer[i] |= bit
            if sum(map(abs, d)) == 1 and not inside:
                outer_faces[i, k] = (x + 1) * 16 + (y + 1) * 4 + (z + 1)
                k += 1
    return outer, outer_faces


_OUTER, _OUTER_FACES = _window_tables()
_DEBRUIJN = np.zeros(32, np.int64)  # the index of a 32-bit power of two, by multiplication
for _k in range(32):
    _DEBRUIJN[(((1 << _k) * 0x077CB531) & 0xFFFFFFFF) >> 27] = _k
_OUTSIDE = np.uint64(0)  # every window cell that lies in one of the 26 neighbours
for _s in range(27):
    if _s != 13:
        _OUTSIDE |= _WIN64[_s, 255]


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


def new_geometry_model() -> tuple[np.ndarray, ...]:
    """Fresh statistics of the occupancy coder: the neighbour-context model (counts and
    probabilities, ``_entropy``'s), the counts of the window and face models and the
    mixer's weights. The window table is zeros, which the OS maps lazily: a model costs
    the pages a frame touches, not 2 MB."""
    counts = np.zeros((N_CONTEXTS, 2), np.uint8)
    probs = np.full(N_CONTEXTS, 1 << 11, np.uint16)
    return (counts, probs, np.zeros((1 << WINDOW_BITS, 2), np.uint8),
            np.zeros((FACE_CONTEXTS, 2), np.uint8), np.full((N_SETS, 4), _W0, np.int64))


#: how many arrays ``new_geometry_model`` returns
GEOMETRY_ARRAYS = 5


@njit(cache=True, nogil=True, inline="always")
def _windows(nbrs, pi, nbm, occ, wbase, fbase, sbase):
    """Per child, where its window and face models' contexts start (``wbase``,
    ``fbase``; the siblings coded so far complete them) and its count of occupied faces
    outside the parent (``sbase``, the mixer's selector without the siblings): from the
    node's child-level window, in which a cell is known if its parent is empty or was
    coded before this node (the decoder knows no more)."""
    known = _OUTSIDE
    full = np.uint64(0)
    m = nbm
    while m:  # the neighbours there are, lowest slot first (de Bruijn bit scan)
        low = m & -m
        s = _DEBRUIJN[((low * 0x077CB531) & 0xFFFFFFFF) >> 27]
        m ^= low
        pn = nbrs[pi, s]
        if pn < pi:
            full |= _WIN64[s, occ[pn]]
        else:
            known &= ~_WIN64[s, 255]
    for i in range(8):
        h = hash_key(known & _OUTER[i], full & _OUTER[i], np.uint64(i), WINDOW_BITS - i)
        wbase[i] = h << i
        f = 0
        n = 0
        for t in range(3):  # state 0 empty, 1 occupied, 2 unknown
            k = np.int64((known >> _OUTER_FACES[i, t]) & np.uint64(1))
            o = np.int64((full >> _OUTER_FACES[i, t]) & np.uint64(1))
            n += o
            f = 3 * f + 2 - 2 * k + o
        fbase[i] = (i * 27 + f) * 128
        sbase[i] = n * 8 + i


@njit(cache=True, nogil=True, inline="always")
def _select(sbase, i, coded):
    """The mixer's weight set of child ``i``: its occupied face neighbours, siblings
    coded so far included, and its index."""
    return sbase[i] + 8 * (((coded >> (i ^ 4)) & 1) + ((coded >> (i ^ 2)) & 1) + ((coded >> (i ^ 1)) & 1))


@njit(cache=True, nogil=True, inline="always")
def _predict(probs, wcounts, fcounts, weights, scratch, i, coded):
    """Child bit ``i``'s mixed probability of a 0 and what learning from it needs: the
    three models' contexts (the neighbour context; the child's 26 child-level neighbours,
    each known occupied, known empty or unknown, with the siblings coded so far; its face
    neighbours outside the parent with the siblings so far), the weight set and the
    stretched inputs. ``scratch`` holds the node's bases (``_node_start``)."""
    ctx = scratch[0, i] + _SIBCTX[i, coded]
    hw = scratch[1, i] + coded
    hf = scratch[2, i] + coded
    sel = _select(scratch[3], i, coded)
    s0 = stretch(np.int64(probs[ctx]))
    s1 = stretch(prob_of(np.int64(wcounts[hw, 0]), np.int64(wcounts[hw, 1])))
    s2 = stretch(prob_of(np.int64(fcounts[hf, 0]), np.int64(fcounts[hf, 1])))
    return mix3(weights, sel, s0, s1, s2, _BIAS), (ctx, hw, hf, sel, s0, s1, s2)


@njit(cache=True, nogil=True, inline="always")
def _node_start(nbrs, neg, masks, occ, pi, scratch, wcounts):
    """Node ``pi``'s per-child context bases into ``scratch`` (rows 0-3). Then it reads the
    first entry of each child's block of the hashed window table, a likely cache miss,
    while nothing waits for it: the eight loads overlap here instead of stalling one child
    bit each (the decoder's next context waits on every bit; 5-7% of its geometry time on
    sarah_9bit). Row 4 keeps their sum so that the compiler cannot drop the reads."""
    _bases(neg[pi], masks[pi], occ, scratch[0])
    _windows(nbrs, pi, masks[pi], occ, scratch[1], scratch[2], scratch[3])
    warm = 0
    for i in range(8):
        warm += wcounts[scratch[1, i], 0]
    scratch[4, 0] = warm


@njit(cache=True, nogil=True, inline="always")
def _learn(counts, probs, wcounts, fcounts, weights, used, p, bit):
    ctx, hw, hf, sel, s0, s1, s2 = used
    learn3(weights, sel, s0, s1, s2, _BIAS, p, bit, _RATE)
    _update(counts, probs, ctx, bit)
    count(wcounts, hw, bit)
    count(fcounts, hf, bit)


@njit(cache=True, nogil=True, inline="always")
def encode_node(st, buf, counts, probs, wcounts, fcounts, weights, nbrs, neg, masks, occ, pi, scratch):
    """Code node ``pi``'s occupancy byte ``occ[pi]`` (every node before it is known to
    the decoder); ``scratch`` is a (SCRATCH_ROWS, 8) int64 work array. Returns the coder state."""
    _node_start(nbrs, neg, masks, occ, pi, scratch, wcounts)
    o = occ[pi]
    coded = 0
    for i in range(8):
        if i == 7 and coded == 0:
            break
        bit = (o >> i) & 1
        p, used = _predict(probs, wcounts, fcounts, weights, scratch, i, coded)
        st = enc_p(st, buf, p, bit)
        _learn(counts, probs, wcounts, fcounts, weights, used, p, bit)
        coded |= bit << i
    return st


@njit(cache=True, nogil=True, inline="always")
def decode_node(st, buf, counts, probs, wcounts, fcounts, weights, nbrs, neg, masks, occ, pi, scratch):
    """Inverse of ``encode_node``: (occupancy byte of node ``pi``, coder state)."""
    _node_start(nbrs, neg, masks, occ, pi, scratch, wcounts)
    coded = 0
    for i in range(8):
        if i == 7 and coded == 0:
            bit = 1
        else:
            p, used = _predict(probs, wcounts, fcounts, weights, scratch, i, coded)
            bit, st = dec_p(st, buf, p)
            _learn(counts, probs, wcounts, fcounts, weights, used, p, bit)
        coded |= bit << i
    return coded, st


@njit(cache=True, nogil=True)
def encode_levels(leaves, depth, start, stop, buf, counts, probs, wcounts, fcounts, weights):
    """Code the occupancy of every node of levels ``start``..``stop - 1`` of the octree over
    the sorted unique leaf codes; the decoder must already know the nodes at ``start``."""
    st = enc_start(buf)
    bottom = leaves if stop == depth else unique_shift(leaves, 3 * (depth - stop))
    arrays = level_nodes(bottom, stop, start)  # arrays[stop - level]: that level's nodes
    par = arrays[stop - start]
    nbrs, neg, masks = root_tables(par, start)
    scratch = np.empty((SCRATCH_ROWS, 8), np.int64)
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
            st = encode_node(st, buf, counts, probs, wcounts, fcounts, weights, nbrs, neg, masks,
                             occ, pi, scratch)
        if level + 1 < stop:
            nbrs, neg, masks = child_neighbours(nbrs, occ, True)
        par = chi
    return enc_finish(st, buf)


@njit(cache=True, nogil=True)
def decode_levels(buf, roots, start, stop, max_nodes, counts, probs, wcounts, fcounts, weights):
    """Inverse of ``encode_levels``: the node codes at level ``stop`` (or fewer levels when
    ``stop`` is lower), and a status: 0 ok, 1 too many nodes, 2 read past the end."""
    st = dec_start(buf)
    par = roots.copy()
    nbrs, neg, masks = root_tables(par, start)
    scratch = np.empty((SCRATCH_ROWS, 8), np.int64)
    for level in range(start, stop):
        occ = np.zeros(par.shape[0], np.int64)
        n_children = 0
        chi = np.empty(min(8 * par.shape[0], max_nodes + 8), np.int64)
        for pi in range(par.shape[0]):
            coded, st = decode_node(st, buf, counts, probs, wcounts, fcounts, weights, nbrs, neg,
                                    masks, occ, pi, scratch)
            occ[pi] = coded
            for i in range(8):
                if (coded >> i) & 1:
                    if n_children >= max_nodes:
                        return chi[:0], 1
                    chi[n_children] = (par[pi] << 3) | i
                    n_children += 1
            if st[3] > 8:
                return chi[:0], 2
        if level + 1 < stop:
            nbrs, neg, masks = child_neighbours(nbrs, occ, True)
        par = chi[:n_children]
    return par, 0 if st[3] <= 8 else 2
