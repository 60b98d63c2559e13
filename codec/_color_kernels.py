"""numba kernels of the colour coder: YCoCg-R, closed-loop DPCM in Morton order, and
adaptive binary arithmetic coding of the residuals.

Each voxel's colour is predicted from the previous voxel's reconstructed colour (Morton
order keeps neighbours close), the residual is quantized with ``step`` (1 = lossless) and
binarized by ``_entropy.enc_signed`` (zero flag, sign, unary magnitude up to 14, an
Exp-Golomb escape). The contexts are the channel and how large the channel's previous
residual was.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._entropy import EG_CONTEXTS, dec_signed, dec_start, enc_finish, enc_signed, enc_start

_CLASSES = 5
_UNARY = 14
_EG = 3 * _CLASSES * (2 + _UNARY)  # where the Exp-Golomb contexts start
N_CONTEXTS = _EG + 3 * EG_CONTEXTS


@njit(cache=True, nogil=True, inline="always")
def _class(mag):
    if mag == 0:
        return 0
    if mag == 1:
        return 1
    if mag == 2:
        return 2
    return 3 if mag <= 4 else 4


@njit(cache=True, nogil=True)
def rgb_to_ycocg(colors):
    out = np.empty((colors.shape[0], 3), np.int64)
    for i in range(colors.shape[0]):
        r, g, b = np.int64(colors[i, 0]), np.int64(colors[i, 1]), np.int64(colors[i, 2])
        co = r - b
        t = b + (co >> 1)
        cg = g - t
        out[i, 0] = t + (cg >> 1)
        out[i, 1] = co
        out[i, 2] = cg
    return out


@njit(cache=True, nogil=True)
def ycocg_to_rgb(ycc):
    out = np.empty((ycc.shape[0], 3), np.uint8)
    for i in range(ycc.shape[0]):
        y, co, cg = ycc[i, 0], ycc[i, 1], ycc[i, 2]
        t = y - (cg >> 1)
        g = cg + t
        b = t - (co >> 1)
        r = b + co
        out[i, 0] = min(255, max(0, r))
        out[i, 1] = min(255, max(0, g))
        out[i, 2] = min(255, max(0, b))
    return out


@njit(cache=True, nogil=True, inline="always")
def _base(ch, cls):
    return (ch * _CLASSES + cls) * (2 + _UNARY)


@njit(cache=True, nogil=True)
def encode_colors(colors, step, buf, counts, probs):
    """Code uint8 RGB (N, 3) in the given (Morton) order; ``step`` >= 1 quantizes."""
    ycc = rgb_to_ycocg(colors)
    st = enc_start()
    pred = np.array([128, 0, 0], np.int64)
    prev = np.zeros(3, np.int64)
    for i in range(ycc.shape[0]):
        for ch in range(3):
            diff = ycc[i, ch] - pred[ch]
            q = (abs(diff) + step // 2) // step
            r = q if diff >= 0 else -q
            st, buf = enc_signed(st, buf, counts, probs, _base(ch, _class(prev[ch])), _EG + ch * EG_CONTEXTS,
                                 _UNARY, r)
            pred[ch] += r * step
            prev[ch] = abs(r)
    return enc_finish(st, buf)


@njit(cache=True, nogil=True)
def decode_colors(buf, n, step, counts, probs):
    """Inverse of ``encode_colors``; returns (RGB (n, 3), status: 0 ok, 2 corrupt)."""
    st = dec_start(buf)
    pred = np.array([128, 0, 0], np.int64)
    prev = np.zeros(3, np.int64)
    ycc = np.empty((n, 3), np.int64)
    for i in range(n):
        for ch in range(3):
            r, ok, st = dec_signed(st, buf, counts, probs, _base(ch, _class(prev[ch])),
                                   _EG + ch * EG_CONTEXTS, _UNARY)
            pred[ch] += r * step
            if not ok or abs(pred[ch]) > 4096:
                return ycocg_to_rgb(ycc[:0]), 2
            prev[ch] = abs(r)
            ycc[i, ch] = pred[ch]
        if st[3] > 8:
            return ycocg_to_rgb(ycc[:0]), 2
    return ycocg_to_rgb(ycc), 0
