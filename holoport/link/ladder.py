"""The quality ladder that rate adaptation climbs: the octree codec's real output sizes and
qualities at each level of detail and colour step, measured on real frames.

A rung is (level of detail, colour step). Level of detail ``lod`` codes the frame on a grid
``2**lod`` times coarser than its own (the architecture's rate-control knob); the colour
step is the RAHT quantization step. For each rung and each frame the ladder keeps the size
of a keyframe and of a frame that continues the previous one's statistics, the median
encode and decode times, and the D1 and Y-PSNR of the decoded frame against the original
(``codec.metrics``, symmetric, as pc_error). Rungs that are bigger but not better than a
smaller one are dropped, so a higher rung always costs more and gives more.

Beside the rungs, a ladder may carry layered streams (``LayeredStream``, one per colour
step): the layered octree codec's one encode split into a base part and enhancement parts,
any prefix of which decodes at a coarser level of detail, every frame standing alone. Per
frame the size of each part; per prefix the decode time and D1 / Y-PSNR. They are what a
sender that adapts the number of layers (and a hub that forwards a prefix per receiver)
sends (holoport.link.sim, holoport.link.select).
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
class LayeredStream:
    """One colour step of the layered codec: prefix ``k`` (the first ``k + 1`` parts) decodes
    ``lods[k]`` grid levels below the frame's own (the last prefix is the whole frame)."""

    color_step: int
    lods: tuple[int, ...]  # per prefix, coarsest first
    part_bytes: tuple[tuple[int, ...], ...]  # per frame, the bytes of each part (base first)
    encode_ms: float  # median over the frames, the whole encode
    decode_ms: tuple[float, ...]  # per prefix, median over the frames
    d1_psnr: tuple[float, ...]  # per prefix, mean over the frames (dB)
    y_psnr: tuple[float, ...]
    source: str = "measured"  # or how it was estimated (``estimated_layers``)

    def __post_init__(self) -> None:
        n = len(self.lods)
        if n == 0 or any(len(p) != n for p in self.part_bytes) or not self.part_bytes:
            raise ValueError("a layered stream needs the same number of parts in every frame")
        if not len(self.decode_ms) == len(self.d1_psnr) == len(self.y_psnr) == n:
            raise ValueError("decode times and qualities are per prefix")

    @property
    def layers(self) -> int:
        return len(self.lods)

    @property
    def name(self) -> str:
        return f"layered/step{self.color_step}"

    def sizes(self, frame: int) -> tuple[int, ...]:
        """The parts' bytes of frame number ``frame`` (cycling the measured frames)."""
        return self.part_bytes[frame % len(self.part_bytes)]

    def prefix_ladder(self, frames: tuple[str, ...] = ()) -> Ladder:
        """The prefixes as a single-rate ladder (rung ``k``: layers ``0..k``, key and
        continuing frames the same size since every frame stands alone): what a sender
        that adapts its number of layers climbs (``AdaptivePolicy``, ``OraclePolicy``)."""
        cum = [tuple(int(sum(p[: k + 1])) for p in self.part_bytes) for k in range(self.layers)]
        rungs = tuple(Rung(self.lods[k], self.color_step, cum[k], cum[k], self.encode_ms, self.decode_ms[k],
                           self.d1_psnr[k], self.y_psnr[k]) for k in range(self.layers))
        return Ladder(frames or tuple(f"frame{i}" for i in range(len(self.part_bytes))), rungs)

    def to_dict(self) -> dict:
        return {**asdict(self), "part_bytes": [list(p) for p in self.part_bytes]}

    @classmethod
    def from_dict(cls, d: dict) -> LayeredStream:
        return cls(int(d["color_step"]), tuple(d["lods"]), tuple(tuple(p) for p in d["part_bytes"]),
                   float(d["encode_ms"]), tuple(d["decode_ms"]), tuple(d["d1_psnr"]), tuple(d["y_psnr"]),
                   d.get("source", "measured"))


@dataclass(frozen=True)
class Ladder:
    """Rungs from smallest to best, each bigger and better than the one below; optionally
    the layered streams measured on the same frames."""

    frames: tuple[str, ...]  # the frames it was measured on
    rungs: tuple[Rung, ...]  # smallest first
    layered: tuple[LayeredStream, ...] = ()  # by colour step, smallest step (best) first

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

    def layers(self, color_step: int | None = None) -> LayeredStream:
        """The layered stream at ``color_step`` (None: the best measured one), else one
        estimated from the rungs (``estimated_layers``) when none was measured."""
        if color_step is None and self.layered:
            return self.layered[0]
        for stream in self.layered:
            if stream.color_step == color_step:
                return stream
        if self.layered:
            have = ", ".join(str(s.color_step) for s in self.layered)
            raise ValueError(f"no layered stream at colour step {color_step} (measured: {have})")
        return estimated_layers(self, color_step)

    def to_json(self) -> str:
        data = {"frames": list(self.frames), "rungs": [asdict(r) for r in self.rungs]}
        if self.layered:  # a key older readers ignore
            data["layered"] = [s.to_dict() for s in self.layered]
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Ladder:
        data = json.loads(text)
        rungs = tuple(Rung(**{**r, "key_bytes": tuple(r["key_bytes"]), "delta_bytes": tuple(r["delta_bytes"])})
                      for r in data["rungs"])
        layered = tuple(LayeredStream.from_dict(d) for d in data.get("layered", ()))
        return cls(tuple(data["frames"]), rungs, layered)

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


def estimated_layers(ladder: Ladder, color_step: int | None = None) -> LayeredStream:
    """A layered stream estimated from single-rate rungs: prefix ``k`` is the rung at the
    ``k``-th finest level of detail (the coarsest first) and colour step ``color_step``
    (None: the smallest step that has every level), each part the difference between
    consecutive prefixes' keyframe sizes. For tests and for ladders without a measured
    layered stream; a layered encode's real parts differ (``measure_layers``)."""
    by_step: dict[int, dict[int, Rung]] = {}
    for r in ladder.rungs:
        by_step.setdefault(r.color_step, {})[r.lod] = r
    lods = sorted({r.lod for r in ladder.rungs}, reverse=True)
    full = sorted(s for s, rs in by_step.items() if set(rs) == set(lods))
    if color_step is None:
        if not full:
            raise ValueError("no colour step has a rung at every level of detail: cannot estimate layers")
        color_step = full[0]
    if color_step not in full:
        raise ValueError(f"colour step {color_step} lacks a rung at some level of detail ({lods})")
    rs = [by_step[color_step][lod] for lod in lods]
    frames = len(rs[0].key_bytes)
    parts = tuple(tuple(max(1, rs[k].key_bytes[f] - (rs[k - 1].key_bytes[f] if k else 0)) for k in range(len(rs)))
                  for f in range(frames))
    return LayeredStream(color_step, tuple(lods), parts, max(r.encode_ms for r in rs),
                         tuple(r.decode_ms for r in rs), tuple(r.d1_psnr for r in rs), tuple(r.y_psnr for r in rs),
                         source=f"estimated from the rungs at colour step {color_step}")


def measure_layers(frames: Sequence[tuple[str, np.ndarray, np.ndarray, int]], steps: Sequence[int] = (4, 8, 16),
                   progress: Callable[[str], None] | None = None) -> tuple[LayeredStream, ...]:
    """Measure the layered octree codec (``codec.layered``) on ``frames`` (as ``Ladder.build``
    takes them) at each colour step: per frame the size of each part, per prefix the median
    decode time and the mean D1 / Y-PSNR against the original (``codec.metrics.quality``)."""
    from codec.layered import LayeredOctreeCodec

    normals = [estimate_normals(np.asarray(p, np.float64)) for _, p, _, _ in frames]
    _, p0, c0, b0 = frames[0]  # warm up (compiled kernels, thread pools): not a frame's time
    LayeredOctreeCodec.decode_layers(LayeredOctreeCodec(depth=b0, origin=(-0.5, -0.5, -0.5), size=float(2**b0),
                                                        color_step=steps[0]).encode_layers(p0, c0).parts)
    streams = []
    for step in steps:
        enc, per_frame = [], []  # per frame: [(lod, cumulative bytes, decode ms, d1, y)] per prefix
        for (name, positions, colors, bits), nrm in zip(frames, normals, strict=True):
            if progress:
                progress(f"layered step{step} {name}")
            codec = LayeredOctreeCodec(depth=bits, origin=(-0.5, -0.5, -0.5), size=float(2**bits), color_step=step)
            t0 = time.perf_counter()
            frame = codec.encode_layers(positions, colors)
            enc.append((time.perf_counter() - t0) * 1e3)
            rows, total = [], 0
            for k in range(1, len(frame.parts) + 1):
                total += len(frame.parts[k - 1])
                t0 = time.perf_counter()
                cloud = LayeredOctreeCodec.decode_layers(frame.parts[:k])
                ms = (time.perf_counter() - t0) * 1e3
                q = quality(positions, colors, cloud.positions, cloud.colors, bits, nrm)
                rows.append((bits - frame.levels[k - 1], total, ms, q.d1_psnr if np.isfinite(q.d1_psnr) else 100.0,
                             q.y_psnr if np.isfinite(q.y_psnr) else 100.0))
            per_frame.append(rows)
        # frames of other grid bits split into other levels: the stream's layers are the
        # levels of detail every frame has, each prefix all the parts down to that level
        lods = sorted(set.intersection(*(set(r[0] for r in rows) for rows in per_frame)), reverse=True)
        ends = [[max(k for k, r in enumerate(rows) if r[0] >= lod) for lod in lods] for rows in per_frame]
        parts = tuple(tuple(rows[e][1] - (rows[ends_f[j - 1]][1] if j else 0) for j, e in enumerate(ends_f))
                      for rows, ends_f in zip(per_frame, ends, strict=True))

        def at(field: int, reduce, ends=ends, per_frame=per_frame) -> tuple[float, ...]:
            return tuple(float(reduce([rows[e[j]][field] for rows, e in zip(per_frame, ends, strict=True)]))
                         for j in range(len(ends[0])))
        streams.append(LayeredStream(step, tuple(lods), parts, float(np.median(enc)), at(2, np.median),
                                     at(3, np.mean), at(4, np.mean)))
    return tuple(streams)
