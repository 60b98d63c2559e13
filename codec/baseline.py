"""The baseline codec: voxel quantization plus zstd, kept for good as the yardstick.

Every later codec is compared with this one, so it stays deliberately simple: positions
are quantized to a voxel grid inside a fixed capture volume, sorted (so that zstd sees long
runs), stored as planar uint16 columns and compressed with zstd; colours follow in the same
order, planar, also with zstd. Points outside the volume are dropped (the capture volume is
the contract); duplicates are kept, so the decoded cloud has one point per input point
inside the volume.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from codec import container, limits
from codec.base import Codec
from codec.errors import CodecError
from codec.registry import register_codec
from codec.types import Cloud, validate_cloud

#: Points a stream may claim before the decoder refuses it (256 MB of decoded geometry).
MAX_POINTS = 1 << 24
#: Points a stream may carry per byte of its sections (beyond ``limits.FREE_POINTS``): a
#: zstd bomb of 2**24 points of zeros packs ~3,600 into each byte. The most compact real
#: frame packs 1.65 (Kinect person.pcd, 2.4 mm cells, zstd level 19; MVUB frames 0.31-0.54,
#: the synthetic camera's person 0.54 and whole room 0.87), so 16 leaves a margin of ~10x.
#: Measured over every frame in ../shared/data/pointclouds and the synthetic camera, zstd
#: levels 1-19, with the sweep in docs/codec.md ("Limits on untrusted streams").
POINTS_PER_BYTE = 16

_PARAMS = struct.Struct("<I4fBb")  # n_points, voxel_size, origin xyz, bits, zstd level


@register_codec
@dataclass(frozen=True)
class BaselineCodec(Codec):
    """Voxel grid of ``2**bits`` cells per axis of ``voxel_size`` metres from ``origin``.

    The default volume is ARCHITECTURE.md's 2.5 m cube around a participant (origin on the
    floor under them) at 10 bits: 2.4 mm cells.
    """

    codec_id = 1
    name = "baseline"

    voxel_size: float = 2.5 / 1024
    origin: tuple[float, float, float] = (-1.25, 0.0, -1.25)
    bits: int = 10
    level: int = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive number of metres, got {self.voxel_size}")
        if len(self.origin) != 3 or not all(math.isfinite(v) for v in self.origin):
            raise ValueError(f"origin must be three finite numbers, got {self.origin}")
        if not 1 <= self.bits <= 16:
            raise ValueError(f"bits must be in 1..16, got {self.bits}")
        if not 1 <= self.level <= 22:
            raise ValueError(f"zstd level must be in 1..22, got {self.level}")
        limits.check_volume(self.origin, self.voxel_size * (1 << self.bits), self.voxel_size)
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))

    # -- configuration: get_config / from_config come from codec.base.Codec -----------
    @property
    def max_error(self) -> float:
        """Largest per-axis position error of a point inside the volume (half a cell)."""
        return self.voxel_size / 2

    # -- coding ------------------------------------------------------------------------
    def encode(self, positions: np.ndarray, colors: np.ndarray) -> bytes:
        positions, colors = validate_cloud(positions, colors)
        origin = np.asarray(self.origin, dtype=np.float64)
        q = np.floor((positions - origin) / self.voxel_size + 0.5)
        inside = np.all((q >= 0) & (q < (1 << self.bits)), axis=1)
        q = q[inside].astype(np.uint64)
        rgb = colors[inside]
        key = (q[:, 0] << np.uint64(2 * self.bits)) | (q[:, 1] << np.uint64(self.bits)) | q[:, 2]
        order = np.argsort(key, kind="stable")
        geom = np.ascontiguousarray(q[order].T.astype(np.uint16))
        col = np.ascontiguousarray(rgb[order].T)
        zc = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        params = _PARAMS.pack(len(q), self.voxel_size, *self.origin, self.bits, self.level)
        return container.pack(
            self.codec_id, params, [zc.compress(geom.tobytes()), zc.compress(col.tobytes())]
        )

    @classmethod
    def decode(cls, data: bytes, *, max_points: int | None = None) -> Cloud:
        """Decode a baseline stream; the parameters come from the stream itself.

        A stream declaring more than ``max_points`` points (the meeting's limit), more than
        ``MAX_POINTS``, or more than its bytes can honestly carry is refused before anything
        is inflated or allocated.
        """
        limits.check_max_points(max_points)
        box = container.unpack(data)
        if box.codec_id != cls.codec_id:
            raise CodecError(f"codec id {box.codec_id} is not the baseline codec ({cls.codec_id})")
        if len(box.params) != _PARAMS.size:
            raise CodecError(f"baseline parameter block must be {_PARAMS.size} bytes")
        n, voxel, ox, oy, oz, bits, level = _PARAMS.unpack(box.params)
        try:
            codec = cls(voxel_size=voxel, origin=(ox, oy, oz), bits=bits, level=level)
        except ValueError as exc:
            raise CodecError(f"invalid baseline parameters: {exc}") from exc
        limits.check_count(n, sum(len(s) for s in box.sections), codec_max=MAX_POINTS,
                           per_byte=POINTS_PER_BYTE, max_points=max_points, name="baseline")
        if len(box.sections) != 2:
            raise CodecError(f"baseline stream needs 2 sections, found {len(box.sections)}")
        geom = np.frombuffer(_inflate(box.sections[0], 6 * n), dtype=np.uint16).reshape(3, n)
        if n and int(geom.max()) >= (1 << bits):
            raise CodecError("quantized coordinate outside the declared grid")
        col = np.frombuffer(_inflate(box.sections[1], 3 * n), dtype=np.uint8).reshape(3, n)
        origin = np.asarray(codec.origin, dtype=np.float32)
        positions = geom.T.astype(np.float32) * np.float32(codec.voxel_size) + origin
        return Cloud(positions, np.ascontiguousarray(col.T))


def _inflate(section: memoryview, expected: int) -> bytes:
    """zstd-decompress a section whose size the parameters fix, never allocating more."""
    try:
        if zstandard.frame_content_size(section) != expected:
            raise CodecError(f"section does not declare the expected {expected} bytes")
        # zstd inflates into a buffer of the declared size (exactly ``expected``, checked
        # above) and fails rather than write past it; max_output_size says so again
        out = zstandard.ZstdDecompressor().decompress(section, max_output_size=expected,
                                                      allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CodecError(f"corrupt zstd section: {exc}") from exc
    if len(out) != expected:
        raise CodecError(f"section decompressed to {len(out)} bytes, expected {expected}")
    return out
