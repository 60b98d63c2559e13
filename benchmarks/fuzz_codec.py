"""Fuzz the codec decoders with random bytes, truncations and bit flips of real streams.

Every input must either decode or raise ``codec.CodecError``: any other exception, a decode
slower than --max-seconds, or a peak resident memory above --max-rss-mb is a failure.
Half of the bit-flip inputs get a recomputed container checksum, so that the mutation
reaches the codec's own parsing and entropy decoding instead of stopping at the CRC.

Records (--json): one per kind of input (random, truncated, flipped, flipped+crc): kind,
inputs, decoded, rejected, crashed, too_slow (decodes over --max-seconds), slowest_ms,
peak_rss_mb (the whole run's; over --max-rss-mb fails the run).

Run: python -m benchmarks.fuzz_codec --inputs 100000 [--data DIR] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

import codec
from benchmarks.common import add_output_arguments, emit, peak_rss_mb, reset_peak_rss
from capture.ply import read_ply
from codec import octree
from holoport.data import data_root


def seed_streams(data: Path | None, points: int) -> list[bytes]:
    """Streams of every codec configuration, from a real frame cut down to ``points``."""
    pos, col = seed_cloud(data, points)
    codecs = [codec.BaselineCodec(), codec.OctreeCodec(depth=9, slices=1),
              codec.OctreeCodec(depth=9, slices=3, color_step=16),
              codec.LayeredOctreeCodec(depth=9, color_step=16)]
    with contextlib.suppress(ValueError):  # the Draco plug-in, where DracoPy is installed
        codecs += [codec.get_codec("draco", compression_level=level) for level in (1, 7)]
    return [c.encode(pos, col) for c in codecs]


def seed_cloud(data: Path | None, points: int) -> tuple[np.ndarray, np.ndarray]:
    """A real frame (the first PLY in ``data``, else a random blob) cut down to ``points``,
    placed in the codecs' capture volume; the other fuzz targets encode their seeds from it."""
    frames = sorted((data or data_root() / "pointclouds" / "mvub").glob("*.ply"))
    if frames:
        pos, col = read_ply(frames[0])
        pos = pos / (pos.max() + 1) * 2.0 + np.array([-1.0, 0.0, -1.0], np.float32)
    else:  # no data: a random blob still exercises every parser
        rng = np.random.default_rng(0)
        pos = (rng.uniform(-0.5, 0.5, (points, 3)) + np.array([0.0, 1.0, 0.0])).astype(np.float32)
        col = rng.integers(0, 256, (points, 3), dtype=np.uint8)
    keep = np.random.default_rng(1).choice(len(pos), min(points, len(pos)), replace=False)
    return pos[keep], col[keep]


def with_crc(buf: bytearray) -> bytes:
    body = bytes(buf[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


KINDS = ("random", "truncated", "flipped", "flipped+crc")


def mutate(s: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One input of ``kind`` (a name from KINDS) made from the stream ``s``; the other fuzz
    targets (benchmarks.fuzz_wire, fuzz_recording) reuse it for the payloads they carry."""
    if kind == "random":
        return rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes()
    if kind == "truncated":
        return s[: int(rng.integers(0, len(s)))]
    buf = bytearray(s)
    for _ in range(int(rng.integers(1, 8))):
        j = int(rng.integers(len(buf)))
        buf[j] ^= 1 << int(rng.integers(8))
    return bytes(buf) if kind == "flipped" else with_crc(buf)


def mutations(streams: list[bytes], n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = KINDS[i % 4]
        s = streams[int(rng.integers(len(streams)))]
        yield kind, mutate(s, kind, rng)


@contextlib.contextmanager
def color_parts_from(voxels: int):
    """Small seeds code their colour in parts too, so the fuzz reaches that parser (the
    codec splits at 2 x ``octree.COLOR_PART_MIN`` voxels; frames of a real size do)."""
    saved = octree.COLOR_PART_MIN
    octree.COLOR_PART_MIN = voxels
    try:
        yield
    finally:
        octree.COLOR_PART_MIN = saved


def run(inputs: int, data: Path | None, points: int, seed: int, max_seconds: float,
        max_rss_mb: float, progress: bool = True) -> dict:
    with color_parts_from(max(16, points // 4)):
        return _run(inputs, data, points, seed, max_seconds, max_rss_mb, progress)


def _run(inputs: int, data: Path | None, points: int, seed: int, max_seconds: float,
         max_rss_mb: float, progress: bool) -> dict:
    reset_peak_rss()  # this run's peak, also when a longer-lived process (the tests) runs it
    streams = seed_streams(data, points)
    for s in streams:  # the seeds themselves decode
        codec.decode(s)
    counts: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    slowest = 0.0
    slowest_by_kind: dict[str, float] = {}
    too_slow: dict[str, int] = {}
    it = mutations(streams, inputs, seed)
    if progress:
        from rich.progress import track

        it = track(it, total=inputs, description="fuzzing decoders")
    for kind, blob in it:
        t0 = time.perf_counter()
        try:
            codec.decode(blob)
            outcome = "decoded"
        except codec.CodecError:
            outcome = "rejected"
        except Exception as exc:
            outcome = "crashed"
            failures.append(f"{kind}: {type(exc).__name__}: {exc}")
        dt = time.perf_counter() - t0
        slowest = max(slowest, dt)
        slowest_by_kind[kind] = max(slowest_by_kind.get(kind, 0.0), dt)
        if dt > max_seconds:
            failures.append(f"{kind}: decode took {dt:.2f} s")
            too_slow[kind] = too_slow.get(kind, 0) + 1
        counts.setdefault(kind, {}).setdefault(outcome, 0)
        counts[kind][outcome] += 1
    peak_mb = peak_rss_mb()
    if peak_mb > max_rss_mb:
        failures.append(f"peak resident memory {peak_mb:.0f} MB exceeds {max_rss_mb:.0f} MB")
    return {"inputs": inputs, "counts": counts, "slowest_s": slowest, "slowest_s_by_kind": slowest_by_kind,
            "too_slow_by_kind": too_slow,
            "peak_rss_mb": peak_mb, "failures": failures[:50], "failed": len(failures)}


COLUMNS = ["kind", "inputs", "decoded", "rejected", "crashed", "too_slow", "slowest_ms", "peak_rss_mb"]


def records(summary: dict) -> list[dict]:
    """The summary as one record per kind of input."""
    return [{"kind": kind, "inputs": sum(outcomes.values()), "decoded": outcomes.get("decoded", 0),
             "rejected": outcomes.get("rejected", 0), "crashed": outcomes.get("crashed", 0),
             "too_slow": summary["too_slow_by_kind"].get(kind, 0),
             "slowest_ms": summary["slowest_s_by_kind"][kind] * 1e3, "peak_rss_mb": summary["peak_rss_mb"]}
            for kind, outcomes in summary["counts"].items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=None, help="folder of PLY frames to seed from")
    parser.add_argument("--points", type=int, default=3000, help="points in the seed streams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=2.0, help="slowest decode allowed")
    parser.add_argument("--max-rss-mb", type=float, default=1024.0, help="peak memory allowed")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    summary = run(args.inputs, args.data, args.points, args.seed, args.max_seconds, args.max_rss_mb)
    emit(records(summary), COLUMNS, f"Fuzzing the decoders: {summary['inputs']:,} inputs", args)
    for failure in summary["failures"]:
        print(f"FAILED {failure}")
    print(f"{summary['failed']} failure(s); slowest decode {summary['slowest_s'] * 1e3:.1f} ms, "
          f"peak resident memory {summary['peak_rss_mb']:.0f} MB")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
