"""The layered octree stream (issue 17): prefixes are the octree at their level, colour
within its quantization, layer sizes chosen from the frame, untrusted parts refused."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

import codec
from codec import CodecError, LayeredOctreeCodec, OctreeCodec, container
from codec import layered as layered_mod
from codec.metrics import quality, rgb_to_yuv
from codec.registry import class_of

_Y = np.array([0.2126, 0.7152, 0.0722])  # BT.709 luma: RGB 0..255 -> Y 0..255


def _person(n=20_000, seed=0):
    """A noisy cylinder-and-sphere 'person' in metres, in the default capture volume, with
    smooth colour (a gradient plus noise, as camera colour is)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    h = rng.uniform(0, 1.5, n)
    body = np.stack([0.2 * np.cos(t), h, 0.15 * np.sin(t)], 1)
    head = rng.normal(size=(n // 5, 3))
    head = head / np.linalg.norm(head, axis=1, keepdims=True) * 0.1 + [0, 1.65, 0]
    pos = np.vstack([body, head]).astype(np.float32)
    base = np.stack([60 + 100 * pos[:, 1], 120 + 200 * pos[:, 0], 90 + 150 * pos[:, 2]], 1)
    col = np.clip(base + rng.normal(0, 12, (len(pos), 3)), 0, 255).astype(np.uint8)
    return pos, col


def _cells(pos: np.ndarray, c: LayeredOctreeCodec, level: int) -> np.ndarray:
    """Integer cell coordinates at ``level`` of decoded cell centres."""
    return np.floor((pos.astype(np.float64) - c.origin) / (c.size / 2**level)).astype(np.int64)


def _reference(pos, col, c: LayeredOctreeCodec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level, the occupied cells (lexicographic) and each cell's exact value as the
    stream defines it: the voxels' mean colour, and above them the mean of the children's
    values (luma, float). Computed with numpy alone, from the lossless octree's voxels."""
    full = OctreeCodec(depth=c.depth, origin=c.origin, size=c.size, color_step=1, slices=1)
    vpos, vcol = OctreeCodec.decode(full.encode(pos, col))
    cells = _cells(vpos, c, c.depth)
    values = vcol.astype(np.float64) @ _Y
    out = [None] * (c.depth + 1)
    order = np.lexsort(cells.T[::-1])
    cells, values = cells[order], values[order]
    out[c.depth] = (cells, values)
    for level in range(c.depth - 1, -1, -1):
        parents, inverse = np.unique(cells >> 1, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        sums = np.bincount(inverse, values, len(parents))
        cells, values = parents, sums / np.bincount(inverse, minlength=len(parents))
        out[level] = (cells, values)
    return out


def _decoded_at(parts, c, level):
    pos, col = LayeredOctreeCodec.decode_layers(parts)
    cells = _cells(pos, c, level)
    order = np.lexsort(cells.T[::-1])
    return cells[order], col[order].astype(np.float64) @ _Y


def _atoms_in(parts) -> int:
    head = layered_mod._parse(parts[-1])[0]
    return head.first + head.atoms


@pytest.fixture(scope="module")
def person():
    return _person()


@pytest.fixture(scope="module")
def every_atom(person):
    """A depth-7 frame cut after every atom (15 parts), so every kind of prefix is tested:
    after a level's geometry (its colour not yet there) and after its colour."""
    c = LayeredOctreeCodec(depth=7, color_step=8, max_layers=16)
    old = layered_mod.MIN_BASE_BYTES
    layered_mod.MIN_BASE_BYTES = 0
    try:
        frame = c.encode_layers(*person)
    finally:
        layered_mod.MIN_BASE_BYTES = old
    assert len(frame.parts) == 2 * 7 + 1
    return c, frame


def test_every_prefix_is_the_octree_at_its_level(person, every_atom):
    """Positions: exactly OctreeCodec.decode(lossless stream, level=L); in the same order."""
    c, frame = every_atom
    single = OctreeCodec(depth=7, origin=c.origin, size=c.size, color_step=1, slices=1).encode(*person)
    for k in range(1, len(frame.parts) + 1):
        level = frame.levels[k - 1]
        assert LayeredOctreeCodec.layer_of(frame.parts[k - 1]).level == level == _atoms_in(frame.parts[:k]) // 2
        pos, col = LayeredOctreeCodec.decode_layers(frame.parts[:k])
        ref_pos, _ = OctreeCodec.decode(single, level=level)
        np.testing.assert_array_equal(pos, ref_pos)
        assert col.shape == (len(pos), 3) and col.dtype == np.uint8
    assert frame.levels[-1] == 7 and frame.points == len(OctreeCodec.decode(single)[0])


def test_prefix_colour_is_within_its_quantization(person, every_atom):
    """A prefix that ends with a level's colour gives each cell its exact value (the mean of
    its children's) to within that level's step; the error grows with the step. One that ends
    with a level's geometry gives every cell its prediction from the level above."""
    c, frame = every_atom
    ref = _reference(*person, c)
    counts = np.array(layered_mod._parse(frame.parts[0])[0].base[4])
    gains = []
    for k in range(1, len(frame.parts) + 1):
        level = frame.levels[k - 1]
        cells, y = _decoded_at(frame.parts[:k], c, level)
        ref_cells, ref_y = ref[level]
        np.testing.assert_array_equal(cells, ref_cells)
        err = y - ref_y
        if _atoms_in(frame.parts[:k]) % 2 == 1:  # ends with this level's colour
            # each level adds errors of at most its step / 2 (Y), spread over its cells; the
            # RGB rounding adds under one unit
            steps = c.color_step * np.sqrt(counts[:level + 1] / counts[-1])
            bound = np.sqrt(np.sum((steps / 2) ** 2)) + 1.0
            assert np.sqrt(np.mean(err**2)) <= bound, (level, np.sqrt(np.mean(err**2)), bound)
            assert np.abs(err).max() <= 6 * bound + 2
        else:  # geometry only: each cell is its prediction from the level above, whose
            # siblings average to their parent's colour, and which beats the parent's colour
            _, parent_y = _decoded_at(frame.parts[:k - 1], c, level - 1)
            parents, inverse = np.unique(cells >> 1, axis=0, return_inverse=True)
            inverse = inverse.ravel()
            assert len(parents) == len(parent_y)
            sibling_mean = np.bincount(inverse, y) / np.bincount(inverse)
            assert np.abs(sibling_mean - parent_y).max() <= 1.0  # RGB rounding, both sides
            expanded = parent_y[inverse]  # what the parent's colour alone would give
            rms = np.sqrt(np.mean(err**2)), np.sqrt(np.mean((expanded - ref_y) ** 2))
            assert rms[0] <= rms[1] + 1e-9  # equal where nothing is predicted (few neighbours)
            gains.append(rms[1] - rms[0])
    assert max(gains) > 0.5  # the prediction pays on the finer levels


def test_full_decode_is_raht_quality_and_error_scales_with_step(person):
    ref = None
    rms = []
    for step in (4, 16, 64):
        c = LayeredOctreeCodec(depth=8, color_step=step)
        ref = ref or _reference(*person, c)
        cells, y = _decoded_at(c.encode_layers(*person).parts, c, 8)
        np.testing.assert_array_equal(cells, ref[8][0])
        rms.append(np.sqrt(np.mean((y - ref[8][1]) ** 2)))
        assert rms[-1] <= step / 2 + 1  # RAHT: uniform quantization of an orthonormal transform
    assert rms[0] < rms[1] < rms[2]


def test_real_frame_costs_little_over_the_single_layer_stream(mvub_frames):
    from benchmarks.codec_rd import grid_bits
    from capture.ply import read_ply

    pos, col = read_ply(next(f for f in mvub_frames if "ricardo" in f.name))
    bits = grid_bits(pos)
    grid = {"depth": bits, "origin": (-0.5,) * 3, "size": float(2**bits), "color_step": 8}
    frame = LayeredOctreeCodec(**grid).encode_layers(pos, col)
    single = OctreeCodec(**grid, slices=1).encode(pos, col)
    assert sum(len(p) for p in frame.parts) <= 1.05 * len(single)
    y_layered = quality(pos, col, *LayeredOctreeCodec.decode_layers(frame.parts), bits).y_psnr
    y_single = quality(pos, col, *OctreeCodec.decode(single), bits).y_psnr
    assert y_layered >= y_single - 0.5
    sizes = [len(p) for p in frame.parts]
    assert len(sizes) >= 4 and sizes[0] <= 4096
    ratios = np.array(sizes[1:]) / sizes[:-1]
    assert (ratios >= 1.2).all() and (ratios <= 4.5).all(), sizes  # roughly doubling
    assert 1.6 <= np.exp(np.log(ratios).mean()) <= 3.0, sizes


def test_layer_boundaries_are_chosen_from_the_frame():
    c = LayeredOctreeCodec(depth=9, color_step=8)
    small = c.encode_layers(*_person(3_000, seed=1))
    large = c.encode_layers(*_person(60_000, seed=2))
    assert len(small.parts) < len(large.parts) or small.levels != large.levels
    coarse = LayeredOctreeCodec(depth=9, color_step=64).encode_layers(*_person(60_000, seed=2))
    assert [len(p) for p in coarse.parts] != [len(p) for p in large.parts]
    for frame in (small, large, coarse):
        assert frame.levels == sorted(frame.levels) and frame.levels[-1] == 9
        assert len(frame.parts) <= c.max_layers
    assert len(LayeredOctreeCodec(depth=9, max_layers=2).encode_layers(*_person(60_000, 2)).parts) == 2


def test_parts_registry_bundle_and_stream_interface(person):
    c = LayeredOctreeCodec(depth=8, color_step=16)
    frame = c.encode_layers(*person)
    for i, part in enumerate(frame.parts):
        assert class_of(part) is LayeredOctreeCodec
        info = LayeredOctreeCodec.layer_of(part)
        assert (info.index, info.count, info.level) == (i, len(frame.parts), frame.levels[i])
        assert info.frame_id == LayeredOctreeCodec.layer_of(frame.parts[0]).frame_id
    bundle = c.encode(*person)
    assert class_of(bundle) is LayeredOctreeCodec
    full = LayeredOctreeCodec.decode_layers(frame.parts)
    for got in (codec.decode(bundle), c.decoder().decode(bundle), LayeredOctreeCodec.decode(bundle)):
        np.testing.assert_array_equal(got[0], full[0])
        np.testing.assert_array_equal(got[1], full[1])
    base = LayeredOctreeCodec.decode(frame.parts[0])  # a single part: the base alone
    assert len(base[0]) == len(LayeredOctreeCodec.decode_layers(frame.parts[:1])[0]) < len(full[0])
    assert c.encoder().encode((*person,)).payload == bundle
    assert codec.from_config(c.get_config()) == c
    assert codec.get_codec("octree-layered") == LayeredOctreeCodec()
    meeting = LayeredOctreeCodec.for_meeting()
    assert (meeting.depth, meeting.color_step) == (9, 8)
    with pytest.raises(ValueError, match="lossless"):
        LayeredOctreeCodec(color_step=1)
    with pytest.raises(ValueError):
        LayeredOctreeCodec(max_layers=0)


def test_empty_and_single_point_clouds():
    c = LayeredOctreeCodec(depth=9, color_step=8)
    for n in (0, 1):
        pos = np.full((n, 3), 0.5, np.float32)
        col = np.full((n, 3), 77, np.uint8)
        frame = c.encode_layers(pos, col)
        assert frame.points == n and frame.levels[-1] == 9
        for k in range(1, len(frame.parts) + 1):
            got_pos, got_col = LayeredOctreeCodec.decode_layers(frame.parts[:k])
            assert len(got_pos) == n and got_col.shape == (n, 3)
        got_pos, got_col = codec.decode(c.encode(pos, col))
        # the root's colour is quantized as RAHT's DC is (step / 2 luma, chroma twice that)
        assert len(got_pos) == n and (np.abs(got_col.astype(int) - 77) <= c.color_step).all()
        if n:
            assert np.abs(got_pos - pos).max() <= c.size / 2**9


# -- untrusted parts ------------------------------------------------------------------------
def _repack(part: bytes, params: bytes | None = None, section: bytes | None = None) -> bytes:
    """``part`` with new parameters or atoms, and a valid container CRC."""
    box = container.unpack(part)
    return container.pack(box.codec_id, bytes(box.params) if params is None else params,
                          [bytes(box.sections[0]) if section is None else section])


@pytest.fixture(scope="module")
def two_frames():
    c = LayeredOctreeCodec(depth=8, color_step=8)
    return c.encode_layers(*_person(8_000, seed=3)), c.encode_layers(*_person(8_000, seed=4))


def test_bad_part_sequences_are_refused(two_frames):
    a, b = two_frames
    assert len(a.parts) >= 3 and len(b.parts) >= 3
    bad = {
        "no parts": [],
        "missing base": a.parts[1:3],
        "skipped index": [a.parts[0], a.parts[2]],
        "two frames": [a.parts[0], b.parts[1]],
        "repeated part": [a.parts[0], a.parts[0]],
        "truncated": [a.parts[0], a.parts[1][:-7]],
        "a bundle as a part": [a.parts[0], container.pack(5, b"\x01\x01", [a.parts[1]])],
        "another codec": [OctreeCodec().encode(*_person(100))],
        "garbage": [b"HPCC" + bytes(40)],
    }
    for name, parts in bad.items():
        with pytest.raises(CodecError):
            LayeredOctreeCodec.decode_layers(parts)
            pytest.fail(name)
    for garbage in (b"", b"xyz", a.parts[0][:20], b"HPCC\x01\x05" + bytes(30)):
        with pytest.raises(CodecError):
            LayeredOctreeCodec.layer_of(garbage)
    flipped = bytearray(a.parts[1])
    flipped[len(flipped) // 2] ^= 0x10
    with pytest.raises(CodecError):
        LayeredOctreeCodec.decode_layers([a.parts[0], bytes(flipped)])
    with pytest.raises(CodecError):
        LayeredOctreeCodec.decode_layers(a.parts, max_points=a.points - 1)
    assert len(LayeredOctreeCodec.decode_layers(a.parts, max_points=a.points)[0]) == a.points


def _base_with_counts(part: bytes, counts: list[int]) -> bytes:
    raw = bytes(container.unpack(part).params)
    head = layered_mod._parse(part)[0]
    lengths_end = layered_mod._PART.size + len(layered_mod._varints(layered_mod._parse(part)[1]))
    fixed = raw[:lengths_end + layered_mod._BASE.size]
    assert head.index == 0
    return _repack(part, fixed + layered_mod._varints(counts))


def test_oversized_and_impossible_counts_are_refused(two_frames):
    a, _ = two_frames
    counts = list(layered_mod._parse(a.parts[0])[0].base[4])
    huge = [min(8**lv, layered_mod.MAX_POINTS) for lv in range(len(counts))]  # within MAX_POINTS
    cases = {
        "more than MAX_POINTS": counts[:-1] + [layered_mod.MAX_POINTS + 1],
        "more than the bytes carry": huge,
        "root count 2": [2] + counts[1:],
        "shrinking level": counts[:3] + [counts[2] - 1] + counts[4:],
        "more than 8 children a node": counts[:2] + [8 * counts[1] + 1] + counts[3:],
        "one count missing": counts[:-1],
    }
    for name, bad in cases.items():
        base = _base_with_counts(a.parts[0], bad)
        t0 = time.perf_counter()
        with pytest.raises(CodecError):
            LayeredOctreeCodec.decode_layers([base, *a.parts[1:]])
            pytest.fail(name)
        assert time.perf_counter() - t0 < 1.0, name
    with pytest.raises(CodecError, match="points per byte"):
        LayeredOctreeCodec.decode_layers([_base_with_counts(a.parts[0], huge), *a.parts[1:]])
    # a count off by one passes every header check but not the decoder's own count
    off = counts[:-1] + [counts[-1] + 1]
    with pytest.raises(CodecError):
        LayeredOctreeCodec.decode_layers([_base_with_counts(a.parts[0], off), *a.parts[1:]])


def test_fuzzed_parts_decode_or_raise_codec_error(two_frames):
    """Bit flips behind a recomputed CRC reach the entropy decoders: every input decodes to a
    bounded cloud or raises CodecError, quickly."""
    a, _ = two_frames
    rng = np.random.default_rng(17)
    deadline = time.perf_counter() + 15
    tried = refused = 0
    while tried < 400 and time.perf_counter() < deadline:
        parts = list(a.parts[:rng.integers(1, len(a.parts) + 1)])
        j = int(rng.integers(len(parts)))
        box = container.unpack(parts[j])
        params, section = bytearray(box.params), bytearray(box.sections[0])
        target = params if (rng.random() < 0.3 or not section) else section
        for _ in range(int(rng.integers(1, 4))):
            target[int(rng.integers(len(target)))] ^= 1 << int(rng.integers(8))
        if rng.random() < 0.2 and len(section) > 4:
            section = section[:int(rng.integers(len(section)))]
        try:
            parts[j] = _repack(parts[j], bytes(params), bytes(section))
        except ValueError:
            continue
        t0 = time.perf_counter()
        try:
            pos, col = LayeredOctreeCodec.decode_layers(parts)
            assert len(pos) == len(col) <= a.points * 8
        except CodecError:
            refused += 1
        assert time.perf_counter() - t0 < 2.0
        tried += 1
    assert tried >= 100 and refused > 0


def test_metrics_helper_agrees_with_the_luma_used_here():
    rgb = np.array([[10, 200, 30], [255, 0, 128]], np.uint8)
    np.testing.assert_allclose(rgb_to_yuv(rgb)[:, 0] * 255, rgb.astype(float) @ _Y)


def test_params_layout_is_what_layer_of_reads(two_frames):
    a, _ = two_frames
    raw = bytes(container.unpack(a.parts[1]).params)
    kind, frame_id, index, count, level, first, atoms = struct.unpack_from("<BIBBBBB", raw)
    info = LayeredOctreeCodec.layer_of(a.parts[1])
    assert (kind, frame_id, index, count, level) == (0, info.frame_id, 1, info.count, info.level)
