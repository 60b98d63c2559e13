"""The octree codec: lossless octree geometry and RAHT or DPCM colour, arithmetic coded, in slices.

Positions are voxelized to a ``2**depth`` grid inside a cube of ``size`` metres whose
corner is ``origin`` (duplicates merged, colours averaged); each occupied cell decodes to
its centre (``_voxel_kernels``). Geometry is a breadth-first octree whose occupancy bits
are coded with neighbour contexts (``_neighbour_kernels``, ``_occupancy_kernels``). Colour
at ``color_step=1`` is lossless (YCoCg-R and DPCM in Morton order, ``_color_kernels``);
above 1 it is the RAHT transform of BT.709 Y Cb Cr quantized with that step (Cb and Cr
with ``CHROMA_FACTOR`` times it, ``_raht_kernels``).

The tree is cut at a small level into ``slices`` independent subtrees, each with its own
geometry and colour streams, so that both cores encode and decode (the kernels release the
GIL) and a decoder can work on slices separately. Stream sections::

    0            top of the tree: occupancy of levels 0 .. slice_level - 1
    1            slice table: per slice, u32 root count, u32 voxel count and the CRC-32 of
                 its two sections; then the CRC-32 of parameters, top and table
    2 .. 2+k-1   geometry of each slice (levels slice_level .. depth - 1)
    2+k .. 2+2k-1  colour of each slice: with RAHT, a slice of 2 x COLOR_PART_MIN voxels
                 or more holds two parts (u32 length of the first, then both), coded apart
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from codec import _color_kernels, _raht_kernels, _raht_prediction, _rans, container, limits
from codec._entropy import new_buffer, new_model
from codec._occupancy_kernels import GEOMETRY_ARRAYS as NG
from codec._occupancy_kernels import decode_levels, encode_levels, new_geometry_model
from codec._voxel_kernels import (
    KEY_BITS,
    cell_centres,
    index_bits,
    merge_cells,
    packed_keys,
    prefixes,
    split_cells,
    voxelize,
)
from codec.base import Codec, Decoder, Encoded, Encoder
from codec.errors import CodecError, MissingReference
from codec.registry import register_codec
from codec.types import Cloud, validate_cloud

MAX_POINTS = 1 << 22  # 4.2M cells; bounds what a stream can make the decoder allocate
#: Voxels a stream may carry per byte of its sections (beyond ``limits.FREE_POINTS``), i.e.
#: at least 1/8 bit per voxel. A solid 128**3 block of one colour codes its 2.1M voxels
#: in 1.2 kB (1,750 a byte); no real frame comes close. Most compact real
#: frame: 6.5 voxels per byte (1.23 bits; ricardo_8bit, depth 8, colour step 64, one slice,
#: a frame continuing the statistics); Kinect frames 4.2-5.2, the synthetic camera's person
#: 4.4. The project's most compact stream of all, the synthetic camera's whole room (flat
#: noise-free floor and walls) at depth 7, step 64, packs 20-21: 64 stays 3x above that and
#: 10x above any real frame. Measured over every frame in ../shared/data/pointclouds and
#: the synthetic camera at depths bits-4..bits, colour steps 1-64, 1-5 slices, keyframes and
#: continued frames, with the sweep in docs/codec.md ("Limits on untrusted streams").
POINTS_PER_BYTE = 64
MAX_DEPTH = 16
MAX_SLICES = 31
CHROMA_FACTOR = 2.0  # Cb and Cr are quantized this much more coarsely than Y
COLOR_PART_MIN = 32_768  # a slice this many voxels twice over codes RAHT colour in two parts

# voxels, depth, slice level, origin xyz, size, colour step, slices, geometry coder, frame,
# reference frame
_PARAMS = struct.Struct("<IBB4fBBBII")
#: The coders a stream was made with: 0 was the single neighbour-context geometry model
#: (until issue 19), 1 mixes three models (``_occupancy_kernels``), 2 adds RAHT's
#: transform-domain prediction (``_raht_prediction``). Streams say which, so an old
#: recording is refused with a reason instead of decoding to garbage.
CODER = 2
KEYFRAME = 0xFFFFFFFF  # the reference of a frame that needs no earlier one
_pool: ThreadPoolExecutor | None = None


def _map(fn, items: list) -> list:
    """Run ``fn`` over ``items`` on up to one thread per core (numba kernels drop the GIL)."""
    global _pool
    if len(items) <= 1:
        return [fn(x) for x in items]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="codec")
    return list(_pool.map(fn, items))


@register_codec
@dataclass(frozen=True)
class OctreeCodec(Codec):
    codec_id = 2
    name = "octree"

    depth: int = 10
    origin: tuple[float, float, float] = (-1.25, 0.0, -1.25)
    size: float = 2.5
    color_step: int = 1
    slices: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"depth must be in 1..{MAX_DEPTH}, got {self.depth}")
        if len(self.origin) != 3 or not all(math.isfinite(v) for v in self.origin):
            raise ValueError(f"origin must be three finite numbers, got {self.origin}")
        if not (math.isfinite(self.size) and self.size > 0):
            raise ValueError(f"size must be a positive number of metres, got {self.size}")
        if not 1 <= self.color_step <= 255:
            raise ValueError(f"color_step must be in 1..255 (1 = lossless), got {self.color_step}")
        if not 1 <= self.slices <= MAX_SLICES:
            raise ValueError(f"slices must be in 1..{MAX_SLICES}, got {self.slices}")
        limits.check_volume(self.origin, self.size, self.size / (1 << self.depth))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))

    @property
    def cell(self) -> float:
        return self.size / (1 << self.depth)

    @property
    def max_error(self) -> float:
        """Largest per-axis position error of a point inside the volume (half a cell)."""
        return self.cell / 2

    @classmethod
    def for_meeting(cls, **options) -> OctreeCodec:
        """A person in the 2.5 m capture volume of ARCHITECTURE.md: depth 9 (4.9 mm cells)
        matches a 640-pixel depth camera's sampling at 2 m; depth 10 would give most points
        a cell of their own: more octree work for no visible detail. One slice: a live frame
        is small enough for one core, and the other core captures and renders. Colour step 8
        (RAHT)."""
        return cls(**{"depth": 9, "slices": 1, "color_step": 8, **options})

    def encoder(self, keyframe_interval: int = 1) -> OctreeEncoder:
        """A meeting's stream: every frame a keyframe by default, because the hub forwards
        only the newest frame of a stream that a receiver can take, and a frame continuing
        a replaced one could not be decoded. Frames that continue the statistics
        (``keyframe_interval`` > 1, a little smaller: docs/link.md) suit a path where every
        frame arrives in order."""
        return OctreeEncoder(self, keyframe_interval)

    @classmethod
    def decoder(cls) -> OctreeDecoder:
        return OctreeDecoder()

    # -- encoding ------------------------------------------------------------------------
    def encode(self, positions: np.ndarray, colors: np.ndarray) -> bytes:
        """One self-contained frame (a keyframe); ``OctreeEncoder`` codes sequences."""
        return self._encode(positions, colors, None, 0)[0]

    def _encode(self, positions, colors, state: list | None, frame: int,
                ref: int = KEYFRAME) -> tuple[bytes, list]:
        """Code a frame, continuing the slices' adaptive statistics from ``state`` (per
        slice: the geometry model, then one colour model per colour part, each a (counts,
        probabilities) pair) unless it is None; returns the stream and the statistics after it."""
        positions, colors = validate_cloud(positions, colors)
        if positions.dtype not in (np.float32, np.float64):
            positions = positions.astype(np.float64)
        # float32 goes in as it is: the kernels compute in float64 either way
        codes, means = self._voxelize(np.ascontiguousarray(positions), np.ascontiguousarray(colors))
        if len(codes) > MAX_POINTS:
            raise ValueError(f"{len(codes)} occupied cells exceed the limit of {MAX_POINTS}")
        level, bounds = _plan_slices(codes, self.depth, self.slices)
        if state is not None and len(state) != len(bounds):
            raise ValueError("the slice count changed: this frame must be a keyframe")
        if state is None:
            ref = KEYFRAME
            state = [self._fresh_state() for _ in bounds]
        else:
            state = [tuple(a.copy() for a in st) for st in state]
        roots = prefixes(codes, 3 * (self.depth - level), len(codes))
        top = encode_levels(roots, level, 0, level, new_buffer(64), *new_geometry_model())
        counts, jobs = [], []
        shift = 3 * (self.depth - level)
        for j, (lo, hi) in enumerate(bounds):  # slices hold whole subtrees: count their roots
            n_roots = (int(np.searchsorted(roots, codes[hi - 1] >> shift, "right")
                           - np.searchsorted(roots, codes[lo] >> shift)) if hi > lo else 0)
            counts.append((n_roots, hi - lo))
            jobs.append((codes[lo:hi], means[lo:hi], state[j]))
        assert sum(r for r, _ in counts) == len(roots)

        def work(task):  # geometry and colour parts of a slice are independent: one task each
            j, part = task
            leaves, rgb, model = jobs[j]
            if part is None:
                return encode_levels(leaves, self.depth, level, self.depth,
                                     new_buffer(len(leaves) // 4), *model[:NG]).tobytes()
            lo, hi = self._color_parts(len(leaves))[part]
            return self._encode_colors(leaves[lo:hi], rgb[lo:hi], *model[NG + 2 * part: NG + 2 + 2 * part]).tobytes()

        k = len(jobs)
        parts = [range(len(self._color_parts(hi - lo))) for lo, hi in bounds]
        tasks = [(j, None) for j in range(k)] + [(j, p) for j in range(k) for p in parts[j]]
        done = dict(zip(tasks, _map(work, tasks), strict=True))
        coded = [done[j, None] for j in range(k)] + [_join_parts([done[j, p] for p in parts[j]])
                                                     for j in range(k)]
        params = _PARAMS.pack(len(codes), self.depth, level, *self.origin, self.size,
                              self.color_step, len(jobs), CODER, frame, ref)
        table = b"".join(struct.pack("<3I", r, v, zlib.crc32(coded[j] + coded[k + j]))
                         for j, (r, v) in enumerate(counts))
        top = top.tobytes()
        table += struct.pack("<I", zlib.crc32(params + top + table))
        sections = [top, table, *coded]  # then geometry of every slice, colour of every slice
        return container.pack(self.codec_id, params, sections), state

    def _voxelize(self, positions: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``voxelize`` on both cores for a large cloud: each half of the points keyed and
        sorted apart, then the two sorted halves merged as two ranges of cells."""
        n, origin = len(positions), np.array(self.origin)
        ibits = index_bits(n)
        if n < 50_000 or 3 * self.depth + ibits > KEY_BITS:
            return voxelize(positions, colors, origin, self.cell, self.depth)[:2]
        a, b = _map(lambda r: packed_keys(positions, origin, self.cell, self.depth, ibits, *r),
                    [(0, n // 2), (n // 2, n)])
        if not len(a) or not len(b):
            return merge_cells(a, b, colors, ibits)
        # the cells below a pivot cell on one core, the rest on the other: a cell's points
        # all fall on the same side, so the two results just follow each other
        ia, ib = split_cells(a, b, ibits)
        (c0, m0), (c1, m1) = _map(lambda r: merge_cells(*r, colors, ibits),
                                  [(a[:ia], b[:ib]), (a[ia:], b[ib:])])
        return np.concatenate([c0, c1]), np.concatenate([m0, m1])

    def _color_parts(self, n: int) -> list[tuple[int, int]]:
        """The voxel ranges of a slice whose colours are coded apart. RAHT codes a large
        slice in two halves, each with its own statistics, so that colour encodes and
        decodes on the second core beside the geometry even in one slice (the best
        compression), for a few hundred bytes of statistics learned twice. Lossless
        colour is one part: its rANS coder is fast enough, and its tables would double."""
        if self.color_step == 1 or n < 2 * COLOR_PART_MIN:
            return [(0, n)]
        return [(0, n // 2), (n // 2, n)]

    def _fresh_state(self) -> tuple[np.ndarray, ...]:
        """Geometry statistics, then RAHT's per colour part (lossless colour has none: its
        tables are made for every frame)."""
        n_color = 1 if self.color_step == 1 else _raht_kernels.N_CONTEXTS
        return (*new_geometry_model(), *new_model(n_color), *new_model(n_color))

    def _encode_colors(self, leaves: np.ndarray, rgb: np.ndarray, counts, probs) -> np.ndarray:
        if self.color_step == 1:  # lossless: DPCM of YCoCg-R, per-frame tables and rANS
            sym, ctx, raw, n_raw, hist = _color_kernels.color_symbols(rgb)
            return _color_kernels.pack_colors(sym, ctx, raw, n_raw, _rans.normalize(hist))
        return _raht_prediction.encode(rgb, leaves, self.depth, float(self.color_step),
                                    CHROMA_FACTOR * self.color_step, new_buffer(len(rgb) // 2),
                                    counts, probs)

    def _decode_colors(self, section, n: int, counts, probs) -> tuple[np.ndarray, int]:
        """Lossless: the colours. RAHT: the dequantized coefficients (``synthesize`` them
        with the geometry). Neither needs the geometry, so both run beside it."""
        buf = np.frombuffer(section, np.uint8)
        if self.color_step == 1:
            return _color_kernels.decode_colors(buf, n)
        return _raht_kernels.decode_coefficients(buf, n, float(self.color_step),
                                                 CHROMA_FACTOR * self.color_step, counts, probs)

    # -- decoding ------------------------------------------------------------------------
    @classmethod
    def decode(cls, data: bytes, level: int | None = None, *, max_points: int | None = None
               ) -> Cloud:
        """Decode a stream; with ``level`` < depth, the cloud voxelized at that depth (cell
        centres, colours averaged over each cell).

        A stream declaring more voxels than ``max_points`` (the meeting's limit; the count at
        full depth, whatever ``level``), than ``MAX_POINTS`` or than its bytes can honestly
        carry is refused before anything is decoded."""
        codec, stream = cls._open(data, max_points=max_points)
        stream.require_keyframe()
        codes, colors = stream.decode()
        if level is not None and level != codec.depth:
            codes, colors = _coarsen(codes, colors, codec.depth, codec._check_level(level))
            return Cloud(codec._positions(codes, level), colors)
        return Cloud(codec._positions(codes, codec.depth), colors)

    @classmethod
    def decode_geometry(cls, data: bytes, level: int | None = None, *, max_points: int | None = None
                        ) -> np.ndarray:
        """Only the positions, decoding the octree no deeper than ``level`` (``max_points``
        as in :meth:`decode`)."""
        codec, stream = cls._open(data, max_points=max_points)
        stream.require_keyframe()
        level = codec.depth if level is None else codec._check_level(level)
        return codec._positions(stream.geometry(level), level)

    @classmethod
    def decode_damaged(cls, data: bytes, *, max_points: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Decode what survived damage: slices whose own checksum fails are left out.

        For streams that may arrive corrupted (a lossy link, a damaged recording). The
        parameters, the top of the tree and the slice table must be intact (they carry a
        checksum of their own); returns positions, colours and the skipped slices.
        ``max_points`` as in :meth:`decode`.
        """
        codec, stream = cls._open(data, strict=False, max_points=max_points)
        stream.require_keyframe()
        k = len(stream.table)
        skipped = [j for j in range(k) if zlib.crc32(
            bytes(stream.sections[2 + j]) + bytes(stream.sections[2 + k + j])) != stream.crcs[j]]
        codes, colors = stream.decode(skip=skipped)
        return codec._positions(codes, codec.depth), colors, skipped

    @classmethod
    def _open(cls, data: bytes, strict: bool = True, max_points: int | None = None
              ) -> tuple[OctreeCodec, _Stream]:
        limits.check_max_points(max_points)
        box = container.unpack(data, verify_checksum=strict)
        if box.codec_id != cls.codec_id:
            raise CodecError(f"codec id {box.codec_id} is not the octree codec ({cls.codec_id})")
        if len(box.params) != _PARAMS.size:
            raise CodecError(f"octree parameter block must be {_PARAMS.size} bytes")
        (n, depth, level, ox, oy, oz, size, step, n_slices, coder, frame,
         ref) = _PARAMS.unpack(box.params)
        try:
            codec = cls(depth=depth, origin=(ox, oy, oz), size=size, color_step=step,
                        slices=max(1, n_slices))
        except ValueError as exc:
            raise CodecError(f"invalid octree parameters: {exc}") from exc
        if coder != CODER:
            raise CodecError(f"octree stream of coder {coder}: this decoder reads coder {CODER} "
                             "(a recording made before issue 19?)")
        if n_slices < 1 or level > depth or level > 8:
            raise CodecError("octree parameters out of range")
        limits.check_count(n, sum(len(s) for s in box.sections), codec_max=MAX_POINTS,
                           per_byte=POINTS_PER_BYTE, max_points=max_points, name="octree")
        if len(box.sections) != 2 + 2 * n_slices or len(box.sections[1]) != 12 * n_slices + 4:
            raise CodecError(f"octree stream with {n_slices} slices has the wrong sections")
        raw = bytes(box.sections[1])
        if zlib.crc32(bytes(box.params) + bytes(box.sections[0]) + raw[:-4]) != \
                struct.unpack("<I", raw[-4:])[0]:
            raise CodecError("the octree header (parameters, top or slice table) is corrupt")
        entries = np.frombuffer(raw[:-4], dtype="<u4").astype(np.int64).reshape(n_slices, 3)
        table, crcs = entries[:, :2], entries[:, 2]
        if int(table[:, 1].sum()) != n or (n > 0 and (table[:, 1] < 1).any()):
            raise CodecError("slice table does not add up to the voxel count")
        return codec, _Stream(codec, level, n, table, box.sections, crcs, frame, ref)

    def _check_level(self, level: int) -> int:
        if not 0 <= level <= self.depth:
            raise ValueError(f"level must be in 0..{self.depth}, got {level}")
        return level

    def _positions(self, codes: np.ndarray, level: int) -> np.ndarray:
        return cell_centres(codes, np.asarray(self.origin), self.size / (1 << level))


@dataclass
class _Stream:
    """A validated octree stream, decoded slice by slice."""

    codec: OctreeCodec
    level: int  # where the slices start
    n: int
    table: np.ndarray  # (slices, 2): root count, voxel count
    sections: tuple
    crcs: np.ndarray  # per slice, CRC-32 of its geometry and colour sections
    frame: int = 0
    ref: int = KEYFRAME

    def require_keyframe(self) -> None:
        if self.ref != KEYFRAME:
            raise MissingReference(
                f"frame {self.frame} continues frame {self.ref}: decode the sequence with an "
                f"OctreeDecoder, or ask the sender for a keyframe")

    def _roots(self) -> list[np.ndarray]:
        n_roots = int(self.table[:, 0].sum())
        if n_roots > min(self.n, 8**self.level) or (self.n > 0) != (n_roots > 0):
            raise CodecError("slice table claims an impossible number of subtrees")
        top = np.frombuffer(self.sections[0], np.uint8)
        roots, status = decode_levels(top, np.zeros(1, np.int64), 0, self.level, n_roots,
                                      *new_geometry_model())
        if status or len(roots) != n_roots:
            raise CodecError("the top of the octree is corrupt")
        return np.split(roots, np.cumsum(self.table[:-1, 0]))

    def geometry(self, stop: int) -> np.ndarray:
        """Node codes at level ``stop`` of the whole tree."""
        if self.n == 0:  # no root either: an empty frame is empty at every level
            return np.zeros(0, np.int64)
        if stop <= self.level:
            top = np.frombuffer(self.sections[0], np.uint8)
            codes, status = decode_levels(top, np.zeros(1, np.int64), 0, stop, min(self.n, 8**stop),
                                          *new_geometry_model())
            if status:
                raise CodecError("the top of the octree is corrupt")
            return codes
        k = len(self.table)

        def work(j):
            buf = np.frombuffer(self.sections[2 + j], np.uint8)
            codes, status = decode_levels(buf, roots[j], self.level, stop, int(self.table[j, 1]),
                                          *new_geometry_model())
            if status or (stop == self.codec.depth and len(codes) != self.table[j, 1]):
                raise CodecError(f"slice {j} of the octree is corrupt")
            return codes

        roots = self._roots()
        return np.concatenate(_map(work, list(range(k)))) if k else np.zeros(0, np.int64)

    def decode(self, skip: list[int] = (), state: list | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Decode every slice not in ``skip``; ``state`` holds each slice's statistics
        (fresh ones when None) and is updated in place."""
        if self.n == 0:
            return np.zeros(0, np.int64), np.zeros((0, 3), np.uint8)
        roots = self._roots()
        depth, k = self.codec.depth, len(self.table)
        if state is None:
            state = [self.codec._fresh_state() for _ in range(k)]
        lossless = self.codec.color_step == 1

        def geometry(j):
            n_j = int(self.table[j, 1])
            buf = np.frombuffer(self.sections[2 + j], np.uint8)
            codes, status = decode_levels(buf, roots[j], self.level, depth, n_j, *state[j][:NG])
            if status or len(codes) != n_j:
                raise CodecError(f"slice {j} geometry is corrupt")
            return codes

        def color(j, part):
            bounds = self.codec._color_parts(int(self.table[j, 1]))
            section = _split_parts(self.sections[2 + k + j], len(bounds), j)[part]
            lo, hi = bounds[part]
            out, status = self.codec._decode_colors(section, hi - lo, *state[j][NG + 2 * part: NG + 2 + 2 * part])
            if status:
                raise CodecError(f"slice {j} colour is corrupt")
            return out

        keep = [j for j in range(k) if j not in skip]
        if not keep:
            return np.zeros(0, np.int64), np.zeros((0, 3), np.uint8)
        # every slice's geometry and colour parts decode independently, side by side
        parts = {j: range(len(self.codec._color_parts(int(self.table[j, 1])))) for j in keep}
        tasks = [(j, None) for j in keep] + [(j, p) for j in keep for p in parts[j]]
        done = dict(zip(tasks, _map(lambda t: geometry(t[0]) if t[1] is None else color(*t), tasks),
                        strict=True))
        codes = [done[j, None] for j in keep]
        if not lossless:  # RAHT: coefficients + geometry -> colours, part by part

            def synthesize(task):
                j, p = task
                lo, hi = self.codec._color_parts(int(self.table[j, 1]))[p]
                return _raht_prediction.synthesize(done[task], done[j, None][lo:hi], depth)

            done.update(zip(tasks[len(keep):], _map(synthesize, tasks[len(keep):]), strict=True))
        colors = [np.concatenate([done[j, p] for p in parts[j]]) for j in keep]
        return np.concatenate(codes), np.concatenate(colors)


class OctreeEncoder(Encoder):
    """Codes a sequence: each frame continues the previous frame's adaptive statistics,
    so the coder starts every frame already knowing what a person looks like.

    A keyframe (fresh statistics) goes out first, every ``keyframe_interval`` frames, when
    asked (``force_keyframe``, or :meth:`request_keyframe` for the next frame: a receiver
    lost a frame) and when the slice count changes. Frames carry their number and their
    reference's, so a decoder that missed one says so instead of decoding garbage.
    """

    def __init__(self, codec: OctreeCodec | None = None, keyframe_interval: int = 30) -> None:
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be at least 1, got {keyframe_interval}")
        self.codec = codec or OctreeCodec()
        self.keyframe_interval = keyframe_interval
        self.frame = 0
        self._state: list | None = None
        self._since_key = 0
        self.keyframe = True

    def request_keyframe(self) -> None:
        self._state = None

    def encode(self, frame: Cloud | tuple, force_keyframe: bool = False) -> Encoded:
        positions, colors = frame
        if force_keyframe:
            self._state = None
        state = self._state if self._since_key < self.keyframe_interval else None
        try:
            data, new_state = self.codec._encode(positions, colors, state, self.frame,
                                                 (self.frame - 1) & 0x7FFFFFFF)
        except ValueError as exc:
            if state is None or "slice count" not in str(exc):
                raise
            data, new_state = self.codec._encode(positions, colors, None, self.frame)
            state = None
        self._since_key = 1 if state is None else self._since_key + 1
        self.keyframe = state is None  # the frame just made decodes on its own
        self._state = new_state
        self.frame = (self.frame + 1) & 0x7FFFFFFF
        return Encoded(data, self.keyframe, len(positions))


class OctreeDecoder(Decoder):
    """Decodes what an :class:`OctreeEncoder` sends, keeping the same statistics."""

    def __init__(self) -> None:
        self._state: list | None = None
        self._last: tuple[OctreeCodec, int] | None = None  # codec of, and number of, the last frame

    def decode(self, data: bytes, *, max_points: int | None = None) -> Cloud:
        """The next frame; ``max_points`` as in :meth:`OctreeCodec.decode`. A refused frame
        leaves the statistics as they were."""
        codec, stream = OctreeCodec._open(data, max_points=max_points)
        if stream.ref == KEYFRAME:
            state = [codec._fresh_state() for _ in range(len(stream.table))]
        elif self._last == (codec, stream.ref) and len(self._state) == len(stream.table):
            state = [tuple(a.copy() for a in st) for st in self._state]
        else:
            raise MissingReference(f"frame {stream.frame} needs frame {stream.ref}, which this "
                                   f"decoder has not decoded: ask the sender for a keyframe")
        codes, colors = stream.decode(state=state)
        self._state, self._last = state, (codec, stream.frame)  # only after a clean decode
        return Cloud(codec._positions(codes, codec.depth), colors)


def _join_parts(parts: list[bytes]) -> bytes:
    """One colour section: the length of every part but the last, then the parts."""
    return b"".join(struct.pack("<I", len(p)) for p in parts[:-1]) + b"".join(parts)


def _split_parts(section, count: int, j: int) -> list:
    """Inverse of ``_join_parts``, validated before anything is sliced."""
    head = 4 * (count - 1)
    if len(section) < head:
        raise CodecError(f"slice {j} colour section is truncated")
    lengths = struct.unpack(f"<{count - 1}I", bytes(section[:head]))
    if sum(lengths) > len(section) - head:
        raise CodecError(f"slice {j} colour parts exceed their section")
    out, at = [], head
    for n in lengths:
        out.append(section[at: at + n])
        at += n
    return [*out, section[at:]]


def _plan_slices(codes: np.ndarray, depth: int, slices: int) -> tuple[int, list[tuple[int, int]]]:
    """The level to cut at (the first with 4 nodes per slice, at most 8) and contiguous
    ranges of ``codes`` of about equal size, each a whole number of subtrees there."""
    if len(codes) == 0:
        return 0, [(0, 0)]  # one empty slice keeps the stream layout uniform
    deepest, need = min(depth, 8), 4 * slices
    level = next((lv for lv in range(deepest)
                  if len(prefixes(codes, 3 * (depth - lv), need)) >= need), deepest)
    if slices == 1:
        return level, [(0, len(codes))]
    parents = codes >> (3 * (depth - level))
    starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])  # first voxel of each subtree
    bounds, lo = [], 0
    for j in range(1, slices):
        target = len(codes) * j // slices
        cut = int(starts[np.searchsorted(starts, target)]) if target <= starts[-1] else len(codes)
        if lo < cut < len(codes):
            bounds.append((lo, cut))
            lo = cut
    bounds.append((lo, len(codes)))
    return level, bounds


def _coarsen(codes: np.ndarray, colors: np.ndarray, depth: int, level: int):
    if len(codes) == 0:  # an empty frame is empty at every level (reduceat needs an element)
        return codes >> (3 * (depth - level)), colors
    parents = codes >> (3 * (depth - level))
    starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
    counts = np.diff(np.r_[starts, len(codes)])
    sums = np.add.reduceat(colors.astype(np.int64), starts, axis=0)
    return parents[starts], ((sums + counts[:, None] // 2) // counts[:, None]).astype(np.uint8)
