"""Frames the octree codec was not tuned on, on an integer grid, for ``holoport bench codec``.

The geometry contexts and the mixer were tuned on three MVUB frames (docs/codec.md), and
the other three validate; all six are one capture rig's voxelized upper bodies. This tool
makes frames of other sensors from ``../shared/data``, laid out as the MVUB PLYs are
(float32 x y z holding integers on a ``2**bits`` grid, uchar colour), so that the same
benchmark, with ``--gpcc`` running tmc3 beside it, says whether the codec's lead holds on
what it has never seen:

- ``kinect-person``: the Kinect v1 frame with a person (PCL's ``person.pcd``), no colour
  (grey: only its geometry means anything);
- ``slambook-N``: Kinect v1 RGB-D frames of a room (slambook), coloured;
- ``redwood-0``: a rendered RGB-D frame with sensor-like noise (Open3D's Redwood sample);
- ``tum``: a real RGB-D frame in TUM's layout (Open3D's sample).

Each cloud keeps the points within ``--max-depth`` metres of its camera and is voxelized
over its own bounding cube (cells merged, colours averaged, as the codec does). Run::

    python -m benchmarks.grid_frames --out /tmp/unseen
    holoport bench codec --data /tmp/unseen --gpcc TMC3 --no-draco --json codec-unseen.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from capture.ply import write_ply
from codec._voxel_kernels import cell_centres, voxelize
from holoport.data import data_root


def grid_frame(positions: np.ndarray, colors: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer positions (float32, 0 .. 2**bits - 1) and mean colours of the occupied cells
    of the cloud's bounding cube cut into ``2**bits`` cells a side."""
    if len(positions) == 0:
        raise ValueError("an empty cloud has no grid")
    lo = positions.min(axis=0).astype(np.float64)
    side = float((positions.max(axis=0) - lo).max()) * (1 + 1e-6) or 1.0
    cell = side / (1 << bits)
    codes, means, _ = voxelize(np.ascontiguousarray(positions, np.float64), np.ascontiguousarray(colors),
                               lo, cell, bits)
    grid = np.floor(cell_centres(codes, np.zeros(3), 1.0)).astype(np.float32)
    return grid, means


def sources(root: Path, max_depth: float):
    """(name, positions, colours) of every source found under ``root`` (the data folder)."""
    import open3d as o3d

    from capture.backproject import rgbd_to_points
    from capture.sequences import ImageSequence

    person = root / "pointclouds" / "kinect" / "person.pcd"
    if person.exists():
        p = np.asarray(o3d.io.read_point_cloud(str(person)).points)
        p = p[np.isfinite(p).all(axis=1) & (p[:, 2] > 0.2) & (p[:, 2] < max_depth)]  # as the RGB-D frames
        yield "kinect-person", p.astype(np.float32), np.full((len(p), 3), 128, np.uint8)
    for folder, frames, name in (("slambook", (0, 2, 4), "slambook"), ("redwood-synthetic", (0,), "redwood"),
                                 ("tum", (0,), "tum")):
        path = root / "rgbd" / folder
        if not path.is_dir():
            continue
        seq = ImageSequence(path)
        for i in frames:
            if i >= len(seq):
                continue
            pos, col = rgbd_to_points(seq.frame(i), box=None, depth_range=(0.2, max_depth))
            yield (f"{name}-{i}" if len(frames) > 1 or name != "tum" else name), pos, col


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="the data folder (default: ../shared/data)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PLY frames")
    parser.add_argument("--bits", type=int, default=9, help="grid bits a side (default 9, as sarah_9bit)")
    parser.add_argument("--max-depth", type=float, default=4.0, help="metres from the camera kept (default 4)")
    args = parser.parse_args(argv)
    if not 4 <= args.bits <= 12:
        parser.error("--bits must be in 4..12")
    root = args.data or data_root()
    args.out.mkdir(parents=True, exist_ok=True)
    made = 0
    for name, pos, col in sources(root, args.max_depth):
        grid, colors = grid_frame(pos, col, args.bits)
        write_ply(args.out / f"{name}_{args.bits}bit.ply", grid, colors)
        print(f"{name}_{args.bits}bit.ply: {len(pos)} points -> {len(grid)} cells")
        made += 1
    if not made:
        print(f"no sources under {root}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
