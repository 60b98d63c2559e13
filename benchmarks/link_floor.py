"""Link floor: the share of frames that no sender could show in time on the Lumos5G traces.

For every trace of the trace-driven profiles (5g/*_walking: mmwave-walking, 5g/*_driving:
mmwave-driving, 4g/*: lte), built as ``holoport bench link`` builds its runs (the uplink is
the trace times the profile's ratio, the same seed, a wired receiver), this measures:

- zero_capacity_all / zero_capacity_run: the share of the uplink's seconds logged at
  0 Mbit/s, over the whole trace and over the --seconds that a run simulates;
- dead_runs, dead_runs_over_5s, longest_dead_s: those seconds as runs of consecutive dead
  seconds (over the whole trace): how many, how many longer than 5 s, the longest;
- unreachable: ``holoport.link.sim.unreachable_share`` as the link benchmark reports it:
  each frame alone on empty links at the ladder's smallest size and fastest codec times,
  with the capture and render times of the committed records (or --times), no random
  delay, no loss;
- unreachable_1byte_no_time: the same for a 1-byte frame with capture, encode, decode and
  render taking no time at all: what is left is the links' dead time itself.

Records: one per trace (trace, profile, seconds, frames, and the four shares), then one per
profile with trace "all" (shares weighted by seconds or frames). Cheap: no policy runs.

Run: python -m benchmarks.link_floor --json docs/bench/link-floor.json --markdown docs/bench/link-floor.md
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main
from holoport.data import data_root

DEFAULT_LADDER = Path(__file__).resolve().parent.parent / "docs" / "bench" / "ladder.json"
TRACED = ("mmwave-walking", "mmwave-driving", "lte")
SHARES = ("zero_capacity_all", "zero_capacity_run", "unreachable", "unreachable_1byte_no_time")
COLUMNS = ["profile", "trace", "seconds", "frames", "zero_capacity_all %", "zero_capacity_run %", "dead_runs",
           "dead_runs_over_5s", "longest_dead_s", "unreachable %", "unreachable_1byte_no_time %"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traces", type=Path, default=None,
                        help="folder of Lumos5G-format traces (5g/, 4g/; default <data>/network/lumos5g)")
    parser.add_argument("--profiles", nargs="*", default=list(TRACED), choices=TRACED)
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds per run, as the link benchmark")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--deadline-ms", type=float, default=150.0)
    parser.add_argument("--ladder", type=Path, default=DEFAULT_LADDER)
    parser.add_argument("--times", type=Path, default=None, metavar="JSON",
                        help='{"capture_ms": C, "render_ms": R} (default: the committed records)')
    parser.add_argument("--per-trace", action="store_true", help="print every trace's row, not only the pooled ones")
    add_output_arguments(parser)


def one(job: tuple[str, str, int, float, float, float, str, float, float]) -> dict:
    from holoport.link import Trace, get_profile
    from holoport.link.ladder import Ladder, Rung
    from holoport.link.sim import Pipeline, unreachable_share

    path, name, seed, seconds, fps, deadline_ms, ladder_json, capture_ms, render_ms = job
    profile, wired = get_profile(name), get_profile("wired")
    trace = Trace.load(path)
    seconds = min(seconds, trace.period)

    def links():  # as benchmarks.link_sweep.run_job builds them
        return profile.links(trace, seed=seed)[0], wired.links(None, seed=seed + 1)[1]

    up = links()[0].trace
    rates = np.array([up.rate_at(t + 0.5) for t in range(int(trace.period))])
    ladder = Ladder.from_json(ladder_json)
    pipeline = Pipeline(fps=fps, deadline_ms=deadline_ms, capture_ms=capture_ms, render_ms=render_ms)
    nothing = Ladder(("1 byte",), (Rung(0, 1, (1,), (1,), 0.0, 0.0, 0.0, 0.0),))
    instant = Pipeline(fps=fps, deadline_ms=deadline_ms, capture_ms=0.0, render_ms=0.0)
    dead = rates == 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], dead.astype(np.int8), [0]])))
    runs = edges[1::2] - edges[::2]  # lengths of the runs of dead seconds
    return {"profile": name, "trace": Path(path).name, "seconds": seconds,
            "dead_runs": len(runs), "dead_runs_over_5s": int((runs > 5).sum()),
            "longest_dead_s": int(runs.max()) if len(runs) else 0,
            "frames": int(seconds * fps + 1e-9),
            "zero_capacity_all": float(np.mean(rates == 0)), "trace_seconds": len(rates),
            "zero_capacity_run": float(np.mean(rates[: int(seconds)] == 0)),
            "unreachable": unreachable_share(ladder, *links(), seconds, pipeline),
            "unreachable_1byte_no_time": unreachable_share(nothing, *links(), seconds, instant),
            "capture_ms": capture_ms, "render_ms": render_ms}


def pooled(rows: list[dict], name: str) -> dict:
    frames = np.array([r["frames"] for r in rows], float)
    secs = np.array([r["seconds"] for r in rows], float)
    whole = np.array([r["trace_seconds"] for r in rows], float)
    return {"profile": name, "trace": "all", "traces": len(rows), "seconds": float(secs.sum()),
            "frames": int(frames.sum()), "dead_runs": sum(r["dead_runs"] for r in rows),
            "dead_runs_over_5s": sum(r["dead_runs_over_5s"] for r in rows),
            "longest_dead_s": max(r["longest_dead_s"] for r in rows),
            "zero_capacity_all": float(np.average([r["zero_capacity_all"] for r in rows], weights=whole)),
            "zero_capacity_run": float(np.average([r["zero_capacity_run"] for r in rows], weights=secs)),
            "unreachable": float(np.average([r["unreachable"] for r in rows], weights=frames)),
            "unreachable_1byte_no_time": float(np.average([r["unreachable_1byte_no_time"] for r in rows],
                                                          weights=frames)),
            "capture_ms": rows[0]["capture_ms"], "render_ms": rows[0]["render_ms"]}


def run(args: argparse.Namespace) -> int:
    from holoport.link import PROFILES
    from holoport.link.sim import StageTimes

    folder = args.traces or data_root() / "network" / "lumos5g"
    try:
        times = StageTimes.load(args.times)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    ladder_json = args.ladder.read_text()
    jobs = []
    for name in args.profiles:
        for seed, path in enumerate(PROFILES[name].trace_files(folder)):
            jobs.append((str(path), name, seed, args.seconds, args.fps, args.deadline_ms, ladder_json,
                         times.capture_ms, times.render_ms))
    if not jobs:
        raise SystemExit(f"no Lumos5G traces under {folder} for {', '.join(args.profiles)}; pass --traces DIR")
    with ProcessPoolExecutor() as pool:
        rows = list(pool.map(one, jobs, chunksize=4))
    records = list(rows)
    for name in args.profiles:
        mine = [r for r in rows if r["profile"] == name]
        if mine:
            records.append(pooled(mine, name))
    shown = [{**r, **{f"{k} %": 100 * r[k] for k in SHARES}} for r in records
             if args.per_trace or r["trace"] == "all"]  # the table in percent, the records as shares
    emit(shown, COLUMNS, f"Link floor: {args.fps:g} fps, {args.deadline_ms:g} ms deadline, capture "
         f"{times.capture_ms:g} ms and render {times.render_ms:g} ms ({times.source}); shares of "
         "seconds (zero capacity) and of frames (unreachable)", args, json_records=records)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
