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
timestamp, intrinsics, depth scale, camera pose), CLOUD (payload: opaque bytes, for
example a codec stream, which this package does not interpret; head: index, timestamp,
points, format) and AUDIO (payload: 16-bit little-endian PCM, mono, 48 kHz, one or more
20 ms blocks of the microphone; head: audio (its number), t, samples, rate). An AUDIO
record's ``t`` is its first sample's time on the frames' own time base (the one their
timestamps use), so a player lines the two up by their stamps alone; audio is not a frame:
``len``, ``entry`` and the players count frames only, and ``audio_records`` /
``audio_track`` read the sound. The index lists frames then audio records (head: frames,
audio; a file without audio has no ``audio`` key, as before audio existed). Every length
is checked against the file before anything is allocated. The marker, kind and lengths
are outside the CRC: a record only checks out when its head is JSON with its kind's key
and the CRC-32 matches.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import zstandard

from capture.audio import BLOCK, SAMPLE_RATE, AudioSource
from capture.types import Intrinsics, RGBDFrame

MAGIC = b"HPREC\x00\x01\n"
RECORD = b"HPFR"
TRAILER = b"HPIX"
RGBD, CLOUD, AUDIO, INDEX = 1, 2, 3, 255
_REC = struct.Struct("<4sBIQ")  # magic, kind, head length, payload length
MAX_HEAD = 1 << 20
MAX_PAYLOAD = 1 << 30
MAX_IMAGE_SIDE = 8192  # pixels: an RGBD record's images are no larger than this
KINDS = {RGBD: "intrinsics", CLOUD: "format", AUDIO: "rate", INDEX: "frames"}  # the head key each kind carries
MAX_AUDIO_SAMPLES = 10 * SAMPLE_RATE  # per AUDIO record (10 s): longer sound is written as several
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
    and audio records lost there as the writer numbered them (empty when that is unknown:
    past the last intact one of a file without an intact index), and what it was."""

    start: int
    end: int
    frames: tuple[int, ...]
    what: str
    audio: tuple[int, ...] = ()

    def __str__(self) -> str:
        s, a = "s" * (len(self.frames) > 1), "s" * (len(self.audio) > 1)
        lost = [f"frame{s} {_numbers(self.frames)} lost"] if self.frames else []
        lost += [f"audio record{a} {_numbers(self.audio)} lost"] if self.audio else []
        return f"bytes {self.start:,}-{self.end:,} damaged ({self.what}): {', '.join(lost) or 'no frame known lost'}"


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


@dataclass(frozen=True)
class AudioRecord:
    """One AUDIO record: mono float32 samples at ``rate`` (48 kHz), the first at time ``t``
    on the recording's frame time base; ``number`` as the writer numbered it."""

    number: int
    t: float
    samples: np.ndarray
    rate: int

    @property
    def end(self) -> float:
        """The time just after its last sample."""
        return self.t + len(self.samples) / self.rate


class RecordingWriter:
    """Appends frames and audio to a new recording; every record is on disk once ``write_*``
    returns. One thread writes (a microphone read on another thread hands its blocks over,
    as ``MicRecorder`` does)."""

    def __init__(self, path: str | Path, meta: dict | None = None) -> None:
        self.path = Path(path)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        body = json.dumps(meta or {}).encode()
        self._file.write(MAGIC + struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body)))
        self._file.flush()
        self._index: list[tuple[int, float]] = []
        self._audio: list[tuple[int, float]] = []
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

    def write_audio(self, samples: np.ndarray, t: float) -> None:
        """Mono 48 kHz samples in [-1, 1] (clipped; stored as 16-bit PCM, what a microphone
        gives) whose first was captured at ``t`` on the frames' time base: the clock the
        timestamps of ``write_rgbd``/``write_cloud`` are on, which is what keeps the two in
        sync on playback. Usually whole 20 ms blocks; past ``MAX_AUDIO_SAMPLES`` several records."""
        samples = np.asarray(samples, np.float32)
        if samples.ndim != 1 or samples.size == 0:
            raise ValueError(f"audio is mono samples of shape (n,), n > 0, not {samples.shape}")
        if not np.isfinite(t):
            raise ValueError(f"audio time must be finite, got {t}")
        for at in range(0, samples.size, MAX_AUDIO_SAMPLES):
            part = samples[at:at + MAX_AUDIO_SAMPLES]
            pcm = (np.clip(np.nan_to_num(part), -1.0, 1.0) * 32767.0).round().astype("<i2")
            start = float(t) + at / SAMPLE_RATE
            head = {"audio": len(self._audio), "t": start, "samples": int(part.size), "rate": SAMPLE_RATE}
            self._audio.append((self._record(AUDIO, head, pcm.tobytes()), start))

    def _record(self, kind: int, head: dict, payload: bytes, timestamp: float | None = None) -> int:
        """Append one record; a frame's (with its ``timestamp``) also goes into the index."""
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
        table = np.array(self._index + self._audio, dtype=_TABLE).tobytes()
        head = {"frames": len(self._index)} | ({"audio": len(self._audio)} if self._audio else {})
        at = self._record(INDEX, head, table)
        self._file.write(TRAILER + struct.pack("<Q", at))
        self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_Located = tuple[list[int], list[int], list[int], list[float]]  # offsets, ends, numbers, times of one kind


class Recording:
    """Reads a recording: ``len``, ``entry(i)`` (seek), iteration, the header's meta, its
    sound (``audio_records``, ``audio_track``), and ``damaged``: every stretch found damaged,
    when opening without an intact index or as a listed frame or audio record turns out
    damaged (each also logged as a warning, once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self.size = self.path.stat().st_size
        self.damaged: list[Damage] = []
        self.indexed = False
        self._bad: set[int] = set()  # frames (positions) found damaged after opening
        self._bad_audio: set[int] = set()  # audio records (positions) found damaged after opening
        # bytes read checking markers that were no record: bounded, so that a file planted with
        # markers claiming long records cannot make a scan quadratic
        self._wasted, self._budget, self._gave_up = 0, 4 * self.size + (256 << 20), False
        try:
            self.meta, self._start = self._read_header()
            frames, audio = self._load_index() or self._scan()
            self._offsets, self._ends, self._numbers, self.timestamps = frames
            # audio records: where, their numbers, and the time of each one's first sample
            self._audio_offsets, self._audio_ends, self._audio_numbers, self.audio_times = audio
            if self._start is None and not self._offsets and not self._audio_offsets:
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

    def _load_index(self) -> tuple[_Located, _Located] | None:
        """The frames and audio records the index lists (offsets, ends, numbers, times of
        each) when the trailer and the index check out; None otherwise, and the records are
        scanned."""
        first = self._first()
        if self.size < first + _TRAILER_SIZE:
            return None
        self._file.seek(self.size - _TRAILER_SIZE)
        tail = self._file.read(_TRAILER_SIZE)
        if not tail.startswith(TRAILER):  # cut off before closing, or a damaged trailer
            return None
        (at,) = struct.unpack("<Q", tail[len(TRAILER):])
        found = self._check(at) if first <= at < self.size else None
        tables = self._table(found) if found is not None and found.end == self.size - _TRAILER_SIZE else None
        if tables is None or any(np.any(t["offset"] >= at) for t in tables):
            log.warning("%s: its index is damaged: scanning the records", self.path)
            return None
        frames, audio = ([int(o) for o in t["offset"]] for t in tables)
        every = sorted(frames + audio)  # records of both kinds, in file order: each ends where the next starts
        if every and (every[0] < max(first, len(MAGIC) + 4) or any(b <= a for a, b in pairwise(every))
                      or any(b <= a for a, b in pairwise(frames)) or any(b <= a for a, b in pairwise(audio))):
            log.warning("%s: its index is inconsistent: scanning the records", self.path)
            return None
        end_of = dict(pairwise([*every, at]))
        framed = (sum(self._framed(o, end_of[o], AUDIO) for o in audio)
                  + sum(self._framed(o, end_of[o]) for o in frames))
        if framed < len(every):  # damaged records, or an index that lies: the scan decides
            scanned = self._scan()
            if len(scanned[0][0]) + len(scanned[1][0]) > framed:
                log.warning("%s: its index does not match its records: using the %d records found by scanning",
                            self.path, len(scanned[0][0]) + len(scanned[1][0]))
                return scanned
        self.indexed = True
        if self._start is None:
            self._report(Damage(0, every[0] if every else at, (), "the header"))
        return tuple((offsets, [end_of[o] for o in offsets], list(range(len(offsets))), [float(x) for x in t["t"]])
                     for offsets, t in ((frames, tables[0]), (audio, tables[1])))

    def _framed(self, at: int, end: int, kind: int | None = None) -> bool:
        """Whether a record's framing (marker, kind, lengths) fills ``at``..``end`` exactly, and
        it is of ``kind`` (None: a frame): an index whose checksum holds but whose offsets do
        not is not trusted (its CRC-32 only says that it was written so)."""
        self._file.seek(at)
        raw = self._file.read(_REC.size)
        if len(raw) < _REC.size:
            return False
        magic, k, hn, pn = _REC.unpack(raw)
        right = k == kind if kind is not None else k in KINDS and k not in (AUDIO, INDEX)
        return magic == RECORD and right and at + _REC.size + hn + pn + 4 == end

    def _table(self, found: _Found | None) -> tuple[np.ndarray, np.ndarray] | None:
        """An index record's (offset, time) per frame and per audio record, when its size
        agrees with its head."""
        if found is None or found.kind != INDEX:
            return None
        n = found.end - 4 - found.payload_at
        frames, audio = found.head.get("frames"), found.head.get("audio", 0)
        if not (isinstance(frames, int) and isinstance(audio, int) and frames >= 0 and audio >= 0
                and n == (frames + audio) * _TABLE.itemsize):
            return None
        self._file.seek(found.payload_at)
        table = np.frombuffer(self._file.read(n), _TABLE)
        return table[:frames], table[frames:]

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

    def _scan(self) -> tuple[_Located, _Located]:
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
        frames = [r for r in records if r.kind not in (INDEX, AUDIO)]
        audio = [r for r in records if r.kind == AUDIO]
        tables = [t for r in records if (t := self._table(r)) is not None]
        table = tables[-1] if tables else (None, None)
        numbers, lost = _lost_in(gaps, frames, table[0], "index")
        audio_numbers, audio_lost = _lost_in(gaps, audio, table[1], "audio")
        starts = [r.offset for r in records if r.kind != INDEX]
        for (start, end), here, sound in zip(gaps, lost, audio_lost, strict=True):
            what = ("the header" if start == 0 and self._start is None
                    else "the end of the file: cut off or damaged" if bisect.bisect_left(starts, end) == len(starts)
                    else "records that do not check out")
            self._report(Damage(start, end, here, what, sound))
        return ((([r.offset for r in frames], [r.end for r in frames], numbers, [_stamp(r.head) for r in frames])),
                ([r.offset for r in audio], [r.end for r in audio], audio_numbers, [_time(r.head) for r in audio]))

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

    @property
    def lost_audio(self) -> list[int]:
        """The numbers of the audio records known damaged so far."""
        return sorted({n for d in self.damaged for n in d.audio})

    def damage_summary(self) -> str:
        """What was found damaged, in one line for people; '' when nothing was."""
        lost, other = self.lost, sum(not d.frames and not d.audio for d in self.damaged)
        s = "s" * (len(lost) != 1)
        parts = [f"{len(lost)} damaged frame{s} skipped (frame{s} {_numbers(lost)})"] if lost else []
        if sound := self.lost_audio:
            a = "s" * (len(sound) != 1)
            parts.append(f"{len(sound)} damaged audio record{a} skipped (record{a} {_numbers(sound)}), "
                         f"silent in the audio track")
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

    # -- sound --------------------------------------------------------------------------

    @property
    def audio_count(self) -> int:
        """How many audio records the recording lists (damaged ones included)."""
        return len(self._audio_offsets)

    def report_audio(self, j: int, why: str) -> None:
        """Mark audio record ``j`` damaged: reported once; ``audio_record(j)`` raises from now on."""
        if j not in self._bad_audio:
            self._bad_audio.add(j)
            self._report(Damage(self._audio_offsets[j], self._audio_ends[j], (), why, (self._audio_numbers[j],)))

    def audio_record(self, j: int) -> AudioRecord:
        """Audio record ``j``; RecordingError (reported once) when it is damaged: its record
        does not check out, or its head does not describe its payload (48 kHz only, at most
        ``MAX_AUDIO_SAMPLES``, two bytes a sample, a finite time). Its size is checked before
        anything is read."""
        if not 0 <= j < self.audio_count:
            raise IndexError(f"audio record {j} of {self.audio_count}")
        offset, end = self._audio_offsets[j], self._audio_ends[j]
        rec = None
        if j not in self._bad_audio and end - offset <= _REC.size + MAX_HEAD + 2 * MAX_AUDIO_SAMPLES + 4:
            rec = self._read_record(offset, end)
        why = "its record does not check out"
        if rec is not None:
            kind, head, payload = rec
            n, rate, t = head.get("samples"), head.get("rate"), _time(head)
            if kind != AUDIO:
                why = "it is no audio record"
            elif rate != SAMPLE_RATE or isinstance(rate, bool):
                why = f"audio at {rate!r} Hz: recordings hold {SAMPLE_RATE} Hz only"
            elif not isinstance(n, int) or not 0 < n <= MAX_AUDIO_SAMPLES or len(payload) != 2 * n:
                why = f"{len(payload)} bytes of audio, not the {n!r} samples its head says"
            elif not math.isfinite(t):
                why = "its time is missing"
            else:
                samples = np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0
                return AudioRecord(self._audio_numbers[j], t, samples, SAMPLE_RATE)
        self.report_audio(j, why)
        raise RecordingError(f"{self.path}: audio record {self._audio_numbers[j]} is damaged ({why})")

    def audio_records(self) -> Iterator[AudioRecord]:
        """Every intact audio record, in file order: a damaged one is reported and skipped."""
        for j in range(self.audio_count):
            try:
                yield self.audio_record(j)
            except RecordingError:
                continue

    def audio_track(self) -> tuple[np.ndarray, float] | None:
        """All the sound as one mono float32 48 kHz track and the time of its first sample
        (on the frames' time base); None when the recording holds no intact audio.

        Records are placed by their times: a gap (a damaged record, a pause of the
        microphone) is silence, and a record within half a block of where the last one ended
        follows it seamlessly (stamps jitter; samples do not). Silence is only filled as far
        as the file could have held sound (two bytes a sample): a time beyond that is
        reported as damage, so a small file cannot claim a huge track."""
        records = []
        for j in range(self.audio_count):
            with contextlib.suppress(RecordingError):
                records.append((j, self.audio_record(j)))
        if not records:
            return None
        records.sort(key=lambda jr: jr[1].t)
        t0, limit = records[0][1].t, self.size // 2 + SAMPLE_RATE
        placed, end = [], 0
        for j, r in records:
            offset = (r.t - t0) * SAMPLE_RATE
            if not offset + len(r.samples) <= limit:
                self.report_audio(j, f"its time ({r.t:.3f} s) lies beyond what the file could hold")
                continue
            at = round(offset)
            if abs(at - end) <= BLOCK // 2:
                at = end
            placed.append((at, r.samples))
            end = max(end, at + len(r.samples))
        track = np.zeros(end, np.float32)
        for at, samples in placed:
            track[at:at + len(samples)] = samples
        return track, t0

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


def _index(head: dict, default: int, key: str = "index") -> int:
    """The number the writer put in a head (a frame's ``index``, an audio record's ``audio``)."""
    n = head.get(key)
    return n if isinstance(n, int) else default


def _lost_in(gaps: list[tuple[int, int]], records: list[_Found], table: np.ndarray | None,
             key: str) -> tuple[list[int], list[tuple[int, ...]]]:
    """The intact records' numbers (frames', or audio records'), and per damaged stretch the
    numbers lost there: those the intact index table (if the scan found one) places there,
    else those numbered between the intact records either side (each number once, at the
    first stretch between them: frames and audio interleave, so several stretches can lie
    between two intact records of one kind)."""
    starts = [r.offset for r in records]
    if table is not None:
        number = {int(o): n for n, o in enumerate(table["offset"])}
        numbers = [number.get(r.offset, _index(r.head, -1, key)) for r in records]
        intact = set(starts)
        lost = sorted((o, n) for o, n in number.items() if o not in intact)
    else:
        numbers = [_index(r.head, -1, key) for r in records]
    out, told = [], set()
    for start, end in gaps:
        k = bisect.bisect_left(starts, end)  # the first intact record after the stretch
        if table is not None:
            here = tuple(n for o, n in lost[bisect.bisect_left(lost, (start, -1)):] if o < end)
        else:
            before = numbers[k - 1] if k else -1
            after = numbers[k] if k < len(records) else None
            # a number claiming more records than could fit in the stretch is not believed
            fits = after is not None and 0 <= after - before - 1 <= (end - start) // (_REC.size + 4)
            here = tuple(n for n in range(before + 1, after) if n not in told) if fits else ()
            told.update(here)
        out.append(here)
    return numbers, out


def _number(value: object, default: float) -> float:
    """A JSON number as a float (``default`` for anything else, an integer too large included)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return default
    try:
        return float(value)
    except OverflowError:
        return default


def _stamp(head: dict) -> float:
    return _number(head.get("timestamp", 0.0), 0.0)


def _time(head: dict) -> float:
    """An audio record's first-sample time (NaN when it has none: such a record is damaged)."""
    return _number(head.get("t"), math.nan)


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
        self._span = play_span(self.recording.timestamps)
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
        self.wall0 = time.time()  # when frame ``index`` was due: what the audio lines up with

    @property
    def origin(self) -> tuple[float, float]:
        """(wall time, recording time) of the frame the player started from: a sound
        source given both (``RecordingAudioSource(start=, at=)``) plays in step with it."""
        return self.wall0, self._t0

    def audio(self) -> RecordingAudioSource:
        """The recording's sound in step with this player (from the frame it was last sought
        to, looping as it does): give its blocks to a speaker as they come and each sample
        plays when the frame stamped with its time is shown. RecordingError without audio."""
        return RecordingAudioSource(self.recording.path, self.realtime, self.loop, start=self.wall0, at=self._t0)

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


def is_recording(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts as a Holoport recording does."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def play_span(timestamps: list[float]) -> float:
    """How long a recording plays before it loops: a frame period past its last frame (the
    median period). RecordingPlayer and RecordingAudioSource share it, so sound and frames
    loop together."""
    if not timestamps:
        return 0.0
    t = timestamps
    return max(t[-1] - t[0], 0.0) + (float(np.median(np.diff(t))) if len(t) > 1 else 0.0)


class RecordingAudioSource(AudioSource):
    """A recording's audio track as a microphone (``capture.audio.AudioSource``).

    How it lines up with the frames: ``RecordingPlayer`` shows the frame stamped ``T`` at
    wall time ``wall0 + (T - t0)``, where ``t0`` is the stamp of the frame it starts from
    (the first, unless sought) and ``wall0`` the moment it started. This source's sample 0
    is recording time ``at`` (default: the first frame's stamp, the player's ``t0``), so
    block ``k`` holds the sound of recording time ``at + k * 20 ms`` and is stamped
    (``AudioBlock.t``) ``start + k * 20 ms``, ``start`` being the wall time of the first
    read unless given. With the same origin (``RecordingPlayer.audio()`` passes the
    player's ``wall0`` and ``t0``) a sample and the frame stamped at its time play at the
    same wall time: both were stamped on one clock when recorded. Sound before ``at`` is
    skipped, and silence is played until the audio begins; ``loop`` repeats every
    ``play_span`` of the frames, as the player does (the audio's own length without frames).
    """

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = False, start: float | None = None,
                 at: float | None = None) -> None:
        super().__init__(realtime, start)
        with Recording(path) as recording:
            track = recording.audio_track()
            times = list(recording.timestamps)
            self.damage = recording.damage_summary()
            limit = recording.size // 2 + SAMPLE_RATE
        if track is None:
            raise RecordingError(f"{path} holds no audio (record with holoport record --mic)")
        self.track, first = track
        self.name = f"recording:{Path(path).name}"
        self.origin = times[0] if times else first  # the recording time of the period's sample 0
        self.lead = round((first - self.origin) * SAMPLE_RATE) if math.isfinite(first - self.origin) else None
        if self.lead is None or abs(self.lead) > limit:  # stamps a file this size cannot span
            raise RecordingError(f"{path}: its audio starts {first - self.origin:.3g} s from its first frame")
        self.loop = loop
        span = play_span(times)  # 0 for one frame, or none: the sound's own length then
        self.period = max(1, round(span * SAMPLE_RATE)) if 0 < span < math.inf else max(1, self.lead + len(self.track))
        at = self.origin if at is None else float(at)
        self._pos = max(0, round((at - self.origin) * SAMPLE_RATE)) if math.isfinite(at - self.origin) else 0

    def _next_samples(self, n: int) -> np.ndarray:
        """Silence where the track has no sound, wrapping at the period when looping; no
        allocation beyond ``n`` samples, whatever the stamps say."""
        if self.loop:
            self._pos %= self.period
            n = min(n, self.period - self._pos)
        elif self._pos >= self.lead + len(self.track):
            return np.zeros(0, np.float32)
        out = np.zeros(n, np.float32)
        lo, hi = max(self._pos, self.lead), min(self._pos + n, self.lead + len(self.track))
        if lo < hi:
            out[lo - self._pos:hi - self._pos] = self.track[lo - self.lead:hi - self.lead]
        self._pos += n
        return out


class MicRecorder:
    """A microphone (any ``AudioSource``) recorded beside frames: read on a thread of its
    own, which it paces as a microphone does, and written by the thread that writes the
    frames (``write_to`` between frames; the writer is not shared). ``epoch`` is the
    wall-clock time of the frames' time 0 (their first frame's capture).

    A ``live`` device stamps its blocks with when the sound was really captured (its ADC
    clock on ``time.time()``): ``t - epoch`` puts them on the frames' base, and what it heard
    before ``epoch`` is dropped. A source played as a microphone (a file, speech, another
    recording) has no capture time of its own: its sample 0 is placed at ``epoch``, so sound
    and picture start together however late its thread got going on a busy machine.
    Stretches that follow one another go into one record; a jump (a dropped block) starts
    a new one."""

    QUEUE_BLOCKS = 500  # 10 s held for a writer that falls behind; older blocks are dropped

    def __init__(self, source: AudioSource, epoch: float, live: bool = False) -> None:
        self.source, self.epoch, self.live = source, epoch, live
        self.error: Exception | None = None  # what ended the microphone early
        self.dropped = 0  # blocks dropped because the writer fell behind
        self.samples = 0  # samples written
        self.end = -math.inf  # the frames'-base time just after the last sample read
        self._pieces: list[tuple[float, np.ndarray]] = []  # (frames'-base time, samples) not yet written
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mic-recorder", daemon=True)

    def start(self) -> MicRecorder:
        self._thread.start()
        return self

    def _place(self, block) -> tuple[float, np.ndarray] | None:
        """A block on the frames' time base; None when it was all heard before ``epoch``."""
        if not self.live:
            return block.index / SAMPLE_RATE, block.samples
        t = block.t - self.epoch
        skip = round(-t * SAMPLE_RATE) if t < 0 else 0
        if skip >= len(block.samples):
            return None
        return t + skip / SAMPLE_RATE, block.samples[skip:]

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and (block := self.source.read()) is not None:
                if (piece := self._place(block)) is None:
                    continue
                with self._lock:
                    self._pieces.append(piece)
                    if len(self._pieces) > self.QUEUE_BLOCKS:
                        del self._pieces[0]
                        self.dropped += 1
                    self.end = piece[0] + len(piece[1]) / SAMPLE_RATE
        except Exception as exc:  # a device unplugged, a file that stops decoding: video goes on
            self.error = exc

    def write_to(self, writer: RecordingWriter) -> int:
        """Write the sound read so far; returns how many samples."""
        with self._lock:
            pieces, self._pieces = self._pieces, []
        written, run, have = 0, [], 0
        for piece in [*pieces, None]:
            if run and (piece is None or abs(piece[0] - run[0][0] - have / SAMPLE_RATE) > BLOCK / 2 / SAMPLE_RATE):
                writer.write_audio(np.concatenate([samples for _, samples in run]), run[0][0])
                written += have
                run, have = [], 0
            if piece is not None:
                run.append(piece)
                have += len(piece[1])
        self.samples += written
        return written

    def stop(self, writer: RecordingWriter, until: float | None = None, timeout: float = 1.0) -> None:
        """Once the sound reaches ``until`` (frames' time: the end of the last frame period),
        or after ``timeout`` s, stop reading and write what is left."""
        deadline = time.monotonic() + timeout
        while (until is not None and self.end < until and self._thread.is_alive()
               and time.monotonic() < deadline):
            time.sleep(0.005)
        self._stop.set()
        self._thread.join(timeout)
        self.write_to(writer)
        self.source.close()
