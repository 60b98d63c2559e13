"""Render rate: frames per second of the splat renderer and of the browser viewer.

The scene: the room with four remote participants at their seats, seen from seat 0 (the
first-person view a participant has), each participant a real MVUB upper body (sarah_9bit
by default; --data DIR) at its true size (2 mm voxels: 0.70 m from waist to crown),
standing with its crown 1.75 m up, resampled to total/4 points in the file's own order
(the codec's decoders give Morton order). ``splat`` is the side of every splat in pixels
(1, 3, 5), or ``auto``: a side from each point's depth and its cloud's voxel size, as
participants render decoded clouds. Cores: numba's thread count (1 or 2). fps = frames / wall time over
--seconds after a warm-up, everything included (room layer copy, splatting, merging,
crack filling, unpacking).

The browser viewer (render/browser.py) is measured in headless Chromium with software
WebGL (SwiftShader) when a chromium binary is found: the page's own frame rate.

Records: renderer (splat | browser), points, resolution, splat, cores, fps, ms.

Run: python -m benchmarks.render_fps --json render.json --markdown render.md --plot render.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main
from capture.ply import read_ply
from holoport.console import wide_console
from holoport.data import data_root

COLUMNS = ["renderer", "points", "resolution", "splat", "cores", "fps", "ms"]
RESOLUTIONS = {"1280x720": (1280, 720), "1920x1080": (1920, 1080)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="a PLY frame, or a folder of them (default: "
                        "../shared/data/pointclouds/mvub/sarah_9bit.ply)")
    parser.add_argument("--points", type=int, nargs="*", default=[100_000, 250_000, 500_000, 1_000_000, 2_000_000],
                        help="total points over the four participants")
    parser.add_argument("--resolutions", nargs="*", default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    parser.add_argument("--splats", nargs="*", default=["auto", "1", "3", "5"], help="auto or odd pixel sizes")
    parser.add_argument("--cores", type=int, nargs="*", default=[1, 2], choices=[1, 2])
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement (default 1.5)")
    parser.add_argument("--browser", type=int, nargs="*", default=[100_000, 200_000],
                        help="points for the browser viewer in headless Chromium (none: skip)")
    add_output_arguments(parser)


VOXEL_M = 0.002  # metres per voxel of a 9-bit MVUB frame: its upper body is then 0.70 m tall


def person(data: Path | None) -> tuple[np.ndarray, np.ndarray, float]:
    """An MVUB upper body in a participant's frame (y up, facing +z, crown 1.75 m above the
    floor under them, as a standing adult's), at VOXEL_M metres a 9-bit voxel (twice that
    for 8-bit frames); returns positions, colours and the voxel size in metres."""
    path = data or data_root() / "pointclouds" / "mvub" / "sarah_9bit.ply"
    if path.is_dir():
        frames = sorted(path.glob("*.ply"))
        if not frames:
            raise SystemExit(f"no PLY frames in {path}; pass --data FILE_OR_DIR or set HOLOPORT_DATA")
        path = max(frames, key=lambda p: p.stat().st_size)
    if not path.is_file():
        raise SystemExit(f"no PLY frame at {path}; pass --data FILE_OR_DIR or set HOLOPORT_DATA")
    pos, col = read_ply(path)
    bits = max(1, int(np.ceil(np.log2(float(pos.max()) + 1))))
    voxel = VOXEL_M * 2 ** (9 - bits)
    # MVUB frames have z up and face +y: turn them to y up, facing +z (a rotation)
    pos = np.stack([-pos[:, 0], pos[:, 2], pos[:, 1]], axis=1) * voxel
    pos[:, 0] -= pos[:, 0].mean()
    pos[:, 2] -= pos[:, 2].mean()
    pos[:, 1] += 1.75 - pos[:, 1].max()
    return pos.astype(np.float32), col, voxel


def scene(base: tuple[np.ndarray, np.ndarray, float], total: int, seed: int = 0):
    """Four participants of total/4 points each, resampled in the frame's own order; each
    cloud carries its voxel size, which ``auto`` splats are sized from."""
    from render import PlacedCloud, Room

    room = Room(5)
    rng = np.random.default_rng(seed)
    n = total // 4
    positions, colors, voxel = base
    clouds = []
    for seat in range(1, 5):
        idx = np.sort(rng.choice(len(positions), n, replace=n > len(positions)))
        jitter = rng.normal(0, voxel / 4, (n, 3)).astype(np.float32)
        clouds.append(PlacedCloud(positions[idx] + jitter, colors[idx], room.seat_pose(seat), point_size=voxel))
    return room, clouds


def measure(renderer, camera, room, clouds, seconds: float) -> float:
    for _ in range(2):
        renderer.render(camera, room, clouds)
    frames, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or frames < 3:
        renderer.render(camera, room, clouds)
        frames += 1
    return frames / elapsed


def run(args: argparse.Namespace) -> int:
    import numba
    from rich.progress import Progress

    from render import Renderer

    base = person(args.data)
    records = []
    jobs = [(p, res, s, c) for p in args.points for res in args.resolutions for s in args.splats for c in args.cores]
    with Progress(console=wide_console()) as progress:
        task = progress.add_task("splat renderer", total=len(jobs) + len(args.browser))
        scenes = {p: scene(base, p) for p in args.points}
        for points, res, splat, cores in jobs:
            numba.set_num_threads(min(cores, numba.config.NUMBA_NUM_THREADS))
            room, clouds = scenes[points]
            camera = room.seat_camera(0, *RESOLUTIONS[res])
            renderer = Renderer(splat_px=None if splat == "auto" else int(splat))
            fps = measure(renderer, camera, room, clouds, args.seconds)
            records.append({"renderer": "splat", "points": points, "resolution": res, "splat": splat,
                            "cores": cores, "fps": round(fps, 1), "ms": round(1e3 / fps, 2)})
            progress.advance(task)
        for points in args.browser:
            records.append(browser_record(points, args.seconds))
            progress.advance(task)
    emit(records, COLUMNS, "Render rate: frames per second", args, plot=plot)
    return 0


def browser_record(points: int, seconds: float) -> dict:
    from benchmarks.browser_harness import find_chromium, measure_browser_fps

    record = {"renderer": "browser", "points": points, "resolution": "1280x720", "splat": "auto", "cores": 2}
    if find_chromium() is None:
        return {**record, "fps": None, "ms": None, "note": "no chromium binary"}
    result = measure_browser_fps(points, max(seconds, 4.0))
    return {**record, "fps": round(result["fps"], 1), "ms": round(1e3 / result["fps"], 1) if result["fps"] else None}


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splat = [r for r in records if r["renderer"] == "splat"]
    resolutions = sorted({r["resolution"] for r in splat}, key=lambda r: RESOLUTIONS[r][0])
    fig, axes = plt.subplots(1, len(resolutions), figsize=(6 * len(resolutions), 4.5), sharey=True, squeeze=False)
    for ax, res in zip(axes[0], resolutions, strict=True):
        for splat_px in sorted({r["splat"] for r in splat}):
            for cores, style in ((1, "--"), (2, "-")):
                rows = sorted((r["points"], r["fps"]) for r in splat
                              if (r["resolution"], r["splat"], r["cores"]) == (res, splat_px, cores))
                if rows:
                    ax.plot(*zip(*rows, strict=True), style, marker="o", label=f"splat {splat_px}, {cores} core(s)")
        ax.axhline(60, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("points in the room (4 participants)")
        ax.set_title(res)
    axes[0][0].set_ylabel("frames per second (dotted: 60)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Splat renderer, first-person view of four participants")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
