"""The few libopus decoder calls FFmpeg does not expose, through ctypes.

FFmpeg's Opus decoders cannot rebuild a lost packet from the in-band FEC copy (LBRR) that
the *next* packet carries, nor conceal one on request: both need ``opus_decode_float`` with
``decode_fec`` or a NULL packet. PyAV's wheel ships libopus (``av.libs/libopus-*.so*``),
so that library is used; the system's ``libopus.so.0`` is the fallback.

ctypes does no bounds checking, so every call here passes the exact length of the bytes it
hands over and an output buffer of exactly the samples it asks for; libopus itself refuses
a packet longer than that buffer (``OPUS_BUFFER_TOO_SMALL``) rather than writing past it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref
from functools import cache
from pathlib import Path

import numpy as np

from codec.errors import CodecError

OPUS_OK = 0
MAX_FRAMES = 48  # most frames one Opus packet holds (RFC 6716 3.2.5)


@cache
def library() -> ctypes.CDLL:
    """libopus, with the signatures of the calls used here; ValueError when none is found."""
    candidates: list[str] = []
    try:
        import av

        candidates += sorted(str(p) for p in (Path(av.__file__).parent.parent / "av.libs").glob("libopus-*.so*"))
    except ImportError:
        pass
    if system := ctypes.util.find_library("opus"):
        candidates.append(system)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError:
            continue
    else:
        raise ValueError("the opus codec needs libopus: install PyAV (pip install av) or Debian's libopus0")
    u8p, i32, c_int = ctypes.c_char_p, ctypes.c_int32, ctypes.c_int
    lib.opus_get_version_string.restype = ctypes.c_char_p
    lib.opus_strerror.restype, lib.opus_strerror.argtypes = ctypes.c_char_p, [c_int]
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [i32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decoder_destroy.restype, lib.opus_decoder_destroy.argtypes = None, [ctypes.c_void_p]
    lib.opus_decode_float.restype = c_int
    lib.opus_decode_float.argtypes = [ctypes.c_void_p, u8p, i32, ctypes.POINTER(ctypes.c_float), c_int, c_int]
    lib.opus_packet_get_nb_samples.restype, lib.opus_packet_get_nb_samples.argtypes = c_int, [u8p, i32, i32]
    lib.opus_packet_parse.restype = c_int
    lib.opus_packet_parse.argtypes = [u8p, i32, ctypes.POINTER(ctypes.c_ubyte), ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_int16), ctypes.POINTER(c_int)]
    if hasattr(lib, "opus_packet_has_lbrr"):  # libopus >= 1.5
        lib.opus_packet_has_lbrr.restype, lib.opus_packet_has_lbrr.argtypes = c_int, [u8p, i32]
    return lib


def version() -> str:
    return library().opus_get_version_string().decode()


def _error(code: int) -> str:
    return library().opus_strerror(code).decode()


def packet_samples(packet: bytes, rate: int) -> int:
    """Samples per channel that ``packet`` decodes to, after checking its whole framing (TOC,
    frame count and every frame length against the bytes present); CodecError if invalid."""
    lib = library()
    toc, offset = ctypes.c_ubyte(), ctypes.c_int()
    frames, sizes = (ctypes.c_void_p * MAX_FRAMES)(), (ctypes.c_int16 * MAX_FRAMES)()
    count = lib.opus_packet_parse(packet, len(packet), ctypes.byref(toc), frames, sizes, ctypes.byref(offset))
    if count < 0:
        raise CodecError(f"not a valid Opus packet: {_error(count)}")
    samples = lib.opus_packet_get_nb_samples(packet, len(packet), rate)
    if samples < 0:
        raise CodecError(f"not a valid Opus packet: {_error(samples)}")
    return samples


def packet_has_lbrr(packet: bytes) -> bool | None:
    """Whether ``packet`` carries an in-band FEC copy of the one before it; None when this
    libopus cannot say (before 1.5)."""
    lib = library()
    if not hasattr(lib, "opus_packet_has_lbrr"):
        return None
    return lib.opus_packet_has_lbrr(packet, len(packet)) == 1


class OpusDecoderState:
    """One libopus decoder (mono float), freed with this object."""

    def __init__(self, rate: int) -> None:
        lib = library()
        error = ctypes.c_int()
        handle = lib.opus_decoder_create(rate, 1, ctypes.byref(error))
        if error.value != OPUS_OK or not handle:
            raise RuntimeError(f"opus_decoder_create failed: {_error(error.value)}")
        self._handle = handle
        self._free = weakref.finalize(self, lib.opus_decoder_destroy, handle)

    def decode(self, packet: bytes | None, samples: int, fec: bool = False) -> np.ndarray:
        """Exactly ``samples`` samples: ``packet`` decoded, or with ``fec`` the frame before it
        rebuilt from its LBRR copy (concealed if it has none), or with None concealed."""
        if not self._free.alive:
            raise RuntimeError("the opus decoder is closed")
        pcm = np.zeros(samples, np.float32)
        out = pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        n = library().opus_decode_float(self._handle, packet, 0 if packet is None else len(packet), out,
                                        samples, int(fec))
        if n < 0:
            raise CodecError(f"Opus could not decode the packet: {_error(n)}")
        if n != samples:
            raise CodecError(f"Opus decoded {n} samples where {samples} were expected")
        return pcm

    def close(self) -> None:
        self._free()
