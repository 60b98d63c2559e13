"""numba kernels of logistic context mixing: several context models' predictions of one
bit combined into one probability, with weights that learn which model to trust where.

The scheme of the PAQ / lpaq family of compressors, in integers so that every machine
computes the same probabilities (the decoder must reproduce the encoder's exactly):

- a model's probability p (12 bits) goes to the logistic domain, ``stretch(p) = ln(p /
  (1 - p))`` in units of 1/256, clamped to +-2047;
- the mix is ``squash(sum of w_j * stretch(p_j))``, with 16.16 fixed-point weights chosen
  per bit from a small set (the caller's selector);
- after the bit, each weight moves along its input times the error (online gradient
  descent on code length).

``squash`` interpolates a 33-point table of 4096 / (1 + e^(-x/256)) and ``stretch`` is its
inverse, built from it by a scan: integers only, no libm in the loop or the tables.
Probabilities here are those of a 0, as in ``_entropy``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._entropy import PROB_BITS

#: 4096 / (1 + e^(-x/256)) at x = -2048, -1920, ..., 2048, rounded
_SQUASH_POINTS = np.array([1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546,
                           2047, 2549, 2994, 3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068,
                           4079, 4085, 4089, 4092, 4093, 4094], np.int64)
#: 1.0 in the weights' fixed point
ONE = 1 << 16


def _squash_table() -> np.ndarray:
    out = np.empty(4095, np.int64)  # x = -2047 .. 2047
    for x in range(-2047, 2048):
        w = x & 127
        d = (x >> 7) + 16
        out[x + 2047] = (_SQUASH_POINTS[d] * (128 - w) + _SQUASH_POINTS[d + 1] * w + 64) >> 7
    return out


_SQUASH = _squash_table().astype(np.int16)  # 8 kB: the tables stay in the L1 cache


def _stretch_table() -> np.ndarray:
    out = np.empty(1 << PROB_BITS, np.int64)
    pi = 0
    for x in range(-2047, 2048):  # the smallest x whose squash reaches each probability
        v = int(_SQUASH[x + 2047])
        for j in range(pi, v + 1):
            out[j] = x
        pi = max(pi, v + 1)
    out[pi:] = 2047
    return out


_STRETCH = _stretch_table().astype(np.int16)


@njit(cache=True, nogil=True, inline="always")
def stretch(p):
    return np.int64(_STRETCH[p])


@njit(cache=True, nogil=True, inline="always")
def squash(x):
    """The probability (12 bits, kept within 1..4095 so that neither symbol costs more than
    12 bits) of logistic-domain ``x``."""
    x = min(max(x, -2047), 2047)
    return min(max(np.int64(_SQUASH[x + 2047]), 1), (1 << PROB_BITS) - 1)


@njit(cache=True, nogil=True, inline="always")
def mix3(w, r, s0, s1, s2, bias):
    """The mixed probability of inputs ``s0..s2`` (stretched) and a constant ``bias``
    input, with row ``r`` of the weights ``w``."""
    return squash((w[r, 0] * s0 + w[r, 1] * s1 + w[r, 2] * s2 + w[r, 3] * bias) >> 16)


@njit(cache=True, nogil=True, inline="always")
def learn3(w, r, s0, s1, s2, bias, p, bit, rate):
    """Move weight row ``r`` against the coding error of ``p`` on ``bit``."""
    err = (((1 - bit) << PROB_BITS) - p) * rate
    w[r, 0] += (s0 * err) >> 16
    w[r, 1] += (s1 * err) >> 16
    w[r, 2] += (s2 * err) >> 16
    w[r, 3] += (bias * err) >> 16


@njit(cache=True, nogil=True, inline="always")
def hash_key(a, b, c, bits):
    """A ``bits``-bit table index of the key (a, b, c): three uint64 parts."""
    h = ((a * np.uint64(0x9E3779B97F4A7C15)) ^ b ^ c) * np.uint64(0xD6E8FEB86659FD93)
    return np.int64(h >> np.uint64(64 - bits))
