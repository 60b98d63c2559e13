"""The layered (embedded) octree stream: one encode, a base layer and enhancement layers.

Issue 17: a receiver on a thin link takes the first parts of a frame, one on a thick link
all of them, and every prefix (base, base + 1, ...) decodes to the octree at some level
with its colour. Frames are self-contained (no inter-frame state), so a receiver's layer
count may change on any frame.

A frame is a row of atoms (``_layered_kernels``: the root's colour, then per level its
occupancy and its colour), grouped into parts whose sizes roughly double (the base a few
hundred bytes to a few kB). Each part is a complete ``codec.container`` payload::

    params   kind (0 part, 1 bundle), frame id (u32, CRC-32 of the frame's header and
             atoms), index, count, level its prefix reaches, first atom, atom count, then
             each atom's length (LEB128); the base adds depth, origin, size, colour step
             and every level's node count (LEB128), which bound what the decoder allocates
    section  the atoms, back to back

``encode`` puts every part of a frame in one container (kind 1, one section per part) so
that recordings, ``codec.decode`` and the ``Codec`` interface keep working.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codec import _layered_kernels as K
from codec import _raht_kernels, _raht_prediction, container, limits
from codec._entropy import new_model
from codec._occupancy_kernels import new_geometry_model
from codec._voxel_kernels import cell_centres
from codec.base import Codec
from codec.errors import CodecError
from codec.octree import CHROMA_FACTOR, MAX_DEPTH, MAX_POINTS, POINTS_PER_BYTE, OctreeCodec, _map
from codec.registry import register_codec
from codec.types import Cloud, validate_cloud

MAX_LAYERS = 16
#: A layer below this many bytes is not worth its ~30 bytes of framing: small frames get
#: fewer layers (bytes per layer still doubling).
MIN_BASE_BYTES = 384
#: Framing bytes a part costs besides its atoms (container, header): counted when sizing.
PART_OVERHEAD = 32
#: Level L's step is the colour step times (n_L / n_depth) ** STEP_EXPONENT: 0.5 spreads
#: the error as RAHT does (a value's error reaches n_depth / n_L voxels).
STEP_EXPONENT = 0.5

_PART = struct.Struct("<BIBBBBB")  # kind, frame id, index, count, level, first atom, atoms
_BASE = struct.Struct("<B4fB")  # depth, origin xyz, size, colour step
_BUNDLE = struct.Struct("<BB")  # kind, parts
_KIND_PART, _KIND_BUNDLE = 0, 1


@dataclass
class LayeredFrame:
    """One frame's parts (base first), the level each prefix reaches, voxels at full depth."""

    parts: list[bytes]
    levels: list[int]
    points: int


@dataclass
class LayerInfo:
    """What a part says about itself (``LayeredOctreeCodec.layer_of``)."""

    frame_id: int
    index: int
    count: int
    level: int


@register_codec
@dataclass(frozen=True)
class LayeredOctreeCodec(Codec):
    codec_id = 5
    name = "octree-layered"
    kind = "cloud"

    depth: int = 10
    origin: tuple[float, float, float] = (-1.25, 0.0, -1.25)
    size: float = 2.5
    color_step: int = 8
    max_layers: int = 6

    def __post_init__(self) -> None:
        if not 2 <= self.color_step <= 255:
            raise ValueError(f"color_step must be in 2..255 (lossless colour is not layered), "
                             f"got {self.color_step}")
        if not 1 <= self.max_layers <= MAX_LAYERS:
            raise ValueError(f"max_layers must be in 1..{MAX_LAYERS}, got {self.max_layers}")
        self._octree()  # depth, origin and size checked as the octree codec checks them
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))

    @property
    def cell(self) -> float:
        return self.size / (1 << self.depth)

    @property
    def max_error(self) -> float:
        """Largest per-axis position error of a point inside the volume at full detail."""
        return self.cell / 2

    def _octree(self) -> OctreeCodec:
        return OctreeCodec(depth=self.depth, origin=self.origin, size=self.size,
                           color_step=self.color_step, slices=1)

    @classmethod
    def for_meeting(cls, **options) -> LayeredOctreeCodec:
        """As ``OctreeCodec.for_meeting``: depth 9 (4.9 mm cells), colour step 8."""
        return cls(**{"depth": 9, "color_step": 8, **options})

    # -- encoding ------------------------------------------------------------------------
    def encode_layers(self, positions: np.ndarray, colors: np.ndarray) -> LayeredFrame:
        """Code a frame once; its parts are cut where the bytes per layer about double."""
        positions, colors = validate_cloud(positions, colors)
        if positions.dtype not in (np.float32, np.float64):
            positions = positions.astype(np.float64)
        codes, means = self._octree()._voxelize(np.ascontiguousarray(positions),
                                                np.ascontiguousarray(colors))
        if len(codes) > MAX_POINTS:
            raise ValueError(f"{len(codes)} occupied cells exceed the limit of {MAX_POINTS}")
        flat, offs = K.flat_levels(codes, self.depth)
        counts = np.diff(offs)
        ysteps, csteps = _steps(self.color_step, counts)

        def work(job: str):  # geometry on one core, colour on the other
            if job == "geometry":
                return K.encode_geometry(flat, offs, self.depth, *new_geometry_model())
            q, zero = _quantized_colour(means, codes, self.depth, ysteps, csteps)
            return K.encode_colour(q, zero, offs, self.depth,
                                   *new_model(_raht_kernels.N_CONTEXTS))

        (gbuf, gends), (cbuf, cends) = _map(work, ["geometry", "colour"])
        atoms = _interleave(_split(gbuf, gends), _split(cbuf, cends))
        header = _BASE.pack(self.depth, *self.origin, self.size, self.color_step) + _varints(counts)
        frame_id = zlib.crc32(header)
        for atom in atoms:
            frame_id = zlib.crc32(atom, frame_id)
        ends = _plan_layers([len(a) for a in atoms], self.max_layers)
        parts, start = [], 0
        for index, end in enumerate(ends):
            params = _PART.pack(_KIND_PART, frame_id, index, len(ends), end // 2, start, end - start)
            params += _varints([len(a) for a in atoms[start:end]]) + (header if index == 0 else b"")
            parts.append(container.pack(self.codec_id, params, [b"".join(atoms[start:end])]))
            start = end
        return LayeredFrame(parts, [end // 2 for end in ends], len(codes))

    def encode(self, positions: np.ndarray, colors: np.ndarray) -> bytes:
        """Every layer of a frame in one container (a recording's frame, ``codec.decode``)."""
        parts = self.encode_layers(positions, colors).parts
        return container.pack(self.codec_id, _BUNDLE.pack(_KIND_BUNDLE, len(parts)), parts)

    # -- decoding ------------------------------------------------------------------------
    @classmethod
    def decode(cls, data: bytes, *, max_points: int | None = None) -> Cloud:
        """A bundle (``encode``) at full detail, or a single part (a base: its level)."""
        box = _unpack(data)
        if box.params[0] == _KIND_BUNDLE:
            if len(box.params) != _BUNDLE.size or box.params[1] != len(box.sections):
                raise CodecError("layered bundle header does not match its sections")
            return cls.decode_layers(box.sections, max_points=max_points)
        return cls.decode_layers([data], max_points=max_points)

    @classmethod
    def decode_layers(cls, parts: Sequence[bytes], *, max_points: int | None = None) -> Cloud:
        """The cloud that the base and the consecutive enhancement parts of one frame give:
        the octree at the level the last part reaches, one colour per cell. Everything is
        validated before anything is allocated in proportion to a count."""
        limits.check_max_points(max_points)
        if not parts:
            raise CodecError("no parts: the base layer is missing")
        if len(parts) > MAX_LAYERS:
            raise CodecError(f"{len(parts)} parts exceed the {MAX_LAYERS}-layer limit")
        parsed = [_parse(p) for p in parts]
        codec, counts = _check_parts(cls, parsed)
        n_atoms = parsed[-1][0].first + parsed[-1][0].atoms
        level = n_atoms // 2
        payload = sum(len(p[2]) for p in parsed)
        n = int(counts[-1])
        if max_points is not None and n > max_points:
            raise CodecError(f"layered octree stream claims {n} points, more than the "
                             f"{max_points} allowed here (max_points)")
        limits.check_count(int(counts[level]), payload, codec_max=MAX_POINTS,
                           per_byte=POINTS_PER_BYTE, max_points=None, name="layered octree")
        if n_atoms == 2 * codec.depth + 1:
            limits.check_count(n, payload, codec_max=MAX_POINTS, per_byte=POINTS_PER_BYTE,
                               max_points=max_points, name="layered octree")
        if n == 0:
            return Cloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
        atoms = [a for _, lengths, section in parsed for a in _cut(section, lengths)]
        return codec._decode_atoms(atoms, counts, level)

    def _decode_atoms(self, atoms: list, counts: np.ndarray, level: int) -> Cloud:
        """Geometry atoms G0.. and colour atoms C0.. decode side by side, then synthesis."""
        gbuf, gends = _join(atoms[1::2])
        cbuf, cends = _join(atoms[0::2])
        colour_stop = len(atoms[0::2]) - 1
        ysteps, csteps = _steps(self.color_step, counts)

        def work(job: str):
            if job == "geometry":
                return K.decode_geometry(gbuf, gends, level, counts, *new_geometry_model())
            return K.decode_colour(cbuf, cends, colour_stop, counts, self.depth, ysteps, csteps,
                                   *new_model(_raht_kernels.N_CONTEXTS))

        (flat, offs, gstatus), (coeffs, cstatus) = _map(work, ["geometry", "colour"])
        if gstatus:
            raise CodecError("layered octree geometry is corrupt")
        if cstatus:
            raise CodecError("layered octree colour is corrupt")
        rgb = _synthesize(coeffs, flat[offs[level]:offs[level + 1]], level)
        positions = cell_centres(flat[offs[level]:offs[level + 1]], np.asarray(self.origin),
                                 self.size / (1 << level))
        return Cloud(positions, rgb)

    @staticmethod
    def layer_of(part: bytes) -> LayerInfo:
        """Which frame a part belongs to, its index, the frame's part count and the level
        its prefix reaches; the part is checked (container, CRC, header), not decoded."""
        info = _parse(part)[0]
        return LayerInfo(info.frame_id, info.index, info.count, info.level)


# -- helpers ---------------------------------------------------------------------------------
@dataclass
class _Head:
    frame_id: int
    index: int
    count: int
    level: int
    first: int
    atoms: int
    base: tuple | None  # (depth, origin, size, step, counts) in the base part


def _steps(step: int, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each level's luma and chroma quantization steps (the decoder computes the same)."""
    n = max(int(counts[-1]), 1)
    ys = float(step) * (np.maximum(counts, 1).astype(np.float64) / n) ** STEP_EXPONENT
    return ys, CHROMA_FACTOR * ys


def _quantized_colour(colors: np.ndarray, leaves: np.ndarray, depth: int, ysteps: np.ndarray,
                      csteps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every level's quantized residuals (after prediction from the level above; see
    ``_raht_prediction``) in the level-local RAHT, where every node weighs 1: [0] the root's
    Y Cb Cr, then level L's high passes at n_(L-1) .. n_L - 1; and their "all zero" flags."""
    counts, off, weight, first, occ = _raht_prediction.plan(leaves, depth)
    unit = np.ones_like(weight)
    actual = _raht_prediction.level_means(_raht_kernels.to_ycbcr(colors), counts, off, unit, first, occ, depth)
    n = len(leaves)
    coeffs, q, zero = np.zeros((n, 3)), np.zeros((n, 3), np.int64), np.zeros(n, np.uint8)
    _raht_prediction.descend(coeffs, actual, counts, off, unit, first, occ, depth, True, ysteps, csteps, q, zero)
    return q, zero


def _synthesize(coeffs: np.ndarray, nodes: np.ndarray, level: int) -> np.ndarray:
    """RGB of ``level``'s ``nodes``, from the root's colour and the levels' residuals; a level
    past the colour that arrived is its prediction from the level above."""
    counts, off, weight, first, occ = _raht_prediction.plan(nodes, level)
    unit = np.ones_like(weight)
    none = np.ones(level + 1)
    vals = _raht_prediction.descend(coeffs, np.zeros((0, 3)), counts, off, unit, first, occ, level, False,
                                    none, none, np.zeros((0, 3), np.int64), np.zeros(0, np.uint8))
    return _raht_kernels.to_rgb(vals)


def _split(buf: np.ndarray, ends: np.ndarray) -> list[bytes]:
    starts = np.r_[0, ends[:-1]]
    return [buf[a:b].tobytes() for a, b in zip(starts, ends, strict=True)]


def _interleave(geometry: list[bytes], colour: list[bytes]) -> list[bytes]:
    """C0, G0, C1, G1, ..., G(d-1), Cd."""
    out = [colour[0]]
    for g, c in zip(geometry, colour[1:], strict=True):
        out += [g, c]
    return out


def _join(atoms: list) -> tuple[np.ndarray, np.ndarray]:
    ends = np.cumsum([len(a) for a in atoms], dtype=np.int64) if atoms else np.zeros(0, np.int64)
    return np.frombuffer(b"".join(bytes(a) for a in atoms), np.uint8), ends


def _cut(section, lengths: list[int]) -> list:
    out, at = [], 0
    for n in lengths:
        out.append(section[at:at + n])
        at += n
    return out


def _plan_layers(sizes: list[int], max_layers: int) -> list[int]:
    """Where each part ends (atom counts of the prefixes). As many parts (up to
    ``max_layers``) as keep the base near ``MIN_BASE_BYTES`` when every part doubles the
    one before; then the cuts whose consecutive parts come closest to doubling (least
    squares on log2 of each ratio minus one), found by dynamic programming over the atoms."""
    n, total = len(sizes), sum(sizes) + PART_OVERHEAD
    k = min(max_layers, n)
    while k > 1 and total / (2**k - 1) < MIN_BASE_BYTES:
        k -= 1
    if k == 1:
        return [n]
    cum = np.r_[0, np.cumsum(sizes)].astype(np.float64)
    part = np.log2(np.maximum(cum[None, :] - cum[:, None], 0) + PART_OVERHEAD)  # [i, j]: atoms i..j-1
    inf = np.inf
    valid = np.triu(np.ones((n + 1, n + 1), bool), 1)
    cost = np.where(valid, 0.0, inf)
    cost[1:, :] = inf  # one part so far: the base, from atom 0
    choice = []
    for _ in range(k - 1):  # cost[i, j]: best prefix of parts whose last is atoms i..j-1
        # step[h, i, j] = cost[h, i] + (log2 S[i, j] - log2 S[h, i] - 1)^2
        step = cost[:, :, None] + (part[None, :, :] - part[:, :, None] - 1.0) ** 2
        step = np.where(valid[None, :, :], step, inf)
        choice.append(np.argmin(step, axis=0))
        cost = np.min(step, axis=0)
    i = int(np.argmin(cost[:, n]))
    ends, j = [n], n
    for back in reversed(choice):
        h = int(back[i, j])
        ends.append(i)
        i, j = h, i
    return ends[::-1]


def _varints(values) -> bytes:
    out = bytearray()
    for v in values:
        v = int(v)
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def _read_varints(raw: bytes, at: int, count: int) -> tuple[list[int], int]:
    """``count`` LEB128 values from ``raw[at:]`` (each at most 5 bytes: below 2**35)."""
    out = []
    for _ in range(count):
        v = shift = 0
        while True:
            if at >= len(raw) or shift > 28:
                raise CodecError("layered part header is truncated or malformed")
            b = raw[at]
            at += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append(v)
    return out, at


def _unpack(data) -> container.Container:
    box = container.unpack(data)
    if box.codec_id != LayeredOctreeCodec.codec_id:
        raise CodecError(f"codec id {box.codec_id} is not the layered octree "
                         f"({LayeredOctreeCodec.codec_id})")
    if len(box.params) < 1:
        raise CodecError("layered stream without parameters")
    return box


def _parse(part) -> tuple[_Head, list[int], memoryview]:
    """A part's header, atom lengths and atoms section, checked for consistency."""
    box = _unpack(part)
    raw = bytes(box.params)
    if raw[0] != _KIND_PART:
        raise CodecError("not a single layer (a bundle of layers, or an unknown kind)")
    if len(raw) < _PART.size or len(box.sections) != 1:
        raise CodecError("layered part has the wrong header or sections")
    _, frame_id, index, count, level, first, n_atoms = _PART.unpack_from(raw)
    if not (index < count <= MAX_LAYERS and n_atoms >= 1 and first + n_atoms <= 2 * MAX_DEPTH + 1
            and level == (first + n_atoms) // 2):
        raise CodecError("layered part header out of range")
    lengths, at = _read_varints(raw, _PART.size, n_atoms)
    if sum(lengths) != len(box.sections[0]):
        raise CodecError("layered part's atoms do not fill its section")
    base = None
    if index == 0:
        if first != 0 or len(raw) < at + _BASE.size:
            raise CodecError("layered base part has no stream header")
        depth, ox, oy, oz, size, step = _BASE.unpack_from(raw, at)
        if not 1 <= depth <= MAX_DEPTH:
            raise CodecError(f"layered depth {depth} out of range")
        counts, at = _read_varints(raw, at + _BASE.size, depth + 1)
        base = (depth, (ox, oy, oz), size, step, counts)
    if at != len(raw):
        raise CodecError("layered part header has trailing bytes")
    return _Head(frame_id, index, count, level, first, n_atoms, base), lengths, box.sections[0]


def _check_parts(cls, parsed: list) -> tuple[LayeredOctreeCodec, np.ndarray]:
    """The stream's codec and node counts, after checking that the parts are the base and
    consecutive enhancement parts of one frame."""
    head = parsed[0][0]
    if head.index != 0 or head.base is None:
        raise CodecError("the first part is not a base layer")
    depth, origin, size, step, counts = head.base
    try:
        codec = cls(depth=depth, origin=origin, size=size, color_step=step)
    except ValueError as exc:
        raise CodecError(f"invalid layered octree parameters: {exc}") from exc
    total = 2 * depth + 1
    at = 0
    for i, (h, _, _) in enumerate(parsed):
        if h.frame_id != head.frame_id:
            raise CodecError(f"part {i} belongs to another frame")
        if h.index != i:
            raise CodecError(f"part {i} has index {h.index}: parts must be consecutive from the base")
        if h.count != head.count or h.first != at or at + h.atoms > total:
            raise CodecError(f"part {i} does not continue the parts before it")
        at += h.atoms
        if (h.index == h.count - 1) != (at == total):
            raise CodecError(f"part {i}'s atoms do not match the frame's part count")
    counts = np.array(counts, np.int64)
    if counts[0] not in (0, 1) or np.any(counts[1:] < counts[:-1]) or np.any(counts[1:] > 8 * counts[:-1]):
        raise CodecError("layered octree level counts are impossible")
    if counts[-1] > MAX_POINTS:
        raise CodecError(f"layered octree stream claims {counts[-1]} points, more than {MAX_POINTS}")
    return codec, counts

