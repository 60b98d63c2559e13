"""Peak resident memory of encoding and decoding a large frame with the octree codec.

Builds a frame of about --points points by refining a real MVUB frame to a grid one level
finer (each voxel becomes several of its 8 children), then encodes and decodes it, each in
a fresh process, and reports the peak resident set size of each process beside that of a
process that only imported the codec and loaded the frame (each process first codes a
1,000-point sample so that loading the compiled kernels is not timed).

Run: python -m benchmarks.codec_memory --points 1000000 --json memory.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit
from capture.ply import read_ply
from holoport.data import data_root


def make_frame(data: Path | None, points: int) -> tuple[np.ndarray, np.ndarray, int]:
    frames = sorted((data or data_root() / "pointclouds" / "mvub").glob("*.ply"))
    if not frames:
        raise SystemExit("no PLY frames found; pass --data DIR or set HOLOPORT_DATA")
    pos, col = read_ply(max(frames, key=lambda p: p.stat().st_size))
    depth = int(np.ceil(np.log2(pos.max() + 1))) + 1
    rng = np.random.default_rng(0)
    per = max(1, min(8, -(-points // len(pos))))  # at least --points
    offsets = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)])
    picks = np.stack([rng.permutation(8)[:per] for _ in range(len(pos))])
    fine = (2 * pos[:, None, :] + offsets[picks]).reshape(-1, 3).astype(np.float32)
    return fine, np.repeat(col, per, axis=0), depth


_CHILD = """
import sys, time, resource, numpy as np
from codec import OctreeCodec, decode
d = np.load(sys.argv[2]); depth = int(d["depth"])
c = OctreeCodec(depth=depth, origin=(-0.5,) * 3, size=float(2 ** depth), color_step=int(sys.argv[3]))
stream = open(sys.argv[4], "rb").read() if sys.argv[1] == "decode" else None
if sys.argv[1] != "load only":  # load the compiled kernels first, so ms is the coding alone
    decode(c.encode(d["positions"][:1000], d["colors"][:1000]))
t = time.perf_counter()
if sys.argv[1] == "encode":
    open(sys.argv[4], "wb").write(c.encode(d["positions"], d["colors"]))
elif sys.argv[1] == "decode":
    decode(stream)
ms = (time.perf_counter() - t) * 1e3
print(ms, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run(args: argparse.Namespace) -> int:
    pos, col, depth = make_frame(args.data, args.points)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        frame, stream = Path(tmp) / "frame.npz", Path(tmp) / "frame.hpc"
        np.savez(frame, positions=pos, colors=col, depth=depth)
        for step in args.steps:
            for op in ("load only", "encode", "decode"):
                out = subprocess.run([sys.executable, "-c", _CHILD, op, str(frame), str(step), str(stream)],
                                     capture_output=True, text=True, check=True).stdout.split()
                records.append({"operation": op, "points": len(pos), "depth": depth,
                                "color_step": step, "ms": float(out[0]), "peak_rss_mb": float(out[1])})
    emit(records, ["operation", "points", "depth", "color_step", "ms", "peak_rss_mb"],
         "Octree codec memory on a large frame", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="folder of PLY frames")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, nargs="*", default=[1, 16], help="colour steps")
    add_output_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
