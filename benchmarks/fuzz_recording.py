"""Fuzz the recording reader with damaged copies of a real recording.

The recording (capture.recording.RecordingWriter, or --recording FILE): RGB-D frames of
the synthetic person from a small (80x72) camera, so that a file plays in milliseconds;
cloud records holding real codec streams (baseline and octree, made from --data's first
PLY frame as in fuzz_codec); an audio record (three 20 ms blocks of a tone) after each
frame; an opaque cloud with stray record markers inside. Each input is a damaged copy, of
one kind:

    flipped       1-8 bits flipped anywhere
    overwritten   1-3 runs of random or zero bytes
    truncated     cut off at a random byte
    length        a record's head or payload length bogus (huge, past or to the end, 0)
    index         the index's table, the trailer's offset or the header's length damaged
    forged-index  the index rewritten with its CRC recomputed (offsets out of order, past
                  the end, into other records; a huge frame count): it checks out, and lies
    mixed         two or three of the first five

and is played end to end as `holoport join --source FILE` reads it (holoport.point_sources.
RecordingPoints, RecordingPlayer underneath): every frame read, its points decoded or back-
projected and cut, then a seek and one more read, every audio record and the whole audio
track (Recording.audio_records, audio_track), and the damage summary.

Failures: any exception but capture.recording.RecordingError (which opening raises for no
recording, and reading once every frame is damaged) is a crash; a file read for longer
than --max-seconds is a hang (a timer interrupts it); peak resident memory above
--max-rss-mb. Ground truth from the clean file's own framing: a frame whose record's bytes
are all unchanged and not cut off is intact, and a correct reader plays every intact frame.
Reported, and failures only with --strict: lost_intact (intact frames not played, the
file refused or not) and wrong_played (frames played with content that is not the
frame's); the same for audio records (audio_intact, audio_played, audio_lost_intact,
audio_wrong_played). A forged index is believed only where the records it names are
framed as it says; otherwise the reader scans, so forged-index counts like every other kind.

Records (--json): per kind: target "recording", kind, inputs, refused (RecordingError on
opening), all_damaged (RecordingError while reading), crashed, hangs, memory, intact,
played, lost_intact, wrong_played, audio_intact, audio_played, audio_lost_intact,
audio_wrong_played, slowest_ms, peak_rss_mb (this process's).

Throughput measured here (2 cores shared with other work): about 1,500 files/s before
the audio records, which take it about 1.7 times longer per file (same machine, same load:
3,000 files in 6.5 s against 3.9 s), so about 900 files/s (each distinct payload is decoded
once: decoding is deterministic, and the codec has its own fuzz target).

Run: python -m benchmarks.fuzz_recording --inputs 100000 [--data DIR] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import signal
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, peak_rss_mb, reset_peak_rss, script_main
from benchmarks.fuzz_codec import seed_streams
from capture import Intrinsics, SyntheticCamera
from capture.audio import BLOCK, SAMPLE_RATE
from capture.recording import (
    AUDIO,
    INDEX,
    MAGIC,
    RECORD,
    RGBD,
    TRAILER,
    Recording,
    RecordingAudioSource,
    RecordingError,
    RecordingWriter,
)

KINDS = ("flipped", "overwritten", "truncated", "length", "index", "forged-index", "mixed")
SIMPLE = KINDS[:5]  # what "mixed" combines
REC = struct.Struct("<4sBIQ")  # a record's framing, as the format documents it: marker, kind, lengths
SMALL_CAMERA = Intrinsics(width=80, height=72, fx=63.0, fy=63.0, cx=39.5, cy=35.5)
CODEC_FORMAT = "holoport-codec"


@dataclass(frozen=True)
class Record:
    """One record of the clean file: where it is, its kind, its frame (or audio record)
    number (-1: the index)."""

    at: int
    end: int
    kind: int
    number: int


def make_recording(path: Path, data: Path | None, points: int, frames: int = 12) -> None:
    """RGB-D and codec cloud frames in turn, each followed by 60 ms of sound, then an opaque
    cloud with stray record markers."""
    camera = SyntheticCamera(intrinsics=SMALL_CAMERA)
    streams = seed_streams(data, points)
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(frames * 3 * BLOCK) / SAMPLE_RATE)).astype(np.float32)
    with RecordingWriter(path, {"crop": "person", "who": "fuzz"}) as writer:
        for i in range(frames):
            if i % 2 == 0:
                writer.write_rgbd(camera.read(t=i / 15))
            else:
                writer.write_cloud(i / 15, streams[(i // 2) % len(streams)], points, CODEC_FORMAT)
            writer.write_audio(tone[i * 3 * BLOCK:(i + 1) * 3 * BLOCK], i * 3 * BLOCK / SAMPLE_RATE)
        stray = RECORD + struct.pack("<BIQ", 2, 40, 10_000) + b'{"format": "x"}'
        writer.write_cloud(frames / 15, b"opaque" * 50 + stray + bytes(100) + stray[:9], 1, "bytes")


def layout(data: bytes) -> list[Record]:
    """Every record of an undamaged recording, read from the format itself (not through the
    reader under test)."""
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    at, out = len(MAGIC) + 4 + n + 4, []
    while data[at:at + len(RECORD)] == RECORD:
        _, kind, hn, pn = REC.unpack_from(data, at)
        end = at + REC.size + hn + pn + 4
        head = json.loads(data[at + REC.size:at + REC.size + hn])
        out.append(Record(at, end, kind, int(head.get("audio" if kind == AUDIO else "index", -1))))
        at = end
    if not out or out[-1].kind != INDEX or data[at:at + len(TRAILER)] != TRAILER:
        raise ValueError("not a complete, undamaged Holoport recording")
    return out


def digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


# -- damage ---------------------------------------------------------------------------------
class Damager:
    """Damaged copies of one clean recording, each with the bytes it changed."""

    def __init__(self, data: bytes, records: list[Record], rng: np.random.Generator) -> None:
        self.data, self.records, self.rng = data, records, rng
        self.frames = [r for r in records if r.kind not in (INDEX, AUDIO)]
        self.audio = [r for r in records if r.kind == AUDIO]
        self.table_record = records[-1]

    def pick(self, items):
        return items[int(self.rng.integers(len(items)))]

    def damage(self, kind: str) -> tuple[bytes, np.ndarray]:
        """A damaged copy and, per byte of the clean file, whether it changed or is gone."""
        out, cut = bytearray(self.data), len(self.data)
        if kind == "forged-index":
            out = self.forge_index(out)
        for what in ([kind] if kind != "mixed" else [self.pick(SIMPLE) for _ in range(int(self.rng.integers(2, 4)))]):
            if what == "truncated":
                cut = min(cut, int(self.rng.integers(0, len(self.data))))
            elif what != "forged-index":
                getattr(self, what)(out)
        n = min(len(out), len(self.data))
        changed = np.ones(len(self.data), bool)
        changed[:n] = np.frombuffer(bytes(out[:n]), np.uint8) != np.frombuffer(self.data[:n], np.uint8)
        changed[cut:] = True
        return bytes(out[:cut]), changed

    def flipped(self, out: bytearray) -> None:
        for _ in range(int(self.rng.integers(1, 9))):
            out[int(self.rng.integers(len(out)))] ^= 1 << int(self.rng.integers(8))

    def overwritten(self, out: bytearray) -> None:
        for _ in range(int(self.rng.integers(1, 4))):
            at = int(self.rng.integers(len(out)))
            n = len(out[at:at + int(self.rng.integers(1, 700))])
            out[at:at + n] = self.rng.bytes(n) if self.rng.random() < 0.5 else bytes(n)

    def length(self, out: bytearray) -> None:
        """A record's head length (u32) or payload length (u64): huge, past the end, exactly
        to the end, zero, or random."""
        r = self.pick(self.records)
        left = len(out) - r.at
        if self.rng.random() < 0.3:
            out[r.at + 5:r.at + 9] = struct.pack("<I", self.pick([0, 2**32 - 1, 1 << 20, left, left + 1,
                                                                   int(self.rng.integers(0, 2**32))]))
        else:
            out[r.at + 9:r.at + 17] = struct.pack("<Q", self.pick([0, 2**64 - 1, 2**63, 1 << 30, left - REC.size,
                                                                    left * 2, int(self.rng.integers(0, 2**62))]))

    def index(self, out: bytearray) -> None:
        """The index's table or head, the trailer's offset, or the header's meta length."""
        k = int(self.rng.integers(3))
        if k == 0:
            at = int(self.rng.integers(self.table_record.at, self.table_record.end))
            out[at] ^= 1 << int(self.rng.integers(8))
        elif k == 1:
            out[-8:] = struct.pack("<Q", self.pick([0, 2**64 - 1, len(out), len(out) - 12, self.frames[0].at,
                                                     int(self.rng.integers(0, len(out)))]))
        else:
            out[len(MAGIC):len(MAGIC) + 4] = struct.pack("<I", self.pick([0, 2**32 - 1, len(out),
                                                                          int(self.rng.integers(0, 4096))]))

    def forge_index(self, out: bytearray) -> bytearray:
        """An index record that checks out (its CRC recomputed) and lies: offsets shuffled,
        repeated, past the end or into other records, or a frame count of its own."""
        table = np.array([(f.at, f.number / 15) for f in self.frames], dtype=[("offset", "<u8"), ("t", "<f8")])
        k = int(self.rng.integers(4))
        if k == 0:
            self.rng.shuffle(table)
        elif k == 1:
            table["offset"][int(self.rng.integers(len(table)))] = self.pick([0, 2**64 - 1, len(out), 17,
                                                                             self.table_record.at - 1])
        elif k == 2:
            table["offset"] += np.uint64(self.rng.integers(1, 64))
        else:
            table = np.repeat(table, int(self.rng.integers(2, 50)))
        frames = len(table) if self.rng.random() < 0.8 else int(self.rng.integers(0, 2**40))
        head = json.dumps({"frames": frames}).encode()
        body = table.tobytes()
        record = (REC.pack(RECORD, INDEX, len(head), len(body)) + head + body
                  + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))))
        return out[:self.table_record.at] + record + TRAILER + struct.pack("<Q", self.table_record.at)


# -- playing --------------------------------------------------------------------------------
class Hang(BaseException):
    """A file read for longer than allowed (raised by a timer, through any ``except Exception``)."""


def _hang(signum, frame) -> None:
    raise Hang


@dataclass
class Played:
    refused: bool = False
    all_damaged: bool = False
    frames: dict[int, str] = field(default_factory=dict)  # frame number -> digest of its payload
    audio: dict[int, str] = field(default_factory=dict)  # audio record number -> digest of its PCM


def play(path: Path, rng: np.random.Generator, reads: int, seen: set[str]) -> Played:
    """The file as `holoport join --source` reads it: each frame's points, then a seek and a
    read; RecordingError is the module's documented refusal. A payload already in ``seen``
    is not decoded again: decoding is deterministic, it costs most of the time, and the
    codec has its own fuzz target. Then its sound, also where no frame plays: every audio
    record, the whole track, and (one file in ten) a few blocks as a player's microphone."""
    from holoport.point_sources import RecordingPoints

    played = Played()
    try:
        source = RecordingPoints(path, realtime=False, loop=False)
    except RecordingError:
        played.refused, source = True, None
    try:
        if source is not None:
            _play_frames(source, played, rng, reads, seen)
        with contextlib.suppress(RecordingError):
            recording = source.player.recording if source is not None else Recording(path)
            try:
                for sound in recording.audio_records():
                    played.audio[sound.number] = digest((sound.samples * 32768).astype("<i2").tobytes())
                recording.audio_track()
                recording.damage_summary()
            finally:
                recording.close()
        if played.audio and rng.random() < 0.1:
            with contextlib.closing(RecordingAudioSource(path, realtime=False, loop=True)) as mic:
                for _ in range(8):
                    mic.read()
    finally:
        if source is not None:
            source.close()
    return played


def _play_frames(source, played: Played, rng: np.random.Generator, reads: int, seen: set[str]) -> None:
    try:
        player = source.player
        for _ in range(reads):
            entry = player.read()
            if entry is None:
                break
            played.frames[int(entry.head.get("index", -1))] = key = digest(entry.payload)
            if key not in seen and (entry.kind == RGBD or entry.head.get("format") == CODEC_FORMAT):
                source.decode(entry)
                seen.add(key)
        player.seek(int(rng.integers(len(player.recording))))
        player.read()
    except RecordingError:
        played.all_damaged = True


@dataclass
class Tally:
    inputs: int = 0
    refused: int = 0
    all_damaged: int = 0
    crashed: int = 0
    hangs: int = 0
    memory: int = 0
    intact: int = 0
    played: int = 0
    lost_intact: int = 0
    wrong_played: int = 0
    audio_intact: int = 0
    audio_played: int = 0
    audio_lost_intact: int = 0
    audio_wrong_played: int = 0
    slowest: float = 0.0


def fuzz(args: argparse.Namespace, progress: bool = True) -> tuple[dict[str, Tally], Counter, float]:
    """Damage, write and play ``args.inputs`` files; tallies per kind, failures by message,
    peak resident memory."""
    reset_peak_rss()  # this run's peak, also when a longer-lived process (the tests) runs it
    tallies = {k: Tally() for k in KINDS}
    failures: Counter = Counter()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="holoport-fuzz-", dir=_fast_tmp()) as tmp:
        clean = Path(tmp) / "clean.hprec"
        if args.recording:
            clean.write_bytes(Path(args.recording).read_bytes())
        else:
            make_recording(clean, args.data, args.points)
        data = clean.read_bytes()
        records = layout(data)
        truth = {(r.kind == AUDIO, r.number): digest(data[r.end - 4 - _payload_length(data, r):r.end - 4])
                 for r in records if r.kind != INDEX}
        damager = Damager(data, records, rng)
        bad = Path(tmp) / "damaged.hprec"
        reads, seen = 4 * len(records), set()
        items = range(args.inputs)
        if progress:
            from rich.progress import track

            items = track(items, total=args.inputs, description="fuzzing recordings")
        with _quiet(), _timer():
            for i in items:
                kind = KINDS[i % len(KINDS)]
                damaged, changed = damager.damage(kind)
                bad.write_bytes(damaged)
                intact = {(r.kind == AUDIO, r.number) for r in damager.frames + damager.audio
                          if not changed[r.at:r.end].any()}
                _one(tallies[kind], kind, bad, intact, truth, rng, reads, seen, args, failures)
                if i % 256 == 0 and peak_rss_mb() > args.max_rss_mb and not tallies[kind].memory:
                    tallies[kind].memory += 1
                    failures[f"recording memory on {kind}: peak {peak_rss_mb():.0f} MB "
                             f"over {args.max_rss_mb:.0f} MB"] += 1
    peak = peak_rss_mb()
    if peak > args.max_rss_mb and not any(t.memory for t in tallies.values()):
        tallies[KINDS[-1]].memory += 1
        failures[f"recording memory: peak {peak:.0f} MB over {args.max_rss_mb:.0f} MB"] += 1
    return tallies, failures, peak


def _one(t: Tally, kind: str, path: Path, intact: set[tuple[bool, int]], truth: dict[tuple[bool, int], str],
         rng: np.random.Generator, reads: int, seen: set[str], args: argparse.Namespace, failures: Counter) -> None:
    """Play one damaged file and tally what happened against the ground truth (keys: (audio?,
    number))."""
    t.inputs += 1
    sound = {n for a, n in intact if a}
    intact = {n for a, n in intact if not a}
    t.intact += len(intact)
    t.audio_intact += len(sound)
    t0 = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, args.max_seconds)
    try:
        played = play(path, rng, reads, seen)
    except Hang:
        t.hangs += 1
        failures[f"recording hang on {kind}: over {args.max_seconds:g} s"] += 1
        return
    except Exception as exc:
        t.crashed += 1
        failures[f"recording crashed on {kind}: {type(exc).__name__}: {str(exc)[:200]}"] += 1
        return
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        t.slowest = max(t.slowest, time.perf_counter() - t0)
    t.refused += played.refused
    t.all_damaged += played.all_damaged
    t.played += len(played.frames.keys() & intact)
    t.lost_intact += len(intact - played.frames.keys())  # refused or not, every intact frame should play
    t.wrong_played += sum(truth.get((False, n)) != d for n, d in played.frames.items())
    t.audio_played += len(played.audio.keys() & sound)
    t.audio_lost_intact += len(sound - played.audio.keys())
    t.audio_wrong_played += sum(truth.get((True, n)) != d for n, d in played.audio.items())


def _payload_length(data: bytes, r: Record) -> int:
    return REC.unpack_from(data, r.at)[3]


def _fast_tmp() -> str | None:
    """Memory-backed /dev/shm where there is one: a file is written per input."""
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


@contextlib.contextmanager
def _quiet():
    """The reader warns about every damaged stretch: a hundred thousand times here."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _timer():
    previous = signal.signal(signal.SIGALRM, _hang)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


COLUMNS = ["target", "kind", "inputs", "refused", "all_damaged", "crashed", "hangs", "memory", "intact", "played",
           "lost_intact", "wrong_played", "audio_intact", "audio_played", "audio_lost_intact", "audio_wrong_played",
           "slowest_ms", "peak_rss_mb"]


def records(tallies: dict[str, Tally], failures: Counter, peak: float) -> list[dict]:
    rows = [{"target": "recording", "kind": k, "inputs": t.inputs, "refused": t.refused, "all_damaged": t.all_damaged,
             "crashed": t.crashed, "hangs": t.hangs, "memory": t.memory, "intact": t.intact, "played": t.played,
             "lost_intact": t.lost_intact, "wrong_played": t.wrong_played, "audio_intact": t.audio_intact,
             "audio_played": t.audio_played, "audio_lost_intact": t.audio_lost_intact,
             "audio_wrong_played": t.audio_wrong_played, "slowest_ms": t.slowest * 1e3,
             "peak_rss_mb": peak} for k, t in tallies.items()]
    total = {c: sum(r[c] for r in rows) for c in COLUMNS[2:-2]}
    total.update(target="recording", kind="all", slowest_ms=max(r["slowest_ms"] for r in rows), peak_rss_mb=peak,
                 failures=[f"{n} x {m}" for m, n in failures.most_common(50)])
    return [*rows, total]


def failed(rows: list[dict], strict: bool) -> int:
    """Crashes, hangs and memory; with ``strict`` also intact frames or audio records lost and
    wrong ones played."""
    keys = ("crashed", "hangs", "memory", *(("lost_intact", "wrong_played", "audio_lost_intact",
                                              "audio_wrong_played") if strict else ()))
    return sum(r[k] for r in rows if r["kind"] == "all" for k in keys)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", type=int, default=10_000, help="damaged files to play (default 10,000)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of PLY frames the cloud records are made from (default <data>/pointclouds/mvub)")
    parser.add_argument("--recording", type=Path, default=None,
                        help="damage this (undamaged) recording instead of making one")
    parser.add_argument("--points", type=int, default=1000, help="points in the cloud records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=5.0, help="longest a file may take to play")
    parser.add_argument("--max-rss-mb", type=float, default=1024.0, help="peak memory allowed")
    parser.add_argument("--strict", action="store_true", help="intact frames lost or wrong frames played fail too")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    rows = records(*fuzz(args))
    emit(rows, COLUMNS, f"Fuzzing the recording reader: {args.inputs:,} damaged files", args)
    for failure in rows[-1]["failures"]:
        print(f"FAILED {failure}")
    n = failed(rows, args.strict)
    print(f"{n} failure(s); intact frames lost {rows[-1]['lost_intact']}, wrong frames played "
          f"{rows[-1]['wrong_played']}; intact audio records lost {rows[-1]['audio_lost_intact']}, wrong ones "
          f"played {rows[-1]['audio_wrong_played']}")
    return 1 if n else 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
