"""Capture rate: frames per second of the capture path, stage by stage and whole.

The path a camera frame takes before the codec: decode (colour JPEG and 16-bit depth, as
an Azure Kinect or a recording delivers them), register (colour resampled onto the depth
image through the colour camera's lens and extrinsics), back-project (the per-pixel ray
table, 0.3-3 m), cut (``capture.cut.PersonCut``: floor, outliers, largest cluster)
and voxelize (one point per 5 mm cell, mean colour). ``total`` runs them all in turn.

Frames: the synthetic person in the synthetic room (``capture.SyntheticCamera``) at
640x480, 640x576 and 1280x720 depth, 1280x720 colour; and, when the shared data is there,
the real Azure Kinect recording (640x576 depth, 1280x720 MJPEG colour, its own lenses).

Cores: 1 = one worker, numba on one thread; 2 = numba on two threads and two workers
taking frames in turn (the kernels release the GIL), which is how two cameras would run.
fps = frames / wall time over --frames frames after a warm-up.

Records: source, stage, resolution, cores, fps, ms (per frame, = workers / fps), points
(after the stage).

Run: python -m benchmarks.capture_rate --json capture.json --markdown capture.md --plot capture.png
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main
from holoport.console import wide_console
from holoport.data import data_root

COLUMNS = ["source", "resolution", "cores", "stage", "fps", "ms", "points"]
STAGES = ["decode", "register", "backproject", "cut", "voxelize", "total"]
RESOLUTIONS = {"640x480": (640, 480, 525.0), "640x576": (640, 576, 504.0), "1280x720": (1280, 720, 640.0)}
VOXEL = 0.005  # metres: the octree codec's default grid is about this fine over a person


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help="shared data folder (default ../shared/data or $HOLOPORT_DATA); its "
                        "rgbd/azure-kinect/recording.mkv is benchmarked when present")
    parser.add_argument("--resolutions", nargs="*", default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    parser.add_argument("--cores", type=int, nargs="*", default=[1, 2], choices=[1, 2])
    parser.add_argument("--frames", type=int, default=30, help="frames timed per stage (default 30)")
    add_output_arguments(parser)


@dataclasses.dataclass
class Input:
    """One camera frame as it arrives: JPEG colour and the raw depth bytes, with the lenses."""

    jpeg: bytes
    depth_bytes: bytes
    depth_k: object
    color_k: object
    depth_to_color: np.ndarray
    pose: np.ndarray
    depth_scale: float


def synthetic_inputs(resolution: str, n: int) -> list[Input]:
    """The synthetic person. Colour is a 1280x720 view registered as if through an Azure
    Kinect's colour lens 3 cm to the side: the image is rendered through a pinhole, so the
    colours land a little off, but registration does all of its real work, which is what
    is timed."""
    import cv2

    from capture import BodyShape, Intrinsics, SyntheticCamera

    w, h, f = RESOLUTIONS[resolution]
    depth_k = Intrinsics(w, h, f, f, (w - 1) / 2, (h - 1) / 2)
    color_k = Intrinsics(1280, 720, 612.0, 612.0, 639.3, 365.9,
                         (0.330, -2.489, -1.6e-4, -1.3e-4, 1.454, 0.209, -2.303, 1.375))
    color_cam = SyntheticCamera(BodyShape.preset(1), Intrinsics(1280, 720, 612.0, 612.0, 639.3, 365.9), seed=1)
    cam = SyntheticCamera(BodyShape.preset(1), depth_k, seed=1)
    shift = np.eye(4)
    shift[0, 3] = -0.032
    out = []
    for i in range(n):
        frame = cam.read(i / 15)
        color = color_cam.read(i / 15).color
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(color[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(Input(jpeg.tobytes(), frame.depth.astype(">u2").tobytes(), depth_k, color_k, shift,
                         frame.camera_pose, frame.depth_scale))
    return out


def kinect_inputs(path: Path, n: int) -> list[Input]:
    """The real recording's one capture, repeated: MJPEG packet and depth bytes as stored."""
    import av

    from capture.azure_kinect import DEPTH_SCALE, AzureKinectRecording
    from capture.geometry import look_at_pose

    with AzureKinectRecording(path) as rec:
        cal = rec.calibration
    packets = {}
    with av.open(str(path)) as c:
        for packet in c.demux():
            title = packet.stream.metadata.get("title")
            if packet.size and title in ("COLOR", "DEPTH") and title not in packets:
                packets[title] = bytes(packet)
    # the camera 1.3 m above the floor, looking level: the participant frame the cut expects
    pose = look_at_pose((0.0, 1.3, 0.0), (0.0, 1.3, 1.0))
    one = Input(packets["COLOR"], packets["DEPTH"], cal.depth, cal.color, cal.depth_to_color, pose, DEPTH_SCALE)
    return [one] * n


def stage_functions(voxel: float) -> dict[str, Callable]:
    """Each stage as a function of the previous stage's output."""
    import cv2

    from capture import RGBDFrame, rgbd_to_points
    from capture.cut import voxel_downsample
    from capture.lens import register
    from holoport.point_sources import PERSON_RANGE, person_cut

    def decode(x: Input):
        color = cv2.imdecode(np.frombuffer(x.jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        depth = np.frombuffer(x.depth_bytes, ">u2").astype(np.uint16).reshape(x.depth_k.height, x.depth_k.width)
        return x, np.ascontiguousarray(color), depth

    def reg(args):
        x, color, depth = args
        c, d = register(depth, x.depth_scale, x.depth_k, color, x.color_k, x.depth_to_color)
        return RGBDFrame(d, c, x.depth_k, x.depth_scale, x.pose, 0.0)

    def backproject(frame):
        return frame, rgbd_to_points(frame, box=None, depth_range=PERSON_RANGE)

    def cut(args):  # as holoport.point_sources cuts a real camera's frames (crop "cut")
        frame, (positions, colors) = args
        return person_cut(frame.camera_pose).apply(positions, colors)[:2]

    def voxelize(cloud):
        return voxel_downsample(cloud[0], cloud[1], voxel)

    return {"decode": decode, "register": reg, "backproject": backproject, "cut": cut, "voxelize": voxelize}


def _points(result) -> int:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], np.ndarray):
        return len(result[0])
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], tuple):
        return len(result[1][0])
    return 0


def throughput(fn: Callable, items: list, workers: int) -> tuple[float, list]:
    """Frames per second of ``fn`` over ``items`` with ``workers`` threads."""
    for item in items[:2]:  # warm-up (compiles, fills caches)
        fn(item)
    t0 = time.perf_counter()
    if workers == 1:
        results = [fn(item) for item in items]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(fn, items))
    return len(items) / (time.perf_counter() - t0), results


def measure(source: str, resolution: str, inputs: list[Input], cores: int) -> list[dict]:
    import numba

    numba.set_num_threads(min(cores, numba.config.NUMBA_NUM_THREADS))
    stages = stage_functions(VOXEL)
    records, data = [], inputs
    for stage in STAGES[:-1]:
        fps, data = throughput(stages[stage], data, cores)
        records.append({"source": source, "resolution": resolution, "cores": cores, "stage": stage,
                        "fps": round(fps, 1), "ms": round(1e3 * cores / fps, 2), "points": _points(data[-1])})

    def total(x: Input):
        out = x
        for stage in STAGES[:-1]:
            out = stages[stage](out)
        return out

    fps, results = throughput(total, inputs, cores)
    records.append({"source": source, "resolution": resolution, "cores": cores, "stage": "total",
                    "fps": round(fps, 1), "ms": round(1e3 * cores / fps, 2), "points": _points(results[-1])})
    return records


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["source"], r["resolution"]) for r in records})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, cores in zip(axes, (1, 2), strict=True):
        width = 0.8 / max(1, len(groups))
        for g, (source, res) in enumerate(groups):
            fps = [next((r["fps"] for r in records if (r["source"], r["resolution"], r["cores"], r["stage"])
                         == (source, res, cores, s)), 0) for s in STAGES]
            ax.bar(np.arange(len(STAGES)) + g * width, fps, width, label=f"{source} {res}")
        ax.set_xticks(np.arange(len(STAGES)) + 0.4 - width / 2, STAGES)
        ax.set_yscale("log")
        ax.axhline(30, color="k", lw=0.8, ls="--")
        ax.set_title(f"{cores} core{'s' if cores > 1 else ''}")
    axes[0].set_ylabel("frames per second (log); dashed: 30 fps")
    axes[1].legend(fontsize=8)
    fig.suptitle("Capture path: frames per second by stage")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(args: argparse.Namespace) -> int:
    from rich.progress import track

    if args.frames < 3:
        raise ValueError("--frames must be at least 3")
    data = args.data or data_root()
    jobs = [("synthetic", res) for res in args.resolutions]
    mkv = data / "rgbd" / "azure-kinect" / "recording.mkv"
    if mkv.is_file():
        jobs.append(("azure-kinect", "640x576"))
    else:
        wide_console().print(f"[yellow]no Azure Kinect recording at {mkv}: synthetic frames only")
    records = []
    for source, res in track(jobs, description="capture path"):
        inputs = synthetic_inputs(res, args.frames) if source == "synthetic" else kinect_inputs(mkv, args.frames)
        for cores in args.cores:
            records += measure(source, res, inputs, cores)
    emit(records, COLUMNS, "Capture path: frames per second (ms per frame per worker)", args, plot=plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
