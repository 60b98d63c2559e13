"""MPEG G-PCC as the shared data publishes it, and the Bjontegaard delta rate against it.

``../shared/data/README.md`` (or ``HOLOPORT_DATA``'s README) lists what TMC13 v23 (octree,
lossless geometry, RAHT colour) gives on each MVUB frame: lossless geometry bits per point,
and total bits per point with Y-PSNR at the common-test-condition QPs 22, 28, 34 and 40.
The tables are read from that README, so a reader with other frames and their own G-PCC
figures in the same layout compares against those.

BD-rate as MPEG reports it: log10 of the rate as a piecewise cubic (PCHIP) function of the
PSNR for each codec, integrated over the PSNR range both curves cover; the mean difference
as a percentage (negative: fewer bits than the reference at equal quality).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Frames the octree codec's geometry contexts and mixer were tuned on (issue 19); every
#: other frame validates them.
GEOMETRY_TUNING_FRAMES = ("andrew_8bit", "phil_8bit", "sarah_9bit")
QPS = (22, 28, 34, 40)


@dataclass(frozen=True)
class GpccFrame:
    points: int
    geometry_bpp: float  # lossless geometry, bits per input point
    total_bpp: tuple[float, ...]  # at QPS
    y_psnr: tuple[float, ...]  # at QPS


def role(frame: str) -> str:
    return "tuning" if frame in GEOMETRY_TUNING_FRAMES else "validation"


def published(readme: Path) -> dict[str, GpccFrame]:
    """The per-QP G-PCC table of the data README: rows ``| frame | points | geometry bpp |
    bpp / dB | ...`` under the heading that names QP 22 .. QP 40. Empty when absent."""
    if not readme.is_file():
        return {}
    out = {}
    header = re.compile(r"^\|\s*frame\s*\|\s*points\s*\|\s*geometry bpp\s*\|\s*QP 22\s*\|")
    rows = False
    for line in readme.read_text().splitlines():
        if header.match(line):
            rows = True
            continue
        if not rows:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            if out:
                break
            continue
        if len(cells) != 3 + len(QPS) or set(cells[0]) <= {"-"}:
            continue
        pairs = [c.split("/") for c in cells[3:]]
        out[cells[0]] = GpccFrame(int(cells[1].replace(",", "")), float(cells[2]),
                                  tuple(float(p[0]) for p in pairs), tuple(float(p[1]) for p in pairs))
    return out


def bd_rate(rate: list[float], psnr: list[float], ref_rate: list[float], ref_psnr: list[float]
            ) -> tuple[float | None, float | None, float | None]:
    """(BD-rate % of (rate, psnr) against the reference, low and high end of the common PSNR
    range). None when the curves share no range or either has fewer than two points with a
    finite PSNR (a frame of one colour decodes losslessly at every step: no curve, no
    range)."""
    from scipy.interpolate import PchipInterpolator

    def curve(r, p):
        pairs = [(a, b) for a, b in zip(r, p, strict=True) if b is not None and math.isfinite(b)]
        if not pairs:
            return None, None
        r, p = (np.asarray(v, float) for v in zip(*pairs, strict=True))
        order = np.argsort(p)
        p, r = p[order], np.log10(r[order])
        keep = np.concatenate([[True], np.diff(p) > 0])  # a flat stretch is not a function
        return p[keep], r[keep]

    p1, r1 = curve(rate, psnr)
    p2, r2 = curve(ref_rate, ref_psnr)
    if p1 is None or p2 is None:
        return None, None, None
    lo, hi = max(p1[0], p2[0]), min(p1[-1], p2[-1])
    if len(p1) < 2 or len(p2) < 2 or hi <= lo:
        return None, lo, hi
    f1, f2 = PchipInterpolator(p1, r1), PchipInterpolator(p2, r2)
    diff = (f1.integrate(lo, hi) - f2.integrate(lo, hi)) / (hi - lo)
    return float((10**diff - 1) * 100), float(lo), float(hi)
