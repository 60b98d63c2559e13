"""Property-based tests (hypothesis) and a short fuzz run over real streams."""

from __future__ import annotations

import contextlib
import functools
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import codec
from benchmarks import fuzz_codec
from codec import _raht_prediction, container
from codec._voxel_kernels import morton_decode, voxelize
from tests.test_codec_octree import _reframe

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


@functools.cache
def _seed_streams() -> tuple[bytes, ...]:
    """A small person-sized blob in every codec configuration (RAHT in two colour parts)."""
    rng = np.random.default_rng(0)
    pos = (rng.uniform(-0.3, 0.3, (600, 3)) + np.array([0.0, 1.0, 0.0])).astype(np.float32)
    col = rng.integers(0, 256, (600, 3), dtype=np.uint8)
    with fuzz_codec.color_parts_from(64):
        return (codec.BaselineCodec().encode(pos, col), codec.OctreeCodec(depth=8, slices=2).encode(pos, col),
                codec.OctreeCodec(depth=8, slices=2, color_step=16).encode(pos, col))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 2), st.integers(0, 5), st.integers(0, 2**16), st.integers(0, 7))
def test_any_bytes_decode_or_raise_codec_error(blob, which, section, at, bit):
    for prefix in (b"", b"HPCC\x01\x01\x00\x00", b"HPCC\x01\x02\x00\x00"):  # the container's checks
        with contextlib.suppress(codec.CodecError):
            codec.decode(prefix + blob)
    # the bytes in place of a section of a real stream, and a bit flipped in that section,
    # every checksum recomputed: they reach the codec's own parsers and decoders
    data = _seed_streams()[which]
    box = container.unpack(data)
    params, sections = bytes(box.params), [bytes(s) for s in box.sections]
    section %= len(sections)
    flipped = bytearray(sections[section])
    if flipped:
        flipped[at % len(flipped)] ^= 1 << bit
    for damage in (blob, bytes(flipped)):
        parts = [*sections[:section], damage, *sections[section + 1:]]
        framed = _reframe(params, parts) if box.codec_id == codec.OctreeCodec.codec_id else \
            container.pack(box.codec_id, params, parts)
        with fuzz_codec.color_parts_from(64):
            try:
                pos, col = codec.decode(framed)
            except codec.CodecError as exc:
                assert not any(w in str(exc) for w in ("checksum", "octree header")), exc
                continue
        assert pos.dtype == np.float32 and col.dtype == np.uint8 and pos.shape == col.shape == (len(pos), 3)
        assert len(pos) <= struct.unpack_from("<I", params)[0] and np.isfinite(pos).all()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 255), st.integers(0, 2**31))
def test_a_raht_block_is_orthonormal_and_invertible(occupancy, seed):
    rng = np.random.default_rng(seed)
    wt = np.where([(occupancy >> c) & 1 for c in range(8)], rng.integers(1, 200, 8), 0).astype(np.int64)
    x = rng.normal(size=(8, 3)) * (wt > 0)[:, None]
    v, hi = x.copy(), np.zeros((7, 3))
    k = _raht_prediction._block_forward(v, wt.copy(), hi)
    assert k == bin(occupancy).count("1") - 1
    np.testing.assert_allclose((v[0] ** 2).sum() + (hi[:k] ** 2).sum(), (x**2).sum(), rtol=1e-9)  # energy kept
    back = np.zeros((8, 3))
    back[0] = v[0]
    _raht_prediction._block_inverse(back, wt, hi, np.empty(8, np.int64), np.empty((7, 4), np.int64))
    np.testing.assert_allclose(back[wt > 0], x[wt > 0], atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.integers(1, 9))
def test_predicted_raht_with_a_vanishing_step_gives_the_colours_back(n, depth):
    rng = np.random.default_rng(n * depth)
    codes = np.unique(rng.integers(0, 8**depth, n))
    x = rng.normal(size=(len(codes), 3)) * 50
    plan = _raht_prediction.plan(codes, depth)
    actual = _raht_prediction.level_means(x, *plan, depth)
    m = len(codes)
    coeffs, q, zero = np.zeros((m, 3)), np.zeros((m, 3), np.int64), np.zeros(m, np.uint8)
    tiny = np.full(depth + 1, 1e-9)
    rebuilt = _raht_prediction.descend(coeffs, actual, *plan, depth, True, tiny, tiny, q, zero)
    np.testing.assert_allclose(rebuilt, x, atol=1e-6)
    # and the decoder, from the dequantized residuals alone, rebuilds the same
    decoded = _raht_prediction.descend(coeffs, np.zeros((0, 3)), *plan, depth, False, tiny, tiny, q, zero)
    np.testing.assert_array_equal(decoded, rebuilt)


def test_raht_of_two_siblings_by_hand():
    v = np.zeros((8, 3))
    v[0, 0], v[1, 0] = 1.0, 3.0  # two children on the z axis, one voxel each
    hi = np.zeros((7, 3))
    assert _raht_prediction._block_forward(v, np.array([1, 1, 0, 0, 0, 0, 0, 0]), hi) == 1
    np.testing.assert_allclose([v[0, 0], hi[0, 0]], [4 / np.sqrt(2), 2 / np.sqrt(2)])


def test_a_short_fuzz_run_finds_nothing(data_dir):
    summary = fuzz_codec.run(inputs=2000, data=None, points=800, seed=3, max_seconds=2.0,
                             max_rss_mb=2048, progress=False)
    assert summary["failed"] == 0, summary["failures"]
    assert summary["counts"]["flipped+crc"].get("rejected", 0) > 0


def _resident_mb() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_fuzzer_writes_a_record_per_kind_of_input(tmp_path):
    import json

    out = tmp_path / "fuzz.json"
    # the memory bound is the run's own: over what this long-lived test process already holds
    held = _resident_mb()
    assert fuzz_codec.main(["--inputs", "400", "--points", "300", "--json", str(out),
                            "--max-rss-mb", str(held + 1024)]) == 0
    records = json.loads(out.read_text())
    assert [r["kind"] for r in records] == ["random", "truncated", "flipped", "flipped+crc"]
    for r in records:
        assert set(r) == set(fuzz_codec.COLUMNS)
        assert r["inputs"] == 100 == r["decoded"] + r["rejected"] and r["crashed"] == r["too_slow"] == 0
        assert 0 < r["slowest_ms"] < 2000
