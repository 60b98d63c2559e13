import struct
import time

import numpy as np
import pytest

import codec
from codec import BaselineCodec, CodecError, container


def _cloud(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    positions = rng.uniform([-0.5, 0.0, -0.4], [0.5, 1.9, 0.4], (n, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return positions, colors


def _sorted_rows(pos, col, codec_):
    q = np.floor((pos - np.array(codec_.origin)) / codec_.voxel_size + 0.5).astype(np.int64)
    order = np.lexsort((q[:, 2], q[:, 1], q[:, 0], col[:, 2], col[:, 1], col[:, 0]))
    return pos[order], col[order]


def test_round_trip_is_within_half_a_voxel_and_keeps_colours():
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


def test_every_truncation_and_bit_flip_raises_codec_error():
    positions, colors = _cloud(300)
    data = BaselineCodec().encode(positions, colors)
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            codec.decode(data[:cut])
    rng = np.random.default_rng(1)
    for _ in range(500):
        buf = bytearray(data)
        i = int(rng.integers(len(buf)))
        buf[i] ^= 1 << int(rng.integers(8))
        with pytest.raises(CodecError):
            codec.decode(bytes(buf))


def test_random_bytes_raise_codec_error():
    rng = np.random.default_rng(2)
    for n in [0, 1, 15, 16, 40, 1000]:
        for _ in range(50):
            junk = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            with pytest.raises(CodecError):
                codec.decode(junk)
            with pytest.raises(CodecError):
                codec.decode(b"HPCC\x01\x01" + junk)


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
    from benchmarks.common import read_ply

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
