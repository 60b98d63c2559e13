"""Limits every decoder applies to untrusted streams before it allocates anything.

A stream's header declares how many points it holds and where they lie; without limits a
4.7 kB baseline frame declaring 2**24 points of zeros cost each receiver seconds and
hundreds of MB (issue 14; docs/codec.md, "Limits on untrusted streams").
So a decoder checks, before it allocates or inflates anything in proportion to the count:

- the count against the codec's own ``MAX_POINTS`` and the caller's ``max_points`` (the
  meeting's points-per-frame limit, which the hub announces);
- the count against the bytes that carry it: a real frame never compresses below a certain
  size per point, so a stream that claims more points than its payload can honestly carry
  is refused (each codec sets its ``POINTS_PER_BYTE``, measured on real frames);
- the volume: every coordinate it can produce is finite and within ``MAX_COORD``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from codec.errors import CodecError

#: Points any stream may declare whatever its size: headers dominate tiny frames (a
#: 10-point frame is ~100 bytes), and decoding this many costs well under a millisecond.
FREE_POINTS = 4096

#: Largest coordinate magnitude a codec volume may reach, in the stream's units: metres for
#: the participants' streams (a 2.5 m cube), grid units for the benchmarks' MVUB frames
#: (512). It keeps every decoded position finite in float32 (a 3e38 m voxel decoded to inf)
#: while admitting any grid the formats can describe (16 bits: 65,536 units).
MAX_COORD = 1e5

#: Smallest cell (voxel) size: below a micrometre a volume is absurd, not precise.
MIN_CELL = 1e-6


def check_max_points(max_points: int | None) -> int | None:
    """A caller's limit as an int; a wrong one is the caller's error, not the stream's."""
    if max_points is None:
        return None
    try:
        limit = operator.index(max_points)
    except TypeError:
        limit = -1
    if isinstance(max_points, bool) or limit < 0:
        raise ValueError(f"max_points must be a non-negative int or None, got {max_points!r}")
    return limit


def check_count(n: int, payload: int, *, codec_max: int, per_byte: float, max_points: int | None,
                name: str) -> None:
    """Refuse a declared count of ``n`` points carried by ``payload`` bytes of sections when
    it exceeds the codec's limit, the caller's ``max_points``, or ``FREE_POINTS`` plus
    ``per_byte`` points per byte (a compression ratio no real frame reaches)."""
    max_points = check_max_points(max_points)
    if n > codec_max:
        raise CodecError(f"{name} stream claims {n} points, more than the limit {codec_max}")
    if max_points is not None and n > max_points:
        raise CodecError(f"{name} stream claims {n} points, more than the {max_points} allowed here (max_points)")
    if n > FREE_POINTS + per_byte * payload:
        raise CodecError(f"{name} stream claims {n} points in {payload} bytes: no real frame compresses to "
                         f"more than {per_byte:g} points per byte")


def check_volume(origin: Sequence[float], extent: float, cell: float) -> None:
    """Raise ValueError unless the cube of side ``extent`` from ``origin``, in cells of
    ``cell``, is finite, within ``MAX_COORD`` and made of cells of at least ``MIN_CELL``."""
    if not (math.isfinite(extent) and math.isfinite(cell) and cell >= MIN_CELL):
        raise ValueError(f"cells of {cell:g} are not a usable size (at least {MIN_CELL:g})")
    if not all(math.isfinite(o) and abs(o) <= MAX_COORD and abs(o + extent) <= MAX_COORD for o in origin):
        raise ValueError(f"a volume of {extent:g} from {tuple(origin)} reaches beyond +-{MAX_COORD:g}")
