"""Demo meeting: ``holoport demo`` run --runs times, its participants' statistics as records.

Each run is the real demo (holoport.demo.run_demo: a hub and --participants participant
processes on loopback, synthetic cameras, --codec, --fps, --duration s), written to a
temporary folder; each participant's report (seatN.json) becomes one record. The demo needs
most of both cores of a 2-core machine: every record carries the load average at the start
of its run, so that a run beside other work can be told apart.

Records: run, codec, name, frames_sent, frames_received, fps_sent, fps_rendered,
points_per_frame, mbps_up, mbps_down, and per latency stage (holoport.stats.STAGES: capture,
encode, send, network, decode, wait, render, end_to_end) its p50, p95 and p99 in ms
(``capture_p50_ms``, ...), the voice's A/V skew against each shown frame (``av_skew_p50_ms``,
``av_skew_p95_ms``, ``in_sync_share``: within ITU-R BT.1359's -45/+125 ms, ``av_skew_frames``),
``voice_kbps_up``, load_1min. The table shows the p50s and end to end's p99.

Run: python -m benchmarks.demo_meeting --runs 2 --json docs/bench/demo.json --markdown docs/bench/demo.md
     python -m benchmarks.demo_meeting --codec octree --json docs/bench/demo-octree.json
"""

from __future__ import annotations

import argparse
import os
import tempfile

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["run", "name", "frames_sent", "frames_received", "fps_sent", "points_per_frame", "mbps_up",
           "mbps_down", "capture_p50_ms", "encode_p50_ms", "network_p50_ms", "decode_p50_ms", "render_p50_ms",
           "end_to_end_p50_ms", "end_to_end_p99_ms", "av_skew_p50_ms", "av_skew_p95_ms", "in_sync_share",
           "load_1min"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=1, help="demo runs (default 1)")
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10, as the demo)")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--codec", default="baseline", help="baseline (the demo's default) or octree")
    parser.add_argument("--codec-option", action="append", default=[], metavar="KEY=VALUE",
                        help="as holoport demo's (e.g. color_step=8)")
    add_output_arguments(parser)


def _option(text: str):
    key, _, value = text.partition("=")
    try:
        return key, int(value)
    except ValueError:
        try:
            return key, float(value)
        except ValueError:
            return key, value


def run(args: argparse.Namespace) -> int:
    from holoport.demo import run_demo
    from holoport.stats import STAGES

    options = dict(_option(o) for o in args.codec_option)
    records = []
    for k in range(args.runs):
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="holoport-demo-") as out:
            reports, _ = run_demo(args.participants, args.duration, args.fps, out, codec=args.codec,
                                  codec_options=options or None)
        for r in reports:
            rec = {"run": k + 1, "codec": args.codec, "options": options, "name": r["name"],
                   "frames_sent": r["frames_sent"], "frames_received": r["frames_received"],
                   "fps_sent": r["fps_sent"], "fps_rendered": r["fps_rendered"],
                   "points_per_frame": r["points_per_frame"], "mbps_up": r["mbps_sent"],
                   "mbps_down": r["mbps_received"], "load_1min": load}
            voice = r.get("voice") or {}
            for key in ("av_skew_p50_ms", "av_skew_p95_ms", "in_sync_share", "av_skew_frames"):
                rec[key] = voice.get(key)
            rec["voice_kbps_up"] = voice["sent_bytes"] * 8 / r["seconds"] / 1e3 if voice.get("sent_bytes") else None
            for stage in STAGES:
                lat = r["latency"].get(stage, {})
                for q in ("p50", "p95", "p99"):
                    rec[f"{stage}_{q}_ms"] = lat.get(f"{q}_ms")
            records.append(rec)
    emit(records, COLUMNS, f"Demo meeting: {args.participants} participants, {args.codec} codec, "
         f"{args.fps:g} fps, {args.duration:g} s, {args.runs} run(s)", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
