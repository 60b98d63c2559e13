"""Keep freed memory in the process instead of handing it back to the kernel each frame.

A frame's working arrays are tens of MB (neighbour tables, transform levels). glibc's
malloc serves blocks that large with fresh ``mmap`` pages, or trims the heap once more
than a few MB are free, so every frame page-faults its memory in again (what that cost
when it was measured: docs/codec.md, "Speed: where the time goes"). Raising the mmap and
trim thresholds once makes the next frame
reuse the last frame's pages. It changes no result, only where memory comes from; the
peak stays what the biggest frame needs. No effect (and no error) off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 1 << 30

_done = False


def keep_freed_memory() -> bool:
    """Apply the thresholds once per process; True when glibc accepted them. Set the
    environment variable HOLOPORT_MALLOC_DEFAULTS=1 to leave the allocator alone."""
    global _done
    if _done or os.environ.get("HOLOPORT_MALLOC_DEFAULTS") == "1":
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
