"""Link sweep: one participant's 30 fps hologram over real 5G traces, per rate policy.

For every trace in --traces (default: all of <data>/network/lumos5g) under the profile of
its kind (5g/*_walking: mmwave-walking, 5g/*_driving: mmwave-driving, 4g/*: lte), and for
the synthetic profiles (sub6-static, sub6-driving, wired: --seeds runs each), the
simulated-time meeting (holoport.link.sim) pushes the stream through the sender's uplink
(the trace times the profile's uplink/downlink ratio, printed below), the hub and the
receiver's downlink (wired by default: the uplink is what is under test; --receiver same
puts the receiver on the same profile, its trace half a period later), with each policy:
fixed (the ladder's top rung, never skipping), adaptive (delay-gradient control with
deadline-aware skipping), layered (the ladder's layered stream: the sender adapts the number
of layers to its uplink, the hub's LayerSelector forwards what the receiver's downlink takes)
and oracle (knows the links' future capacity). The uplink-* profiles replay the MN-Wild
measured uplinks (--uplinks, default <data>/network/mn-wild-uplink) as they are.

--participants N (N >= 2) runs meetings instead (holoport.link.sim.simulate_meeting): each
participant has its own uplink and downlink, kinds dealt out from --mix (DOWN/UP profile
pairs; traces from --downlinks and --uplinks, each participant its own file or its own
roll of one), the hub forwarding every sender to every other participant over that
receiver's one downlink; policies fixed, adaptive (LiveRate's: the lowest rung any
receiver's policy picks), layered and oracle (per receiver). --meetings M draws M sets of
traces (--first-meeting picks which). Links hold their random delay for a frame interval
(holoport.link.sim.HeldDelayLink). Records: per (sender, receiver) pair, per receiver
(sender "all"), per sender (receiver "all") and the meeting (both "all"), with sender,
receiver, downlink, uplink, layers_mean beside the sweep's figures; the table (and the
"comparison" records) put each receiver's mean Y-PSNR under every policy side by side.

Frame sizes, encode and decode times and qualities come from the ladder: the octree
codec's real output on the MVUB frames at each level of detail and colour step
(docs/bench/ladder.json, rebuilt with --rebuild-ladder or when --ladder is absent).
Capture and render times come from the committed benchmark records
(holoport.link.sim.StageTimes: docs/bench/capture.json's whole capture path of the
synthetic person at 640x576 on one core, docs/bench/render.json's splat renderer at
250,000 points, 1280x720, two cores), or from --times FILE ({"capture_ms": C,
"render_ms": R}); the table's title and every record say which (capture_ms, render_ms).

Records (one per trace, profile and policy): trace, profile, policy, seconds, fps,
late_or_skipped (share of captured frames not shown within --deadline-ms glass to glass),
p50_ms, p95_ms, p99_ms (glass to glass of shown frames), stall_ratio (share of time in
display gaps over 100 ms), utilization (uplink bits sent over its capacity), sent_mbps,
mean_y_psnr, mean_d1_psnr, mean_lod, layers_mean (layered only) (of frames shown in time), switches,
keyframe_requests, zero_capacity_share (of the uplink's seconds), unreachable (the share of
frames no sender could show on that run's links: holoport.link.sim.unreachable_share, a
floor under every policy's late_or_skipped), capture_ms, render_ms. The summary pools the
frames of every trace of a profile. A missing value (no frame shown) is null in the JSON and
- in the table.

Run: holoport bench link --json link.json --markdown link.md --plot link.png
     holoport bench link --participants 8 --meetings 3 --seconds 120 --json link-meeting.json
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main
from holoport.console import wide_console
from holoport.data import data_root

POLICIES = ("fixed", "adaptive", "layered", "oracle")
#: A meeting's participants by default: walking mmWave downlinks with measured uplinks, and LTE
DEFAULT_MIX = ("mmwave-walking/uplink-verizon-mmwave", "mmwave-walking/uplink-tmobile-sa", "lte/lte",
               "mmwave-walking/uplink-tmobile-nsa")
COLORS = {"fixed": "tab:red", "adaptive": "tab:blue", "layered": "tab:orange", "oracle": "tab:green"}
DEFAULT_LADDER = Path(__file__).resolve().parent.parent / "docs" / "bench" / "ladder.json"
COLUMNS = ["trace", "profile", "policy", "seconds", "fps", "late_or_skipped", "p50_ms", "p95_ms",
           "p99_ms", "stall_ratio", "utilization", "sent_mbps", "mean_y_psnr", "mean_lod"]
# how a frame that was not shown in time ended (holoport.link.sim.STATES)
MISSED = ("late", "skipped", "dropped", "replaced", "lost", "undecodable")
SUMMARY = ["profile", "policy", "runs", "fps", "late_or_skipped", "unreachable", "late_share", "skipped_share",
           "p50_ms", "p95_ms", "p99_ms",
           "stall_ratio", "utilization", "mean_y_psnr", "mean_d1_psnr", "mean_lod", "layers_mean",
           "zero_capacity_share"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traces", type=Path, default=None,
                        help="folder of Lumos5G-format traces, searched as <dir>/5g/*_walking, "
                             "<dir>/5g/*_driving, <dir>/4g/* (default <data>/network/lumos5g)")
    parser.add_argument("--profiles", nargs="*", default=None,
                        help="profiles to run (default: all; trace-driven ones use their traces)")
    parser.add_argument("--policies", nargs="*", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--seconds", type=float, default=300.0,
                        help="simulated seconds per run, at most each trace's length (default 300)")
    parser.add_argument("--max-traces", type=int, default=0, help="at most this many traces per profile (0: all)")
    parser.add_argument("--skip-traces", type=int, default=0,
                        help="leave out each profile's first K traces (tuning ones, to validate on the rest)")
    parser.add_argument("--downlinks", type=Path, default=None,
                        help="downlink traces (Lumos5G layout, as --traces; default --traces or "
                             "<data>/network/lumos5g)")
    parser.add_argument("--uplinks", type=Path, default=None,
                        help="measured uplink traces for the uplink-* profiles (default "
                             "<data>/network/mn-wild-uplink)")
    parser.add_argument("--participants", type=int, default=1,
                        help="1: one participant's stream per trace (the sweep); N >= 2: meetings of N "
                             "participants, each with its own uplink and downlink drawn from --mix")
    parser.add_argument("--mix", nargs="*", default=list(DEFAULT_MIX), metavar="DOWN/UP",
                        help="participant kinds (downlink profile/uplink profile), dealt out in turn "
                             f"(default {' '.join(DEFAULT_MIX)})")
    parser.add_argument("--meetings", type=int, default=1, help="meetings, each on another draw of traces")
    parser.add_argument("--first-meeting", type=int, default=0,
                        help="the first meeting's draw (meetings differ in trace files and rolls)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    parser.add_argument("--seeds", type=int, default=3, help="runs of each synthetic profile")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--deadline-ms", type=float, default=150.0, help="glass-to-glass deadline")
    parser.add_argument("--receiver", choices=["wired", "same"], default="wired",
                        help="the receiver's downlink: wired, or the sender's profile")
    parser.add_argument("--ladder", type=Path, default=DEFAULT_LADDER,
                        help="ladder JSON (built from --frames when absent)")
    parser.add_argument("--rebuild-ladder", action="store_true", help="measure the ladder again")
    parser.add_argument("--measure-layers", type=int, nargs="*", default=None, metavar="STEP",
                        help="measure the layered codec (codec.layered) at these colour steps (none given: "
                             "4 16 64) and write them into --ladder beside its rungs")
    parser.add_argument("--frames", type=Path, default=None,
                        help="PLY frames for the ladder (default <data>/pointclouds/mvub)")
    parser.add_argument("--times", type=Path, default=None, metavar="JSON",
                        help='capture and render time per frame, {"capture_ms": C, "render_ms": R} '
                             "(default: the committed records docs/bench/capture.json and render.json)")
    add_output_arguments(parser)


@dataclass(frozen=True)
class Job:
    trace: str | None  # a file, or None for a synthetic profile
    profile: str
    policy: str
    seed: int
    seconds: float
    fps: float
    deadline_ms: float
    receiver: str
    ladder_json: str
    capture_ms: float
    render_ms: float


def run_job(job: Job) -> tuple[dict, np.ndarray, dict]:
    """One simulated run: its record, its glass-to-glass latencies, and a per-second
    timeline (capacity, sent rate, latency) for plots."""
    from holoport.link import Trace, get_profile
    from holoport.link.ladder import Ladder
    from holoport.link.sim import (
        HeldDelayLink,
        Participant,
        Pipeline,
        capacity_bits,
        simulate,
        simulate_meeting,
        summarize_frames,
        unreachable_share,
    )

    ladder = Ladder.from_json(job.ladder_json)
    profile = get_profile(job.profile)
    down_trace = Trace.load(job.trace) if job.trace else profile.synthetic_trace(job.seed)
    if profile.direction == "up" and job.receiver == "same":
        raise ValueError(f"{profile.name} has measured uplinks only: --receiver same needs a downlink")
    if job.receiver == "same":  # the same kind of link, at another moment
        rx = profile
        rx_trace = (down_trace.rolled(down_trace.period / 2) if job.trace
                    else profile.synthetic_trace(job.seed + 1000))
    else:
        rx, rx_trace = get_profile("wired"), None

    def links():  # the run's two links; built twice, the same each time (same seeds)
        return profile.links(down_trace, seed=job.seed)[0], rx.links(rx_trace, seed=job.seed + 1)[1]

    uplink, downlink = links()
    seconds = min(job.seconds, down_trace.period)
    pipeline = Pipeline(fps=job.fps, deadline_ms=job.deadline_ms, capture_ms=job.capture_ms,
                        render_ms=job.render_ms)
    if job.policy == "layered":  # the layered sender and the hub's selector: a meeting of two
        # its parts are several sends a frame: the links hold their random delay for a frame
        # interval (HeldDelayLink), which for one send a frame is what Link gives the others
        make = functools.partial(HeldDelayLink, hold_s=1 / job.fps)
        uplink = profile.uplink(down_trace, job.seed, make)
        result = simulate_meeting(ladder, "layered", [Participant(uplink, get_profile("wired").links(seed=job.seed)[1]),
                                                      Participant(get_profile("wired").links(seed=job.seed + 1)[0],
                                                                  downlink)], seconds, pipeline, senders=[0])
        frames = result.frames[(0, 1)]
        summary = summarize_frames(frames, seconds, pipeline, result.quality(), capacity_bits(uplink, 0.0, seconds))
        latencies = result.latencies_ms()
    else:
        result = simulate(ladder, job.policy, uplink, downlink, seconds, pipeline)
        frames, summary, latencies = result.frames, result.summary(), result.latencies_ms()
    floor = unreachable_share(ladder, *links(), seconds, pipeline)
    up = uplink.trace
    whole = np.arange(int(seconds))
    zero = float(np.mean([up.rate_at(float(t)) == 0 for t in whole])) if len(whole) else 0.0
    record = {"trace": Path(job.trace).name if job.trace else f"synthetic-{job.seed}",
              "profile": job.profile, "policy": job.policy, "seconds": seconds,
              **{k: summary[k] for k in ("fps", "late_or_skipped", "p50_ms", "p95_ms", "p99_ms",
                                         "stall_ratio", "utilization", "sent_mbps", "mean_y_psnr",
                                         "mean_d1_psnr", "mean_lod", "layers_mean", "switches",
                                         "keyframe_requests")},
              "frames": summary["frames"], "shown": summary["shown"],
              **{f"{state}_share": summary[state] / summary["frames"] for state in MISSED},
              "zero_capacity_share": zero, "unreachable": floor, "uplink_scale": profile.uplink_ratio,
              "capture_ms": job.capture_ms, "render_ms": job.render_ms}
    sent = np.zeros(len(whole))
    lat = np.full(len(whole), np.nan)
    for f in frames:
        k = int(f.captured)
        if k < len(whole) and f.left is not None:
            sent[k] += f.nbytes * 8 / 1e6
        if k < len(whole) and f.shown is not None:
            lat[k] = np.fmax(lat[k], (f.shown - f.captured) * 1e3)
    timeline = {"capacity": [uplink.capacity_at(float(t) + 0.5) / 1e6 for t in whole],
                "sent": sent.tolist(), "latency": lat.tolist()}
    return record, latencies.astype(np.float32), timeline


def plan(args: argparse.Namespace, ladder_json: str) -> list[Job]:
    from holoport.link import PROFILES
    from holoport.link.profiles import trace_folder
    from holoport.link.sim import StageTimes

    try:
        times = StageTimes.load(args.times)
    except ValueError as e:
        raise SystemExit(str(e)) from e

    folder = downlink_folder(args)
    uplinks = uplink_folder(args)
    if args.traces is not None and not folder.is_dir():
        raise SystemExit(f"--traces {folder}: no such folder (it holds 5g/ and 4g/ folders of Lumos5G-format "
                         "files, `seconds<TAB>Mbit/s`)")
    names = args.profiles or list(PROFILES)
    for n in names:
        if n not in PROFILES:
            raise SystemExit(f"unknown profile {n!r}; choose from {', '.join(PROFILES)}")
    jobs, untraced = [], []
    for name in names:
        profile = PROFILES[name]
        if profile.traces:
            files = profile.trace_files(trace_folder(profile, folder, uplinks))[args.skip_traces:]
            if args.max_traces:
                files = files[: args.max_traces]
            runs = [(str(f), i) for i, f in enumerate(files)]
            if not runs:
                untraced.append(name)
        else:
            runs = [(None, s) for s in range(args.seeds)]
        for trace, seed in runs:
            for policy in args.policies:
                jobs.append(Job(trace, name, policy, seed, args.seconds, args.fps, args.deadline_ms,
                                args.receiver, ladder_json, times.capture_ms, times.render_ms))
    if not jobs:
        raise SystemExit(f"no traces found under {folder} for {', '.join(names)}; pass --traces DIR "
                         "(with 5g/ and 4g/ folders of Lumos5G-format files) or choose synthetic profiles")
    if untraced:
        print(f"no traces under {folder} for {', '.join(untraced)}: those profiles are left out "
              "(pass --traces DIR)", file=sys.stderr)
    return jobs


def downlink_folder(args: argparse.Namespace) -> Path:
    return args.downlinks or args.traces or data_root() / "network" / "lumos5g"


def uplink_folder(args: argparse.Namespace) -> Path:
    return args.uplinks or data_root() / "network" / "mn-wild-uplink"


def ladder_frames(args: argparse.Namespace, ladder_path: Path) -> list:
    """The MVUB frames a ladder is measured on: (name, positions, colours, grid bits)."""
    from benchmarks.codec_rd import grid_bits
    from capture.ply import read_ply

    folder = args.frames or data_root() / "pointclouds" / "mvub"
    paths = sorted(folder.glob("*.ply"))
    if not paths:
        raise SystemExit(f"no ladder at {ladder_path} and no PLY frames in {folder} to build one; "
                         "pass --frames DIR or --ladder PATH")
    frames = []
    for path in paths:
        positions, colors = read_ply(path)
        frames.append((path.stem, positions, colors, grid_bits(positions)))
    return frames


def load_ladder(args: argparse.Namespace, console) -> str:
    import dataclasses

    from holoport.link.ladder import Ladder, measure_layers

    if args.ladder.exists() and not args.rebuild_ladder and args.measure_layers is None:
        return args.ladder.read_text()
    from rich.progress import Progress

    frames = ladder_frames(args, args.ladder)
    with Progress(console=console) as progress:
        task = progress.add_task("measuring the ladder", total=None)
        if args.ladder.exists() and not args.rebuild_ladder:
            ladder = Ladder.load(args.ladder)
        else:
            ladder = Ladder.build(frames, progress=lambda what: progress.update(task, description=what))
        if args.measure_layers is not None:
            steps = tuple(args.measure_layers) or (4, 16, 64)
            layered = measure_layers(frames, steps, progress=lambda what: progress.update(task, description=what))
            ladder = dataclasses.replace(ladder, layered=layered)
    args.ladder.parent.mkdir(parents=True, exist_ok=True)
    args.ladder.write_text(ladder.to_json())
    console.print(f"wrote {args.ladder}")
    return ladder.to_json()


def summarize(records: list[dict], latencies: list[np.ndarray]) -> list[dict]:
    """Per profile and policy, every run's frames pooled."""
    out = []
    keys = sorted({(r["profile"], r["policy"]) for r in records},
                  key=lambda k: (list(dict.fromkeys(r["profile"] for r in records)).index(k[0]),
                                 POLICIES.index(k[1])))
    for profile, policy in keys:
        idx = [i for i, r in enumerate(records) if (r["profile"], r["policy"]) == (profile, policy)]
        rs = [records[i] for i in idx]
        lat = np.concatenate([latencies[i] for i in idx]) if idx else np.zeros(0)
        frames = sum(r["frames"] for r in rs)
        shown = sum(r["shown"] for r in rs)
        secs = sum(r["seconds"] for r in rs)
        weights = np.array([r["shown"] for r in rs], float)

        def wmean(key, rs=rs, weights=weights):  # weighted by frames shown
            vals = np.array([r[key] if r[key] is not None else np.nan for r in rs], float)
            ok = ~np.isnan(vals) & (weights > 0)
            return float(np.average(vals[ok], weights=weights[ok])) if ok.any() else math.nan

        pct = np.percentile(lat, [50, 95, 99]) if len(lat) else [math.nan] * 3
        out.append({"profile": profile, "policy": policy, "runs": len(rs),
                    "fps": len(lat) / secs if secs else math.nan,
                    "late_or_skipped": 1 - shown / frames if frames else math.nan,
                    "p50_ms": float(pct[0]), "p95_ms": float(pct[1]), "p99_ms": float(pct[2]),
                    "stall_ratio": float(np.average([r["stall_ratio"] for r in rs],
                                                    weights=[r["seconds"] for r in rs])),
                    "utilization": float(np.mean([r["utilization"] for r in rs])),
                    "mean_y_psnr": wmean("mean_y_psnr"), "mean_d1_psnr": wmean("mean_d1_psnr"),
                    "mean_lod": wmean("mean_lod"), "layers_mean": wmean("layers_mean"),
                    "capture_ms": rs[0]["capture_ms"], "render_ms": rs[0]["render_ms"],
                    "zero_capacity_share": float(np.average([r["zero_capacity_share"] for r in rs],
                                                            weights=[r["seconds"] for r in rs])),
                    "unreachable": float(np.average([r["unreachable"] for r in rs],
                                                    weights=[r["frames"] for r in rs])),
                    **{f"{state}_share": float(np.average([r[f"{state}_share"] for r in rs],
                                                          weights=[r["frames"] for r in rs])) for state in MISSED}})
    return out


def plot(summary: list[dict], records: list[dict], latencies: list[np.ndarray],
         timelines: list[dict], path: str) -> list[str]:
    """CDFs of glass-to-glass latency (one panel per profile) at ``path``, and one
    timeline per profile (its first trace: capacity, sent rate, latency per policy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(dict.fromkeys(r["profile"] for r in records))
    colors = COLORS
    cols = min(3, len(profiles))
    rows = math.ceil(len(profiles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, profile in zip(axes.flat, profiles, strict=False):
        for policy in POLICIES:
            idx = [i for i, r in enumerate(records) if (r["profile"], r["policy"]) == (profile, policy)]
            if not idx:
                continue
            lat = np.sort(np.concatenate([latencies[i] for i in idx]))
            frames = sum(records[i]["frames"] for i in idx)
            if len(lat):  # share of *captured* frames shown within x: skipped ones never are
                ax.plot(lat, np.arange(1, len(lat) + 1) / frames, label=policy, color=colors[policy])
        ax.axvline(150, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(20, 5000)
        ax.set_ylim(0, 1)
        ax.set_title(profile)
        ax.set_xlabel("glass to glass, ms")
        ax.set_ylabel("share of captured frames")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    for ax in list(axes.flat)[len(profiles):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written = [path]
    stem = Path(path)
    for profile in profiles:
        first = next(r["trace"] for r in records if r["profile"] == profile)
        idx = {r["policy"]: i for i, r in enumerate(records) if r["profile"] == profile and r["trace"] == first}
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True)
        any_tl = timelines[next(iter(idx.values()))]
        t = np.arange(len(any_tl["capacity"]))
        top.fill_between(t, any_tl["capacity"], step="post", color="lightgrey", label="uplink capacity")
        for policy, i in idx.items():
            top.step(t, timelines[i]["sent"], where="post", color=colors[policy], lw=0.9, label=f"{policy} sent")
            bottom.plot(t, timelines[i]["latency"], color=colors[policy], lw=0.8, label=policy)
        top.set_yscale("symlog", linthresh=1)
        top.set_ylabel("Mbit/s")
        top.set_title(f"{profile}: {first}")
        top.legend(loc="upper right", fontsize=8)
        bottom.axhline(150, color="grey", ls="--", lw=0.8)
        bottom.set_yscale("log")
        bottom.set_ylabel("worst glass to glass\nin the second, ms")
        bottom.set_xlabel("seconds")
        bottom.legend(loc="upper right", fontsize=8)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        out = str(stem.with_name(f"{stem.stem}-timeline-{profile}{stem.suffix}"))
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written


def times_source(args: argparse.Namespace) -> str:
    from holoport.link.sim import StageTimes

    return StageTimes.load(args.times).source


def run(args: argparse.Namespace) -> int:
    from rich.progress import track

    from holoport.link import PROFILES

    console = wide_console()
    ladder_json = load_ladder(args, console)
    if args.participants >= 2:
        return run_meetings(args, ladder_json, console)
    jobs = plan(args, ladder_json)
    for name in dict.fromkeys(j.profile for j in jobs):
        console.print(PROFILES[name].describe())
    workers = args.workers or max(1, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        results = list(track(pool.map(run_job, jobs, chunksize=1), total=len(jobs),
                             description=f"{len(jobs)} simulated runs", console=console))
    records = [r for r, _, _ in results]
    latencies = [lat for _, lat, _ in results]
    timelines = [tl for _, _, tl in results]
    summary = summarize(records, latencies)
    first = jobs[0]
    emit(summary, SUMMARY, f"Link sweep: {args.fps:g} fps, {args.deadline_ms:g} ms deadline, "
         f"receiver {args.receiver}, capture {first.capture_ms:g} ms and render {first.render_ms:g} ms "
         f"({times_source(args)}); every run's frames pooled", args, console,
         json_records=records + [{**s, "trace": "all"} for s in summary])  # every run, and the pooled
    if args.plot:
        for out in plot(summary, records, latencies, timelines, args.plot):
            console.print(f"wrote {out}")
    return 0


# -- meetings of N participants (--participants N) -------------------------------------------------

MEETING_COLUMNS = ["meeting", "receiver", "downlink", "uplink", "y_fixed", "y_adaptive", "y_layered", "y_oracle",
                   "layered_vs_oracle_db", "worst_pair_vs_oracle_db", "layered_gain_db", "los_adaptive",
                   "los_layered", "los_oracle", "p95_layered_ms", "layers_mean"]


@dataclass(frozen=True)
class Side:
    """One direction of one participant: a profile, its trace file, where it starts."""

    profile: str
    trace: str
    roll: float

    def describe(self) -> str:
        return f"{self.profile}:{Path(self.trace).name}+{self.roll:g}s"


@dataclass(frozen=True)
class MeetingJob:
    meeting: int
    policy: str
    downs: tuple[Side, ...]
    ups: tuple[Side, ...]
    seconds: float
    fps: float
    deadline_ms: float
    ladder_json: str
    capture_ms: float
    render_ms: float


def plan_meetings(args: argparse.Namespace, ladder_json: str) -> list[MeetingJob]:
    """Participant i takes kind ``--mix[i % len(mix)]``; the k-th participant of a kind in
    meeting m takes that kind's trace files in turn from an offset of m, each rolled to its
    own start (so no two links replay the same seconds), its uplink another file than its
    downlink when both come from one profile."""
    from holoport.link import PROFILES
    from holoport.link.profiles import trace_folder
    from holoport.link.sim import MEETING_POLICIES, StageTimes

    try:
        times = StageTimes.load(args.times)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    mix = []
    for kind in args.mix:
        down, _, up = kind.partition("/")
        for name in (down, up):
            if name not in PROFILES or not PROFILES[name].traces:
                raise SystemExit(f"--mix {kind}: {name!r} is not a trace-driven profile "
                                 f"({', '.join(n for n, p in PROFILES.items() if p.traces)})")
        if PROFILES[down].direction == "up":
            raise SystemExit(f"--mix {kind}: {down} has measured uplinks only, not a downlink")
        mix.append((down, up))
    files = {}
    for name in {n for pair in mix for n in pair}:
        profile = PROFILES[name]
        folder = trace_folder(profile, downlink_folder(args), uplink_folder(args))
        found = profile.trace_files(folder)[args.skip_traces:]
        if args.max_traces:
            found = found[: args.max_traces]
        if not found:
            raise SystemExit(f"no traces for {name} under {folder} (pass --downlinks / --uplinks)")
        files[name] = [str(f) for f in found]
    jobs = []
    for m in range(args.first_meeting, args.first_meeting + args.meetings):
        downs, ups = [], []
        for i in range(args.participants):
            down, up = mix[i % len(mix)]
            k = i // len(mix) + m * args.participants  # this kind's k-th link in all meetings
            roll = float((37 * i + 113 * m) % 240)
            downs.append(Side(down, files[down][k % len(files[down])], roll))
            shift = 1 if up == down else 0  # not the downlink's own file
            ups.append(Side(up, files[up][(k + shift) % len(files[up])], float((roll + 120) % 240)))
        policies = [p for p in args.policies if p in MEETING_POLICIES]
        for policy in policies:
            jobs.append(MeetingJob(m, policy, tuple(downs), tuple(ups), args.seconds, args.fps, args.deadline_ms,
                                   ladder_json, times.capture_ms, times.render_ms))
    return jobs


def run_meeting_job(job: MeetingJob) -> list[dict]:
    """One meeting under one policy: its records (per pair, per receiver, per sender, all)."""
    from holoport.link import Trace, get_profile
    from holoport.link.ladder import Ladder
    from holoport.link.sim import HeldDelayLink, Participant, Pipeline, simulate_meeting

    ladder = Ladder.from_json(job.ladder_json)
    make = functools.partial(HeldDelayLink, hold_s=1 / job.fps)
    people = []
    for i, (down, up) in enumerate(zip(job.downs, job.ups, strict=True)):
        seed = 1000 * job.meeting + i
        down_link = get_profile(down.profile).downlink(Trace.load(down.trace).rolled(down.roll), seed, make)
        up_link = get_profile(up.profile).uplink(Trace.load(up.trace).rolled(up.roll), seed, make)
        people.append(Participant(up_link, down_link, f"{down.describe()} / {up.describe()}"))
    pipeline = Pipeline(fps=job.fps, deadline_ms=job.deadline_ms, capture_ms=job.capture_ms, render_ms=job.render_ms)
    result = simulate_meeting(ladder, job.policy, people, job.seconds, pipeline)
    out = []
    for r in result.records():
        out.append({"meeting": job.meeting, "policy": job.policy, **r,
                    "downlink": job.downs[r["receiver"]].describe() if r["receiver"] != "all" else "all",
                    "uplink": job.ups[r["sender"]].describe() if r["sender"] != "all" else "all",
                    "participants": len(people), "seconds": result.seconds, "capture_ms": job.capture_ms,
                    "render_ms": job.render_ms})
    return out


def compare(records: list[dict]) -> list[dict]:
    """Per meeting and receiver (every sender pooled), each policy's mean Y-PSNR and misses
    side by side: layered against its per-receiver oracle and against adaptive, and the worst
    (sender, receiver) pair's gap to the oracle."""
    index = {(x["meeting"], x["policy"], x["sender"], x["receiver"]): x for x in records}

    def find(m, policy, s, r):
        return index.get((m, policy, s, r))

    def y(row):
        return row["mean_y_psnr"] if row and row["mean_y_psnr"] is not None else math.nan

    out = []
    for m in dict.fromkeys(x["meeting"] for x in records):
        receivers = sorted({x["receiver"] for x in records if x["meeting"] == m and x["receiver"] != "all"})
        senders = sorted({x["sender"] for x in records if x["meeting"] == m and x["sender"] != "all"})
        for r in [*receivers, "all"]:
            rows = {p: find(m, p, "all", r) for p in POLICIES}
            gaps = [y(find(m, "layered", s, r)) - y(find(m, "oracle", s, r))
                    for s in senders if s != r and find(m, "layered", s, r)] if r != "all" else \
                   [y(find(m, "layered", s, q)) - y(find(m, "oracle", s, q))
                    for s in senders for q in receivers if s != q]
            any_row = next(x for x in rows.values() if x)
            out.append({"meeting": m, "receiver": r, "downlink": any_row["downlink"],
                        "uplink": next((x["uplink"] for x in records if x["meeting"] == m and x["sender"] == r
                                        and x["receiver"] == "all"), "all"),
                        **{f"y_{p}": y(rows[p]) for p in POLICIES},
                        "layered_vs_oracle_db": y(rows["layered"]) - y(rows["oracle"]),
                        "worst_pair_vs_oracle_db": float(np.nanmin(gaps)) if gaps else math.nan,
                        "layered_gain_db": y(rows["layered"]) - y(rows["adaptive"]),
                        **{f"los_{p}": rows[p]["late_or_skipped"] if rows[p] else math.nan
                           for p in ("adaptive", "layered", "oracle")},
                        "p95_layered_ms": rows["layered"]["p95_ms"] if rows["layered"] else math.nan,
                        "layers_mean": rows["layered"]["layers_mean"] if rows["layered"] else math.nan})
    return out


def plot_meetings(table: list[dict], path: str) -> None:
    """Per receiver, each policy's mean Y-PSNR (every sender pooled), one panel per meeting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meetings = list(dict.fromkeys(r["meeting"] for r in table))
    fig, axes = plt.subplots(len(meetings), 1, figsize=(11, 3.6 * len(meetings)), squeeze=False)
    for ax, m in zip(axes[:, 0], meetings, strict=True):
        rows = [r for r in table if r["meeting"] == m and r["receiver"] != "all"]
        x = np.arange(len(rows))
        for k, policy in enumerate(POLICIES):
            ax.bar(x + (k - 1.5) * 0.2, [r[f"y_{policy}"] for r in rows], 0.2, label=policy, color=COLORS[policy])
        ax.set_xticks(x, [f"{r['receiver']}: {r['downlink'].split(':')[0]}\n{r['uplink'].split(':')[0]}"
                          for r in rows], fontsize=7)
        ax.set_ylabel("mean Y-PSNR, dB")
        ax.set_ylim(20, 50)
        ax.set_title(f"meeting {m}: every sender's frames shown in time, per receiver")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_meetings(args: argparse.Namespace, ladder_json: str, console) -> int:
    from rich.progress import track

    jobs = plan_meetings(args, ladder_json)
    workers = args.workers or max(1, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        done = list(track(pool.map(run_meeting_job, jobs, chunksize=1), total=len(jobs),
                          description=f"{len(jobs)} simulated meetings of {args.participants}", console=console))
    records = [r for rs in done for r in rs]
    table = compare(records)
    first = jobs[0]
    emit(table, MEETING_COLUMNS, f"Meetings of {args.participants}: {args.seconds:g} s, {args.fps:g} fps, "
         f"{args.deadline_ms:g} ms deadline, capture {first.capture_ms:g} ms and render {first.render_ms:g} ms "
         f"({times_source(args)}); per receiver, every sender pooled", args, console,
         json_records=records + [{**t, "policy": "comparison"} for t in table])
    if args.plot:
        plot_meetings(table, args.plot)
        console.print(f"wrote {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
