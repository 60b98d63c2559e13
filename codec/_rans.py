"""numba kernels of a static-model rANS coder (range asymmetric numeral systems).

Where the adaptive binary coder of ``_entropy`` pays a few ns per binary decision
(docs/codec.md, "Speed: where the time goes") and a value takes several decisions, rANS
codes a whole symbol from a table in a few
instructions, at the price of two passes (count, then code) and a frequency table sent
with the data. The lossless colour coder uses it (``_color_kernels``).

Conventions (after F. Giesen's ``rans_word``): a 32-bit state in ``[L, L << 16)``,
16-bit renormalization words, frequencies summing to ``M = 1 << SCALE_BITS``. The encoder
codes symbols in reverse and stacks its words; the stream is the stack reversed, so the
decoder reads forward. Several states may interleave in one word stream as long as the
encoder visits the symbols in exactly the reverse of the decoder's order.

A frequency table travels as, per context, a varint count ``k`` of symbols (0: context
unused) and ``k`` varint frequencies; ``read_tables`` accepts only tables whose used
contexts sum to exactly ``M``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

SCALE_BITS = 12
M = 1 << SCALE_BITS
L = 1 << 16
NO_SYMBOL = 255  # slot table entry of an unused context: a decoder that reaches it stops


def normalize(hist: np.ndarray) -> np.ndarray:
    """Frequencies summing to ``M`` per used context (row), every seen symbol at least 1."""
    hist = np.asarray(hist, np.int64)
    total = hist.sum(axis=1, keepdims=True)
    freq = np.where(hist > 0, np.maximum(1, (hist * M + total // 2) // np.maximum(total, 1)), 0)
    used = total[:, 0] > 0
    rows = np.flatnonzero(used)
    top = freq[rows].argmax(axis=1)
    # the largest frequency absorbs the rounding (at most one per symbol, far below it)
    freq[rows, top] += M - freq[rows].sum(axis=1)
    return freq


@njit(cache=True, nogil=True)
def starts(freq):
    """Cumulative frequencies: where each symbol's slots begin, per context."""
    out = np.zeros(freq.shape, np.int64)
    for c in range(freq.shape[0]):
        acc = 0
        for s in range(freq.shape[1]):
            out[c, s] = acc
            acc += freq[c, s]
    return out


@njit(cache=True, nogil=True)
def slot_symbols(freq):
    """The decoder's table: the symbol owning each of the ``M`` slots, per context."""
    out = np.full((freq.shape[0], M), NO_SYMBOL, np.uint8)
    for c in range(freq.shape[0]):
        at = 0
        for s in range(freq.shape[1]):
            for _ in range(freq[c, s]):
                out[c, at] = s
                at += 1
    return out


@njit(cache=True, nogil=True)
def write_tables(freq, buf, pos):
    """Serialize ``freq`` at ``buf[pos:]`` (room: 3 bytes per entry and per row);
    returns the position after it."""
    for c in range(freq.shape[0]):
        k = 0
        for s in range(freq.shape[1]):
            if freq[c, s] > 0:
                k = s + 1
        pos = _put_varint(buf, pos, k)
        for s in range(k):
            pos = _put_varint(buf, pos, freq[c, s])
    return pos


@njit(cache=True, nogil=True)
def read_tables(buf, n_contexts, n_symbols):
    """Inverse of ``write_tables``: (freq, bytes read, ok); never reads past ``buf``."""
    freq = np.zeros((n_contexts, n_symbols), np.int64)
    pos = 0
    for c in range(n_contexts):
        k, pos, ok = _get_varint(buf, pos)
        if not ok or k > n_symbols:
            return freq, pos, False
        total = 0
        for s in range(k):
            f, pos, ok = _get_varint(buf, pos)
            if not ok or f > M:
                return freq, pos, False
            freq[c, s] = f
            total += f
        if k > 0 and total != M:
            return freq, pos, False
    return freq, pos, True


@njit(cache=True, nogil=True, inline="always")
def _put_varint(buf, pos, v):
    while v >= 128:
        buf[pos] = (v & 127) | 128
        pos += 1
        v >>= 7
    buf[pos] = v
    return pos + 1


@njit(cache=True, nogil=True, inline="always")
def _get_varint(buf, pos):
    v = 0
    for shift in range(0, 21, 7):  # frequencies and counts fit three bytes
        if pos >= buf.shape[0]:
            return 0, pos, False
        b = np.int64(buf[pos])
        pos += 1
        v |= (b & 127) << shift
        if b < 128:
            return v, pos, True
    return 0, pos, False


@njit(cache=True, nogil=True, inline="always")
def enc_put(x, words, nw, start, freq, inv):
    """Code one symbol (its slot ``start``, ``freq`` and ``inv = 1 / freq``) into state
    ``x``, stacking at most one word; returns the state and the stack's new height."""
    # renormalize when x >= ((L >> SCALE_BITS) << 16) * freq, without a branch: whether
    # a state sheds a word is as unpredictable as the data
    out = np.int64(x >= (freq << (32 - SCALE_BITS)))
    words[nw] = x & 0xFFFF  # kept only if the height grows
    nw += out
    x >>= 16 * out
    # x // freq without a division: x * inv is within 2**-20 of x / freq (x < 2**32), and
    # a quotient that is not whole lies at least 1 / freq >= 2**-12 below the next integer,
    # so adding 2**-16 lifts exact quotients that rounded down and nothing else
    q = np.int64(x * inv + 1.0 / 65536)
    return (q << SCALE_BITS) + (x - q * freq) + start, nw


@njit(cache=True, nogil=True)
def enc_flush(words, nw, states, out, pos):
    """Stack the final states (the decoder reads ``states[0]`` first) and write the
    stream, the stack reversed, at ``out[pos:]`` as little-endian words; returns the
    position after it."""
    for k in range(states.shape[0] - 1, -1, -1):
        words[nw] = states[k] >> 16
        words[nw + 1] = states[k] & 0xFFFF
        nw += 2
    for j in range(nw):
        w = words[nw - 1 - j]
        out[pos] = w & 0xFF
        out[pos + 1] = w >> 8
        pos += 2
    return pos


@njit(cache=True, nogil=True, inline="always")
def dec_word(buf, pos, end, overrun):
    """The 16-bit little-endian word at ``buf[pos]`` if it lies before ``end`` (else zero,
    counting the overrun); read byte by byte, so any buffer offset will do."""
    if pos + 2 <= end:
        return np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8), pos + 2, overrun
    return np.int64(0), pos, overrun + 1


@njit(cache=True, nogil=True, inline="always")
def dec_state(buf, pos, end, overrun):
    """A state as ``enc_flush`` wrote it (low word first)."""
    lo, pos, overrun = dec_word(buf, pos, end, overrun)
    hi, pos, overrun = dec_word(buf, pos, end, overrun)
    return lo | (hi << 16), pos, overrun


@njit(cache=True, nogil=True, inline="always")
def dec_get(x, slots, freq, start, ctx, buf, pos, end, overrun):
    """Decode one symbol in context ``ctx``: (symbol, state, read position, overrun). A
    slot of an unused context (only a corrupt stream gets there) counts as an overrun and
    gives symbol 0, so that callers never index with NO_SYMBOL."""
    slot = x & (M - 1)
    s = np.int64(slots[ctx, slot])
    if s == NO_SYMBOL:
        return np.int64(0), L, pos, overrun + 1
    x = freq[ctx, s] * (x >> SCALE_BITS) + slot - start[ctx, s]
    if x < L:
        w, pos, overrun = dec_word(buf, pos, end, overrun)
        x = (x << 16) | w
    return s, x, pos, overrun


@njit(cache=True, nogil=True, inline="always")
def put_bits(buf, pos, acc, nacc, v, k):
    """Append the ``k`` (<= 32) low bits of ``v`` to a little-endian bit stream."""
    acc |= v << nacc
    nacc += k
    while nacc >= 8:
        buf[pos] = acc & 0xFF
        pos += 1
        acc >>= 8
        nacc -= 8
    return pos, acc, nacc


@njit(cache=True, nogil=True, inline="always")
def get_bits(buf, pos, acc, nacc, k, overrun):
    """Read ``k`` (<= 32) bits written by ``put_bits`` (zeros past the end, counted)."""
    while nacc < k:
        if pos < buf.shape[0]:
            acc |= np.int64(buf[pos]) << nacc
            pos += 1
        else:
            overrun += 1
        nacc += 8
    v = acc & ((np.int64(1) << k) - 1)
    return v, pos, acc >> k, nacc - k, overrun
