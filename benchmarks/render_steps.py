"""Render steps: where a frame of the splat renderer goes, kernel by kernel.

The render benchmark's scene (benchmarks.render_fps: four MVUB upper bodies at their true
size, seated, first-person view from seat 0), --points in all at --resolution with splats
sized from the data, drawn --frames times on --cores numba threads; each of the renderer's
kernels (render._splat_kernels: ``reset`` the buffers, ``splat_clouds`` the points,
``merge`` the per-thread buffers, ``finish`` crack filling and unpacking) is timed around
its call, and ``frame`` around the whole ``Renderer.render``.

Records: step, cores, points, resolution, ms (median per frame), share (of the frame),
load_1min.

Run: python -m benchmarks.render_steps --json docs/bench/render-steps.json --markdown docs/bench/render-steps.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["step", "cores", "points", "resolution", "ms", "share", "load_1min"]
STEPS = ("reset", "splat_clouds", "merge", "finish")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="a PLY frame (default sarah_9bit, as render_fps)")
    parser.add_argument("--points", type=int, default=1_000_000, help="total over the four participants")
    parser.add_argument("--resolution", default="1280x720", choices=["1280x720", "1920x1080"])
    parser.add_argument("--cores", type=int, nargs="*", default=[1, 2], choices=[1, 2])
    parser.add_argument("--frames", type=int, default=60, help="timed frames (after 3 untimed)")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import numba

    import render.renderer as renderer_module
    from benchmarks.render_fps import RESOLUTIONS, person, scene
    from render import Renderer

    sk = renderer_module.sk
    spent: dict[str, float] = {}
    originals = {name: getattr(sk, name) for name in STEPS}

    def timed(name, fn):
        def call(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return call

    load = os.getloadavg()[0]
    room, clouds = scene(person(args.data), args.points)
    camera = room.seat_camera(0, *RESOLUTIONS[args.resolution])
    records = []
    try:
        for name, fn in originals.items():
            setattr(sk, name, timed(name, fn))
        for cores in args.cores:
            numba.set_num_threads(min(cores, numba.config.NUMBA_NUM_THREADS))
            renderer = Renderer()
            for _ in range(3):
                renderer.render(camera, room, clouds)
            per: dict[str, list[float]] = {name: [] for name in (*STEPS, "frame")}
            for _ in range(args.frames):
                spent.clear()
                t0 = time.perf_counter()
                renderer.render(camera, room, clouds)
                per["frame"].append(time.perf_counter() - t0)
                for name in STEPS:
                    per[name].append(spent.get(name, 0.0))
            frame = statistics.median(per["frame"]) * 1e3
            for name in (*STEPS, "frame"):
                ms = statistics.median(per[name]) * 1e3
                records.append({"step": name, "cores": cores, "points": args.points, "resolution": args.resolution,
                                "ms": ms, "share": ms / frame, "load_1min": load})
            rest = frame - sum(r["ms"] for r in records[-5:-1])
            records.append({"step": "the rest (Python, arrays)", "cores": cores, "points": args.points,
                            "resolution": args.resolution, "ms": rest, "share": rest / frame, "load_1min": load})
    finally:
        for name, fn in originals.items():
            setattr(sk, name, fn)
    emit(records, COLUMNS, f"Render steps: {args.points:,} points at {args.resolution}, median ms of "
         f"{args.frames} frames (load average {load:.2f})", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
