"""Holoport recordings: RGB-D frames or encoded clouds, chunked, indexed, crash-safe.

A recording is a header and then one self-contained record per frame, each with its own
length and CRC-32, written and flushed as it comes; closing appends an index (offsets and
times) and a trailer that points at it. A reader uses the index when it is intact and
otherwise scans the records from the start: a file cut off at any byte (a crash, a full
disk) still plays up to its last complete frame. Damage anywhere (header, a length, a CRC,
a payload, the index, the trailer) costs only the records it touches: after a record that
does not check out the scan resyncs on the next ``HPFR`` marker where a record's framing,
head and CRC-32 check out, and every damaged stretch is reported (``Recording.damaged``,
and a log warning) instead of ending the file there. Checking reads a megabyte at a time,
so a damaged length never allocates more than the record it really is.

    header  b"HPREC\\x00\\x01\\n"  u32 meta length  meta (JSON)  u32 CRC-32 of meta
    record  b"HPFR"  u8 kind  u32 head length  u64 payload length  head (JSON)  payload
            u32 CRC-32 of head + payload
    index   a record of kind INDEX: payload = (u64 offset, f64 timestamp) per frame
    trailer b"HPIX"  u64 offset of the index record

Kinds: RGBD (payload: zstd of the depth image then the colour image; head: index,
timestamp, intrinsics, depth scale, camera pose) and CLOUD (payload: opaque bytes, for
example a codec stream, which this package does not interpret; head: index, timestamp,
points, format). Every length is checked against the file before anything is allocated.
The marker, kind and lengths are outside the CRC: a record only checks out when its head
is JSON with its kind's key and the CRC-32 matches.
"""

from __future__ import annotations

import bisect
import json
import logging
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import zstandard

from capture.types import Intrinsics, RGBDFrame

MAGIC = b"HPREC\x00\x01\n"
RECORD = b"HPFR"
TRAILER = b"HPIX"
RGBD, CLOUD, INDEX = 1, 2, 255
_REC = struct.Struct("<4sBIQ")  # magic, kind, head length, payload length
MAX_HEAD = 1 << 20
MAX_PAYLOAD = 1 << 30
MAX_IMAGE_SIDE = 8192  # pixels: an RGBD record's images are no larger than this
KINDS = {RGBD: "intrinsics", CLOUD: "format", INDEX: "frames"}  # the head key each kind's records carry
_TABLE = np.dtype([("offset", "<u8"), ("t", "<f8")])
_CHUNK = 1 << 20  # bytes read at a time when checking a record or searching for one
_CANDIDATE_COST = 1024  # what a marker that is no record costs the scan's budget, at least (in bytes read)
_TRAILER_SIZE = len(TRAILER) + 8

log = logging.getLogger(__name__)


class RecordingError(ValueError):
    """Not a Holoport recording, one with no complete frame, or a damaged frame."""


@dataclass(frozen=True)
class Damage:
    """A stretch of a recording that holds no intact record: bytes [start, end), the frames
    lost there as the writer numbered them (empty when that is unknown: past the last intact
    frame of a file without an intact index), and what it was."""

    start: int
    end: int
    frames: tuple[int, ...]
    what: str

    def __str__(self) -> str:
        s = "s" * (len(self.frames) > 1)
        lost = f"frame{s} {_numbers(self.frames)} lost" if self.frames else "no frame known lost"
        return f"bytes {self.start:,}-{self.end:,} damaged ({self.what}): {lost}"


def _numbers(frames: list[int] | tuple[int, ...]) -> str:
    """``1, 4-6``: frame numbers as short runs."""
    runs: list[list[int]] = []
    for f in sorted(frames):
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass(frozen=True)
class _Found:
    """A record that checked out; its payload stays on disk."""

    offset: int
    end: int
    kind: int
    head: dict
    payload_at: int


@dataclass(frozen=True)
class Entry:
    """One frame of a recording, as stored."""

    kind: int
    index: int
    timestamp: float
    head: dict
    payload: bytes

    def rgbd(self) -> RGBDFrame:
        """The RGB-D frame of an RGBD entry."""
        if self.kind != RGBD:
            raise RecordingError(f"frame {self.index} holds a {self.head.get('format', 'cloud')}, not RGB-D")
        h = self.head
        try:  # a payload that does not decode is a damaged frame: RecordingError, which players skip
            k = Intrinsics.from_dict(h["intrinsics"])
            size = k.width * k.height * 5
            if not (0 < k.width <= MAX_IMAGE_SIDE and 0 < k.height <= MAX_IMAGE_SIDE):
                raise ValueError(f"images of {k.width}x{k.height}")
            # the frame's own declared size first: zstd allocates what a frame declares,
            # whatever max_output_size says
            if zstandard.frame_content_size(self.payload) not in (size, -1):
                raise ValueError("images of another size than the head says")
            raw = zstandard.ZstdDecompressor().decompress(self.payload, max_output_size=size)
            if len(raw) != size:
                raise ValueError("images of the wrong size")
            depth = np.frombuffer(raw, np.uint16, k.width * k.height).reshape(k.height, k.width).copy()
            color = np.frombuffer(raw, np.uint8, offset=k.width * k.height * 2).reshape(k.height, k.width, 3).copy()
            return RGBDFrame(depth, color, k, float(h["depth_scale"]), np.array(h["pose"], np.float64).reshape(4, 4),
                             self.timestamp, self.index, dict(h.get("meta", {})))
        except (zstandard.ZstdError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise RecordingError(f"frame {self.index}: its images do not decode ({exc})") from exc


class RecordingWriter:
    """Appends frames to a new recording; every frame is on disk once ``write_*`` returns."""

    def __init__(self, path: str | Path, meta: dict | None = None) -> None:
        self.path = Path(path)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        body = json.dumps(meta or {}).encode()
        self._file.write(MAGIC + struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body)))
        self._file.flush()
        self._index: list[tuple[int, float]] = []
        self._zstd = zstandard.ZstdCompressor(level=3)

    def write_rgbd(self, frame: RGBDFrame) -> None:
        k = frame.intrinsics
        if frame.depth.shape != (k.height, k.width) or frame.depth.dtype != np.uint16:
            raise ValueError("depth must be a uint16 image the size the intrinsics give")
        if frame.color.shape != (k.height, k.width, 3) or frame.color.dtype != np.uint8:
            raise ValueError("colour must be uint8 RGB the size of the depth image")
        head = {"index": len(self._index), "timestamp": float(frame.timestamp),
                "intrinsics": k.to_dict(),
                "depth_scale": float(frame.depth_scale),
                "pose": np.asarray(frame.camera_pose, np.float64).reshape(16).tolist(),
                "meta": frame.meta}
        payload = self._zstd.compress(frame.depth.tobytes() + frame.color.tobytes())
        self._record(RGBD, head, payload, float(frame.timestamp))

    def write_cloud(self, timestamp: float, payload: bytes, points: int, fmt: str) -> None:
        """A frame already encoded elsewhere (``fmt`` names it, e.g. "holoport-codec")."""
        head = {"index": len(self._index), "timestamp": float(timestamp), "points": int(points), "format": fmt}
        self._record(CLOUD, head, bytes(payload), float(timestamp))

    def _record(self, kind: int, head: dict, payload: bytes, timestamp: float | None) -> int:
        h = json.dumps(head).encode()
        offset = self._file.tell()
        self._file.write(_REC.pack(RECORD, kind, len(h), len(payload)) + h)
        self._file.write(payload)
        self._file.write(struct.pack("<I", zlib.crc32(payload, zlib.crc32(h))))
        self._file.flush()
        if timestamp is not None:
            self._index.append((offset, timestamp))
        return offset

    def close(self) -> None:
        if self._file.closed:
            return
        table = np.array(self._index, dtype=[("offset", "<u8"), ("t", "<f8")]).tobytes()
        at = self._record(INDEX, {"frames": len(self._index)}, table, None)
        self._file.write(TRAILER + struct.pack("<Q", at))
        self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Recording:
    """Reads a recording: ``len``, ``entry(i)`` (seek), iteration, the header's meta, and
    ``damaged``: every stretch found damaged, when opening without an intact index or as a
    listed frame turns out damaged (each also logged as a warning, once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self.size = self.path.stat().st_size
        self.damaged: list[Damage] = []
        self.indexed = False
        self._bad: set[int] = set()  # frames (positions) found damaged after opening
        # bytes read checking markers that were no record: bounded, so that a file planted with
        # markers claiming long records cannot make a scan quadratic
        self._wasted, self._budget, self._gave_up = 0, 4 * self.size + (256 << 20), False
        try:
            self.meta, self._start = self._read_header()
            self._offsets, self._ends, self._numbers, self.timestamps = self._load_index() or self._scan()
            if self._start is None and not self._offsets:
                raise RecordingError(f"{self.path} is cut off or damaged in its header, and no frame after it "
                                     "is intact")
        except BaseException:
            self._file.close()
            raise

    def __len__(self) -> int:
        return len(self._offsets)

    def _first(self) -> int:
        """Where records start: after the header, or from the top when the header is damaged."""
        return 0 if self._start is None else self._start

    def _read_header(self) -> tuple[dict, int | None]:
        """The meta and where the records start; ({}, None) when the header is damaged but the
        file is still a recording (the records are then found by scanning)."""
        head = self._file.read(len(MAGIC) + 4)
        if len(head) == len(MAGIC) + 4 and head.startswith(MAGIC):
            (n,) = struct.unpack("<I", head[len(MAGIC):])
            if n <= MAX_HEAD and len(head) + n + 4 <= self.size:
                body = self._file.read(n + 4)
                if zlib.crc32(body[:n]) == struct.unpack("<I", body[n:])[0] and (meta := _json(body[:n])) is not None:
                    return meta, len(head) + n + 4
        elif not self._damaged_magic(head):
            raise RecordingError(f"{self.path} is not a Holoport recording")
        log.warning("%s: its header is cut off or damaged: no metadata; looking for frames", self.path)
        return {}, None

    def _damaged_magic(self, head: bytes) -> bool:
        """Whether a file with the wrong magic is a recording whose start is damaged: most of
        the magic is there, or a record checks out near the start. Anything else is refused
        after reading at most a few megabytes."""
        if sum(a == b for a, b in zip(head, MAGIC, strict=False)) >= len(MAGIC) // 2:
            return True
        return self._resync(0, stop=2 * MAX_HEAD) is not None

    def _load_index(self) -> tuple[list[int], list[int], list[int], list[float]] | None:
        """The frames the index lists (offsets, ends, numbers, times) when the trailer and the
        index check out; None otherwise, and the records are scanned."""
        first = self._first()
        if self.size < first + _TRAILER_SIZE:
            return None
        self._file.seek(self.size - _TRAILER_SIZE)
        tail = self._file.read(_TRAILER_SIZE)
        if not tail.startswith(TRAILER):  # cut off before closing, or a damaged trailer
            return None
        (at,) = struct.unpack("<Q", tail[len(TRAILER):])
        found = self._check(at) if first <= at < self.size else None
        table = self._table(found) if found is not None and found.end == self.size - _TRAILER_SIZE else None
        if table is None or np.any(table["offset"] >= at):
            log.warning("%s: its index is damaged: scanning the records", self.path)
            return None
        offsets = [int(o) for o in table["offset"]]
        ends = [*offsets[1:], at]
        if offsets and (offsets[0] < max(first, len(MAGIC) + 4) or any(b <= a for a, b in pairwise(offsets))):
            log.warning("%s: its index is inconsistent: scanning the records", self.path)
            return None
        framed = sum(self._framed(o, e) for o, e in zip(offsets, ends, strict=True))
        if framed < len(offsets):  # damaged frames, or an index that lies: the scan decides
            scanned = self._scan()
            if len(scanned[0]) > framed:
                log.warning("%s: its index does not match its records: using the %d records found by scanning",
                            self.path, len(scanned[0]))
                return scanned
        self.indexed = True
        if self._start is None:
            self._report(Damage(0, offsets[0] if offsets else at, (), "the header"))
        return offsets, ends, list(range(len(offsets))), [float(t) for t in table["t"]]

    def _framed(self, at: int, end: int) -> bool:
        """Whether a record's framing (marker, kind, lengths) fills ``at``..``end`` exactly: an
        index whose checksum holds but whose offsets do not is not trusted (its CRC-32 only
        says that it was written so)."""
        self._file.seek(at)
        raw = self._file.read(_REC.size)
        if len(raw) < _REC.size:
            return False
        magic, kind, hn, pn = _REC.unpack(raw)
        return magic == RECORD and kind in KINDS and at + _REC.size + hn + pn + 4 == end

    def _table(self, found: _Found | None) -> np.ndarray | None:
        """An index record's (offset, time) per frame, when its size agrees with its head."""
        if found is None or found.kind != INDEX:
            return None
        n = found.end - 4 - found.payload_at
        frames = found.head.get("frames")
        if not isinstance(frames, int) or n != frames * _TABLE.itemsize:
            return None
        self._file.seek(found.payload_at)
        return np.frombuffer(self._file.read(n), _TABLE)

    def _check(self, at: int) -> _Found | None:
        """The record at ``at`` when its marker, kind, lengths, head and CRC-32 check out. The
        payload is read a megabyte at a time: a damaged length costs reading at most to the end
        of the file, never the memory it claims."""
        if at < 0 or at + _REC.size + 4 > self.size:
            return None
        self._file.seek(at)
        raw = self._file.read(_REC.size)
        if len(raw) < _REC.size:
            return None
        magic, kind, hn, pn = _REC.unpack(raw)
        end = at + _REC.size + hn + pn + 4
        if magic != RECORD or kind not in KINDS or hn > MAX_HEAD or pn > MAX_PAYLOAD or end > self.size:
            return None
        h = self._file.read(hn)
        head = _json(h)
        if head is None or KINDS[kind] not in head:
            self._wasted += hn
            return None
        crc, left = zlib.crc32(h), pn
        while left:
            chunk = self._file.read(min(left, _CHUNK))
            if not chunk:  # the file shrank since it was opened
                return None
            crc, left = zlib.crc32(chunk, crc), left - len(chunk)
        if self._file.read(4) != struct.pack("<I", crc):
            self._wasted += hn + pn
            return None
        return _Found(at, end, kind, head, at + _REC.size + hn)

    def _resync(self, start: int, stop: int | None = None) -> _Found | None:
        """The first record at or after ``start`` (before ``stop``) that checks out, found by
        searching for its marker a megabyte at a time; None when there is none, or once the
        markers that were no record have cost the budget (the rest is then reported damaged)."""
        stop = self.size if stop is None else min(stop, self.size)
        base = start
        while base < stop and not self._gave_up:
            self._file.seek(base)
            chunk = self._file.read(min(_CHUNK, stop + len(RECORD) - 1 - base))
            i = chunk.find(RECORD)
            while i >= 0:
                if (found := self._check(base + i)) is not None:
                    return found
                self._wasted += _CANDIDATE_COST
                if self._wasted > self._budget:
                    self._gave_up = True
                    log.warning("%s: too many false record markers: the rest of the file is not searched",
                                self.path)
                    return None
                i = chunk.find(RECORD, i + 1)
            if len(chunk) < len(RECORD):
                break
            base += len(chunk) - len(RECORD) + 1  # a marker across the boundary is in the next chunk
        return None

    def _scan(self) -> tuple[list[int], list[int], list[int], list[float]]:
        """Every record that checks out, in file order: after one that does not, the scan
        resyncs on the next that does and reports the stretch between."""
        records: list[_Found] = []
        gaps: list[tuple[int, int]] = []
        at = self._first()
        while at < self.size:
            found = self._check(at)
            if found is None:
                if at == self.size - _TRAILER_SIZE and self._bytes(at, len(TRAILER)) == TRAILER:
                    break
                found = self._resync(at + 1)
                gaps.append((at, self.size if found is None else found.offset))
                if found is None:
                    break
            records.append(found)
            at = found.end
        frames = [r for r in records if r.kind != INDEX]
        tables = [t for r in records if (t := self._table(r)) is not None]
        numbers = self._report_gaps(gaps, frames, tables[-1] if tables else None)
        return [r.offset for r in frames], [r.end for r in frames], numbers, [_stamp(r.head) for r in frames]

    def _report_gaps(self, gaps: list[tuple[int, int]], frames: list[_Found], table: np.ndarray | None) -> list[int]:
        """Report each damaged stretch with the frames lost there: those the intact index
        record (if the scan found one) places there, else those numbered between the intact
        frames either side. Returns the intact frames' numbers."""
        starts = [r.offset for r in frames]
        if table is not None:
            number = {int(o): n for n, o in enumerate(table["offset"])}
            numbers = [number.get(r.offset, _index(r.head, -1)) for r in frames]
            intact = set(starts)
            lost = sorted((o, n) for o, n in number.items() if o not in intact)
        else:
            numbers = [_index(r.head, -1) for r in frames]
        for start, end in gaps:
            k = bisect.bisect_left(starts, end)  # the first intact frame after the stretch
            if table is not None:
                here = tuple(n for o, n in lost[bisect.bisect_left(lost, (start, -1)):] if o < end)
            else:
                before = numbers[k - 1] if k else -1
                after = numbers[k] if k < len(frames) else None
                # a number claiming more frames than could fit in the stretch is not believed
                fits = after is not None and 0 <= after - before - 1 <= (end - start) // (_REC.size + 4)
                here = tuple(range(before + 1, after)) if fits else ()
            what = ("the header" if start == 0 and self._start is None
                    else "the end of the file: cut off or damaged" if k == len(frames)
                    else "records that do not check out")
            self._report(Damage(start, end, here, what))
        return numbers

    def _bytes(self, at: int, n: int) -> bytes:
        self._file.seek(at)
        return self._file.read(n)

    def _report(self, damage: Damage) -> None:
        self.damaged.append(damage)
        log.warning("%s: %s", self.path, damage)

    def report(self, i: int, why: str) -> None:
        """Mark frame ``i`` damaged (its record does not check out, or its payload does not
        decode): reported once in ``damaged``; ``entry(i)`` raises RecordingError from now on."""
        if i not in self._bad:
            self._bad.add(i)
            self._report(Damage(self._offsets[i], self._ends[i], (self._numbers[i],), why))

    @property
    def lost(self) -> list[int]:
        """The numbers of the frames known damaged so far."""
        return sorted({f for d in self.damaged for f in d.frames})

    def damage_summary(self) -> str:
        """What was found damaged, in one line for people; '' when nothing was."""
        lost, other = self.lost, sum(not d.frames for d in self.damaged)
        s = "s" * (len(lost) != 1)
        parts = [f"{len(lost)} damaged frame{s} skipped (frame{s} {_numbers(lost)})"] if lost else []
        if other:
            parts.append(f"{other} damaged stretch{'es' * (other != 1)} with no frame known lost")
        return "; ".join(parts)

    def _read_record(self, offset: int, end: int) -> tuple[int, dict, bytes] | None:
        """The record at ``offset``, which the index or the scan says ends at ``end``; None when
        it does not check out. Never reads more than those bytes."""
        if not offset + _REC.size + 4 <= end <= self.size:
            return None
        self._file.seek(offset)
        magic, kind, hn, pn = _REC.unpack(self._file.read(_REC.size))
        if magic != RECORD or kind not in KINDS or offset + _REC.size + hn + pn + 4 != end:
            return None
        h = self._file.read(hn)
        payload = self._file.read(pn)
        if self._file.read(4) != struct.pack("<I", zlib.crc32(payload, zlib.crc32(h))):
            return None
        head = _json(h)
        if head is None or KINDS[kind] not in head:
            return None
        return kind, head, payload

    def entry(self, i: int) -> Entry:
        """Frame ``i``; RecordingError (reported once) when it is damaged."""
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} of a {len(self)}-frame recording")
        rec = None if i in self._bad else self._read_record(self._offsets[i], self._ends[i])
        if rec is None:
            self.report(i, "its record does not check out")
            raise RecordingError(f"{self.path}: frame {self._numbers[i]} is damaged")
        kind, head, payload = rec
        return Entry(kind, i, _stamp(head), head, payload)

    def __iter__(self) -> Iterator[Entry]:
        """Every intact frame: a damaged one is reported and skipped, never raised."""
        for i in range(len(self)):
            try:
                entry = self.entry(i)
            except RecordingError:
                continue
            yield entry

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _json(raw: bytes) -> dict | None:
    """A JSON object, or None for anything else (damaged bytes included)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _index(head: dict, default: int) -> int:
    """The frame number the writer put in a head."""
    n = head.get("index")
    return n if isinstance(n, int) else default


def _stamp(head: dict) -> float:
    t = head.get("timestamp", 0.0)
    return float(t) if isinstance(t, int | float) else 0.0


class RecordingPlayer:
    """A recording as a live source: ``read()`` gives the entry due now (original timing,
    looping), or the next one (``realtime=False``, as fast as the caller reads). A damaged
    frame is skipped for the next intact one; ``skipped`` counts the frames skipped so."""

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = True, start: int = 0) -> None:
        self.recording = Recording(path)
        if not len(self.recording):
            self.recording.close()
            raise RecordingError(f"{path} has no complete frame")
        self.realtime = realtime
        self.loop = loop
        self._skipped: set[int] = set()
        t = self.recording.timestamps  # a frame period past the last one, before looping
        self._span = max(t[-1] - t[0], 0.0) + (float(np.median(np.diff(t))) if len(t) > 1 else 0.0)
        self.seek(start)

    @property
    def skipped(self) -> int:
        """How many damaged frames ``read`` has skipped."""
        return len(self._skipped)

    @property
    def skipped_frames(self) -> frozenset[int]:
        """The positions of the damaged frames ``read`` has skipped."""
        return frozenset(self._skipped)

    def seek(self, index: int) -> None:
        if not 0 <= index < len(self.recording):
            raise IndexError(f"frame {index} of a {len(self.recording)}-frame recording")
        self.position = index
        self._t0 = self.recording.timestamps[index]
        self._clock0 = time.monotonic()

    def read(self) -> Entry | None:
        """The entry due now (realtime) or the next one; None at the end unless looping. A
        damaged frame gives the next intact one instead; RecordingError only when every frame
        is damaged."""
        i = self._due()
        for _ in range(len(self.recording)):
            if i is None:
                return None
            try:
                entry = self.recording.entry(i)
            except RecordingError:
                self._skipped.add(i)
                i = self._after(i)
                continue
            self.position = i + 1
            return entry
        raise RecordingError(f"{self.recording.path}: every frame is damaged")

    def _due(self) -> int | None:
        """The frame due now (realtime) or next; None at the end unless looping."""
        times = self.recording.timestamps
        if self.realtime:
            target = self._t0 + time.monotonic() - self._clock0
            if self.loop and self._span > 0:
                target = times[0] + (target - times[0]) % self._span
            elif target >= times[0] + self._span:
                return None
            return max(0, int(np.searchsorted(times, target, "right")) - 1)
        if self.position >= len(times):
            if not self.loop:
                return None
            self.position = 0
        return self.position

    def _after(self, i: int) -> int | None:
        """The frame after ``i``: the first again when looping, None at the end otherwise."""
        if i + 1 < len(self.recording):
            return i + 1
        return 0 if self.loop else None

    def close(self) -> None:
        self.recording.close()
