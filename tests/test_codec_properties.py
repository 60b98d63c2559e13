"""Property-based tests (hypothesis) and a short fuzz run over real streams."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import codec
from benchmarks import fuzz_codec
from codec import _raht_kernels
from codec._octree_kernels import morton_decode, voxelize

coords = arrays(np.float64, st.tuples(st.integers(0, 300), st.just(3)),
                elements=st.floats(-1.3, 1.3, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(coords, st.integers(1, 10), st.integers(1, 4), st.sampled_from([1, 2, 16]))
def test_octree_decodes_exactly_the_voxelization(points, depth, slices, step):
    rng = np.random.default_rng(len(points))
    pos = (points + np.array([0.0, 1.25, 0.0])).astype(np.float32)
    col = rng.integers(0, 256, (len(pos), 3), dtype=np.uint8)
    c = codec.OctreeCodec(depth=depth, slices=slices, color_step=step)
    dec_pos, dec_col = codec.decode(c.encode(pos, col))
    codes, means, _ = voxelize(pos.astype(np.float64), col, np.array(c.origin), c.cell, depth)
    expected = ((morton_decode(codes) + 0.5) * c.cell + np.array(c.origin)).astype(np.float32)
    np.testing.assert_allclose(dec_pos, expected, atol=1e-5)  # Morton order both sides
    if step == 1:
        np.testing.assert_array_equal(dec_col, means)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_codec_error(blob):
    for prefix in (b"", b"HPCC\x01\x01\x00\x00", b"HPCC\x01\x02\x00\x00"):
        with contextlib.suppress(codec.CodecError):
            codec.decode(prefix + blob)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.integers(1, 9))
def test_raht_is_orthonormal_and_invertible(n, depth):
    rng = np.random.default_rng(n * depth)
    codes = np.unique(rng.integers(0, 8**depth, n))
    x = rng.normal(size=(len(codes), 3))
    coeffs = _raht_kernels.forward(x, codes, depth)
    np.testing.assert_allclose((coeffs**2).sum(), (x**2).sum(), rtol=1e-9)  # energy kept
    np.testing.assert_allclose(_raht_kernels.inverse(coeffs, codes, depth), x, atol=1e-9)


def test_raht_of_two_siblings_by_hand():
    x = np.array([[1.0, 0, 0], [3.0, 0, 0]])
    coeffs = _raht_kernels.forward(x, np.array([0, 1]), 1)
    np.testing.assert_allclose(coeffs[:, 0], [4 / np.sqrt(2), 2 / np.sqrt(2)])


def test_a_short_fuzz_run_finds_nothing(data_dir):
    summary = fuzz_codec.run(inputs=2000, data=None, points=800, seed=3, max_seconds=2.0,
                             max_rss_mb=2048, progress=False)
    assert summary["failed"] == 0, summary["failures"]
    assert summary["counts"]["flipped+crc"].get("rejected", 0) > 0


def test_the_fuzzer_writes_a_record_per_kind_of_input(tmp_path):
    import json

    out = tmp_path / "fuzz.json"
    assert fuzz_codec.main(["--inputs", "400", "--points", "300", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["kind"] for r in records] == ["random", "truncated", "flipped", "flipped+crc"]
    for r in records:
        assert set(r) == set(fuzz_codec.COLUMNS)
        assert r["inputs"] == 100 == r["decoded"] + r["rejected"] and r["crashed"] == r["too_slow"] == 0
        assert 0 < r["slowest_ms"] < 2000
