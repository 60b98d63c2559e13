"""numba kernels of RAHT with transform-domain prediction, one octree level at a time.

RAHT (``_raht_kernels``) is done block by block: each occupied node's up to 8 children
(weights: voxel counts) go through z, then y, then x butterflies, exactly the pairs that
meet inside one octree node, giving the node's low pass and k - 1 high passes.

Prediction (what G-PCC's RAHT does): before a node's children are coded, the decoder
already knows the mean colour of that node and of its neighbours at the node's level. Each
child's colour is predicted as the weighted mean of its parent (weight 9) and the parent's
neighbours across the 3 faces (3) and 3 edges (1) that the child touches; where such a
neighbour's children are already rebuilt (an earlier block), the neighbouring child itself
(5, 2) stands in for it; neighbours whose luma is far from the parent's (an edge in the
picture) are left out. Only the high passes of (children - prediction) are quantized and
coded. Blocks with few neighbours (fewer than ``MIN_NEIGHBOURS`` of the 19) are predicted by
their parent alone, which is plain RAHT.

Coefficient order: the DC, then octree level by level from the root, node by node in Morton
order, each node's k - 1 high passes in butterfly order (z pairs, y pairs, x pairs).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from codec._neighbour_kernels import _CN_CHILD, _CN_SLOT, _POPCOUNT
from codec._raht_kernels import _pair, code_coefficients, quantize, to_rgb, to_ycbcr

#: Prediction weights of the parent, a face neighbour and an edge neighbour (G-PCC's 9, 3, 1),
#: and of a face and an edge neighbour at the child's own level, already rebuilt (5, 2).
W_PARENT, W_FACE, W_EDGE = 9.0, 3.0, 1.0
W_CHILD_FACE, W_CHILD_EDGE = 5.0, 2.0
#: A block is predicted when at least this many of the parent's 19 (itself, 6 faces, 12
#: edges) are occupied (G-PCC: 6).
MIN_NEIGHBOURS = 6
#: Neighbours whose luma is outside (LOW, HIGH) times the parent's are left out (G-PCC).
LUMA_LOW, LUMA_HIGH = 0.2, 2.5


def _slot(dx: int, dy: int, dz: int) -> int:
    return (dx + 1) * 9 + (dy + 1) * 3 + dz + 1


def _near_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 18 face and edge slots of a node's 27 (the 19 neighbours minus the node), which
    are faces, and the children each touches (a child touches the faces and edges on its
    own side of the parent: 3 faces and 3 edges)."""
    near, face, mask = [], [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                if not 1 <= abs(dx) + abs(dy) + abs(dz) <= 2:
                    continue
                near.append(_slot(dx, dy, dz))
                face.append(abs(dx) + abs(dy) + abs(dz) == 1)
                m = 0
                for ci in range(8):
                    c = ((ci >> 2) & 1, (ci >> 1) & 1, ci & 1)
                    if all(d == 0 or c[a] == (d + 1) // 2 for a, d in enumerate((dx, dy, dz))):
                        m |= 1 << ci
                mask.append(m)
    return np.array(near, np.int64), np.array(face, np.bool_), np.array(mask, np.int64)


_NEAR, _NEAR_FACE, _NEAR_MASK = _near_tables()


@njit(cache=True, nogil=True)
def _children_near(nbrs, occ, first):
    """The face and edge neighbours (18 of the 27 slots; corners are left unset) of every
    child of a level's nodes, from the nodes' own: a child's neighbour is a child of its
    parent or of one of the parent's face or edge neighbours. Also how many of each child's
    19 (itself and the 18) are occupied."""
    m = occ.shape[0]
    n = first[m - 1] + _POPCOUNT[occ[m - 1]] if m else 0
    out = np.empty((n, 27), np.int32)
    near = np.empty(n, np.int64)
    pocc = np.zeros(27, np.int64)
    pfirst = np.zeros(27, np.int64)
    for p in range(m):
        o = occ[p]
        pocc[13], pfirst[13] = o, first[p]
        for t in range(18):  # the parent's face and edge neighbours, read once for all its children
            s = _NEAR[t]
            pn = nbrs[p, s]
            if pn >= 0:
                pocc[s] = occ[pn]
                pfirst[s] = first[pn]
            else:
                pocc[s] = 0
        i = first[p]
        for ci in range(8):
            if not (o >> ci) & 1:
                continue
            c = 1
            for t in range(18):
                s = _NEAR[t]
                ps = _CN_SLOT[ci, s]
                po = pocc[ps]
                nci = _CN_CHILD[ci, s]
                r = -1
                if (po >> nci) & 1:
                    r = pfirst[ps] + _POPCOUNT[po & ((1 << nci) - 1)]
                    c += 1
                out[i, s] = r
            near[i] = c
            i += 1
    return out, near


@njit(cache=True, nogil=True)
def plan(codes, depth):
    """The octree above sorted leaf ``codes``: per level (0 = root .. depth = leaves) its
    nodes' offsets into flat arrays of weights (leaf counts), first-child indices (local to
    the next level) and occupancy bytes."""
    counts = np.zeros(depth + 1, np.int64)
    n = codes.shape[0]
    counts[depth] = n
    for lv in range(depth - 1, -1, -1):
        shift = 3 * (depth - lv)
        c = 0
        prev = -1
        for i in range(n):
            k = codes[i] >> shift
            if k != prev:
                c += 1
                prev = k
        counts[lv] = c
    off = np.zeros(depth + 2, np.int64)
    for lv in range(depth + 1):
        off[lv + 1] = off[lv] + counts[lv]
    total = off[depth + 1]
    weight = np.empty(total, np.int64)
    first = np.zeros(total, np.int64)
    occ = np.zeros(total, np.uint8)
    keys = codes.copy()
    for i in range(n):
        weight[off[depth] + i] = 1
    for lv in range(depth - 1, -1, -1):
        m = counts[lv + 1]
        base, cbase = off[lv], off[lv + 1]
        k = -1
        prev = -1
        for i in range(m):
            ck = keys[i]
            pk = ck >> 3
            if pk != prev:
                k += 1
                prev = pk
                weight[base + k] = 0
                first[base + k] = i
                keys[k] = pk
            weight[base + k] += weight[cbase + i]
            occ[base + k] |= np.uint8(1 << (ck & 7))
    return counts, off, weight, first, occ


@njit(cache=True, nogil=True, inline="always")
def _block_forward(v, wt, hi):
    """Butterflies of one node's children (slots 0..7, weight 0 = empty): the low pass ends
    in slot 0 (returned weight in wt[0]); the high passes go to ``hi`` in order; returns
    how many."""
    t = 0
    for s in range(3):
        bit = 1 << s
        low_bits = (bit << 1) - 1
        for a in range(8):
            if a & low_bits:
                continue
            b = a | bit
            if wt[b] == 0:
                continue
            if wt[a] == 0:
                v[a, 0], v[a, 1], v[a, 2] = v[b, 0], v[b, 1], v[b, 2]
                wt[a] = wt[b]
            else:
                ca, cb = _pair(wt[a], wt[b])
                for c in range(3):
                    x1, x2 = v[a, c], v[b, c]
                    v[a, c] = ca * x1 + cb * x2
                    hi[t, c] = ca * x2 - cb * x1
                wt[a] += wt[b]
                t += 1
            wt[b] = 0
    return t


@njit(cache=True, nogil=True, inline="always")
def _block_inverse(v, wt, hi, w, ops):
    """Undo ``_block_forward``: ``v[0]`` holds the node's low pass, ``wt`` its children's
    weights (as before the forward pass); the children's low passes come back in ``v``.
    ``w`` (8) and ``ops`` (7, 4) are scratch."""
    # replay the pairing to know which high belongs to which pair, then undo in reverse
    w[:] = wt
    n_ops = 0
    for s in range(3):
        bit = 1 << s
        low_bits = (bit << 1) - 1
        for a in range(8):
            if a & low_bits:
                continue
            b = a | bit
            if w[b] == 0:
                continue
            ops[n_ops, 0], ops[n_ops, 1], ops[n_ops, 2] = a, b, w[a]
            ops[n_ops, 3] = w[b]
            n_ops += 1
            w[a] += w[b]
            w[b] = 0
    t = 0
    for o in range(n_ops):
        if ops[o, 2] > 0:
            t += 1
    for o in range(n_ops - 1, -1, -1):
        a, b, w1, w2 = ops[o, 0], ops[o, 1], ops[o, 2], ops[o, 3]
        if w1 == 0:  # a single child moved up: move it back
            v[b, 0], v[b, 1], v[b, 2] = v[a, 0], v[a, 1], v[a, 2]
            continue
        t -= 1
        ca, cb = _pair(w1, w2)
        for c in range(3):
            lo, h = v[a, c], hi[t, c]
            v[a, c] = ca * lo - cb * h
            v[b, c] = cb * lo + ca * h


@njit(cache=True, nogil=True)
def level_means(attrs, counts, off, weight, first, occ, depth):
    """Every node's mean attribute (flat, ``plan``'s layout), leaves first and up: what the
    encoder compares each block's prediction with. ``weight`` is every node's weight: its
    voxel count (true RAHT, ``plan``'s), or 1 for every node (the layered stream's
    level-local RAHT, where a node's value is the mean of its children's)."""
    means = np.empty((off[depth + 1], 3))
    means[off[depth]:] = attrs
    for lv in range(depth - 1, -1, -1):
        m, base, cbase = counts[lv], off[lv], off[lv + 1]
        for p in range(m):
            f = first[base + p]
            e = first[base + p + 1] if p + 1 < m else counts[lv + 1]
            s0, s1, s2, tot = 0.0, 0.0, 0.0, 0.0
            for i in range(cbase + f, cbase + e):
                w = weight[i]
                s0 += w * means[i, 0]
                s1 += w * means[i, 1]
                s2 += w * means[i, 2]
                tot += w
            means[base + p, 0], means[base + p, 1], means[base + p, 2] = s0 / tot, s1 / tot, s2 / tot
    return means


@njit(cache=True, nogil=True)
def descend(coeffs, actual, counts, off, weight, first, occ, stop, encoding, ysteps, csteps, q, zero):
    """Root to level ``stop``: predict every block's children from the level above, code or
    take the residual's high passes, and rebuild the children; returns the attributes of
    level ``stop``'s nodes.

    Children = prediction + inverse(residual), where the residual's low pass is the
    parent's rebuilt value minus the prediction's (by linearity, the same as predicting the
    high passes and adding the coded differences), so neither side transforms the
    prediction. A block whose coded residual is all zero (most fine blocks) is its
    prediction shifted to the parent's mean.

    ``ysteps[l]``, ``csteps[l]``: luma and chroma steps of level l's coefficients (the DC
    is level 0's). Decoding, ``coeffs`` holds dequantized residuals in coding order (rows
    past its end count as zero). Encoding, ``actual`` holds ``level_means``; ``coeffs`` (n,
    3) receives the dequantized residuals, ``q`` the quantized ones and ``zero`` the "all
    three zero" flags: the encoder rebuilds exactly what the decoder will."""
    n = coeffs.shape[0]
    if n == 0 or counts[0] == 0:
        return np.zeros((0, 3))
    qrow = np.empty(3, np.int64)
    if encoding:
        sw = math.sqrt(weight[0])
        for c in range(3):
            coeffs[0, c] = actual[0, c] * sw
        _quantize_row(coeffs, 0, ysteps[0], csteps[0], q, zero, qrow)
    mean = np.empty((1, 3))
    for c in range(3):
        mean[0, c] = coeffs[0, c] / math.sqrt(weight[0])
    nbrs = np.full((1, 27), -1, np.int32)
    nearc = np.ones(1, np.int64)
    v = np.zeros((8, 3))
    pm = np.zeros((8, 3))  # predicted child means
    wt = np.zeros(8, np.int64)
    hi = np.empty((7, 3))
    w = np.empty(8, np.int64)
    ops = np.empty((7, 4), np.int64)
    ptot = np.empty(8)
    h = 1
    for lv in range(stop):
        m, base, cbase = counts[lv], off[lv], off[lv + 1]
        cmean = np.empty((counts[lv + 1], 3))
        step, chroma_step = ysteps[lv + 1], csteps[lv + 1]
        for p in range(m):
            f = first[base + p]
            e = first[base + p + 1] if p + 1 < m else counts[lv + 1]
            o = occ[base + p]
            wt[:] = 0
            ci = 0
            tot = 0
            for i in range(f, e):
                while not (o >> ci) & 1:
                    ci += 1
                wt[ci] = weight[cbase + i]
                tot += wt[ci]
                ci += 1
            k = e - f - 1
            if nearc[p] >= MIN_NEIGHBOURS and k > 0:
                _predict(p, o, mean, cmean, nbrs, occ, first, base, pm, ptot)
            else:  # the parent's value: a flat block, whose high passes are zero
                for ci in range(8):
                    pm[ci, 0], pm[ci, 1], pm[ci, 2] = mean[p, 0], mean[p, 1], mean[p, 2]
            if encoding and k > 0:
                i = cbase + f
                for ci in range(8):
                    if wt[ci]:
                        sw = math.sqrt(wt[ci])
                        for c in range(3):
                            v[ci, c] = (actual[i, c] - pm[ci, c]) * sw
                        i += 1
                w[:] = wt
                _block_forward(v, w, hi)
                for t in range(k):
                    coeffs[h + t, 0], coeffs[h + t, 1], coeffs[h + t, 2] = hi[t, 0], hi[t, 1], hi[t, 2]
                    _quantize_row(coeffs, h + t, step, chroma_step, q, zero, qrow)
            # the residual's low pass: the parent's value minus the prediction's mean
            s0, s1, s2 = 0.0, 0.0, 0.0
            for ci in range(8):
                if wt[ci]:
                    s0 += wt[ci] * pm[ci, 0]
                    s1 += wt[ci] * pm[ci, 1]
                    s2 += wt[ci] * pm[ci, 2]
            d0, d1, d2 = mean[p, 0] - s0 / tot, mean[p, 1] - s1 / tot, mean[p, 2] - s2 / tot
            flat = True  # every residual high pass of the block is zero
            for t in range(k):
                if h + t >= n:
                    break
                if coeffs[h + t, 0] != 0.0 or coeffs[h + t, 1] != 0.0 or coeffs[h + t, 2] != 0.0:
                    flat = False
                    break
            i = f
            if flat:
                for ci in range(8):
                    if wt[ci]:
                        cmean[i, 0], cmean[i, 1], cmean[i, 2] = pm[ci, 0] + d0, pm[ci, 1] + d1, pm[ci, 2] + d2
                        i += 1
            else:
                for t in range(k):
                    for c in range(3):
                        hi[t, c] = coeffs[h + t, c] if h + t < n else 0.0
                sw = math.sqrt(tot)
                v[0, 0], v[0, 1], v[0, 2] = d0 * sw, d1 * sw, d2 * sw
                _block_inverse(v, wt, hi, w, ops)
                for ci in range(8):
                    if wt[ci]:
                        sw = math.sqrt(wt[ci])
                        cmean[i, 0] = pm[ci, 0] + v[ci, 0] / sw
                        cmean[i, 1] = pm[ci, 1] + v[ci, 1] / sw
                        cmean[i, 2] = pm[ci, 2] + v[ci, 2] / sw
                        i += 1
            h += k
        if lv + 1 < stop:
            nbrs, nearc = _children_near(nbrs, occ[base:base + m], first[base:base + m])
        mean = cmean
    return mean


@njit(cache=True, nogil=True, inline="always")
def _predict(p, o, mean, cmean, nbrs, occ, first, base, pm, tot):
    """Each child's predicted mean: its parent's, its parent's neighbours' across the faces
    and edges it touches, or, where those neighbours' children are rebuilt already, the
    neighbouring child itself. Neighbour by neighbour: each is read once for the up to four
    children it touches."""
    y = mean[p, 0]
    for ci in range(8):
        pm[ci, 0], pm[ci, 1], pm[ci, 2] = W_PARENT * mean[p, 0], W_PARENT * mean[p, 1], W_PARENT * mean[p, 2]
        tot[ci] = W_PARENT
    for t in range(18):
        nb = nbrs[p, _NEAR[t]]
        if nb < 0:
            continue
        mask = _NEAR_MASK[t] & o
        if mask == 0:
            continue
        yn = mean[nb, 0]
        if yn <= LUMA_LOW * y or yn >= LUMA_HIGH * y:
            continue  # across an edge in the picture
        face = _NEAR_FACE[t]
        wp = W_FACE if face else W_EDGE
        wc = W_CHILD_FACE if face else W_CHILD_EDGE
        earlier = nb < p  # a block before this one: its children are rebuilt already
        po = occ[base + nb]
        fb = first[base + nb]
        for ci in range(8):
            if not (mask >> ci) & 1:
                continue
            if earlier:
                nci = _CN_CHILD[ci, _NEAR[t]]
                if (po >> nci) & 1:
                    sub = fb + _POPCOUNT[po & ((1 << nci) - 1)]
                    pm[ci, 0] += wc * cmean[sub, 0]
                    pm[ci, 1] += wc * cmean[sub, 1]
                    pm[ci, 2] += wc * cmean[sub, 2]
                    tot[ci] += wc
                    continue
            pm[ci, 0] += wp * yn
            pm[ci, 1] += wp * mean[nb, 1]
            pm[ci, 2] += wp * mean[nb, 2]
            tot[ci] += wp
    for ci in range(8):
        if (o >> ci) & 1:
            r = 1.0 / tot[ci]
            pm[ci, 0] *= r
            pm[ci, 1] *= r
            pm[ci, 2] *= r


@njit(cache=True, nogil=True, inline="always")
def _quantize_row(coeffs, j, step, chroma_step, q, zero, qrow):
    """Quantize row j into q[j] and zero[j]; leave its dequantized value in coeffs[j]."""
    z = quantize(coeffs, j, step, chroma_step, qrow)
    zero[j] = z
    if z:
        q[j, 0], q[j, 1], q[j, 2] = 0, 0, 0
    else:
        q[j, 0], q[j, 1], q[j, 2] = qrow[0], qrow[1], qrow[2]
    coeffs[j, 0] = q[j, 0] * step
    coeffs[j, 1] = q[j, 1] * chroma_step
    coeffs[j, 2] = q[j, 2] * chroma_step


@njit(cache=True, nogil=True)
def encode(colors, codes, depth, step, chroma_step, buf, counts, probs):
    """The colour section of sorted leaf ``codes`` (their depth-level Morton codes)."""
    n = codes.shape[0]
    plan_ = plan(codes, depth)
    actual = level_means(to_ycbcr(colors), *plan_, depth)
    coeffs = np.zeros((n, 3))
    q = np.zeros((n, 3), np.int64)
    zero = np.zeros(n, np.uint8)
    descend(coeffs, actual, *plan_, depth, True, np.full(depth + 1, step), np.full(depth + 1, chroma_step),
            q, zero)
    return code_coefficients(q, zero, buf, counts, probs)


@njit(cache=True, nogil=True)
def synthesize(coeffs, codes, depth):
    """RGB (n, 3) uint8 from ``_raht_kernels.decode_coefficients``' residuals and the geometry."""
    ones = np.ones(depth + 1)
    attrs = descend(coeffs, np.empty((0, 3)), *plan(codes, depth), depth, False, ones, ones,
                    np.empty((0, 3), np.int64), np.empty(0, np.uint8))
    return to_rgb(attrs)
