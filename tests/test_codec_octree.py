"""The octree codec: lossless geometry, colour quality, levels of detail, slices, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import codec
from codec import CodecError, OctreeCodec, octree
from codec._octree_kernels import morton, morton_decode, prefixes, radix_argsort, split_cells, unique_shift, voxelize


def _person(n=20_000, seed=0):
    """A noisy cylinder-and-sphere 'person' in metres, in the default capture volume."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    h = rng.uniform(0, 1.5, n)
    body = np.stack([0.2 * np.cos(t), h, 0.15 * np.sin(t)], 1)
    head = rng.normal(size=(n // 5, 3))
    head = head / np.linalg.norm(head, axis=1, keepdims=True) * 0.1 + [0, 1.65, 0]
    pos = np.vstack([body, head]).astype(np.float32)
    col = np.clip(rng.normal(128, 40, (len(pos), 3)), 0, 255).astype(np.uint8)
    return pos, col


def _reference_voxelization(pos, col, c: OctreeCodec, depth: int):
    """What the codec must reproduce, computed independently with numpy."""
    idx = np.floor((pos.astype(np.float64) - c.origin) / (c.size / 2**depth)).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < 2**depth), axis=1)
    idx, col = idx[inside], col[inside].astype(np.int64)
    cells, inverse, counts = np.unique(idx, axis=0, return_inverse=True, return_counts=True)
    sums = np.zeros((len(cells), 3), np.int64)
    np.add.at(sums, inverse.ravel(), col)
    means = (sums + counts[:, None] // 2) // counts[:, None]
    centres = (cells + 0.5) * (c.size / 2**depth) + np.array(c.origin)
    return centres, means


def _sorted(pos, col):
    order = np.lexsort((pos[:, 2], pos[:, 1], pos[:, 0]))
    return pos[order], col[order]


@pytest.mark.parametrize("slices", [1, 2, 5])
def test_lossless_round_trip_is_the_voxelization(slices):
    pos, col = _person()
    c = OctreeCodec(depth=9, slices=slices)
    dec_pos, dec_col = codec.decode(c.encode(pos, col))
    ref_pos, ref_col = _reference_voxelization(pos, col, c, 9)
    a, b = _sorted(dec_pos, dec_col), _sorted(ref_pos.astype(np.float32), ref_col)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_array_equal(a[1], b[1])


def test_a_large_slice_codes_raht_colour_in_two_parts(monkeypatch):
    pos, col = _person(120_000)
    c = OctreeCodec(depth=10, slices=1, color_step=16)
    data = c.encode(pos, col)
    _, stream = OctreeCodec._open(data)
    n = int(stream.table[0, 1])
    assert len(c._colour_parts(n)) == 2  # the case under test
    assert len(OctreeCodec(depth=10, slices=1, color_step=1)._colour_parts(n)) == 1  # lossless: one
    part0 = struct.unpack("<I", bytes(stream.sections[3][:4]))[0]
    assert 0 < part0 < len(stream.sections[3]) - 4
    dec_pos, dec_col = codec.decode(data)
    ref_pos, ref_col = _reference_voxelization(pos, col, c, 10)
    a, b = _sorted(dec_pos, dec_col), _sorted(ref_pos.astype(np.float32), ref_col)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    # each part decodes with its own statistics, as well as one part would
    err = np.abs(a[1].astype(int) - b[1]).mean()
    monkeypatch.setattr(octree, "COLOUR_PART_MIN", 10**9)
    whole = _sorted(*codec.decode(c.encode(pos, col)))
    assert err <= 1.02 * np.abs(whole[1].astype(int) - b[1]).mean()
    bad = bytearray(stream.sections[3])
    bad[:4] = struct.pack("<I", len(bad))  # a part longer than its section
    with pytest.raises(codec.CodecError, match="colour parts"):
        octree._split_parts(memoryview(bytes(bad)), 2, 0)


def test_every_point_is_within_half_a_cell_of_its_voxel():
    pos, col = _person(3000)
    c = OctreeCodec(depth=10)
    dec_pos, _ = codec.decode(c.encode(pos, col))
    from codec import _kdtree

    _, d2 = _kdtree.nearest(dec_pos.astype(np.float64), _kdtree.build(dec_pos.astype(np.float64)),
                            pos.astype(np.float64))
    assert np.sqrt(d2.max()) <= np.sqrt(3) * c.max_error * 1.0001


@pytest.mark.parametrize("level", [0, 3, 6, 8])
def test_a_lower_level_of_detail_is_exactly_the_coarser_voxelization(level):
    pos, col = _person()
    c = OctreeCodec(depth=9, slices=3)
    data = c.encode(pos, col)
    ref_pos, ref_col = _reference_voxelization(pos, col, c, level)
    geo = OctreeCodec.decode_geometry(data, level)
    np.testing.assert_allclose(_sorted(geo, np.zeros_like(geo))[0], _sorted(ref_pos, ref_pos)[0], atol=1e-5)
    lod_pos, lod_col = OctreeCodec.decode(data, level=level)
    assert len(lod_pos) == len(ref_pos) == len(lod_col)


def test_lossy_colour_trades_bits_for_error():
    pos, col = _person()
    sizes, errors = [], []
    for step in (1, 4, 16):
        data = OctreeCodec(depth=9, color_step=step).encode(pos, col)
        dec_pos, dec_col = codec.decode(data)
        ref_pos, ref_col = _reference_voxelization(pos, col, OctreeCodec(depth=9), 9)
        a, b = _sorted(dec_pos, dec_col), _sorted(ref_pos.astype(np.float32), ref_col)
        sizes.append(len(data))
        errors.append(np.abs(a[1].astype(int) - b[1]).mean())
    assert errors[0] == 0 and errors[0] < errors[1] < errors[2]
    assert sizes[0] > sizes[1] > sizes[2]


def test_real_frame_geometry_is_lossless_and_compact(mvub_frames):
    from benchmarks.codec_rd import grid_bits
    from benchmarks.common import read_ply

    pos, col = read_ply(next(f for f in mvub_frames if "ricardo" in f.name))
    bits = grid_bits(pos)
    c = OctreeCodec(depth=bits, origin=(-0.5, -0.5, -0.5), size=float(2**bits), slices=2)
    data = c.encode(pos, col)
    dec_pos, dec_col = codec.decode(data)
    a = np.unique(np.hstack([pos, col]).astype(np.int64), axis=0)
    b = np.unique(np.hstack([dec_pos, dec_col]).astype(np.int64), axis=0)
    np.testing.assert_array_equal(a, b)
    geometry_only = OctreeCodec(depth=bits, origin=(-0.5,) * 3, size=float(2**bits)).encode(
        pos, np.zeros_like(col))
    assert len(geometry_only) * 8 / len(pos) < 1.35  # G-PCC: 1.03 bpp on this frame


def test_empty_and_single_point_clouds():
    for n in (0, 1):
        pos = np.full((n, 3), 0.5, np.float32)
        col = np.full((n, 3), 7, np.uint8)
        dec_pos, dec_col = codec.decode(OctreeCodec().encode(pos, col))
        assert len(dec_pos) == n and (dec_col == 7).all()


def test_config_round_trips_and_parameters_are_validated():
    c = OctreeCodec(depth=11, origin=(-1, -1, -1), size=3.0, color_step=8, slices=4)
    assert codec.from_config(c.get_config()) == c
    for bad in ({"depth": 0}, {"depth": 17}, {"size": -1.0}, {"color_step": 0},
                {"slices": 0}, {"slices": 32}, {"origin": (0, float("inf"), 0)}):
        with pytest.raises(ValueError):
            OctreeCodec(**bad)


def test_radix_argsort_and_voxel_merging():
    keys = np.random.default_rng(3).integers(0, 2**40, 10_000)
    np.testing.assert_array_equal(keys[radix_argsort(keys, 40)], np.sort(keys))
    pos = np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [1.5, 0.1, 0.1]])
    col = np.array([[0, 0, 0], [255, 255, 255], [9, 9, 9]], np.uint8)
    codes, means, outside = voxelize(pos, col, np.zeros(3), 1.0, 1)
    assert outside == 0 and len(codes) == 2
    np.testing.assert_array_equal(morton_decode(codes), [[0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(means, [[128, 128, 128], [9, 9, 9]])


def test_morton_codes_interleave_bits_up_to_the_deepest_grid():
    rng = np.random.default_rng(5)
    xyz = rng.integers(0, 1 << 16, (1000, 3))
    codes = np.array([morton(*map(int, v)) for v in xyz])
    np.testing.assert_array_equal(morton_decode(codes), xyz)
    assert morton(1, 0, 0) == 4 and morton(0, 1, 0) == 2 and morton(0, 0, 1) == 1


@pytest.mark.parametrize("depth", [1, 3, 9, 16])
def test_prefixes_are_the_unique_shifted_codes(depth):
    codes = np.unique(np.random.default_rng(depth).integers(0, 8**depth, 5000))
    for level in range(depth + 1):
        shift = 3 * (depth - level)
        np.testing.assert_array_equal(prefixes(codes, shift, len(codes)), unique_shift(codes, shift))
        np.testing.assert_array_equal(prefixes(codes, shift, 3), unique_shift(codes, shift)[:3])


def test_the_merge_splits_two_sorted_halves_evenly_at_a_cell_boundary():
    rng = np.random.default_rng(6)
    ibits = 4
    a = np.sort(rng.integers(0, 50, 1000) << ibits | rng.integers(0, 16, 1000))
    b = np.sort(rng.integers(40, 200, 3000) << ibits | rng.integers(0, 16, 3000))  # mostly above a
    ia, ib = split_cells(a, b, ibits)
    assert abs((ia + ib) - 2000) < 100  # a's median alone would put ~500 + ~200 below
    if ia < len(a) and ib > 0:
        assert (b[ib - 1] >> ibits) < (a[ia] >> ibits)  # no cell on both sides
    if ib < len(b) and ia > 0:
        assert (a[ia - 1] >> ibits) < (b[ib] >> ibits)


@pytest.mark.parametrize("depth, n", [(9, 50_000), (16, 40_000)])  # packed keys; index-array fallback
def test_voxelize_matches_a_numpy_reference(depth, n):
    rng = np.random.default_rng(depth)
    cell = 1.0 / (1 << depth)
    pos = rng.uniform(-0.05, 1.05, (n, 3))
    pos[: n // 2] = np.floor(pos[: n // 2] * 64) / 64 + cell / 3  # many points share cells
    col = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    codes, means, outside = voxelize(pos, col, np.zeros(3), cell, depth)
    ijk = np.floor(pos / cell).astype(np.int64)
    inside = ((ijk >= 0) & (ijk < (1 << depth))).all(axis=1)
    cells, inverse, counts = np.unique(ijk[inside], axis=0, return_inverse=True, return_counts=True)
    sums = np.zeros((len(cells), 3), np.int64)
    np.add.at(sums, inverse.ravel(), col[inside])
    expected = {tuple(c): tuple((s + k // 2) // k) for c, s, k in zip(cells, sums, counts, strict=True)}
    assert outside == (~inside).sum()
    assert np.all(np.diff(codes) > 0)
    got = {tuple(c): tuple(m) for c, m in zip(morton_decode(codes), means.astype(np.int64), strict=True)}
    assert got == expected
    two_halves = OctreeCodec(depth=depth, origin=(0, 0, 0), size=1.0)._voxelize(pos, col)
    np.testing.assert_array_equal(two_halves[0], codes)  # the codec's two-core path agrees
    np.testing.assert_array_equal(two_halves[1], means)


def test_malformed_streams_raise_codec_error_only():
    pos, col = _person(2000)
    data = OctreeCodec(depth=9, slices=2, color_step=4).encode(pos, col)
    rng = np.random.default_rng(7)
    for cut in rng.choice(len(data), 300, replace=False):
        with pytest.raises(CodecError):
            codec.decode(data[:cut])
    for _ in range(300):
        buf = bytearray(data)
        buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
        with pytest.raises(CodecError):
            codec.decode(bytes(buf))


def test_a_damaged_slice_does_not_take_the_frame_with_it():
    from codec import container

    pos, col = _person()
    data = OctreeCodec(depth=9, slices=4, color_step=8).encode(pos, col)
    full_pos, _ = codec.decode(data)
    box = container.unpack(data)
    sections = box.sections
    # damage slice 2's geometry: flip a byte in the middle of its section
    offset = len(data) - 4 - sum(len(s) for s in sections[2 + 2:])  # start of section 4
    offset -= len(sections[2 + 2 - 1]) // 2 + 1  # inside section 3 = slice 1's geometry
    damaged = bytearray(data)
    damaged[offset] ^= 0x55
    with pytest.raises(CodecError, match="checksum"):
        codec.decode(bytes(damaged))  # the strict decoder refuses the frame
    kept_pos, kept_col, skipped = OctreeCodec.decode_damaged(bytes(damaged))
    assert skipped == [1]
    assert len(kept_col) == len(kept_pos) < len(full_pos)
    n_slice = int(np.frombuffer(bytes(sections[1])[:-4], "<u4").reshape(4, 3)[1, 1])
    assert len(kept_pos) == len(full_pos) - n_slice
    full = {tuple(p) for p in np.round(full_pos, 5)}
    assert all(tuple(p) in full for p in np.round(kept_pos, 5))
    # damage to the header is not salvageable, and says so
    header = bytearray(data)
    header[12] ^= 0x01  # inside the parameter block
    with pytest.raises(CodecError):
        OctreeCodec.decode_damaged(bytes(header))


def _sequence(frames=6):
    base_pos, base_col = _person(15_000)
    for t in range(frames):  # the person sways a little from frame to frame
        yield base_pos + np.float32(0.004 * t) * np.array([1, 0, 0], np.float32), base_col


def test_a_sequence_decodes_frame_by_frame_and_costs_less_than_keyframes():
    from codec import OctreeDecoder, OctreeEncoder

    c = OctreeCodec(depth=9, slices=2, color_step=16)
    enc, dec = OctreeEncoder(c, keyframe_interval=100), OctreeDecoder()
    stream_bytes = keyframe_bytes = 0
    for pos, col in _sequence():
        data = enc.encode(pos, col)
        got_pos, got_col = dec.decode(data)
        ref_pos, ref_col = codec.decode(c.encode(pos, col))  # the same frame as a keyframe
        np.testing.assert_array_equal(got_pos, ref_pos)
        np.testing.assert_array_equal(got_col, ref_col)
        stream_bytes += len(data)
        keyframe_bytes += len(c.encode(pos, col))
    assert stream_bytes < 0.99 * keyframe_bytes  # carried statistics: ~3% here


def test_a_missed_frame_is_named_and_a_keyframe_recovers():
    from codec import MissingReference, OctreeDecoder, OctreeEncoder

    enc, dec = OctreeEncoder(OctreeCodec(depth=8), keyframe_interval=100), OctreeDecoder()
    frames = list(_sequence(4))
    dec.decode(enc.encode(*frames[0]))  # keyframe
    enc.encode(*frames[1])  # lost on the way
    with pytest.raises(MissingReference, match="needs frame 1"):
        dec.decode(enc.encode(*frames[2]))
    with pytest.raises(MissingReference, match="OctreeDecoder"):
        codec.decode(enc.encode(*frames[3]))  # a stateless decoder cannot take a delta frame
    enc.request_keyframe()
    assert len(dec.decode(enc.encode(*frames[0]))[0]) > 0
    assert len(dec.decode(enc.encode(*frames[1]))[0]) > 0  # and the chain continues


def test_keyframes_come_at_the_interval():
    from codec import OctreeEncoder

    enc = OctreeEncoder(OctreeCodec(depth=8), keyframe_interval=3)
    decodable = []
    for pos, col in _sequence(7):
        data = enc.encode(pos, col)
        try:
            codec.decode(data)
            decodable.append(True)
        except codec.MissingReference:
            decodable.append(False)
    assert decodable == [True, False, False, True, False, False, True]
