"""Warm-up time: how long numba takes to compile the kernels on a first run, and to load them after.

``holoport.warmup.warm_up`` compiles (or loads from numba's cache) every kernel a job
uses. This runs it in a fresh process whose numba cache is an empty temporary folder
(NUMBA_CACHE_DIR: the project's own caches beside the sources are neither read nor
touched), step by step, then once more in a second fresh process on the cache the first one
filled:

- ``renderer``: the splat renderer alone (the room layer and the splat kernels);
- ``always``: the rest of what every job warms with the baseline codec (synthetic camera,
  back-projection, the baseline codec): ``warm_up([baseline], cameras=False)``, what
  ``holoport demo`` warms;
- ``cameras``: a real camera's path (lens registration, person cut, voxels);
- ``other codecs``: every other registered codec as a meeting configures it (the octree
  codec: ``holoport demo --codec octree``, ``--rate adaptive``);
- ``all``: the sum, which is what the tests' warm-up (``warm_up()``) compiles.

Records: step, compile_s (first process), cached_s (second process), load_1min.

Run: python -m benchmarks.warmup_time --json docs/bench/warmup.json --markdown docs/bench/warmup.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["step", "compile_s", "cached_s", "load_1min"]
STEPS = ["renderer", "always", "cameras", "other codecs"]
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from holoport.warmup import warm_up
from render import PlacedCloud, Renderer, Room
out = {"imports": time.perf_counter() - t0}
t = time.perf_counter()
room = Room(3)
pos = np.random.default_rng(0).random((500, 3)).astype(np.float32)
col = np.full((500, 3), 200, np.uint8)
Renderer().render(room.seat_camera(0, 64, 36), room, [PlacedCloud(pos, col, room.seat_pose(1))])
out["renderer"] = time.perf_counter() - t
import codec
baseline = [codec.for_meeting("baseline")]
for step, kw in (("always", dict(codecs=baseline, cameras=False)), ("cameras", dict(codecs=baseline, cameras=True)),
                 ("other codecs", dict(codecs=None, cameras=True))):
    t = time.perf_counter()
    warm_up(**kw)
    out[step] = time.perf_counter() - t
print(json.dumps(out))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="NUMBA_NUM_THREADS for the child processes (default: numba's, every core)")
    add_output_arguments(parser)


def child(cache: str, threads: int | None) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=root, env=env, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode:
        raise SystemExit(f"the warm-up process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="holoport-numba-") as cache:
        cold = child(cache, args.threads)
        warm = child(cache, args.threads)
    records = [{"step": s, "compile_s": cold[s], "cached_s": warm[s], "load_1min": load} for s in STEPS]
    records.append({"step": "all", "compile_s": sum(cold[s] for s in STEPS),
                    "cached_s": sum(warm[s] for s in STEPS), "load_1min": load})
    records.append({"step": "imports (not compiling)", "compile_s": cold["imports"], "cached_s": warm["imports"],
                    "load_1min": load})
    emit(records, COLUMNS, f"numba warm-up: first run (empty cache) and second run, seconds "
         f"(load average {load:.2f} at the start)", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
