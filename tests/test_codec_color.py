"""The lossless colour coder (YCoCg-R DPCM, static tables, rANS) and its rANS unit."""

from __future__ import annotations

import numpy as np
import pytest

from codec import _color_kernels, _rans


def _encode(rgb: np.ndarray) -> np.ndarray:
    sym, ctx, raw, n_raw, hist = _color_kernels.color_symbols(rgb)
    return _color_kernels.pack_colors(sym, ctx, raw, n_raw, _rans.normalize(hist))


def _smooth(n: int, seed: int = 0) -> np.ndarray:
    """Colours that drift like a real surface's in Morton order: mostly small steps."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([-2, -1, 0, 0, 0, 1, 2], size=(n, 3))
    return np.clip(128 + np.cumsum(steps, axis=0) % 200 - 100, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["smooth", "random", "extremes", "one", "empty"])
def test_every_color_comes_back_exactly(kind):
    rng = np.random.default_rng(1)
    rgb = {"smooth": _smooth(50_000),
           "random": rng.integers(0, 256, (20_000, 3)).astype(np.uint8),  # every residual escapes
           # the largest residuals YCoCg-R can make: black <-> white, red <-> blue
           "extremes": np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]] * 500, np.uint8),
           "one": np.array([[7, 200, 99]], np.uint8),
           "empty": np.zeros((0, 3), np.uint8)}[kind]
    out, status = _color_kernels.decode_colors(_encode(rgb), len(rgb))
    assert status == 0
    np.testing.assert_array_equal(out, rgb)


def test_smooth_color_costs_far_less_than_raw():
    rgb = _smooth(50_000)
    bits = len(_encode(rgb)) * 8 / len(rgb)
    # each channel's step is one of 7 values (entropy 2.5 bits): the coder gets close
    assert bits < 3 * 2.6
    assert bits < 24 / 2.5


def test_damage_to_tables_or_the_rans_stream_is_reported():
    rgb = _smooth(5000)
    good = _encode(rgb)
    n_raw = _color_kernels.color_symbols(rgb)[3]
    rng = np.random.default_rng(2)
    for _ in range(300):
        bad = good.copy()
        at = int(rng.integers(len(bad) - n_raw))  # the raw bits at the end are not checked
        bad[at] ^= np.uint8(1 << rng.integers(8))
        out, status = _color_kernels.decode_colors(bad, len(rgb))
        # the states must end where the encoder began and every word must be used
        assert status == 2 or np.array_equal(out, rgb), at
    for cut in (0, 1, len(good) // 2, len(good) - 1):
        assert _color_kernels.decode_colors(good[:cut], len(rgb))[1] == 2
    assert _color_kernels.decode_colors(good, len(rgb) + 1)[1] == 2  # more voxels than coded


def test_normalized_tables_sum_to_m_and_keep_every_seen_symbol():
    rng = np.random.default_rng(3)
    hist = rng.integers(0, 5, (6, 28)) * rng.integers(0, 2, (6, 28))
    hist[0] = 0  # an unused context
    hist[1, :] = 0
    hist[1, 3] = 10**9  # one symbol and rare ones beside it
    hist[1, 4] = 1
    freq = _rans.normalize(hist)
    assert (freq[0] == 0).all()
    assert (freq[1:].sum(axis=1) == _rans.M).all()
    assert ((freq > 0) == (hist > 0)).all()


def test_tables_round_trip_and_bad_tables_are_refused():
    freq = _rans.normalize(np.array([[5, 0, 3], [0, 0, 0], [1, 1, 1]]))
    buf = np.zeros(64, np.uint8)
    end = _rans.write_tables(freq, buf, 0)
    back, used, ok = _rans.read_tables(buf[:end], 3, 3)
    assert ok and used == end
    np.testing.assert_array_equal(back, freq)
    bad = buf[:end].copy()
    bad[1] += 1  # the first context no longer sums to M
    assert not _rans.read_tables(bad, 3, 3)[2]
    assert not _rans.read_tables(buf[: end - 1], 3, 3)[2]  # truncated
    assert not _rans.read_tables(buf[:end], 3, 2)[2]  # more symbols than the alphabet
