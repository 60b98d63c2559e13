"""Adaptive binary arithmetic coding (a range coder in the style of LZMA's), in numba.

Each context keeps two counts; the probability of a 0 is (n0 + 0.4) / (n + 0.8), taken to
12 bits with a reciprocal table instead of a division, and the counts are halved when their
sum passes ``COUNT_LIMIT`` so that the model keeps adapting. A model is two arrays: the
counts (n0, n1 side by side) and each context's current probability, recomputed when the
counts change, so that coding a bit reads one number (the decoder's next context often
depends on this bit: the shorter that chain, the faster it decodes).

The coder state is a tuple of integers that the caller threads through its loop
(``st = enc_bit(st, ...)``), so that numba keeps it in registers:

    encoder: (low, range, write position); a carry out of ``low`` is added to the bytes
             already written (the first byte is a zero that absorbs it, as in LZMA)
    decoder: (code, range, read position, bytes read past the end)

Reading past the end of the buffer yields zero bytes and counts an overrun, so a truncated
or corrupted stream decodes to garbage that the caller rejects, never to a crash.
"""

from __future__ import annotations

import numpy as np
from numba import njit

COUNT_LIMIT = 250
PROB_BITS = 12
TOP = 1 << 24
_RECIPROCAL = np.array([(1 << 30) // (10 * n + 8) for n in range(COUNT_LIMIT + 2)], np.int64)


def new_model(n_contexts: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh statistics for ``n_contexts`` contexts: (counts, probabilities). uint8 counts
    and uint16 probabilities keep thousands of contexts in the CPU's caches."""
    return (np.zeros((n_contexts, 2), np.uint8),
            np.full(n_contexts, 1 << (PROB_BITS - 1), np.uint16))  # no counts: p = 1/2


@njit(cache=True, nogil=True, inline="always")
def count(counts, ctx, bit):
    """Count ``bit`` in context ``ctx``, halving the counts past ``COUNT_LIMIT``; returns
    the new (n0, n1)."""
    n0 = np.int64(counts[ctx, 0]) + (1 - bit)
    n1 = np.int64(counts[ctx, 1]) + bit
    if n0 + n1 > COUNT_LIMIT:
        n0 = (n0 + 1) >> 1
        n1 = (n1 + 1) >> 1
    counts[ctx, 0] = n0
    counts[ctx, 1] = n1
    return n0, n1


@njit(cache=True, nogil=True, inline="always")
def prob_of(n0, n1):
    """The probability of a 0 after counts (n0, n1): (n0 + 0.4) / (n + 0.8), 12 bits."""
    p = ((10 * n0 + 4) * _RECIPROCAL[n0 + n1]) >> (30 - PROB_BITS)
    return min(max(p, 1), (1 << PROB_BITS) - 1)


@njit(cache=True, nogil=True, inline="always")
def _update(counts, probs, ctx, bit):
    n0, n1 = count(counts, ctx, bit)
    probs[ctx] = prob_of(n0, n1)


def new_buffer(capacity: int) -> np.ndarray:
    return np.empty(max(int(capacity), 64), np.uint8)


#: The most bytes one coded decision can add: a probability is at least 1/4096, so the
#: range loses at most 12 bits and normalization writes at most two bytes.
BYTES_PER_BIT = 2


@njit(cache=True, nogil=True)
def reserve(buf, st, need):
    """``buf``, or a copy at least twice as large, with room for ``need`` more bytes.

    The coding loops call this between blocks of decisions, never per decision: a buffer
    that may be replaced inside the hot loop cost numba much of the encoder's speed when it
    was measured (docs/codec.md, "Speed: where the time goes")."""
    if st[2] + need <= buf.shape[0]:
        return buf
    bigger = np.empty(max(2 * buf.shape[0], st[2] + need), np.uint8)
    bigger[: st[2]] = buf[: st[2]]
    return bigger


@njit(cache=True, nogil=True, inline="always")
def enc_start(buf):
    """A fresh encoder writing into ``buf`` (its first byte is the one a carry can reach)."""
    buf[0] = 0
    return (np.int64(0), np.int64(0xFFFFFFFF), np.int64(1))


@njit(cache=True, nogil=True, inline="always")
def enc_bit(st, buf, counts, probs, ctx, bit):
    """Code one bit in context ``ctx``; returns the new state. The caller has ``reserve``d
    ``BYTES_PER_BIT`` bytes for it."""
    st = enc_p(st, buf, np.int64(probs[ctx]), bit)
    _update(counts, probs, ctx, bit)
    return st


@njit(cache=True, nogil=True, inline="always")
def enc_p(st, buf, p, bit):
    """Code one bit whose probability of a 0 is ``p`` (12 bits, 1..4095)."""
    low, rng, pos = st
    bound = (rng >> PROB_BITS) * p
    take = -np.int64(bit)  # all ones for a 1: select without a branch the CPU would mispredict
    low += bound & take
    rng = bound ^ ((bound ^ (rng - bound)) & take)
    if low >= 0x100000000:  # carry into the bytes already written (the first is never 0xFF)
        low -= 0x100000000
        i = pos - 1
        while buf[i] == 0xFF:
            buf[i] = 0
            i -= 1
        buf[i] += 1
    while rng < TOP:
        buf[pos] = (low >> 24) & 0xFF
        pos += 1
        low = (low << 8) & 0xFFFFFFFF
        rng <<= 8
    return (low, rng, pos)


@njit(cache=True, nogil=True)
def enc_finish(st, buf):
    """The coded bytes: ``buf`` up to the last of the four that pin the final interval."""
    buf = reserve(buf, st, 4)
    low, rng, pos = st
    for _ in range(4):
        buf[pos] = (low >> 24) & 0xFF
        pos += 1
        low = (low << 8) & 0xFFFFFFFF
    return buf[:pos]


@njit(cache=True, nogil=True, inline="always")
def _get(buf, pos, overrun):
    if pos < buf.shape[0]:
        return np.int64(buf[pos]), pos + 1, overrun
    return np.int64(0), pos, overrun + 1


@njit(cache=True, nogil=True)
def dec_start(buf):
    code, pos, overrun = np.int64(0), np.int64(0), np.int64(0)
    for _ in range(5):
        b, pos, overrun = _get(buf, pos, overrun)
        code = ((code << 8) | b) & 0xFFFFFFFF
    return (code, np.int64(0xFFFFFFFF), pos, overrun)


@njit(cache=True, nogil=True, inline="always")
def dec_bit(st, buf, counts, probs, ctx):
    """Decode one bit; returns (bit, new state)."""
    bit, st = dec_p(st, buf, np.int64(probs[ctx]))
    _update(counts, probs, ctx, bit)
    return bit, st


@njit(cache=True, nogil=True, inline="always")
def dec_p(st, buf, p):
    """Decode one bit whose probability of a 0 is ``p``; returns (bit, new state)."""
    code, rng, pos, overrun = st
    bound = (rng >> PROB_BITS) * p
    bit = np.int64(code >= bound)
    take = -bit  # branch-free, as in enc_bit: the decoded bit is the least predictable branch
    code -= bound & take
    rng = bound ^ ((bound ^ (rng - bound)) & take)
    while rng < TOP:
        rng <<= 8
        b, pos, overrun = _get(buf, pos, overrun)
        code = ((code << 8) | b) & 0xFFFFFFFF
    return bit, (code, rng, pos, overrun)


#: Contexts one signed-integer coder uses beyond its ``2 + unary`` magnitude contexts: the
#: Exp-Golomb escape's prefix (EG_PREFIX) and suffix bits.
EG_PREFIX = 32
EG_CONTEXTS = 2 * EG_PREFIX
#: Decisions ``enc_signed`` codes at most (zero, sign, unary, escape prefix and suffix).
SIGNED_MAX_BITS = 2 + 16 + 2 * EG_PREFIX


@njit(cache=True, nogil=True, inline="always")
def enc_signed(st, buf, counts, probs, ctx, eg_ctx, unary, v):
    """Code a signed integer: zero flag (``ctx``), sign (``ctx + 1``), ``|v| - 1`` in unary
    up to ``unary`` bits (``ctx + 2 + j``), then an Exp-Golomb escape whose prefix and
    suffix bits have contexts of their own (``eg_ctx`` .. ``eg_ctx + EG_CONTEXTS``).
    Codes at most ``SIGNED_MAX_BITS`` decisions for ``unary`` <= 16."""
    st = enc_bit(st, buf, counts, probs, ctx, 1 if v != 0 else 0)
    if v == 0:
        return st
    st = enc_bit(st, buf, counts, probs, ctx + 1, 1 if v < 0 else 0)
    m = abs(v) - 1
    j = 0
    while j < unary and j < m:
        st = enc_bit(st, buf, counts, probs, ctx + 2 + j, 1)
        j += 1
    if j < unary:
        return enc_bit(st, buf, counts, probs, ctx + 2 + j, 0)
    e = m - unary + 1
    nbits = 0
    while (e >> (nbits + 1)) > 0:
        nbits += 1
    for b in range(nbits):
        st = enc_bit(st, buf, counts, probs, eg_ctx + b, 1)
    st = enc_bit(st, buf, counts, probs, eg_ctx + nbits, 0)
    for b in range(nbits - 1, -1, -1):
        st = enc_bit(st, buf, counts, probs, eg_ctx + EG_PREFIX + b, (e >> b) & 1)
    return st


@njit(cache=True, nogil=True, inline="always")
def dec_signed(st, buf, counts, probs, ctx, eg_ctx, unary):
    """Inverse of ``enc_signed``: (value, ok, state); ok is False for an impossible code."""
    nonzero, st = dec_bit(st, buf, counts, probs, ctx)
    if not nonzero:
        return 0, True, st
    neg, st = dec_bit(st, buf, counts, probs, ctx + 1)
    m = 0
    while m < unary:
        more, st = dec_bit(st, buf, counts, probs, ctx + 2 + m)
        if not more:
            break
        m += 1
    if m == unary:
        nbits = 0
        while nbits < EG_PREFIX - 1:
            more, st = dec_bit(st, buf, counts, probs, eg_ctx + nbits)
            if not more:
                break
            nbits += 1
        if nbits >= EG_PREFIX - 1:
            return 0, False, st
        e = 1
        for b in range(nbits - 1, -1, -1):
            bit, st = dec_bit(st, buf, counts, probs, eg_ctx + EG_PREFIX + b)
            e = (e << 1) | bit
        m = unary + e - 1
    return (-(m + 1) if neg else m + 1), True, st
