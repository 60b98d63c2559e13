"""numba kernels of the RAHT colour coder (region-adaptive hierarchical transform): the
butterfly, colour spaces, quantization and the coefficients' entropy coder.

RAHT (de Queiroz and Chou, 2016) is an orthonormal Haar-like transform on the octree:
working one axis at a time from the leaves up (3 * depth binary levels, z then y then x,
which is exactly one bit of the Morton code per level), every pair of occupied siblings
with weights w1, w2 (their voxel counts) becomes

    low  = ( a x1 + b x2)      a = sqrt(w1 / (w1 + w2)), b = sqrt(w2 / (w1 + w2))
    high = (-b x1 + a x2)

and the low pass moves up with weight w1 + w2. A frame of n voxels gives n - 1 high-pass
coefficients and one DC. Being orthonormal, quantizing every coefficient with one step
spreads the error evenly; most fine-level coefficients quantize to zero. The transform,
block by block with the prediction of every block's high passes from the level above, is
``_raht_prediction``; this module codes what it gives.

Coefficients are coded coarse to fine. Per coefficient triplet: one flag "all three zero"
(contexts: how coarse the coefficient is, and the run of zero flags before it), then per
channel a signed integer (``_entropy.enc_signed``; contexts: channel, coarseness, size of
the channel's previous coefficient). Coarseness is read from the coefficient's place in
the order (first 1/64, 1/16, 1/4, rest), which measured as well as its octree level and
lets the decoder entropy-decode colour without waiting for the geometry.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from codec._entropy import (
    BYTES_PER_BIT,
    EG_CONTEXTS,
    SIGNED_MAX_BITS,
    dec_bit,
    dec_signed,
    dec_start,
    enc_bit,
    enc_finish,
    enc_signed,
    enc_start,
    reserve,
)

_BUCKETS = 4
_CLASSES = 5
_UNARY = 12
_CH_CTX = 2 + _UNARY
N_CONTEXTS = 2 * _BUCKETS * 2 + 3 * _BUCKETS * _CLASSES * _CH_CTX + 3 * EG_CONTEXTS
_BLOCK = 1024  # coefficients coded between two checks of the output buffer's room

# BT.709 RGB -> Y Cb Cr on the 0..255 scale (the metrics' definition, times 255).
_FWD = np.array([[0.2126, 0.7152, 0.0722], [-0.1146, -0.3854, 0.5], [0.5, -0.4542, -0.0458]])
_INV = np.linalg.inv(_FWD)


_SMALL = 32  # butterflies of siblings lighter than this come from a table


def _pair_table() -> np.ndarray:
    # the same operations as ``_pair``'s formula, so table and formula agree to the bit
    table = np.zeros((_SMALL, _SMALL, 2))
    for w1 in range(1, _SMALL):
        for w2 in range(1, _SMALL):
            inv = 1.0 / math.sqrt(w1 + w2)
            table[w1, w2] = math.sqrt(w1) * inv, math.sqrt(w2) * inv
    return table


_PAIRS = _pair_table()


@njit(cache=True, nogil=True, inline="always")
def _pair(w1, w2):
    """The butterfly's coefficients for siblings of weights w1 and w2. Most pairs are of
    light nodes near the leaves: a table spares them two square roots and a division."""
    if w1 < _SMALL and w2 < _SMALL:
        return _PAIRS[w1, w2, 0], _PAIRS[w1, w2, 1]
    inv = 1.0 / math.sqrt(w1 + w2)
    return math.sqrt(w1) * inv, math.sqrt(w2) * inv


@njit(cache=True, nogil=True, inline="always")
def _class(mag):
    if mag < 3:
        return mag
    return 3 if mag <= 6 else 4


@njit(cache=True, nogil=True, inline="always")
def _index_bucket(j, n):
    """How coarse coefficient j is, from its place in the coarse-to-fine order alone."""
    if j * 64 < n:
        return 0
    if j * 16 < n:
        return 1
    return 2 if j * 4 < n else 3


@njit(cache=True, nogil=True, inline="always")
def _zero_ctx(bk, run):
    """The "all three zero" flag's context: how coarse the coefficient is, and how many
    flags in a row before it were zero (0, 1, 2-3, 4+)."""
    return bk * 4 + (run if run < 2 else (2 if run < 4 else 3))


#: Quantization rounds |coefficient| / step + ROUNDING down (0.5: to the nearest level). Below
#: 0.5 the zero bin widens (a dead zone, as in G-PCC's and HEVC's encoders): small
#: coefficients, which cost more bits than the error they remove, go to zero. Encoder only.
ROUNDING = 1 / 3  # swept 0.25-0.5 on the tuning frames (docs/codec.md)


@njit(cache=True, nogil=True, inline="always")
def quantize(coeffs, j, step, chroma_step, q):
    """Quantize coefficient row ``j`` (Y with ``step``, Cb Cr with ``chroma_step``) into
    ``q``; returns 1 when all three are zero (most fine coefficients: q is left alone)."""
    u0 = abs(coeffs[j, 0]) / step + ROUNDING
    u1 = abs(coeffs[j, 1]) / chroma_step + ROUNDING
    u2 = abs(coeffs[j, 2]) / chroma_step + ROUNDING
    if u0 < 1.0 and u1 < 1.0 and u2 < 1.0:
        return 1
    q[0] = np.int64(np.floor(u0)) * (1 if coeffs[j, 0] >= 0 else -1)
    q[1] = np.int64(np.floor(u1)) * (1 if coeffs[j, 1] >= 0 else -1)
    q[2] = np.int64(np.floor(u2)) * (1 if coeffs[j, 2] >= 0 else -1)
    return 0


@njit(cache=True, nogil=True)
def to_ycbcr(colors):
    n = colors.shape[0]
    attrs = np.empty((n, 3), np.float64)
    for i in range(n):
        for c in range(3):
            attrs[i, c] = (_FWD[c, 0] * colors[i, 0] + _FWD[c, 1] * colors[i, 1]
                           + _FWD[c, 2] * colors[i, 2])
    return attrs


@njit(cache=True, nogil=True)
def code_coefficients(q, zero, buf, counts, probs):
    """Entropy-code quantized coefficients (n, 3) in order, with their "all zero" flags."""
    n = q.shape[0]
    st = enc_start(buf)
    base_ch = 2 * _BUCKETS * 2
    base_eg = base_ch + 3 * _BUCKETS * _CLASSES * _CH_CTX
    prev = np.zeros(3, np.int64)
    run = 0
    for block in range(0, n, _BLOCK):
        buf = reserve(buf, st, _BLOCK * (1 + 3 * SIGNED_MAX_BITS) * BYTES_PER_BIT)
        for j in range(block, min(block + _BLOCK, n)):
            z = zero[j]
            bk = _index_bucket(j, n)
            st = enc_bit(st, buf, counts, probs, _zero_ctx(bk, run), z)
            run = run + 1 if z else 0
            if z:
                prev[:] = 0
                continue
            for c in range(3):
                ctx = base_ch + ((c * _BUCKETS + bk) * _CLASSES + _class(prev[c])) * _CH_CTX
                v = q[j, c]
                st = enc_signed(st, buf, counts, probs, ctx, base_eg + c * EG_CONTEXTS, _UNARY, v)
                prev[c] = abs(v)
    return enc_finish(st, buf)


@njit(cache=True, nogil=True)
def decode_coefficients(buf, n, step, chroma_step, counts, probs):
    """The dequantized coefficients (n, 3) and a status (0 ok, 2 corrupt).

    Needs only the voxel count, not the geometry: the contexts depend on a coefficient's
    place in the coarse-to-fine order, so this runs while the octree is being decoded.
    """
    st = dec_start(buf)
    base_ch = 2 * _BUCKETS * 2
    base_eg = base_ch + 3 * _BUCKETS * _CLASSES * _CH_CTX
    coeffs = np.zeros((n, 3), np.float64)
    prev = np.zeros(3, np.int64)
    run = 0
    for j in range(n):
        bk = _index_bucket(j, n)
        zero, st = dec_bit(st, buf, counts, probs, _zero_ctx(bk, run))
        run = run + 1 if zero else 0
        if zero:
            prev[:] = 0
            continue
        for c in range(3):
            ctx = base_ch + ((c * _BUCKETS + bk) * _CLASSES + _class(prev[c])) * _CH_CTX
            v, ok, st = dec_signed(st, buf, counts, probs, ctx, base_eg + c * EG_CONTEXTS, _UNARY)
            if not ok:
                return coeffs[:0], 2
            coeffs[j, c] = v * (step if c == 0 else chroma_step)
            prev[c] = abs(v)
        if st[3] > 8:
            return coeffs[:0], 2
    return coeffs, 0


@njit(cache=True, nogil=True)
def to_rgb(attrs):
    """uint8 RGB of Y Cb Cr rows (BT.709, 0..255 scale), rounded and clipped."""
    n = attrs.shape[0]
    rgb = np.empty((n, 3), np.uint8)
    for i in range(n):
        for c in range(3):
            v = _INV[c, 0] * attrs[i, 0] + _INV[c, 1] * attrs[i, 1] + _INV[c, 2] * attrs[i, 2]
            rgb[i, c] = min(255.0, max(0.0, math.floor(v + 0.5)))
    return rgb
