import re
import struct
import time

import numpy as np
import pytest

import codec
from codec import BaselineCodec, CodecError, baseline, container


def _cloud(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    positions = rng.uniform([-0.5, 0.0, -0.4], [0.5, 1.9, 0.4], (n, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return positions, colors


def _sorted_rows(pos, col, codec_):
    q = np.floor((pos - np.array(codec_.origin)) / codec_.voxel_size + 0.5).astype(np.int64)
    order = np.lexsort((q[:, 2], q[:, 1], q[:, 0], col[:, 2], col[:, 1], col[:, 0]))
    return pos[order], col[order]


def test_round_trip_is_within_half_a_voxel_and_keeps_colors():
    positions, colors = _cloud()
    c = BaselineCodec()
    pos2, col2 = codec.decode(c.encode(positions, colors))
    assert pos2.dtype == np.float32 and col2.dtype == np.uint8
    assert len(pos2) == len(positions)
    # every decoded point is the quantized image of exactly one input point
    a_pos, a_col = _sorted_rows(positions, colors, c)
    b_pos, b_col = _sorted_rows(pos2, col2, c)
    np.testing.assert_array_equal(a_col, b_col)
    assert np.abs(a_pos - b_pos).max() <= c.max_error * 1.0001


def test_points_outside_the_volume_are_dropped():
    positions = np.array([[0, 1, 0], [5, 1, 0], [0, -0.1, 0]], dtype=np.float32)
    colors = np.full((3, 3), 7, np.uint8)
    pos2, _ = codec.decode(BaselineCodec().encode(positions, colors))
    assert len(pos2) == 1 and np.allclose(pos2[0], [0, 1, 0], atol=BaselineCodec().max_error)


def test_empty_cloud_round_trips():
    pos2, col2 = codec.decode(BaselineCodec().encode(np.zeros((0, 3), np.float32),
                                                     np.zeros((0, 3), np.uint8)))
    assert pos2.shape == (0, 3) and col2.shape == (0, 3)


def test_parameters_travel_in_the_stream():
    positions, colors = _cloud(500)
    c = BaselineCodec(voxel_size=0.01, origin=(-2.0, -1.0, -2.0), bits=9, level=7)
    pos2, _ = codec.decode(c.encode(positions, colors))  # decoder told nothing
    assert np.abs(np.sort(pos2[:, 1]) - np.sort(positions[:, 1])).max() <= 0.005 + 1e-6


def test_config_round_trips():
    c = BaselineCodec(voxel_size=0.004, origin=(-1, 0, -1), bits=11, level=5)
    assert codec.from_config(c.get_config()) == c
    assert codec.get_codec("baseline", bits=9).bits == 9
    with pytest.raises(ValueError, match="available: baseline"):
        codec.get_codec("nope")


@pytest.mark.parametrize("kwargs", [{"voxel_size": 0}, {"voxel_size": float("nan")},
                                    {"bits": 17}, {"bits": 0}, {"level": 0},
                                    {"origin": (0, 0)}])
def test_bad_parameters_are_refused_on_construction(kwargs):
    with pytest.raises(ValueError):
        BaselineCodec(**kwargs)


def test_bad_clouds_are_refused_by_the_encoder():
    c = BaselineCodec()
    with pytest.raises(ValueError, match="shape"):
        c.encode(np.zeros((4, 2), np.float32), np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        c.encode(np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        c.encode(np.full((4, 3), np.nan, np.float32), np.zeros((4, 3), np.uint8))


def test_a_truncated_stream_is_refused_by_the_container_layout():
    """Cutting the stream short changes its length, which the container catches before the
    checksum or the decoder (the tests below reach the decoder)."""
    data = BaselineCodec().encode(*_cloud(300))
    for cut in range(len(data)):
        with pytest.raises(CodecError, match="shorter|truncated|section lengths"):
            BaselineCodec.decode(data[:cut])


def _repack(params: bytes, sections: list[bytes]) -> bytes:
    """A baseline stream of these (possibly damaged) parts, its CRC recomputed to match."""
    return container.pack(BaselineCodec.codec_id, bytes(params), [bytes(s) for s in sections])


def _decode_or_refusal(data: bytes):
    """Decode a damaged stream whose CRC matches: the message of the CodecError it raises,
    which must not be the checksum's (any other exception fails the test), or the cloud,
    which must be a valid one: as many points as declared, float32 positions on the declared
    grid, uint8 colours; and either within two seconds."""
    t0 = time.perf_counter()
    try:
        pos, col = BaselineCodec.decode(data)
    except CodecError as exc:
        assert "checksum" not in str(exc), exc
        assert time.perf_counter() - t0 < 2.0
        return str(exc)
    assert time.perf_counter() - t0 < 2.0
    n, voxel, ox, oy, oz, bits, _ = struct.unpack("<I4fBb", container.unpack(data).params)
    origin = np.array([ox, oy, oz], np.float32)
    assert pos.dtype == np.float32 and col.dtype == np.uint8 and pos.shape == col.shape == (n, 3)
    assert (pos >= origin).all() and (pos <= np.float32((1 << bits) - 1) * np.float32(voxel) + origin).all()
    return pos, col


def _parts(n: int = 300) -> tuple[bytes, list[bytes]]:
    data = BaselineCodec().encode(*_cloud(n))
    box = container.unpack(data)
    parts = [bytes(box.params), *(bytes(s) for s in box.sections)]
    assert _repack(parts[0], parts[1:]) == data  # the helper frames them as the encoder did
    return data, parts


@pytest.mark.parametrize("part", ["params", "geometry", "colours"])
def test_bit_flips_behind_a_recomputed_crc_reach_the_decoder(part):
    data, parts = _parts()
    full_pos, full_col = BaselineCodec.decode(data)
    i = ["params", "geometry", "colours"].index(part)
    rng = np.random.default_rng(i)
    errors, clouds = [], []
    for _ in range(200):
        damaged = [bytearray(x) for x in parts]
        damaged[i][int(rng.integers(len(damaged[i])))] ^= 1 << int(rng.integers(8))
        with pytest.raises(CodecError, match="checksum"):  # as it arrives: the CRC stops it
            BaselineCodec.decode(_repack(damaged[0], damaged[1:])[:-4] + data[-4:])
        got = _decode_or_refusal(_repack(damaged[0], damaged[1:]))
        (errors if isinstance(got, str) else clouds).append(got)
    if part == "params":  # the parameter checks refuse it, or it decodes with the same colours
        assert any("does not declare the expected" in e for e in errors)  # a count that reached zstd
        assert any("invalid baseline parameters" in e for e in errors)
        for _, col in clouds:
            np.testing.assert_array_equal(col, full_col)
        return
    assert all(re.search(r"zstd|expected|outside the declared grid", e) for e in errors), errors
    other = full_col if part == "geometry" else full_pos  # the undamaged section decodes intact
    for pos, col in clouds:
        np.testing.assert_array_equal(col if part == "geometry" else pos, other)
    # zstd frames carry no checksum here: most flips decode, to other values
    changed = [c for c in clouds if not np.array_equal(c[i - 1], (full_pos, full_col)[i - 1])]
    assert len(changed) > 100
    if part == "geometry":
        assert any("corrupt zstd section" in e for e in errors)
        assert any("outside the declared grid" in e for e in errors)


def test_truncated_sections_and_changed_counts_reach_the_decoder():
    data, parts = _parts()
    n = struct.unpack_from("<I", parts[0])[0]
    for i in (1, 2):  # each zstd section cut short, the container's lengths and CRC made to match
        size = len(parts[i])
        for cut in (1, 2, 5, 13, size // 2, size):
            damaged = [*parts]
            damaged[i] = parts[i][: size - cut]
            with pytest.raises(CodecError, match="checksum"):
                BaselineCodec.decode(_repack(damaged[0], damaged[1:])[:-4] + data[-4:])
            got = _decode_or_refusal(_repack(damaged[0], damaged[1:]))
            assert isinstance(got, str) and re.search("zstd|expected", got), (i, cut, got)
    for count, refusal in ((n - 1, f"does not declare the expected {6 * (n - 1)} bytes"),
                           (n + 1, f"does not declare the expected {6 * (n + 1)} bytes"),
                           (0, "does not declare the expected 0 bytes"),
                           (baseline.MAX_POINTS, "points per byte"),  # more than its bytes carry
                           (baseline.MAX_POINTS + 1, "more than the limit")):
        params = struct.pack("<I", count) + parts[0][4:]
        with pytest.raises(CodecError, match="checksum"):
            BaselineCodec.decode(_repack(params, parts[1:])[:-4] + data[-4:])
        assert refusal in _decode_or_refusal(_repack(params, parts[1:]))
    for sections in (parts[1:2], [*parts[1:], b""]):  # a section too few, or too many
        assert "needs 2 sections" in _decode_or_refusal(_repack(parts[0], sections))


def test_random_bytes_raise_codec_error():
    rng = np.random.default_rng(2)
    _, parts = _parts(10)
    for n in [0, 1, 15, 16, 40, 1000]:
        for _ in range(50):
            junk = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            with pytest.raises(CodecError):
                codec.decode(junk)
            with pytest.raises(CodecError):
                codec.decode(b"HPCC\x01\x01" + junk)
            # framed with a matching CRC, the junk reaches the parameter checks and zstd
            got = _decode_or_refusal(_repack(parts[0], [junk, junk[::-1]]))
            assert isinstance(got, str) and re.search("zstd|expected", got), got
            if n >= 22:
                _decode_or_refusal(_repack(junk[:22], [junk[22:], junk]))


def _forge(n_points: int, sections: list[bytes], bits: int = 10) -> bytes:
    """A stream with a valid CRC whose parameters lie: what an attacker would send."""
    params = struct.pack("<I4fBb", n_points, 0.01, 0, 0, 0, bits, 3)
    return container.pack(BaselineCodec.codec_id, params, sections)


def test_a_huge_point_count_is_refused_before_allocating():
    t0 = time.perf_counter()
    with pytest.raises(CodecError, match="more than the limit"):
        codec.decode(_forge(2**32 - 1, [b"", b""]))
    assert time.perf_counter() - t0 < 0.5


def test_a_zstd_bomb_is_refused_before_inflating():
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\0" * 50_000_000)  # ~1.6 kB claiming 50 MB
    with pytest.raises(CodecError, match="expected"):
        codec.decode(_forge(10, [bomb, bomb]))


def test_coordinates_beyond_the_declared_grid_are_refused():
    import zstandard

    z = zstandard.ZstdCompressor()
    geom = np.full((3, 2), 4000, np.uint16).tobytes()  # 4000 >= 2**10
    with pytest.raises(CodecError, match="outside the declared grid"):
        codec.decode(_forge(2, [z.compress(geom), z.compress(bytes(6))]))


def test_unknown_codec_and_container_version_are_named():
    data = bytearray(BaselineCodec().encode(*_cloud(10)))
    data[5] = 99
    with pytest.raises(CodecError, match="unknown codec id 99"):
        codec.decode(bytes(data))
    data = bytearray(BaselineCodec().encode(*_cloud(10)))
    data[4] = 9
    with pytest.raises(CodecError, match="container version 9"):
        codec.decode(bytes(data))


def test_real_frames_round_trip_losslessly_on_their_grid(mvub_frames):
    from benchmarks.codec_rd import grid_bits
    from capture.ply import read_ply

    positions, colors = read_ply(mvub_frames[0])
    c = BaselineCodec(voxel_size=1.0, origin=(0, 0, 0), bits=grid_bits(positions))
    data = c.encode(positions, colors)
    pos2, col2 = codec.decode(data)
    a = np.unique(np.hstack([positions, colors]).astype(np.int64), axis=0)
    b = np.unique(np.hstack([pos2, col2]).astype(np.int64), axis=0)
    np.testing.assert_array_equal(a, b)
    # well under raw storage (3 x 16-bit coordinates + RGB = 72 bits per point)
    geometry_bits = (len(data) - len(container.unpack(data).sections[1])) * 8
    assert len(data) * 8 / len(positions) < 36
    assert geometry_bits / len(positions) < 8
