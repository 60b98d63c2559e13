"""The quality ladder that rate adaptation climbs: the octree codec's real output sizes and
qualities at each level of detail and colour step, measured on real frames.

A rung is (level of detail, colour step). Level of detail ``lod`` codes the frame on a grid
``2**lod`` times coarser than its own (the architecture's rate-control knob); the colour
step is the RAHT quantization step. For each rung and each frame the ladder keeps the size
of a keyframe and of a frame that continues the previous one's statistics, the median
encode and decode times, and the D1 and Y-PSNR of the decoded frame against the original
(``codec.metrics``, symmetric, as pc_error). Rungs that are bigger but not better than a
smaller one are dropped, so a higher rung always costs more and gives more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from codec import OctreeCodec, OctreeEncoder
from codec.metrics import estimate_normals, quality

DEFAULT_LODS = (0, 1, 2, 3)
DEFAULT_STEPS = (4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Rung:
    """One (level of detail, colour step) and what the codec gave there, per frame."""

    lod: int  # grid levels below the frame's own
    color_step: int
    key_bytes: tuple[int, ...]  # per frame
    delta_bytes: tuple[int, ...]  # per frame, continuing the previous frame's statistics
    encode_ms: float  # median over the frames
    decode_ms: float
    d1_psnr: float  # mean over the frames (dB)
    y_psnr: float

    @property
    def name(self) -> str:
        return f"lod{self.lod}/step{self.color_step}"

    def mean_bytes(self) -> float:
        return sum(self.delta_bytes) / len(self.delta_bytes)

    def mbps(self, fps: float) -> float:
        return self.mean_bytes() * 8 * fps / 1e6


@dataclass(frozen=True)
class Ladder:
    """Rungs from smallest to best, each bigger and better than the one below."""

    frames: tuple[str, ...]  # the frames it was measured on
    rungs: tuple[Rung, ...]  # smallest first

    def __post_init__(self) -> None:
        if not self.rungs:
            raise ValueError("a ladder needs at least one rung")
        object.__setattr__(self, "_bits_per_frame", [r.mean_bytes() * 8 for r in self.rungs])

    def __len__(self) -> int:
        return len(self.rungs)

    def frame_bytes(self, rung: int, frame: int, key: bool) -> int:
        """Size of frame number ``frame`` of a stream at ``rung`` (cycling the frames)."""
        r = self.rungs[rung]
        sizes = r.key_bytes if key else r.delta_bytes
        return sizes[frame % len(sizes)]

    def highest_within(self, mbps: float, fps: float) -> int:
        """The best rung whose mean rate fits ``mbps`` (the lowest if none does)."""
        best = 0
        for i, bits in enumerate(self._bits_per_frame):
            if bits * fps <= mbps * 1e6:
                best = i
        return best

    def to_json(self) -> str:
        return json.dumps({"frames": list(self.frames), "rungs": [asdict(r) for r in self.rungs]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Ladder:
        data = json.loads(text)
        rungs = tuple(Rung(**{**r, "key_bytes": tuple(r["key_bytes"]), "delta_bytes": tuple(r["delta_bytes"])})
                      for r in data["rungs"])
        return cls(tuple(data["frames"]), rungs)

    @classmethod
    def load(cls, path: str | Path) -> Ladder:
        return cls.from_json(Path(path).read_text())

    @classmethod
    def build(cls, frames: Sequence[tuple[str, np.ndarray, np.ndarray, int]],
              lods: Sequence[int] = DEFAULT_LODS, steps: Sequence[int] = DEFAULT_STEPS,
              progress: Callable[[str], None] | None = None) -> Ladder:
        """Measure every (lod, step) on ``frames``: (name, positions in grid units, colours,
        grid bits) each, as the MVUB PLY files are."""
        if not frames:
            raise ValueError("building a ladder needs at least one frame")
        measured = []
        normals = [estimate_normals(np.asarray(p, np.float64)) for _, p, _, _ in frames]
        for lod in lods:
            for step in steps:
                keys, deltas, enc, dec, d1, y = [], [], [], [], [], []
                for (name, positions, colors, bits), nrm in zip(frames, normals, strict=True):
                    if progress:
                        progress(f"lod{lod}/step{step} {name}")
                    depth = bits - lod
                    if depth < 2:
                        raise ValueError(f"lod {lod} leaves {name} ({bits} bits) under 2 levels")
                    codec = OctreeCodec(depth=depth, origin=(-0.5, -0.5, -0.5), size=float(2**bits),
                                        color_step=step, slices=1)
                    encoder = OctreeEncoder(codec)
                    t0 = time.perf_counter()
                    key = encoder.encode((positions, colors)).payload
                    enc.append((time.perf_counter() - t0) * 1e3)
                    shifted = positions + np.float32(2**lod)  # the person moved one cell
                    deltas.append(len(encoder.encode((shifted, colors)).payload))
                    keys.append(len(key))
                    t0 = time.perf_counter()
                    pos, col = OctreeCodec.decode(key)
                    dec.append((time.perf_counter() - t0) * 1e3)
                    q = quality(positions, colors, pos, col, bits, nrm)
                    d1.append(q.d1_psnr if np.isfinite(q.d1_psnr) else 100.0)
                    y.append(q.y_psnr if np.isfinite(q.y_psnr) else 100.0)
                measured.append(Rung(lod, step, tuple(keys), tuple(deltas), float(np.median(enc)),
                                     float(np.median(dec)), float(np.mean(d1)), float(np.mean(y))))
        return cls(tuple(f[0] for f in frames), _efficient(measured))


def _efficient(rungs: list[Rung]) -> tuple[Rung, ...]:
    """Rungs by size, keeping each only if it beats every smaller one in Y-PSNR."""
    kept: list[Rung] = []
    for r in sorted(rungs, key=Rung.mean_bytes):
        if not kept or r.y_psnr > kept[-1].y_psnr:
            kept.append(r)
    return tuple(kept)
