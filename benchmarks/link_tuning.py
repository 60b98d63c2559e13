"""Link tuning: the adaptive policy's settings, compared on the same traces as the oracle.

The adaptive policy (holoport.link.adapt.AdaptivePolicy) has three settings chosen by
measurement: how fast its target grows while the delay is flat (--increase, per second),
how long a standing queue it tolerates before it cuts (--max-queue-ms), and how much of the
oldest unreported frame's age it expects a new frame to wait (--stall: 1 as the policy
does, 0.5 half of it, 0 ignores stalls). This runs the simulated meeting of ``holoport
bench link`` (same links, seeds, ladder, capture and render times) on one profile's traces
for every combination given, and the oracle once per trace as the yardstick.

Records: one per setting with trace "all" (the frames of every trace pooled: late_or_skipped,
the mean Y-PSNR of frames shown in time, p95 glass to glass, and the gap to the oracle's
Y-PSNR), and one per setting and trace.

Run: python -m benchmarks.link_tuning --json docs/bench/link-tuning.json --markdown docs/bench/link-tuning.md
"""

from __future__ import annotations

import argparse
import itertools
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main
from holoport.data import data_root

DEFAULT_LADDER = Path(__file__).resolve().parent.parent / "docs" / "bench" / "ladder.json"
COLUMNS = ["policy", "increase", "max_queue_ms", "stall", "runs", "late_or_skipped", "mean_y_psnr",
           "vs_oracle_db", "p95_ms", "fps"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traces", type=Path, default=None,
                        help="folder of Lumos5G-format traces (default <data>/network/lumos5g)")
    parser.add_argument("--profile", default="mmwave-walking", choices=["mmwave-walking", "mmwave-driving", "lte"])
    parser.add_argument("--max-traces", type=int, default=0, help="at most this many traces (0: all)")
    parser.add_argument("--increase", type=float, nargs="+", default=[1.5, 2.0],
                        help="growth per second while the delay is flat (the policy's default: 2)")
    parser.add_argument("--max-queue-ms", type=float, nargs="+", default=[40.0, 60.0],
                        help="standing queue taken as overuse (the policy's default: 60)")
    parser.add_argument("--stall", type=float, nargs="+", default=[1.0],
                        help="share of the oldest unreported frame's age a new frame waits (default: 1)")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--deadline-ms", type=float, default=150.0)
    parser.add_argument("--ladder", type=Path, default=DEFAULT_LADDER)
    parser.add_argument("--times", type=Path, default=None, metavar="JSON",
                        help='{"capture_ms": C, "render_ms": R} (default: the committed records)')
    add_output_arguments(parser)


def one(job: tuple) -> tuple[dict, np.ndarray]:
    from holoport.link import Trace, get_profile
    from holoport.link.adapt import AdaptivePolicy
    from holoport.link.ladder import Ladder
    from holoport.link.sim import Pipeline, simulate

    path, name, seed, setting, seconds, fps, deadline_ms, ladder_json, capture_ms, render_ms = job
    profile, wired = get_profile(name), get_profile("wired")
    trace = Trace.load(path)
    uplink, downlink = profile.links(trace, seed=seed)[0], wired.links(None, seed=seed + 1)[1]
    pipeline = Pipeline(fps=fps, deadline_ms=deadline_ms, capture_ms=capture_ms, render_ms=render_ms)
    if setting is None:
        policy, label = "oracle", {"policy": "oracle"}
    else:
        increase, queue, stall = setting

        def policy(ladder, fps):
            return AdaptivePolicy(ladder, fps, increase=increase, max_queue_ms=queue, stall=stall)
        label = {"policy": "adaptive", "increase": increase, "max_queue_ms": queue, "stall": stall}
    result = simulate(Ladder.from_json(ladder_json), policy, uplink, downlink, min(seconds, trace.period), pipeline)
    s = result.summary()
    return ({**label, "trace": Path(path).name, "frames": s["frames"], "shown": s["shown"],
             "late_or_skipped": s["late_or_skipped"], "mean_y_psnr": s["mean_y_psnr"],
             "p95_ms": s["p95_ms"], "fps": s["fps"], "seconds": result.seconds},
            result.latencies_ms().astype(np.float32))


def run(args: argparse.Namespace) -> int:
    from holoport.link import PROFILES
    from holoport.link.sim import StageTimes

    folder = args.traces or data_root() / "network" / "lumos5g"
    files = PROFILES[args.profile].trace_files(folder)
    if args.max_traces:
        files = files[: args.max_traces]
    if not files:
        raise SystemExit(f"no {args.profile} traces under {folder}; pass --traces DIR")
    try:
        times = StageTimes.load(args.times)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    ladder_json = args.ladder.read_text()
    settings = [None, *itertools.product(args.increase, args.max_queue_ms, args.stall)]
    jobs = [(str(f), args.profile, seed, setting, args.seconds, args.fps, args.deadline_ms, ladder_json,
             times.capture_ms, times.render_ms) for setting in settings for seed, f in enumerate(files)]
    with ProcessPoolExecutor() as pool:
        results = list(pool.map(one, jobs, chunksize=2))
    per_run = [r for r, _ in results]
    pooled = []
    for setting in settings:
        idx = [i for i, job in enumerate(jobs) if job[3] == setting]
        rs = [per_run[i] for i in idx]
        lat = np.concatenate([results[i][1] for i in idx])
        frames, shown = sum(r["frames"] for r in rs), sum(r["shown"] for r in rs)
        weights = np.array([r["shown"] for r in rs], float)
        psnr = np.array([r["mean_y_psnr"] for r in rs], float)
        ok = np.isfinite(psnr) & (weights > 0)
        pooled.append({**{k: rs[0][k] for k in ("policy", "increase", "max_queue_ms", "stall") if k in rs[0]},
                       "trace": "all", "runs": len(rs), "late_or_skipped": 1 - shown / frames,
                       "mean_y_psnr": float(np.average(psnr[ok], weights=weights[ok])) if ok.any() else math.nan,
                       "p95_ms": float(np.percentile(lat, 95)) if len(lat) else math.nan,
                       "fps": len(lat) / sum(r["seconds"] for r in rs),
                       "capture_ms": times.capture_ms, "render_ms": times.render_ms})
    oracle = pooled[0]["mean_y_psnr"]
    for r in pooled:
        r["vs_oracle_db"] = r["mean_y_psnr"] - oracle
    emit(pooled, COLUMNS, f"Adaptive policy settings on {len(files)} {args.profile} traces, {args.seconds:g} s each; "
         f"capture {times.capture_ms:g} ms, render {times.render_ms:g} ms ({times.source})",
         args, json_records=per_run + pooled)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
