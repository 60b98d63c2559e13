"""numba kernels of the layered (embedded) octree stream (``codec.layered``).

A frame is a row of *atoms*, each its own range-coder run (the adaptive model continues
from one to the next, so a decoder takes them in order):

    C0            the root's colour (Y Cb Cr)
    G0, C1        occupancy of level 0 (-> the level-1 nodes), then level 1's colour
    ...
    G(d-1), Cd    the last level's occupancy and the voxels' colour

Geometry atoms are ``_occupancy_kernels``' breadth-first coder, one level per run.
Colour is a *level-local* RAHT: at level L the nodes are unit-weight leaves whose value is
the mean of their children's values (the voxels' colour at the finest level); three binary
RAHT levels merge them into their level L-1 parents, whose low pass is sqrt(children) x the
parent's value, which the decoder already has. So atom CL holds only the n_L - n_{L-1}
high passes, and any prefix of atoms decodes to the octree at that level with colour.
The transform and the prediction of each level's high passes from the level above are
``_raht_prediction``'s, with every node weighing 1 (``layered._quantized_colour``); atom CL
holds level L's quantized residuals, and a level past the last colour atom received is
its prediction.
A value's error reaches every voxel below it, so level L is quantized with the step times
sqrt(n_L / n_depth) (a node's share of the voxels), which keeps the error spread as true
RAHT's is.

Each run ends with the shortest flush that pins its interval (often no byte at all; the
decoder reads zeros past the end) and drops the range coder's leading carry byte, which is
always zero: layering costs about a byte per atom, not five.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._entropy import (
    BYTES_PER_BIT,
    EG_CONTEXTS,
    SIGNED_MAX_BITS,
    dec_bit,
    dec_signed,
    enc_bit,
    enc_signed,
    reserve,
)
from codec._neighbour_kernels import child_neighbours, root_tables
from codec._occupancy_kernels import SCRATCH_ROWS, decode_node, encode_node, level_nodes
from codec._raht_kernels import _BUCKETS, _CH_CTX, _CLASSES, _UNARY, _class, _zero_ctx

_BLOCK = 1024  # coefficients coded between two checks of the output buffer's room
_BASE_CH = 2 * _BUCKETS * 2
_BASE_EG = _BASE_CH + 3 * _BUCKETS * _CLASSES * _CH_CTX


# -- range coder runs -----------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _run_start(buf, pos):
    """A fresh encoder run writing at ``pos`` (whose byte absorbs carries, then is dropped)."""
    buf[pos] = 0
    return (np.int64(0), np.int64(0xFFFFFFFF), np.int64(pos + 1))


@njit(cache=True, nogil=True)
def _run_finish(st, buf, start):
    """End the run begun at ``start``: flush the value in the final interval with the most
    trailing zero bits, drop those zero bytes and the leading carry byte (always zero).
    Returns the buffer and the run's end."""
    buf = reserve(buf, st, 4)
    low, rng, pos = st
    v = low
    for k in range(32, 0, -1):
        mask = (np.int64(1) << k) - 1
        cand = (low + mask) & ~mask
        if cand < low + rng:
            v = cand
            break
    if v >= 0x100000000:  # carry into the bytes already written
        v -= 0x100000000
        i = pos - 1
        while buf[i] == 0xFF:
            buf[i] = 0
            i -= 1
        buf[i] += 1
    for _ in range(4):
        buf[pos] = (v >> 24) & 0xFF
        pos += 1
        v = (v << 8) & 0xFFFFFFFF
    trimmed = 0
    while trimmed < 4 and pos > start + 1 and buf[pos - 1] == 0:
        pos -= 1
        trimmed += 1
    for i in range(start, pos - 1):  # drop the carry byte
        buf[i] = buf[i + 1]
    return buf, pos - 1


@njit(cache=True, nogil=True, inline="always")
def _dec_start(buf):
    """Decoder of a run written by ``_run_start``/``_run_finish`` (no carry byte)."""
    code, pos, overrun = np.int64(0), np.int64(0), np.int64(0)
    for _ in range(4):
        b = np.int64(0)
        if pos < buf.shape[0]:
            b = np.int64(buf[pos])
            pos += 1
        else:
            overrun += 1
        code = (code << 8) | b
    return (code, np.int64(0xFFFFFFFF), pos, overrun)


# -- octree levels --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def flat_levels(leaves, depth):
    """Every level's sorted node codes, level 0 first, back to back; and offsets (depth + 2)."""
    offs = np.zeros(depth + 2, np.int64)
    if leaves.shape[0] == 0:
        return np.zeros(0, np.int64), offs
    arrays = level_nodes(leaves, depth, 0)  # arrays[depth - l]: level l
    for lv in range(depth + 1):
        offs[lv + 1] = offs[lv] + arrays[depth - lv].shape[0]
    flat = np.empty(offs[depth + 1], np.int64)
    for lv in range(depth + 1):
        flat[offs[lv]:offs[lv + 1]] = arrays[depth - lv]
    return flat, offs


@njit(cache=True, nogil=True)
def encode_geometry(flat, offs, depth, counts, probs, wcounts, fcounts, weights):
    """Atoms G0..G(depth-1), back to back, and where each ends."""
    buf = np.empty(max(64, offs[depth + 1] // 2 + 16 * depth), np.uint8)
    ends = np.zeros(depth, np.int64)
    pos = 0
    if offs[1] == 0:
        return buf[:0], ends
    par = flat[offs[0]:offs[1]]
    nbrs, neg, masks = root_tables(par, 0)
    scratch = np.empty((SCRATCH_ROWS, 8), np.int64)
    for level in range(depth):
        chi = flat[offs[level + 1]:offs[level + 2]]
        occ = np.zeros(par.shape[0], np.int64)
        j = 0
        for ci in range(chi.shape[0]):
            while par[j] != chi[ci] >> 3:
                j += 1
            occ[j] |= 1 << (chi[ci] & 7)
        st = (np.int64(0), np.int64(0xFFFFFFFF), np.int64(pos))
        buf = reserve(buf, st, 8 * BYTES_PER_BIT * par.shape[0] + 16)
        st = _run_start(buf, pos)
        for pi in range(par.shape[0]):
            st = encode_node(st, buf, counts, probs, wcounts, fcounts, weights, nbrs, neg, masks,
                             occ, pi, scratch)
        buf, pos = _run_finish(st, buf, pos)
        ends[level] = pos
        if level + 1 < depth:
            nbrs, neg, masks = child_neighbours(nbrs, occ, True)
        par = chi
    return buf[:pos], ends


@njit(cache=True, nogil=True)
def decode_geometry(buf, ends, stop, expect, counts, probs, wcounts, fcounts, weights):
    """Levels 0..``stop`` from atoms G0..G(stop-1) (``ends``: where each ends in ``buf``),
    each level holding exactly ``expect[l]`` nodes (validated by the caller: the allocation
    is their sum). Returns flat codes, offsets and a status: 0 ok, 1 wrong count, 2 overrun."""
    offs = np.zeros(stop + 2, np.int64)
    total = 0
    for lv in range(stop + 1):
        total += expect[lv]
    flat = np.empty(total, np.int64)
    if expect[0] == 0:
        return flat[:0], offs, 0
    flat[0] = 0
    offs[1] = 1
    par = flat[0:1]
    nbrs, neg, masks = root_tables(par, 0)
    scratch = np.empty((SCRATCH_ROWS, 8), np.int64)
    for level in range(stop):
        a = 0 if level == 0 else ends[level - 1]
        sub = buf[a:ends[level]]
        st = _dec_start(sub)
        occ = np.zeros(par.shape[0], np.int64)
        lim = expect[level + 1]
        chi = flat[offs[level + 1]:offs[level + 1] + lim]
        n_children = 0
        for pi in range(par.shape[0]):
            coded, st = decode_node(st, sub, counts, probs, wcounts, fcounts, weights, nbrs, neg,
                                    masks, occ, pi, scratch)
            occ[pi] = coded
            for i in range(8):
                if (coded >> i) & 1:
                    if n_children >= lim:
                        return flat[:0], offs, 1
                    chi[n_children] = (par[pi] << 3) | i
                    n_children += 1
            if st[3] > 8:
                return flat[:0], offs, 2
        if n_children != lim:
            return flat[:0], offs, 1
        offs[level + 2] = offs[level + 1] + lim
        if level + 1 < stop:
            nbrs, neg, masks = child_neighbours(nbrs, occ, True)
        par = chi
    return flat, offs, 0


# -- colour atoms ---------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _bucket(level, depth):
    """How coarse a level's coefficients are (RAHT's four context buckets)."""
    return max(0, 3 - (depth - level))


@njit(cache=True, nogil=True)
def encode_colour(q, zero, offs, depth, counts, probs):
    """Atoms C0..C(depth), back to back, and where each ends, from the quantized residuals
    and their "all zero" flags (``layered._quantized_colour``)."""
    n = q.shape[0]
    buf = np.empty(max(64, n // 2 + 16 * depth), np.uint8)
    ends = np.zeros(depth + 1, np.int64)
    pos = 0
    prev = np.zeros(3, np.int64)
    for lv in range(depth + 1):
        lo = 0 if lv == 0 else offs[lv] - offs[lv - 1]
        hi = offs[lv + 1] - offs[lv] if n > 0 else 0
        if lv == 0:
            hi = min(1, n)
        bk = _bucket(lv, depth)
        st = (np.int64(0), np.int64(0xFFFFFFFF), np.int64(pos))
        buf = reserve(buf, st, 16)
        st = _run_start(buf, pos)
        prev[:] = 0
        run = 0
        for block in range(lo, hi, _BLOCK):
            buf = reserve(buf, st, _BLOCK * (1 + 3 * SIGNED_MAX_BITS) * BYTES_PER_BIT)
            for j in range(block, min(block + _BLOCK, hi)):
                z = zero[j]
                st = enc_bit(st, buf, counts, probs, _zero_ctx(bk, run), z)
                run = run + 1 if z else 0
                if z:
                    prev[:] = 0
                    continue
                for c in range(3):
                    ctx = _BASE_CH + ((c * _BUCKETS + bk) * _CLASSES + _class(prev[c])) * _CH_CTX
                    st = enc_signed(st, buf, counts, probs, ctx, _BASE_EG + c * EG_CONTEXTS, _UNARY, q[j, c])
                    prev[c] = abs(q[j, c])
        buf, pos = _run_finish(st, buf, pos)
        ends[lv] = pos
    return buf[:pos], ends


@njit(cache=True, nogil=True)
def decode_colour(buf, ends, stop, expect, depth, ysteps, csteps, counts, probs):
    """The dequantized coefficients of atoms C0..C(stop) (``expect``: each level's node
    count, validated by the caller) in ``transform``'s layout, and a status (0 ok, 2 corrupt).
    Needs no geometry, so it runs beside the geometry decoder."""
    n = expect[stop] if expect[0] > 0 else 0
    coeffs = np.zeros((n, 3), np.float64)
    prev = np.zeros(3, np.int64)
    for lv in range(stop + 1):
        lo = 0 if lv == 0 else expect[lv - 1]
        hi = min(1, n) if lv == 0 else (expect[lv] if n > 0 else 0)
        a = 0 if lv == 0 else ends[lv - 1]
        sub = buf[a:ends[lv]]
        st = _dec_start(sub)
        bk = _bucket(lv, depth)
        ys, cs = ysteps[lv], csteps[lv]
        prev[:] = 0
        run = 0
        for j in range(lo, hi):
            zero, st = dec_bit(st, sub, counts, probs, _zero_ctx(bk, run))
            run = run + 1 if zero else 0
            if zero:
                prev[:] = 0
                continue
            for c in range(3):
                ctx = _BASE_CH + ((c * _BUCKETS + bk) * _CLASSES + _class(prev[c])) * _CH_CTX
                v, ok, st = dec_signed(st, sub, counts, probs, ctx, _BASE_EG + c * EG_CONTEXTS, _UNARY)
                if not ok:
                    return coeffs[:0], 2
                coeffs[j, c] = v * (ys if c == 0 else cs)
                prev[c] = abs(v)
            if st[3] > 8:
                return coeffs[:0], 2
        if st[3] > 8:
            return coeffs[:0], 2
    return coeffs, 0
