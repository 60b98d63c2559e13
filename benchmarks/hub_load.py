"""Hub load: N participants on loopback sending frames of a realistic size through one hub.

For N in --participants (default 2 4 8 16) and with CURVE off and on, a real `holoport hub`
process serves one room; this process runs N participant nodes (one thread each, the
frames already encoded, received frames not decoded, so that the hub is what is measured)
sending --fps (default 30) frames of --frame-bytes each (default 100,000; 0: the mean
size of the octree codec's output, colour step 16, for the PLY frames in --data) for
--seconds. Records: forwarded Mbit/s, the hub process's CPU seconds per forwarded Gbit,
the time frames spend in the hub (hub_out - hub_in, as receivers saw it) at p50 and p99,
frames lost although their receiver had credit (credited_drops: must stay 0), and frames
held for a receiver without credit that a newer one replaced (stale_replaced).

Run: holoport bench hub --json hub.json --markdown hub.md --plot hub.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, data_root, emit, script_main

COLUMNS = ["participants", "curve", "frame_bytes", "sent_fps", "forwarded_mbps", "hub_cpu_s_per_gbit",
           "added_p50_ms", "added_p99_ms", "credited_drops", "stale_replaced",
           "held_share", "credit_wait_p99_ms"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--participants", type=int, nargs="*", default=[2, 4, 8, 16],
                        help="room sizes to run, each 2..16 (default 2 4 8 16)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second per participant")
    parser.add_argument("--frame-bytes", type=int, default=100_000,
                        help="payload size; 0 = the octree codec's output for the frames in --data")
    parser.add_argument("--data", type=Path, default=None,
                        help="PLY frames for --frame-bytes 0 (default <data>/pointclouds/mvub)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--curve", choices=["off", "on", "both"], default="both")
    add_output_arguments(parser)


def codec_frame_bytes(folder: Path) -> int:
    from benchmarks.common import read_ply
    from codec import OctreeCodec

    sizes = []
    for path in sorted(folder.glob("*.ply")):
        positions, colors = read_ply(path)
        top = float(positions.max()) + 1
        sizes.append(len(OctreeCodec(depth=int(np.ceil(np.log2(top))), origin=(0, 0, 0),
                                     size=float(2 ** np.ceil(np.log2(top))), color_step=16,
                                     slices=1).encode(positions, colors)))
    if not sizes:
        raise SystemExit(f"no PLY frames in {folder}; pass --data DIR or --frame-bytes N")
    return int(np.mean(sizes))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_one(n: int, curve: bool, frame_bytes: int, fps: float, seconds: float) -> dict:
    from holoport.endpoints import free_tcp_endpoint
    from holoport.node import Node, query_stats
    from holoport.security import KeyPair, NodeSecurity, create_keys, load_public

    with tempfile.TemporaryDirectory() as tmp:
        endpoint = free_tcp_endpoint()
        hub_args = [sys.executable, "-m", "holoport", "hub", "--bind", endpoint, "--seats", str(max(n, 2)),
                    "--quiet"]
        security, keys = None, [None] * n
        if curve:  # one key per participant: a CURVE hub admits each key once
            allow = Path(tmp, "allow")
            allow.mkdir()
            hub_pub, hub_sec = create_keys(Path(tmp, "keys"), "hub")
            hub_args += ["--key", str(hub_sec), "--allow", str(allow)]
            for i in range(n):
                me_pub, me_sec = create_keys(Path(tmp, "keys"), f"p{i}")
                (allow / me_pub.name).write_bytes(me_pub.read_bytes())
                keys[i] = NodeSecurity(KeyPair.load(me_sec), load_public(hub_pub))
            security = keys[0]
        hub = subprocess.Popen(hub_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    query_stats(endpoint, security, timeout=1.0)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            nodes = [Node(endpoint, "load", f"p{i}", security=keys[i], decode=False).start()
                     for i in range(n)]
            payload = np.random.default_rng(n).integers(0, 256, frame_bytes, dtype=np.uint8).tobytes()
            stop = threading.Event()
            added: list[list[float]] = [[] for _ in nodes]
            waits: list[list[float]] = [[] for _ in nodes]

            def participant(i: int) -> None:
                node, period = nodes[i], 1.0 / fps
                next_tick = time.monotonic()
                while not stop.is_set():
                    if time.monotonic() >= next_tick:
                        node.send_encoded(payload, 0, {"capture": time.time()})
                        next_tick = max(next_tick + period, time.monotonic() - period)
                        node.heartbeat()
                    for f in node.poll(max(0.0, min(0.01, next_tick - time.monotonic()))):
                        ts = f.ts  # a frame held for want of credit: the hub's part ends there
                        added[i].append((ts.get("hub_held", ts["hub_out"]) - ts["hub_in"]) * 1e3)
                        if "hub_held" in ts:
                            waits[i].append((ts["hub_out"] - ts["hub_held"]) * 1e3)

            threads = [threading.Thread(target=participant, args=(i,), daemon=True) for i in range(n)]
            for t in threads:
                t.start()
            time.sleep(1.0)  # warm up, then measure
            before, cpu0, t0 = query_stats(endpoint, security), _cpu_seconds(hub.pid), time.monotonic()
            sent0 = sum(node.counters.sent for node in nodes)
            for a in added + waits:
                a.clear()
            time.sleep(seconds)
            after, cpu1, t1 = query_stats(endpoint, security), _cpu_seconds(hub.pid), time.monotonic()
            sent1 = sum(node.counters.sent for node in nodes)
            samples = [x for a in added for x in a]
            held = [x for a in waits for x in a]
            stop.set()
            for t in threads:
                t.join(timeout=5)
            for node in nodes:
                node.stop()
        finally:
            hub.terminate()
            hub.wait(timeout=10)
    gbits = (after["forwarded_bytes"] - before["forwarded_bytes"]) * 8 / 1e9
    span = t1 - t0
    p50, p99 = (np.percentile(samples, [50, 99]) if samples else (None, None))
    return {"participants": n, "curve": curve, "frame_bytes": frame_bytes,
            "sent_fps": (sent1 - sent0) / span / n, "forwarded_mbps": gbits * 1e3 / span,
            "hub_cpu_s_per_gbit": (cpu1 - cpu0) / gbits if gbits else None,
            "added_p50_ms": None if p50 is None else float(p50),
            "added_p99_ms": None if p99 is None else float(p99),
            # frames lost although their receiver had credit (its queue in the hub was full),
            # and frames held for a receiver without credit that a newer one replaced
            "credited_drops": after["dropped_full"] - before["dropped_full"],
            "stale_replaced": after["stale_replaced"] - before["stale_replaced"],
            # frames the hub held until their receiver handed back credit, and that wait
            "held_share": len(held) / len(samples) if samples else None,
            "credit_wait_p99_ms": float(np.percentile(held, 99)) if held else None}


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for curve in (False, True):
        rows = sorted((r for r in records if r["curve"] == curve), key=lambda r: r["participants"])
        if not rows:
            continue
        label = "CURVE" if curve else "plain"
        n = [r["participants"] for r in rows]
        left.plot(n, [r["forwarded_mbps"] for r in rows], "o-", label=label)
        right.plot(n, [r["added_p99_ms"] for r in rows], "o-", label=f"{label} p99")
        right.plot(n, [r["added_p50_ms"] for r in rows], "o--", label=f"{label} p50")
    left.set_xlabel("participants")
    left.set_ylabel("forwarded Mbit/s")
    right.set_xlabel("participants")
    right.set_ylabel("time in the hub, ms")
    right.set_yscale("log")
    for ax in (left, right):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    if any(not 2 <= n <= 16 for n in args.participants):
        print("--participants must each be in 2..16", file=sys.stderr)
        return 2
    import logging

    logging.getLogger("holoport").setLevel(logging.WARNING)  # joins and leaves by the dozen
    frame_bytes = args.frame_bytes or codec_frame_bytes(args.data or data_root() / "pointclouds" / "mvub")
    curves = {"off": [False], "on": [True], "both": [False, True]}[args.curve]
    from rich.progress import track

    configs = [(n, c) for c in curves for n in args.participants]
    records = [run_one(n, c, frame_bytes, args.fps, args.seconds)
               for n, c in track(configs, description="loading the hub")]
    emit(records, COLUMNS, f"Hub load: {args.fps:g} fps per participant, {frame_bytes:,} B frames", args, plot=plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
