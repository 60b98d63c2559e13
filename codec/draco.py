"""Google's Draco as a Holoport stream codec, through DracoPy: a peer people know, in one file.

Registered through the ``holoport.codecs`` entry point (pyproject.toml), so ``holoport join
--codec draco`` works with no edit to the node, the hub, the participant or the CLI. Every
frame stands alone (Draco keeps no state between frames), so the registry's stateless
encoder and decoder carry it. Needs DracoPy (``pip install DracoPy``, in the ``dev`` extra).

Positions are quantized by Draco to ``quantization_bits`` per axis over the same capture
volume as the other codecs (ARCHITECTURE.md's 2.5 m cube), so its grid is theirs; points
outside the volume are dropped, as the baseline does. The Draco bytes travel as one section
of the Holoport container with the point count in its parameters: that count, and the one in
Draco's own header, are checked against the meeting's limit before Draco allocates anything.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from codec import container, limits
from codec.base import Codec
from codec.errors import CodecError
from codec.registry import register_codec
from codec.types import Cloud, validate_cloud

MAX_POINTS = 1 << 22
#: Points per byte of Draco's bytes beyond ``limits.FREE_POINTS``: Draco spends well over a
#: bit per point on a person even at its coarsest settings, so 8 points per byte (1 bit per
#: point) is far above any real frame and refuses a header that claims millions in a few bytes.
POINTS_PER_BYTE = 8
_PARAMS = struct.Struct("<I")  # points
_DRACO_HEAD = struct.Struct("<5sBBBBH")  # "DRACO", major, minor, encoder type, method, flags
_POINT_CLOUD = 0
_METADATA_FLAG = 0x8000
#: What follows the point count in every stream this codec writes (Draco 2.2 bitstream):
#: one attributes decoder with two attributes, POSITION float32 x 3 and COLOR uint8 x 3.
#: Pinned, so that a hostile stream cannot declare more attributes or components and make
#: Draco allocate far beyond the checked point count.
_LAYOUT = bytes([1, 2, 0, 9, 3, 0, 0, 2, 2, 3, 0, 1])


def _dracopy():
    try:
        import DracoPy
    except ImportError:
        raise ValueError("the draco codec needs DracoPy: pip install DracoPy") from None
    return DracoPy


@register_codec
@dataclass(frozen=True)
class DracoCodec(Codec):
    """Draco point cloud compression; ``compression_level`` 0 (fastest) .. 10."""

    codec_id = 3
    name = "draco"

    quantization_bits: int = 10
    compression_level: int = 7
    origin: tuple[float, float, float] = (-1.25, 0.0, -1.25)
    size: float = 2.5

    def __post_init__(self) -> None:
        if not 1 <= self.quantization_bits <= 16:
            raise ValueError(f"quantization_bits must be in 1..16, got {self.quantization_bits}")
        if not 0 <= self.compression_level <= 10:
            raise ValueError(f"compression_level must be in 0..10, got {self.compression_level}")
        if len(self.origin) != 3 or not all(math.isfinite(v) for v in self.origin):
            raise ValueError(f"origin must be three finite numbers, got {self.origin}")
        if not (math.isfinite(self.size) and self.size > 0):
            raise ValueError(f"size must be a positive number of metres, got {self.size}")
        limits.check_volume(self.origin, self.size, self.size / (1 << self.quantization_bits))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        _dracopy()  # a missing DracoPy is said when the codec is chosen, not at the first frame

    @property
    def max_error(self) -> float:
        """Largest per-axis position error of a point inside the volume (half a cell)."""
        return self.size / ((1 << self.quantization_bits) - 1) / 2

    def encode(self, positions: np.ndarray, colors: np.ndarray) -> bytes:
        positions, colors = validate_cloud(positions, colors)
        lo = np.asarray(self.origin)
        inside = np.all((positions >= lo) & (positions <= lo + self.size), axis=1)
        points = np.ascontiguousarray(positions[inside], dtype=np.float32)
        if len(points) == 0:
            return container.pack(self.codec_id, _PARAMS.pack(0), [b""])
        draco = _dracopy().encode(points, colors=np.ascontiguousarray(colors[inside]),
                                  quantization_bits=self.quantization_bits,
                                  compression_level=self.compression_level,
                                  quantization_range=self.size, quantization_origin=list(self.origin))
        # Draco merges points that are identical in position and colour: its own count is
        # what it will decode, and what the receiver checks
        (count,) = struct.unpack_from("<i", draco, _DRACO_HEAD.size)
        return container.pack(self.codec_id, _PARAMS.pack(count), [draco])

    @classmethod
    def decode(cls, data, *, max_points: int | None = None) -> Cloud:
        limits.check_max_points(max_points)
        box = container.unpack(data)
        if box.codec_id != cls.codec_id:
            raise CodecError(f"codec id {box.codec_id} is not the draco codec ({cls.codec_id})")
        if len(box.params) != _PARAMS.size or len(box.sections) != 1:
            raise CodecError("a draco stream has a 4-byte parameter block and one section")
        (n,) = _PARAMS.unpack(box.params)
        draco = bytes(box.sections[0])
        limits.check_count(n, len(draco), codec_max=MAX_POINTS, per_byte=POINTS_PER_BYTE,
                           max_points=max_points, name="draco")
        if n == 0:
            return Cloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
        # Draco sizes its buffers from its own header: it must agree with the count checked above
        if len(draco) < _DRACO_HEAD.size + 4:
            raise CodecError("draco section too short")
        magic, major, _minor, kind, _method, flags = _DRACO_HEAD.unpack_from(draco)
        if magic != b"DRACO" or major != 2 or kind != _POINT_CLOUD or flags & _METADATA_FLAG:
            raise CodecError("not a Draco 2.x point cloud without metadata")
        (declared,) = struct.unpack_from("<i", draco, _DRACO_HEAD.size)
        if declared != n:
            raise CodecError(f"Draco's header declares {declared} points, the stream {n}")
        start = _DRACO_HEAD.size + 4
        if draco[start:start + len(_LAYOUT)] != _LAYOUT:
            raise CodecError("the Draco stream does not hold exactly positions (float32 x 3) and colours (uint8 x 3)")
        try:
            cloud = _dracopy().decode(draco)
        except Exception as exc:
            raise CodecError(f"Draco could not decode the frame: {exc}") from None
        positions, colors = np.asarray(cloud.points), cloud.colors
        if (positions.shape != (n, 3) or colors is None or np.shape(colors) != (n, 3)
                or not np.isfinite(positions).all()):
            raise CodecError("Draco decoded something other than n finite positions and n RGB colours")
        return Cloud(positions.astype(np.float32), np.ascontiguousarray(colors, dtype=np.uint8))
