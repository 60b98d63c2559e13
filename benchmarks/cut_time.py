"""Cut time: the person cut (capture.cut.PersonCut) alone, on a real and a synthetic frame.

Frames:
- ``person.pcd`` (PCL's Kinect sample in <data>/pointclouds/kinect: a head and shoulders
  before a room), whole, with the cut for a level camera at the origin that keeps the
  largest cluster within 1 m (as tests/test_cut.py cuts it);
- ``synthetic 640x576, whole``: the synthetic person's depth image back-projected without any
  crop (the room included), cut for the synthetic camera's pose;
- ``synthetic 640x576, 0.3-3 m``: the same after the depth range a real camera's frames get
  first (holoport.point_sources.PERSON_RANGE), as ``holoport join`` cuts them;
- with --open3d, Open3D doing the same job on person.pcd the obvious way (voxel_down_sample
  at each of --open3d-voxels, segment_plane, cluster_dbscan): the yardstick the numba cut
  replaced (whose own outlier and cluster grids are 2.5 cm).
Also ``numpy argsort`` of 150,000 random int64 voxel keys: what the cut's radix sort avoids.

Each is run --runs times (after one warm-up) with numba on --cores threads; records: frame,
cores, points_in, points_out, ms_median, ms_min, ms_max, load_1min (the machine's load
average at the start: the figures are only as quiet as the machine was).

Run: python -m benchmarks.cut_time --open3d --json docs/bench/cut.json --markdown docs/bench/cut.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main
from holoport.data import data_root

COLUMNS = ["frame", "cores", "points_in", "points_out", "ms_median", "ms_min", "ms_max", "load_1min"]
UP_CV = (0.0, -1.0, 0.0)  # "up" for a level camera in OpenCV camera coordinates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per frame")
    parser.add_argument("--cores", type=int, nargs="*", default=[1, 2], help="numba threads")
    parser.add_argument("--open3d", action="store_true", help="also time Open3D's voxelize + RANSAC + DBSCAN")
    parser.add_argument("--open3d-voxels", type=float, nargs="*", default=[0.03, 0.01],
                        help="Open3D's voxel sizes, metres (default 0.03 0.01)")
    add_output_arguments(parser)


def timed(fn, runs: int) -> tuple[list[float], object]:
    result = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times, result


def frames(data: Path) -> list[tuple[str, np.ndarray, np.ndarray, object]]:
    from capture import BodyShape, SyntheticCamera, rgbd_to_points
    from capture.cut import PersonCut
    from holoport.point_sources import PERSON_RANGE, person_cut

    out = []
    pcd = data / "pointclouds" / "kinect" / "person.pcd"
    if pcd.is_file():
        import open3d as o3d

        pos = np.asarray(o3d.io.read_point_cloud(str(pcd)).points, np.float32)
        pos = pos[np.isfinite(pos).all(axis=1)]
        out.append(("person.pcd", pos, np.full((len(pos), 3), 128, np.uint8),
                    PersonCut.for_camera(np.eye(4), up=UP_CV, cluster_within=1.0)))
    frame = SyntheticCamera(BodyShape()).read(0.0)
    cut = person_cut(frame.camera_pose)
    size = f"{frame.depth.shape[1]}x{frame.depth.shape[0]}"
    out.append((f"synthetic {size}, whole", *rgbd_to_points(frame, box=None), cut))
    out.append((f"synthetic {size}, 0.3-3 m", *rgbd_to_points(frame, box=None, depth_range=PERSON_RANGE), cut))
    return out


def open3d_cut(positions: np.ndarray, voxel: float):
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(positions.astype(np.float64)))
    down = cloud.voxel_down_sample(voxel)
    _, inliers = down.segment_plane(0.02, 3, 200)  # RANSAC: the floor, or the largest plane
    rest = down.select_by_index(inliers, invert=True)
    labels = np.asarray(rest.cluster_dbscan(eps=0.05, min_points=1))
    return np.bincount(labels[labels >= 0]).max() if len(labels) else 0


def run(args: argparse.Namespace) -> int:
    import numba

    load = os.getloadavg()[0]
    data = args.data or data_root()
    records = []
    inputs = frames(data)
    if not any(name == "person.pcd" for name, *_ in inputs):
        print(f"no {data / 'pointclouds' / 'kinect' / 'person.pcd'}: synthetic frames only")
    for cores in args.cores:
        numba.set_num_threads(min(cores, numba.config.NUMBA_NUM_THREADS))
        for name, pos, col, cut in inputs:
            times, (kept, _, _) = timed(lambda cut=cut, pos=pos, col=col: cut.apply(pos, col), args.runs)
            records.append({"frame": name, "cores": cores, "points_in": len(pos), "points_out": len(kept),
                            "ms_median": statistics.median(times), "ms_min": min(times), "ms_max": max(times),
                            "load_1min": load})
    keys = np.random.default_rng(0).integers(0, 1 << 40, 150_000)
    times, _ = timed(lambda: np.argsort(keys), args.runs)
    records.append({"frame": "numpy argsort, 150,000 int64 keys", "cores": 1, "points_in": len(keys),
                    "points_out": None, "ms_median": statistics.median(times), "ms_min": min(times),
                    "ms_max": max(times), "load_1min": load})
    if args.open3d:
        pcd = next((p for n, p, *_ in inputs if n == "person.pcd"), None)
        for voxel in args.open3d_voxels if pcd is not None else ():
            times, largest = timed(lambda voxel=voxel: open3d_cut(pcd, voxel), max(1, min(args.runs, 5)))
            records.append({"frame": f"person.pcd, Open3D {voxel * 100:g} cm voxels + RANSAC + DBSCAN",
                            "cores": os.cpu_count(), "points_in": len(pcd), "points_out": int(largest),
                            "ms_median": statistics.median(times), "ms_min": min(times), "ms_max": max(times),
                            "load_1min": load})
    emit(records, COLUMNS, f"Person cut: ms per frame over {args.runs} runs (load average {load:.2f})", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
