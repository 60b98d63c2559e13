"""The bitstream container every Holoport codec writes.

A codec payload describes itself, so a recording holds the same bytes the network carried
and a decoder needs nothing but the bytes. Layout (little-endian)::

    offset  size     field
    0       4        magic b"HPCC"
    4       1        container version (CONTAINER_VERSION)
    5       1        codec id (see codec.registry)
    6       2        flags (reserved, 0)
    8       2        P = length of the parameter block (<= MAX_PARAMS_BYTES)
    10      P        parameters, codec specific
    10+P    1        S = number of sections (<= MAX_SECTIONS)
    11+P    4*S      section lengths, u32 each
    ...     sum      the sections, back to back
    end-4   4        CRC-32 of every byte before it

``unpack`` checks every length against the buffer before slicing, so no count taken from
the bytes can make it read past the end or allocate; sections come back as memoryviews.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from codec.errors import CodecError

MAGIC = b"HPCC"
CONTAINER_VERSION = 1
MAX_PARAMS_BYTES = 1024
MAX_SECTIONS = 64

_FIXED = struct.Struct("<4sBBHH")  # magic, version, codec id, flags, params length
_MIN_SIZE = _FIXED.size + 1 + 4  # fixed header, section count, CRC


@dataclass(frozen=True)
class Container:
    codec_id: int
    params: memoryview
    sections: tuple[memoryview, ...]


def pack(codec_id: int, params: bytes, sections: list[bytes]) -> bytes:
    """Frame a codec's parameter block and sections; the inverse of :func:`unpack`."""
    if not 0 <= codec_id <= 255:
        raise ValueError(f"codec id {codec_id} out of range 0..255")
    if len(params) > MAX_PARAMS_BYTES:
        raise ValueError(f"parameter block of {len(params)} bytes exceeds {MAX_PARAMS_BYTES}")
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"{len(sections)} sections exceed {MAX_SECTIONS}")
    head = _FIXED.pack(MAGIC, CONTAINER_VERSION, codec_id, 0, len(params))
    lengths = struct.pack(f"<B{len(sections)}I", len(sections), *(len(s) for s in sections))
    body = b"".join([head, params, lengths, *sections])
    return body + struct.pack("<I", zlib.crc32(body))


# Voice packets are ~60 bytes, too small to carry this container's header: they start
# with two bytes of their own instead, VOICE_TAG | flags and the codec id (codec/opus.py).
VOICE_TAG = 0xA0


def peek_codec_id(data: bytes | bytearray | memoryview) -> int:
    """The codec id of a stream, after checking only the fixed header."""
    buf = memoryview(data).cast("B")
    if 2 <= len(buf) < 4096 and buf[0] & 0xF0 == VOICE_TAG:  # a voice packet (codec/opus.py)
        return buf[1]
    if len(buf) < _MIN_SIZE or bytes(buf[:4]) != MAGIC:
        raise CodecError("not a Holoport codec stream (bad magic or too short)")
    return buf[5]


def unpack(data: bytes | bytearray | memoryview, verify_checksum: bool = True) -> Container:
    """Validate the container and return its parts; raises :class:`CodecError`.

    ``verify_checksum=False`` still checks the whole layout but not the CRC: for codecs
    that carry checksums of their own parts and can salvage the undamaged ones.

    Sections are read-only views whatever the input (bytes, a ZeroMQ frame's buffer, a
    bytearray), so numba compiles each decoding kernel for one array type only.
    """
    buf = memoryview(data).cast("B").toreadonly()
    n = len(buf)
    if n < _MIN_SIZE:
        raise CodecError(f"stream of {n} bytes is shorter than the {_MIN_SIZE}-byte minimum")
    magic, version, codec_id, flags, n_params = _FIXED.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CodecError(f"bad magic {bytes(magic)!r}: not a Holoport codec stream")
    if version != CONTAINER_VERSION:
        raise CodecError(
            f"container version {version} is not supported (this build reads {CONTAINER_VERSION})"
        )
    if flags != 0:
        raise CodecError(f"unknown container flags 0x{flags:04x}")
    if n_params > MAX_PARAMS_BYTES:
        raise CodecError(f"parameter block of {n_params} bytes exceeds {MAX_PARAMS_BYTES}")
    pos = _FIXED.size + n_params
    if pos + 1 + 4 > n:
        raise CodecError("stream truncated inside the parameter block")
    n_sections = buf[pos]
    pos += 1
    if n_sections > MAX_SECTIONS:
        raise CodecError(f"{n_sections} sections exceed {MAX_SECTIONS}")
    if pos + 4 * n_sections + 4 > n:
        raise CodecError("stream truncated inside the section table")
    lengths = struct.unpack_from(f"<{n_sections}I", buf, pos)
    pos += 4 * n_sections
    if pos + sum(lengths) + 4 != n:
        raise CodecError(
            f"section lengths add up to {sum(lengths)} bytes but {n - pos - 4} are present"
        )
    (crc,) = struct.unpack_from("<I", buf, n - 4)
    if verify_checksum and zlib.crc32(buf[: n - 4]) != crc:
        raise CodecError("checksum mismatch: the stream is corrupted")
    sections = []
    for length in lengths:
        sections.append(buf[pos : pos + length])
        pos += length
    return Container(codec_id, buf[_FIXED.size : _FIXED.size + n_params], tuple(sections))
