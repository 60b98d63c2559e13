"""Live rate: a real sender adapting to a thin uplink, in real time.

A participant (by default the demo's synthetic person; --source takes anything `holoport
join --source` takes: a recording, an Azure Kinect .mkv, an RGB-D sequence folder; octree
codec, 15 fps) sends through a real link relay (holoport.link.relay, constant --mbps
uplink, 10 ms each way) to a real hub and a receiving node on this machine, for --seconds
per run, with each --policies: fixed (the ladder's top rung, every frame) and adaptive
(holoport.link.live: the ladder measured on the first frame, steered by the receiver's
arrival reports). The second half of each run is measured. Records: source, policy,
uplink_mbps, top_rung_mbps, sent_fps, received_fps, p50_ms, p95_ms (capture to arrival at
the receiver, one clock), sent_mbps, mean_lod, skipped (by the policy; frames the node's
full queue dropped are not sent either).

``--case hetero``: one sender on a fast uplink and three receivers behind link relays of
different downlinks (--downlinks, default 50, 8 and 2 Mbit/s, 10 ms each way), with
--policies rungs (today's: one rung for all, the lowest any receiver can take in time) and
layered (``--rate adaptive``: a layered stream; the hub forwards each receiver the parts its
own downlink carries in time, holoport.layers). Receivers take frames off the socket
without drawing them. Records, one per receiver: case, policy, receiver, downlink_mbps,
received_fps, layers_mean (parts per shown frame; 0 for rungs), mean_level (octree level
of the frames shown), mean_y_psnr (each frame's quality at what was shown, from the
qualities measured on the first frame: the ladder's rungs, or each prefix of the layered
frame), p50_ms, p95_ms (capture to arrival of the frame's last part shown), sent_mbps.

Run: python -m benchmarks.live_rate [--source PATH] --json live.json --markdown live.md --plot live.png
     holoport bench live --case hetero --json live-hetero.json --markdown live-hetero.md
"""

from __future__ import annotations

import argparse
import time
from contextlib import closing

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main

HETERO_COLUMNS = ["policy", "receiver", "downlink_mbps", "received_fps", "layers_mean", "mean_level", "mean_y_psnr",
                  "p50_ms", "p95_ms", "sent_mbps"]
COLUMNS = ["policy", "uplink_mbps", "top_rung_mbps", "sent_fps", "received_fps", "p50_ms", "p95_ms",
           "sent_mbps", "mean_lod", "skipped"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mbps", type=float, nargs="*", default=[0.5, 1.0, 2.0, 4.0],
                        help="uplink capacities to run (default 0.5 1 2 4)")
    parser.add_argument("--case", choices=["uplink", "hetero"], default="uplink",
                        help="uplink: one sender through a thin uplink (default); hetero: three receivers "
                             "behind different downlinks")
    parser.add_argument("--policies", nargs="*", default=None, choices=["fixed", "adaptive", "rungs", "layered"],
                        help="uplink case: fixed, adaptive (default both); hetero case: rungs, layered "
                             "(default both)")
    parser.add_argument("--downlinks", type=float, nargs="*", default=[50.0, 8.0, 2.0],
                        help="hetero case: the receivers' downlinks, Mbit/s")
    parser.add_argument("--seconds", type=float, default=12.0, help="per run; the second half is measured")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--source", default="synthetic",
                        help="the sender's points: 'synthetic' (default), a recording, an Azure Kinect .mkv, "
                             "a RealSense .bag or an RGB-D sequence folder (played as fast as the run asks)")
    add_output_arguments(parser)


def run_sender(hub_endpoint: str, policy: str, mbps: float, seconds: float, fps: float = 15.0,
               source: str = "synthetic"):
    """One run: returns the LiveRate, the sender node's counters and the receiver's
    (capture -> arrival) latencies in ms for frames captured in the second half."""
    from codec import for_meeting
    from holoport.link import Link, LinkConfig, Trace
    from holoport.link.live import LiveRate, RungEncoders, live_ladder
    from holoport.link.relay import LinkRelay
    from holoport.node import Node
    from holoport.point_sources import open_points

    points = open_points(source, realtime=False)
    base = for_meeting("octree", color_step=8)
    up = Link(Trace.constant(mbps), LinkConfig(delay_ms=10))
    down = Link(Trace.constant(1000), LinkConfig(delay_ms=1))
    latencies: list[float] = []
    with closing(points), LinkRelay("tcp://127.0.0.1:0", hub_endpoint, up, down) as relay, \
            Node(relay.endpoint, "live", f"sender-{policy}") as a, \
            Node(hub_endpoint, "live", f"receiver-{policy}") as b:  # names: one room refuses the same twice
        ladder = live_ladder(*points.read(), base)
        rate, encoders = LiveRate(ladder, fps, policy), RungEncoders(ladder, base)
        a.on_feedback = rate.on_feedback
        start = next_tick = time.time()
        frame = 0
        half = start + seconds / 2
        sent_half = 0
        while time.time() < start + seconds:
            if time.time() >= next_tick:
                captured = time.time()
                positions, colors = points.read()
                rung = rate.choose(captured, time.time(), frame, False)
                if rung is not None:
                    a.encoder = encoders.get(rung)
                    head = a.send((positions, colors), ts={"capture": captured})
                    if (sent := a.sent_frame(head["seq"])) is not None:  # None: the queue was full
                        rate.on_sent(head["seq"], *sent)
                        sent_half += captured >= half
                frame += 1
                next_tick += 1 / fps
                a.heartbeat()
            a.poll(0.0)
            for f in b.poll(0.005):
                if f.ts["capture"] >= half:
                    latencies.append((time.time() - f.ts["capture"]) * 1e3)
            b.heartbeat()
        counters = a.counters
    return rate, counters, latencies, sent_half


def run_one(policy: str, mbps: float, seconds: float, fps: float, source: str = "synthetic") -> dict:
    from holoport.endpoints import free_tcp_endpoint
    from holoport.hub import Hub

    with Hub(free_tcp_endpoint()) as hub:
        rate, counters, lat, sent_half = run_sender(hub.endpoint, policy, mbps, seconds, fps, source)
    rungs = rate.ladder.rungs
    by_name = {r.name: r for r in rungs}
    chosen = rate.summary()["rungs"]
    n = sum(chosen.values())
    return {"source": source, "policy": policy, "uplink_mbps": mbps, "top_rung_mbps": rungs[-1].mbps(fps),
            "sent_fps": sent_half / (seconds / 2), "received_fps": len(lat) / (seconds / 2),
            "p50_ms": float(np.percentile(lat, 50)) if lat else None,
            "p95_ms": float(np.percentile(lat, 95)) if lat else None,
            "sent_mbps": counters.sent_bytes * 8 / seconds / 1e6,
            "mean_lod": sum(by_name[k].lod * v for k, v in chosen.items()) / n if n else None,
            "skipped": rate.skipped}


def run_hetero(policy: str, downlinks: list[float], seconds: float, fps: float, source: str) -> list[dict]:
    """One sender, one receiver per downlink (each behind its own relay); the second half
    of the run is measured. See the module doc."""
    from codec import for_meeting
    from codec.layered import LayeredOctreeCodec
    from codec.metrics import quality
    from holoport.endpoints import free_tcp_endpoint
    from holoport.hub import Hub
    from holoport.link import Link, LinkConfig, Trace
    from holoport.link.live import LayeredRate, LiveRate, RungEncoders, layered_codec, live_ladder
    from holoport.link.relay import LinkRelay
    from holoport.node import Node
    from holoport.point_sources import open_points

    points = open_points(source, realtime=False)
    base = for_meeting("octree", color_step=8)
    first = points.read()
    if policy == "layered":
        coder = layered_codec(base)
        parts = coder.encode_layers(*first)
        levels = parts.levels
        psnr = []
        for k in range(1, len(parts.parts) + 1):  # on the codec's grid, as the ladder's qualities
            shown = LayeredOctreeCodec.decode_layers(parts.parts[:k])
            psnr.append(quality(_grid(first[0], base), first[1], _grid(shown.positions, base), shown.colors,
                                base.depth).y_psnr)
        rate = LayeredRate(fps)
    else:
        ladder = live_ladder(*first, base)
        rate, encoders = LiveRate(ladder, fps, "adaptive"), RungEncoders(ladder, base)
    seen: list[dict] = [{} for _ in downlinks]  # per receiver: seq -> (arrival ms after capture, parts or rung)
    with Hub(free_tcp_endpoint()) as hub:
        relays = [LinkRelay("tcp://127.0.0.1:0", hub.endpoint, Link(Trace.constant(100.0), LinkConfig(delay_ms=10)),
                            Link(Trace.constant(mbps), LinkConfig(delay_ms=10))).start() for mbps in downlinks]
        try:
            with closing(points), Node(hub.endpoint, "live", "sender") as a:
                receivers = [Node(r.endpoint, "live", f"receiver-{i}", decode=False).start()
                             for i, r in enumerate(relays)]
                a.on_feedback = rate.on_feedback
                start = next_tick = time.time()
                half = start + seconds / 2
                rung_of: dict[int, int] = {}
                while time.time() < start + seconds:
                    if time.time() >= next_tick:
                        captured = time.time()
                        positions, colors = points.read()
                        if policy == "layered":
                            frame = coder.encode_layers(positions, colors)
                            n = rate.choose(captured, time.time(), [len(p) for p in frame.parts])
                            if n:
                                rate.on_sent(a, a.send_layers(frame.parts[:n], frame.points, {"capture": captured}))
                        else:
                            rung = rate.choose(captured, time.time(), 0, False)
                            if rung is not None:
                                a.encoder = encoders.get(rung)
                                head = a.send((positions, colors), ts={"capture": captured})
                                rung_of[head["seq"]] = rung
                                if (sent := a.sent_frame(head["seq"])) is not None:
                                    rate.on_sent(head["seq"], *sent)
                        next_tick += 1 / fps
                        a.heartbeat()
                    a.poll(0.0)
                    for i, b in enumerate(receivers):
                        for f in b.poll(0.002):
                            if f.ts["capture"] >= half:
                                seen[i][f.seq] = ((time.time() - f.ts["capture"]) * 1e3,
                                                  f.layers if policy == "layered" else rung_of.get(f.seq, 0))
                        b.heartbeat()
                sent_mbps = a.counters.sent_bytes * 8 / seconds / 1e6
                for b in receivers:
                    b.close()
        finally:
            for r in relays:
                r.stop()
    records = []
    for i, mbps in enumerate(downlinks):
        got = list(seen[i].values())
        lat = [ms for ms, _ in got]
        if policy == "layered":
            shown = [k for _, k in got]
            level = [levels[k - 1] for k in shown]
            y = [psnr[k - 1] for k in shown]
        else:
            shown = [0 for _ in got]
            level = [base.depth - ladder.rungs[r].lod for _, r in got]
            y = [ladder.rungs[r].y_psnr for _, r in got]
        records.append({"case": "hetero", "source": source, "policy": policy, "receiver": i, "downlink_mbps": mbps,
                        "received_fps": len(got) / (seconds / 2),
                        "layers_mean": float(np.mean(shown)) if got else None,
                        "mean_level": float(np.mean(level)) if got else None,
                        "mean_y_psnr": float(np.mean(y)) if got else None,
                        "p50_ms": float(np.percentile(lat, 50)) if lat else None,
                        "p95_ms": float(np.percentile(lat, 95)) if lat else None, "sent_mbps": sent_mbps})
    return records


def _grid(positions: np.ndarray, base) -> np.ndarray:
    return (np.asarray(positions, np.float64) - np.asarray(base.origin)) / base.cell


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for policy, color in (("fixed", "tab:red"), ("adaptive", "tab:blue")):
        rs = [r for r in records if r["policy"] == policy and r["p50_ms"] is not None]
        if not rs:
            continue
        x = [r["uplink_mbps"] for r in rs]
        left.plot(x, [r["p50_ms"] for r in rs], "o-", color=color, label=f"{policy} p50")
        left.plot(x, [r["p95_ms"] for r in rs], "s--", color=color, label=f"{policy} p95")
        right.plot(x, [r["received_fps"] for r in rs], "o-", color=color, label=policy)
    left.set_yscale("log")
    left.set_ylabel("capture to arrival, ms")
    right.set_ylabel("frames received per second")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("uplink, Mbit/s")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    import logging

    from rich.progress import track

    logging.getLogger("holoport").setLevel(logging.WARNING)
    if args.case == "hetero":
        policies = args.policies or ["rungs", "layered"]
        records = [r for p in track(policies, description="heterogeneous receivers")
                   for r in run_hetero(p, args.downlinks, args.seconds, args.fps, args.source)]
        emit(records, HETERO_COLUMNS, f"Live, three receivers: {args.source}, octree codec, {args.fps:g} fps, "
             f"downlinks {', '.join(f'{m:g}' for m in args.downlinks)} Mbit/s", args)
        return 0
    args.policies = [p for p in (args.policies or ["fixed", "adaptive"]) if p in ("fixed", "adaptive")]
    configs = [(p, m) for m in args.mbps for p in args.policies]
    records = [run_one(p, m, args.seconds, args.fps, args.source)
               for p, m in track(configs, description="live runs through a relay")]
    emit(records, COLUMNS, f"Live rate: {args.source}, octree codec, {args.fps:g} fps, constant uplink", args,
         plot=plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
