"""Holoport recordings: RGB-D frames or encoded clouds, chunked, indexed, crash-safe.

A recording is a header and then one self-contained record per frame, each with its own
length and CRC-32, written and flushed as it comes; closing appends an index (offsets and
times) and a trailer that points at it. A reader uses the index when it is intact and
otherwise scans the records from the start, stopping at the first one that is incomplete
or damaged: a file cut off at any byte (a crash, a full disk) still plays up to its last
complete frame.

    header  b"HPREC\\x00\\x01\\n"  u32 meta length  meta (JSON)  u32 CRC-32 of meta
    record  b"HPFR"  u8 kind  u32 head length  u64 payload length  head (JSON)  payload
            u32 CRC-32 of head + payload
    index   a record of kind INDEX: payload = (u64 offset, f64 timestamp) per frame
    trailer b"HPIX"  u64 offset of the index record

Kinds: RGBD (payload: zstd of the depth image then the colour image; head: index,
timestamp, intrinsics, depth scale, camera pose) and CLOUD (payload: opaque bytes, for
example a codec stream, which this package does not interpret; head: index, timestamp,
points, format). Every length is checked against the file before anything is allocated.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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


class RecordingError(ValueError):
    """Not a Holoport recording, or one with no complete frame."""


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
        k = Intrinsics.from_dict(h["intrinsics"])
        raw = zstandard.ZstdDecompressor().decompress(self.payload, max_output_size=k.width * k.height * 5)
        if len(raw) != k.width * k.height * 5:
            raise RecordingError(f"frame {self.index}: images of the wrong size")
        depth = np.frombuffer(raw, np.uint16, k.width * k.height).reshape(k.height, k.width).copy()
        color = np.frombuffer(raw, np.uint8, offset=k.width * k.height * 2).reshape(k.height, k.width, 3).copy()
        return RGBDFrame(depth, color, k, float(h["depth_scale"]), np.array(h["pose"], np.float64).reshape(4, 4),
                         self.timestamp, self.index, dict(h.get("meta", {})))


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
    """Reads a recording: ``len``, ``entry(i)`` (seek), iteration, and the header's meta."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self.size = self.path.stat().st_size
        head = self._file.read(len(MAGIC) + 4)
        if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
            raise RecordingError(f"{self.path} is not a Holoport recording (or is cut off in its header)")
        (n,) = struct.unpack("<I", head[len(MAGIC):])
        if n > MAX_HEAD:
            raise RecordingError(f"{self.path}: damaged header")
        body = self._file.read(n + 4)
        if len(body) < n + 4 or zlib.crc32(body[:n]) != struct.unpack("<I", body[n:])[0]:
            raise RecordingError(f"{self.path} is cut off or damaged in its header: no frame to play")
        self.meta = json.loads(body[:n])
        self._start = self._file.tell()
        self.indexed = False
        self._offsets, self.timestamps = self._load_index() or self._scan()

    def __len__(self) -> int:
        return len(self._offsets)

    def _read_record(self, offset: int) -> tuple[int, dict, bytes] | None:
        """The record at ``offset``, or None when it is incomplete or damaged."""
        if offset + _REC.size > self.size:
            return None
        self._file.seek(offset)
        magic, kind, hn, pn = _REC.unpack(self._file.read(_REC.size))
        if magic != RECORD or hn > MAX_HEAD or pn > MAX_PAYLOAD or offset + _REC.size + hn + pn + 4 > self.size:
            return None
        h = self._file.read(hn)
        payload = self._file.read(pn)
        (crc,) = struct.unpack("<I", self._file.read(4))
        if zlib.crc32(payload, zlib.crc32(h)) != crc:
            return None
        try:
            head = json.loads(h)
        except ValueError:
            return None
        return kind, head, payload

    def _load_index(self) -> tuple[list[int], list[float]] | None:
        if self.size < len(TRAILER) + 8:
            return None
        self._file.seek(self.size - len(TRAILER) - 8)
        tail = self._file.read(len(TRAILER) + 8)
        if tail[:4] != TRAILER:
            return None
        (at,) = struct.unpack("<Q", tail[4:])
        rec = self._read_record(at) if self._start <= at < self.size else None
        if rec is None or rec[0] != INDEX or len(rec[2]) % 16:
            return None
        table = np.frombuffer(rec[2], dtype=[("offset", "<u8"), ("t", "<f8")])
        if len(table) != rec[1].get("frames") or np.any(table["offset"] >= at):
            return None
        self.indexed = True
        return [int(o) for o in table["offset"]], [float(t) for t in table["t"]]

    def _scan(self) -> tuple[list[int], list[float]]:
        offsets, times = [], []
        at = self._start
        while (rec := self._read_record(at)) is not None and rec[0] != INDEX:
            offsets.append(at)
            times.append(float(rec[1].get("timestamp", 0.0)))
            at = self._file.tell()
        return offsets, times

    def entry(self, i: int) -> Entry:
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} of a {len(self)}-frame recording")
        rec = self._read_record(self._offsets[i])
        if rec is None:
            raise RecordingError(f"{self.path}: frame {i} is damaged")
        kind, head, payload = rec
        return Entry(kind, i, float(head.get("timestamp", 0.0)), head, payload)

    def __iter__(self) -> Iterator[Entry]:
        for i in range(len(self)):
            yield self.entry(i)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordingPlayer:
    """A recording as a live source: ``read()`` gives the entry due now (original timing,
    looping), or the next one (``realtime=False``, as fast as the caller reads)."""

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = True, start: int = 0) -> None:
        self.recording = Recording(path)
        if not len(self.recording):
            raise RecordingError(f"{path} has no complete frame")
        self.realtime = realtime
        self.loop = loop
        t = self.recording.timestamps  # a frame period past the last one, before looping
        self._span = max(t[-1] - t[0], 0.0) + (float(np.median(np.diff(t))) if len(t) > 1 else 0.0)
        self.seek(start)

    def seek(self, index: int) -> None:
        if not 0 <= index < len(self.recording):
            raise IndexError(f"frame {index} of a {len(self.recording)}-frame recording")
        self.position = index
        self._t0 = self.recording.timestamps[index]
        self._clock0 = time.monotonic()

    def read(self) -> Entry | None:
        """The entry due now (realtime) or the next one; None at the end unless looping."""
        times = self.recording.timestamps
        n = len(times)
        if self.realtime:
            target = self._t0 + time.monotonic() - self._clock0
            if self.loop and self._span > 0:
                target = times[0] + (target - times[0]) % self._span
            elif target >= times[0] + self._span:
                return None
            i = max(0, int(np.searchsorted(times, target, "right")) - 1)
        else:
            if self.position >= n:
                if not self.loop:
                    return None
                self.position = 0
            i = self.position
        self.position = i + 1
        return self.recording.entry(i)

    def close(self) -> None:
        self.recording.close()
