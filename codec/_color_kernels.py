"""numba kernels of the lossless colour coder: YCoCg-R, DPCM in Morton order, rANS.

Each voxel's colour is predicted by the previous voxel's (Morton order keeps neighbours
close) in YCoCg-R, which is reversible in integers. A residual r becomes its zigzag value
z (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...) and a symbol: z itself below 16, else one of two
symbols per power of two (z's top two bits) plus z's lower bits written raw to a bit
stream. Symbols are coded with static frequency tables (``_rans``) in 55 contexts:

- Y: how large the previous voxel's Y residual was (5 classes);
- Co: the previous Co residual's class x this voxel's Y residual's class (25);
- Cg: the previous Cg residual's class x this voxel's Co residual's class (25).

The cross-channel classes capture that an edge changes all three channels at once; with
them, per-frame tables code sarah_9bit's colour in as few bits as the adaptive binary coder
they replaced (today's figure: the colour bpp of ``holoport bench codec``'s lossless
record), several times faster (docs/codec.md). A part's bytes: the tables, the
u32 length of the rANS stream, the rANS stream (three interleaved states, one per
channel), then the raw bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from codec._rans import (
    L,
    dec_get,
    dec_state,
    enc_flush,
    enc_put,
    get_bits,
    put_bits,
    read_tables,
    slot_symbols,
    starts,
    write_tables,
)

_CLASSES = 5
DIRECT = 16  # z below this is its own symbol
N_SYMBOLS = DIRECT + 2 * 6  # z < 1024 (|r| <= 510 in YCoCg-R): bit lengths 5..10
N_CONTEXTS = _CLASSES + 2 * _CLASSES * _CLASSES
_CO, _CG = _CLASSES, _CLASSES + _CLASSES * _CLASSES  # first context of each channel
TABLE_ROOM = 3 * N_CONTEXTS * (N_SYMBOLS + 1)  # serialized tables are at most this long


@njit(cache=True, nogil=True, inline="always")
def _class(mag):
    if mag < 3:
        return mag
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
def _symbol(r):
    """(symbol, raw bits, their count) of residual r."""
    z = 2 * r if r >= 0 else -2 * r - 1
    if z < DIRECT:
        return z, 0, 0
    b = 0
    while (z >> (b + 1)) > 0:
        b += 1  # z has b + 1 bits
    k = b - 1  # raw bits: all below the top two
    return DIRECT + 2 * (b - 4) + ((z >> k) & 1), z & ((1 << k) - 1), k


@njit(cache=True, nogil=True)
def color_symbols(colors):
    """Pass one: each voxel's three symbols and contexts, the raw bit stream (and its
    length in bytes), and the symbol counts per context."""
    n = colors.shape[0]
    ycc = rgb_to_ycocg(colors)
    sym = np.empty((n, 3), np.uint8)
    ctx = np.empty((n, 3), np.uint8)
    raw = np.zeros(n * 3 + 8, np.uint8)  # at most 8 raw bits per residual
    hist = np.zeros((N_CONTEXTS, N_SYMBOLS), np.int64)
    pos, acc, nacc = 0, np.int64(0), 0
    p0, p1, p2 = np.int64(128), np.int64(0), np.int64(0)
    c0 = c1 = c2 = 0  # classes of the previous voxel's residuals
    for i in range(n):
        r0, r1, r2 = ycc[i, 0] - p0, ycc[i, 1] - p1, ycc[i, 2] - p2
        p0, p1, p2 = ycc[i, 0], ycc[i, 1], ycc[i, 2]
        a0, a1, a2 = _class(abs(r0)), _class(abs(r1)), _class(abs(r2))
        k0, k1, k2 = c0, _CO + c1 * _CLASSES + a0, _CG + c2 * _CLASSES + a1
        c0, c1, c2 = a0, a1, a2
        rs, ks = (r0, r1, r2), (k0, k1, k2)
        for ch in range(3):
            s, bits, nbits = _symbol(rs[ch])
            sym[i, ch] = s
            ctx[i, ch] = ks[ch]
            hist[ks[ch], s] += 1
            if nbits:
                pos, acc, nacc = put_bits(raw, pos, acc, nacc, bits, nbits)
    if nacc:
        raw[pos] = acc & 0xFF
        pos += 1
    return sym, ctx, raw, pos, hist


@njit(cache=True, nogil=True)
def pack_colors(sym, ctx, raw, n_raw, freq):
    """Pass two: tables, rANS stream (coded last voxel first) and raw bits, as bytes."""
    n = sym.shape[0]
    out = np.empty(TABLE_ROOM + 4 + 2 * (3 * n + 6) + n_raw, np.uint8)
    pos = write_tables(freq, out, 0)
    start = starts(freq)
    inv = 1.0 / np.maximum(freq, 1)
    words = np.empty(3 * n + 6, np.int64)
    nw = 0
    x0 = x1 = x2 = np.int64(L)
    for i in range(n - 1, -1, -1):  # the reverse of the decoder's order, channel 2 first
        k, s = ctx[i, 2], sym[i, 2]
        x2, nw = enc_put(x2, words, nw, start[k, s], freq[k, s], inv[k, s])
        k, s = ctx[i, 1], sym[i, 1]
        x1, nw = enc_put(x1, words, nw, start[k, s], freq[k, s], inv[k, s])
        k, s = ctx[i, 0], sym[i, 0]
        x0, nw = enc_put(x0, words, nw, start[k, s], freq[k, s], inv[k, s])
    at = pos + 4
    end = enc_flush(words, nw, np.array([x0, x1, x2]), out, at)
    size = end - at
    for b in range(4):
        out[pos + b] = (size >> (8 * b)) & 0xFF
    out[end: end + n_raw] = raw[:n_raw]
    return out[: end + n_raw]


@njit(cache=True, nogil=True, inline="always")
def _value(s, raw, pos, acc, nacc, overrun):
    """Residual of symbol s, reading its raw bits."""
    if s < DIRECT:
        z = s
    else:
        b = (s - DIRECT) // 2 + 4
        k = b - 1
        bits, pos, acc, nacc, overrun = get_bits(raw, pos, acc, nacc, k, overrun)
        z = ((2 | ((s - DIRECT) & 1)) << k) | bits
    return (z >> 1) if (z & 1) == 0 else -((z + 1) >> 1), pos, acc, nacc, overrun


@njit(cache=True, nogil=True)
def decode_colors(buf, n):
    """Inverse of ``color_symbols`` + ``pack_colors``: (RGB (n, 3), status: 0 ok,
    2 corrupt). A stream decodes only if every state ends where the encoder began and
    every word and raw byte was used."""
    bad = np.zeros((0, 3), np.uint8)
    freq, pos, ok = read_tables(buf, N_CONTEXTS, N_SYMBOLS)
    if not ok or pos + 4 > buf.shape[0]:
        return bad, 2
    size = 0
    for b in range(4):
        size |= np.int64(buf[pos + b]) << (8 * b)
    pos += 4
    if size > buf.shape[0] - pos or size % 2:
        return bad, 2
    end = pos + size
    raw = buf[end:]
    start = starts(freq)
    slots = slot_symbols(freq)
    overrun = 0
    x0, pos, overrun = dec_state(buf, pos, end, overrun)
    x1, pos, overrun = dec_state(buf, pos, end, overrun)
    x2, pos, overrun = dec_state(buf, pos, end, overrun)
    if min(x0, x1, x2) < L or overrun:
        return bad, 2
    ycc = np.empty((n, 3), np.int64)
    rpos, acc, nacc = 0, np.int64(0), 0
    p0, p1, p2 = np.int64(128), np.int64(0), np.int64(0)
    c0 = c1 = c2 = 0
    for i in range(n):
        s, x0, pos, overrun = dec_get(x0, slots, freq, start, c0, buf, pos, end, overrun)
        r0, rpos, acc, nacc, overrun = _value(s, raw, rpos, acc, nacc, overrun)
        a0 = _class(abs(r0))
        s, x1, pos, overrun = dec_get(x1, slots, freq, start, _CO + c1 * _CLASSES + a0, buf, pos,
                                      end, overrun)
        r1, rpos, acc, nacc, overrun = _value(s, raw, rpos, acc, nacc, overrun)
        a1 = _class(abs(r1))
        s, x2, pos, overrun = dec_get(x2, slots, freq, start, _CG + c2 * _CLASSES + a1, buf, pos,
                                      end, overrun)
        r2, rpos, acc, nacc, overrun = _value(s, raw, rpos, acc, nacc, overrun)
        c0, c1, c2 = a0, a1, _class(abs(r2))
        p0 += r0
        p1 += r1
        p2 += r2
        if overrun or not (0 <= p0 <= 255 and -255 <= p1 <= 255 and -255 <= p2 <= 255):
            return bad, 2
        ycc[i, 0], ycc[i, 1], ycc[i, 2] = p0, p1, p2
    if x0 != L or x1 != L or x2 != L or pos != end or rpos != raw.shape[0]:
        return bad, 2
    return ycocg_to_rgb(ycc), 0
