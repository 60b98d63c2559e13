"""numba kernels of the RAHT colour coder (region-adaptive hierarchical transform).

RAHT (de Queiroz and Chou, 2016) is an orthonormal Haar-like transform on the octree:
working one axis at a time from the leaves up (3 * depth binary levels, z then y then x,
which is exactly one bit of the Morton code per level), every pair of occupied siblings
with weights w1, w2 (their voxel counts) becomes

    low  = ( a x1 + b x2)      a = sqrt(w1 / (w1 + w2)), b = sqrt(w2 / (w1 + w2))
    high = (-b x1 + a x2)

and the low pass moves up with weight w1 + w2. A frame of n voxels gives n - 1 high-pass
coefficients and one DC. Being orthonormal, quantizing every coefficient with one step
spreads the error evenly; most fine-level coefficients quantize to zero.

Coefficients are coded coarse to fine. Per coefficient triplet: one flag "all three zero"
(context: was the previous triplet zero, and how coarse the level is), then per channel a
zero flag, sign, unary magnitude and an Exp-Golomb escape (contexts: channel, level
bucket, size of the channel's previous coefficient).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from codec._entropy import dec_bit, dec_start, enc_bit, enc_finish, enc_start

_BUCKETS = 4
_CLASSES = 5
_UNARY = 12
_EG = 32  # Exp-Golomb prefix and suffix contexts per channel
_CH_CTX = 2 + _UNARY
N_CONTEXTS = 2 * _BUCKETS * 2 + 3 * _BUCKETS * _CLASSES * _CH_CTX + 2 * 3 * _EG

# BT.709 RGB -> Y Cb Cr on the 0..255 scale (the metrics' definition, times 255).
_FWD = np.array([[0.2126, 0.7152, 0.0722], [-0.1146, -0.3854, 0.5], [0.5, -0.4542, -0.0458]])
_INV = np.linalg.inv(_FWD)


@njit(cache=True, nogil=True)
def _structure(codes, depth):
    """The merge plan of the transform: for each binary level, the nodes' weights and
    which consecutive nodes pair up. Returns flat arrays and per-level offsets."""
    n = codes.shape[0]
    levels = 3 * depth
    total = n * 2 + levels + 2
    keys = codes.copy()
    w = np.ones(n, np.int64)
    weights = np.empty(total, np.int64)  # weights of the nodes entering each level
    paired = np.empty(total, np.bool_)  # node i pairs with node i+1 at this level
    offsets = np.zeros(levels + 1, np.int64)
    m = n
    pos = 0
    for lv in range(levels):
        offsets[lv] = pos
        if pos + m > weights.shape[0]:  # grow (rarely needed)
            bigger_w = np.empty(2 * (pos + m), np.int64)
            bigger_p = np.empty(2 * (pos + m), np.bool_)
            bigger_w[:pos] = weights[:pos]
            bigger_p[:pos] = paired[:pos]
            weights, paired = bigger_w, bigger_p
        k = 0
        i = 0
        while i < m:
            weights[pos + i] = w[i]
            if i + 1 < m and (keys[i] >> 1) == (keys[i + 1] >> 1):
                paired[pos + i] = True
                weights[pos + i + 1] = w[i + 1]
                paired[pos + i + 1] = False
                keys[k] = keys[i] >> 1
                w[k] = w[i] + w[i + 1]
                i += 2
            else:
                paired[pos + i] = False
                keys[k] = keys[i] >> 1
                w[k] = w[i]
                i += 1
            k += 1
        pos += m
        m = k
    offsets[levels] = pos
    return weights, paired, offsets


@njit(cache=True, nogil=True)
def forward(attrs, codes, depth):
    """Coefficients (n, 3), coarse to fine: DC first, then each level's high passes from the
    top level down; and each coefficient's level (for the entropy contexts)."""
    n = codes.shape[0]
    weights, paired, offsets = _structure(codes, depth)
    levels = 3 * depth
    x = attrs.copy()
    coeffs = np.empty((n, 3), np.float64)
    level_of = np.empty(n, np.int64)
    highs = np.empty((n, 3), np.float64)
    high_level = np.empty(n, np.int64)
    nh = 0
    for lv in range(levels):
        start, stop = offsets[lv], offsets[lv + 1]
        m = stop - start
        k = 0
        i = 0
        while i < m:
            if paired[start + i]:
                w1, w2 = weights[start + i], weights[start + i + 1]
                a = math.sqrt(w1 / (w1 + w2))
                b = math.sqrt(w2 / (w1 + w2))
                for c in range(3):
                    x1, x2 = x[i, c], x[i + 1, c]
                    highs[nh, c] = -b * x1 + a * x2
                    x[k, c] = a * x1 + b * x2
                high_level[nh] = lv
                nh += 1
                i += 2
            else:
                for c in range(3):
                    x[k, c] = x[i, c]
                i += 1
            k += 1
    # coarse to fine: DC, then highs in reverse order of creation
    if n > 0:
        for c in range(3):
            coeffs[0, c] = x[0, c]
        level_of[0] = levels
    for j in range(nh):
        src = nh - 1 - j
        for c in range(3):
            coeffs[1 + j, c] = highs[src, c]
        level_of[1 + j] = high_level[src]
    return coeffs, level_of


@njit(cache=True, nogil=True)
def inverse(coeffs, codes, depth):
    """Attributes (n, 3) from coefficients in ``forward``'s order."""
    weights, paired, offsets = _structure(codes, depth)
    return _inverse(coeffs, codes.shape[0], weights, paired, offsets, 3 * depth)


@njit(cache=True, nogil=True)
def _levels_of(n, paired, offsets, levels):
    """The binary level of each coefficient in ``forward``'s (coarse to fine) order."""
    level_of = np.empty(n, np.int64)
    if n == 0:
        return level_of
    level_of[0] = levels
    k = 1
    for lv in range(levels - 1, -1, -1):
        for i in range(offsets[lv], offsets[lv + 1]):
            if paired[i]:
                level_of[k] = lv
                k += 1
    return level_of


@njit(cache=True, nogil=True)
def _inverse(coeffs, n, weights, paired, offsets, levels):
    x = np.empty((n, 3), np.float64)
    if n == 0:
        return x
    for c in range(3):
        x[0, c] = coeffs[0, c]
    nxt = 1  # next coefficient to read (they were written coarse to fine)
    y = np.empty((n, 3), np.float64)
    for lv in range(levels - 1, -1, -1):
        start, stop = offsets[lv], offsets[lv + 1]
        m = stop - start
        # the level's output nodes are x[0..k); expand into y[0..m)
        npairs = 0
        for i in range(m):
            if paired[start + i]:
                npairs += 1
        # highs of this level were emitted in creation order; we read them reversed
        hi_base = nxt + npairs - 1
        k = 0
        i = 0
        p = 0
        while i < m:
            if paired[start + i]:
                w1, w2 = weights[start + i], weights[start + i + 1]
                a = math.sqrt(w1 / (w1 + w2))
                b = math.sqrt(w2 / (w1 + w2))
                h = hi_base - p
                for c in range(3):
                    lo, hi = x[k, c], coeffs[h, c]
                    y[i, c] = a * lo - b * hi
                    y[i + 1, c] = b * lo + a * hi
                p += 1
                i += 2
            else:
                for c in range(3):
                    y[i, c] = x[k, c]
                i += 1
            k += 1
        nxt += npairs
        x, y = y, x
    return x


@njit(cache=True, nogil=True, inline="always")
def _class(mag):
    if mag < 3:
        return mag
    return 3 if mag <= 6 else 4


@njit(cache=True, nogil=True, inline="always")
def _bucket(level, levels):
    """0 = the coarsest quarter of the binary levels ... 3 = the finest."""
    return min(_BUCKETS - 1, (levels - level) * _BUCKETS // (levels + 1))


@njit(cache=True, nogil=True)
def encode(colors, codes, depth, step, chroma_step, buf, c0, c1):
    n = codes.shape[0]
    attrs = np.empty((n, 3), np.float64)
    for i in range(n):
        for c in range(3):
            attrs[i, c] = (_FWD[c, 0] * colors[i, 0] + _FWD[c, 1] * colors[i, 1]
                           + _FWD[c, 2] * colors[i, 2])
    coeffs, level_of = forward(attrs, codes, depth)
    levels = 3 * depth
    st = enc_start()
    base_ch = 2 * _BUCKETS * 2
    base_eg = base_ch + 3 * _BUCKETS * _CLASSES * _CH_CTX
    prev = np.zeros(3, np.int64)
    prev_zero = 0
    q = np.empty(3, np.int64)
    for j in range(n):
        for c in range(3):
            s = step if c == 0 else chroma_step
            q[c] = np.int64(np.floor(coeffs[j, c] / s + 0.5))
        bk = _bucket(level_of[j], levels)
        zero = 1 if (q[0] == 0 and q[1] == 0 and q[2] == 0) else 0
        st, buf = enc_bit(st, buf, c0, c1, (bk * 2 + prev_zero) * 2, zero)
        prev_zero = zero
        if zero:
            prev[:] = 0
            continue
        for c in range(3):
            ctx = base_ch + ((c * _BUCKETS + bk) * _CLASSES + _class(prev[c])) * _CH_CTX
            v = q[c]
            st, buf = enc_bit(st, buf, c0, c1, ctx, 1 if v != 0 else 0)
            if v != 0:
                st, buf = enc_bit(st, buf, c0, c1, ctx + 1, 1 if v < 0 else 0)
                m = abs(v) - 1
                u = 0
                while u < _UNARY and u < m:
                    st, buf = enc_bit(st, buf, c0, c1, ctx + 2 + u, 1)
                    u += 1
                if u < _UNARY:
                    st, buf = enc_bit(st, buf, c0, c1, ctx + 2 + u, 0)
                else:
                    e = m - _UNARY + 1
                    nbits = 0
                    while (e >> (nbits + 1)) > 0:
                        nbits += 1
                    for b in range(nbits):
                        st, buf = enc_bit(st, buf, c0, c1, base_eg + c * _EG + b, 1)
                    st, buf = enc_bit(st, buf, c0, c1, base_eg + c * _EG + nbits, 0)
                    for b in range(nbits - 1, -1, -1):
                        st, buf = enc_bit(st, buf, c0, c1, base_eg + (3 + c) * _EG + b, (e >> b) & 1)
            prev[c] = abs(v)
    return enc_finish(st, buf)


@njit(cache=True, nogil=True)
def decode(buf, codes, depth, step, chroma_step, c0, c1):
    """Inverse of ``encode``: RGB (n, 3) uint8 and a status (0 ok, 2 corrupt)."""
    n = codes.shape[0]
    levels = 3 * depth
    st = dec_start(buf)
    base_ch = 2 * _BUCKETS * 2
    base_eg = base_ch + 3 * _BUCKETS * _CLASSES * _CH_CTX
    # the merge plan, and so each coefficient's level, follow from the geometry alone
    weights, paired, offsets = _structure(codes, depth)
    level_of = _levels_of(n, paired, offsets, levels)
    coeffs = np.zeros((n, 3), np.float64)
    rgb = np.empty((n, 3), np.uint8)
    prev = np.zeros(3, np.int64)
    prev_zero = 0
    for j in range(n):
        bk = _bucket(level_of[j], levels)
        zero, st = dec_bit(st, buf, c0, c1, (bk * 2 + prev_zero) * 2)
        prev_zero = zero
        if zero:
            prev[:] = 0
            continue
        for c in range(3):
            ctx = base_ch + ((c * _BUCKETS + bk) * _CLASSES + _class(prev[c])) * _CH_CTX
            v = 0
            nz, st = dec_bit(st, buf, c0, c1, ctx)
            if nz:
                neg, st = dec_bit(st, buf, c0, c1, ctx + 1)
                m = 0
                while m < _UNARY:
                    more, st = dec_bit(st, buf, c0, c1, ctx + 2 + m)
                    if not more:
                        break
                    m += 1
                if m == _UNARY:
                    nbits = 0
                    while nbits < _EG - 1:
                        more, st = dec_bit(st, buf, c0, c1, base_eg + c * _EG + nbits)
                        if not more:
                            break
                        nbits += 1
                    if nbits >= _EG - 1:
                        return rgb[:0], 2
                    e = 1
                    for b in range(nbits - 1, -1, -1):
                        bit, st = dec_bit(st, buf, c0, c1, base_eg + (3 + c) * _EG + b)
                        e = (e << 1) | bit
                    m = _UNARY + e - 1
                v = -(m + 1) if neg else m + 1
            coeffs[j, c] = v * (step if c == 0 else chroma_step)
            prev[c] = abs(v)
        if st[3] > 8:
            return rgb[:0], 2
    if st[3] > 8:
        return rgb[:0], 2
    attrs = _inverse(coeffs, n, weights, paired, offsets, levels)
    for i in range(n):
        for c in range(3):
            v = _INV[c, 0] * attrs[i, 0] + _INV[c, 1] * attrs[i, 1] + _INV[c, 2] * attrs[i, 2]
            rgb[i, c] = min(255.0, max(0.0, math.floor(v + 0.5)))
    return rgb, 0
