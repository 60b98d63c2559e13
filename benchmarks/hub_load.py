"""Hub load: the delay a real hub adds to a frame's trip, against the same load sent without one.

For N in --participants (default 2 4 8 16) and with CURVE off and on, a real `holoport hub`
process serves one room, and this process runs N participants (one thread each, the frames
already encoded, received frames not decoded) sending --fps (default 30) frames of
--frame-bytes each (default 100,000; 0: the mean size of the octree codec's output, colour
step 16, for the PLY frames in --data). Their sending phases are spread evenly over a frame
period, as independent cameras' would be.

Method. Each participant holds two paths to the others. Through the hub: a real node (its
DEALER to the hub's ROUTER, credit window and all). Direct: a DEALER socket of its own
that the others' DEALERs connect to, so that a sender sends each frame N - 1 times, once
per receiver, as the hub does for it; on CURVE every participant is a CURVE server with its
own key and a client of every other one, plain otherwise, as the hub. Both paths carry the
same message (header and payload) with a node's socket options, and each participant has
one ZeroMQ context of its own (one I/O thread that encrypts what it sends and decrypts
what it receives), as if it were a process of its own. The participants switch between
the two paths together every --segment seconds (default 0.25) while their threads wait on
both at once; for every frame a receiver takes off a socket, one clock (this machine's)
gives the time from the sender's `sent` stamp, taken just before its send, to the moment
the receiver took it (a node's `received` stamp). As a node does, a receiver keeps only
the newest frame of each sender among those it drains at once (others are counted as
skipped, on both paths). --seconds (default 4) of each path are measured after a second of
warm-up; alternating in short segments gives both paths the same share of the machine's
other load, which changes from second to second.

Records: `direct_p50_ms`/`direct_p99_ms` (send to arrival without the hub),
`hub_path_p50_ms`/`hub_path_p99_ms` (through it), and the hub's added delay `added_p50_ms`
= hub_path_p50_ms - direct_p50_ms and `added_p99_ms` = hub_path_p99_ms - direct_p99_ms (a
difference of percentiles, so noise can make it slightly negative). The hub's own
processing window (hub_out - hub_in, or to hub_held for a frame held for credit) is
`hub_own_p50_ms`/`hub_own_p99_ms`; the legs either side of it, send to hub_in and hub_out
to arrival, are `to_hub_*` and `from_hub_*`. Also: forwarded Mbit/s (over the hub
segments), the hub process's CPU seconds per forwarded Gbit, the share of frames sent on
each path that reached their N - 1 receivers and were timed (`*_delivered`: well under 1
means that path is saturated), frames lost although their receiver had credit
(credited_drops: must stay 0), frames held for a receiver without credit that a newer one
replaced (stale_replaced), the share of frames held for credit and that wait's p99.

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

from benchmarks.common import add_output_arguments, emit, script_main
from holoport.data import data_root

COLUMNS = ["participants", "curve", "frame_bytes", "sent_fps", "forwarded_mbps", "hub_cpu_s_per_gbit",
           "direct_p50_ms", "direct_p99_ms", "hub_path_p50_ms", "hub_path_p99_ms",
           "added_p50_ms", "added_p99_ms", "hub_own_p50_ms", "hub_own_p99_ms",
           "direct_delivered", "hub_path_delivered", "credited_drops", "stale_replaced", "held_share",
           "credit_wait_p99_ms"]

HUB, DIRECT = "hub", "direct"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--participants", type=int, nargs="*", default=[2, 4, 8, 16],
                        help="room sizes to run, each 2..16 (default 2 4 8 16)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second per participant")
    parser.add_argument("--frame-bytes", type=int, default=100_000,
                        help="payload size; 0 = the octree codec's output for the frames in --data")
    parser.add_argument("--data", type=Path, default=None,
                        help="PLY frames for --frame-bytes 0 (default <data>/pointclouds/mvub)")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="measured seconds per path (hub and direct) and run")
    parser.add_argument("--segment", type=float, default=0.25,
                        help="seconds on one path before switching to the other")
    parser.add_argument("--curve", choices=["off", "on", "both"], default="both")
    add_output_arguments(parser)


def codec_frame_bytes(folder: Path) -> int:
    from capture.ply import read_ply
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


def _percentiles(samples) -> tuple[float | None, float | None]:
    if not len(samples):
        return None, None
    p50, p99 = np.percentile(samples, [50, 99])
    return float(p50), float(p99)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def run_one(n: int, curve: bool, frame_bytes: int, fps: float, seconds: float, segment: float = 0.25) -> dict:
    import zmq

    from holoport import wire
    from holoport.endpoints import free_tcp_endpoint
    from holoport.hubstats import query_stats
    from holoport.node import Node
    from holoport.security import KeyPair, NodeSecurity, create_keys, load_public

    # one context per participant, as if each were a process of its own: its I/O thread
    # encrypts what it sends and decrypts what it receives, on both paths
    contexts = [zmq.Context() for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = free_tcp_endpoint()
        hub_args = [sys.executable, "-m", "holoport", "hub", "--bind", endpoint, "--seats", str(max(n, 2)),
                    "--quiet"]
        security, keys, pairs = None, [None] * n, [None] * n
        if curve:  # one key per participant: a CURVE hub admits each key once
            allow = Path(tmp, "allow")
            allow.mkdir()
            hub_pub, hub_sec = create_keys(Path(tmp, "keys"), "hub")
            hub_args += ["--key", str(hub_sec), "--allow", str(allow)]
            for i in range(n):
                me_pub, me_sec = create_keys(Path(tmp, "keys"), f"p{i}")
                (allow / me_pub.name).write_bytes(me_pub.read_bytes())
                pairs[i] = KeyPair.load(me_sec)
                keys[i] = NodeSecurity(pairs[i], load_public(hub_pub))
            security = keys[0]
        # the direct path: participant i's inbox (a DEALER, bound; a CURVE server with its own
        # key) and its N - 1 outboxes (DEALERs connected to the others' inboxes), with a
        # node's socket options
        inboxes, outboxes = [], []
        for i in range(n):
            s = contexts[i].socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, 64 * 1024 * 1024)
            s.setsockopt(zmq.RCVHWM, 64)
            if curve:
                s.curve_secretkey, s.curve_publickey, s.curve_server = pairs[i].secret, pairs[i].public, True
            s.bind("tcp://127.0.0.1:*")
            inboxes.append(s)
        for i in range(n):
            outs = []
            for j in range(n):
                if j == i:
                    continue
                s = contexts[i].socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.SNDHWM, 8)
                s.setsockopt(zmq.SNDBUF, 256 * 1024)
                if curve:
                    s.curve_secretkey, s.curve_publickey = pairs[i].secret, pairs[i].public
                    s.curve_serverkey = pairs[j].public
                s.connect(inboxes[j].getsockopt_string(zmq.LAST_ENDPOINT))
                outs.append(s)
            outboxes.append(outs)
        hub = subprocess.Popen(hub_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nodes: list = []
        stop = threading.Event()
        threads: list[threading.Thread] = []
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    query_stats(endpoint, security, timeout=1.0)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            for i in range(n):
                node = Node(endpoint, "load", f"p{i}", security=keys[i], decode=False)
                node._ctx = contexts[i]  # its participant's own context, not the process's shared one
                nodes.append(node.start())
            payload = np.random.default_rng(n).integers(0, 256, frame_bytes, dtype=np.uint8).tobytes()
            mode = [DIRECT]  # which path the participants send on now (the main thread switches it)
            # per participant, in ms: each frame's send -> arrival without the hub; through it, per
            # frame (send -> arrival, the hub's own window, its wait for credit or None, the
            # legs send -> hub_in and hub_out -> arrival), one tuple appended at once
            direct: list[list[float]] = [[] for _ in range(n)]
            through: list[list[tuple]] = [[] for _ in range(n)]
            direct_sent, direct_dropped, direct_skipped = [0] * n, [0] * n, [0] * n

            def participant(i: int) -> None:
                node, inbox, outs, period = nodes[i], inboxes[i], outboxes[i], 1.0 / fps
                poller = zmq.Poller()
                poller.register(node._sock, zmq.POLLIN)  # wait on both paths at once
                poller.register(inbox, zmq.POLLIN)
                seq = 0
                next_tick = began + i * period / n  # independent cameras: phases spread over a period
                while not stop.is_set():
                    if time.monotonic() >= next_tick:
                        if mode[0] == HUB:
                            node.send_encoded(payload, 0, {"capture": time.time()})
                        else:  # the same header fields and payload, to each receiver itself
                            seq += 1
                            ts = {"capture": time.time()}
                            head = wire.header(wire.MessageType.FRAME, room="load", src=i + 1, seq=seq,
                                               ts=ts, points=0, key=True)
                            ts["sent"] = time.time()
                            frames = wire.encode(head, [payload])
                            for s in outs:
                                try:
                                    s.send_multipart(frames, zmq.NOBLOCK, copy=False)
                                except zmq.Again:  # a node drops a frame its full queue refuses, too
                                    direct_dropped[i] += 1
                            direct_sent[i] += 1
                        next_tick = max(next_tick + period, time.monotonic() - period)
                        node.heartbeat()
                    wait = max(0.0, min(0.01, next_tick - time.monotonic()))
                    ready = dict(poller.poll(int(wait * 1000)))
                    if node._sock in ready:
                        for f in node.poll(0):  # the newest frame per sender; older ones skipped
                            ts = f.ts  # one clock on loopback: the node's clock sync leaves them be
                            held = ts.get("hub_held")
                            through[i].append(((ts["received"] - ts["sent"]) * 1e3,
                                               ((held or ts["hub_out"]) - ts["hub_in"]) * 1e3,
                                               None if held is None else (ts["hub_out"] - held) * 1e3,
                                               (ts["hub_in"] - ts["sent"]) * 1e3,
                                               (ts["received"] - ts["hub_out"]) * 1e3))
                    if inbox in ready:  # as a node's poll: stamp, decode, keep the newest per sender
                        newest: dict[int, float] = {}
                        while True:
                            try:
                                got = inbox.recv_multipart(zmq.NOBLOCK, copy=False)
                            except zmq.Again:
                                break
                            received = time.time()
                            msg = wire.decode(got)
                            if msg.type != wire.MessageType.FRAME or not wire.need(msg.header, "src", "seq", "ts"):
                                continue
                            direct_skipped[i] += msg.header["src"] in newest
                            newest[msg.header["src"]] = (received - msg.header["ts"]["sent"]) * 1e3
                        direct[i].extend(newest.values())

            def switch(until: float, spent: dict[str, float]) -> None:
                while (left := until - time.monotonic()) > 0:
                    t = time.monotonic()
                    time.sleep(min(segment, left))
                    spent[mode[0]] += time.monotonic() - t
                    mode[0] = HUB if mode[0] == DIRECT else DIRECT

            began = time.monotonic()
            threads += [threading.Thread(target=participant, args=(i,), daemon=True) for i in range(n)]
            for t in threads:
                t.start()
            switch(time.monotonic() + max(1.0, 2 * segment), {HUB: 0.0, DIRECT: 0.0})  # warm up
            mode[0] = DIRECT

            def counts() -> tuple[int, int, int, int, int]:  # frames sent and skipped per path, copies dropped
                return (sum(node.counters.sent for node in nodes), sum(direct_sent),
                        sum(node.counters.skipped_stale for node in nodes), sum(direct_skipped), sum(direct_dropped))

            before, cpu0, t0, counts0 = query_stats(endpoint, security), _cpu_seconds(hub.pid), time.monotonic(), \
                counts()
            for a in direct + through:
                a.clear()
            spent = {HUB: 0.0, DIRECT: 0.0}
            switch(time.monotonic() + 2 * seconds, spent)
            after, cpu1, t1, counts1 = query_stats(endpoint, security), _cpu_seconds(hub.pid), time.monotonic(), \
                counts()
            without = [x for a in direct for x in a]
            hub_frames = [x for a in through for x in a]
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)
            for node in nodes:
                node.stop()
            for s in inboxes + [s for outs in outboxes for s in outs]:
                s.close(0)
            for c in contexts:
                c.destroy(linger=0)
            hub.terminate()
            hub.wait(timeout=10)
    gbits = (after["forwarded_bytes"] - before["forwarded_bytes"]) * 8 / 1e9
    hub_sent, direct_sent_n, hub_skipped, direct_skipped_n, dropped = (
        b - a for a, b in zip(counts0, counts1, strict=True))
    trip_ms, own_ms, wait_ms, to_ms, from_ms = (list(c) for c in zip(*hub_frames, strict=True)) if hub_frames \
        else ([], [], [], [], [])
    held = [x for x in wait_ms if x is not None]
    hub_p50, hub_p99 = _percentiles(trip_ms)
    direct_p50, direct_p99 = _percentiles(without)
    own_p50, own_p99 = _percentiles(own_ms)
    to_p50, to_p99 = _percentiles(to_ms)
    from_p50, from_p99 = _percentiles(from_ms)
    record = {"participants": n, "curve": curve, "frame_bytes": frame_bytes,
              "sent_fps": (hub_sent + direct_sent_n) / (t1 - t0) / n,
              "forwarded_mbps": gbits * 1e3 / spent[HUB] if spent[HUB] else None,
              "hub_cpu_s_per_gbit": (cpu1 - cpu0) / gbits if gbits else None,
              # send to arrival, without the hub and through it, and the difference: the hub's part
              "direct_p50_ms": direct_p50, "direct_p99_ms": direct_p99,
              "hub_path_p50_ms": hub_p50, "hub_path_p99_ms": hub_p99,
              "added_p50_ms": _minus(hub_p50, direct_p50), "added_p99_ms": _minus(hub_p99, direct_p99),
              "direct_frames": len(without), "hub_path_frames": len(trip_ms),
              # of the frames sent on a path, times their n - 1 receivers: the share timed (a
              # saturated path delivers much less: a receiver shows each sender's newest only)
              "direct_delivered": len(without) / (direct_sent_n * (n - 1)) if direct_sent_n else None,
              "hub_path_delivered": len(trip_ms) / (hub_sent * (n - 1)) if hub_sent else None,
              # frames that arrived behind a newer one of the same sender, in one drain: not
              # shown, so not timed (on either path)
              "direct_skipped": direct_skipped_n, "hub_path_skipped": hub_skipped,
              # the hub's own processing window: arrival to send (or to holding it for credit)
              "hub_own_p50_ms": own_p50, "hub_own_p99_ms": own_p99,
              # the legs either side of it: the sender's send to the hub's arrival stamp, and the
              # hub's send stamp to the receiver's arrival (sockets, encryption, wake-ups)
              "to_hub_p50_ms": to_p50, "to_hub_p99_ms": to_p99,
              "from_hub_p50_ms": from_p50, "from_hub_p99_ms": from_p99,
              # frames lost although their receiver had credit (its queue in the hub was full),
              # and frames held for a receiver without credit that a newer one replaced
              "credited_drops": after["dropped_full"] - before["dropped_full"],
              "stale_replaced": after["stale_replaced"] - before["stale_replaced"],
              # frames the hub held until their receiver handed back credit, and that wait
              "held_share": len(held) / len(trip_ms) if trip_ms else None,
              "credit_wait_p99_ms": float(np.percentile(held, 99)) if held else None,
              # direct copies a sender's full queue refused (a node drops a frame so, too)
              "direct_dropped": dropped}
    # a path that delivers under 95% is saturated: its queues, not the hub, set its delays
    return {**record, "saturated": _saturated(record)}


def _saturated(r: dict) -> bool:
    """Whether either path timed under 95% of the frames sent on it at their receivers."""
    return not min(r.get("direct_delivered") or 0.0, r.get("hub_path_delivered") or 0.0) >= 0.95


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 3.8))
    sizes: set[int] = set()
    for curve, color in ((False, "tab:blue"), (True, "tab:orange")):
        rows = sorted((r for r in records if r["curve"] == curve), key=lambda r: r["participants"])
        if not rows:
            continue
        label = "CURVE" if curve else "plain"
        n = [r["participants"] for r in rows]
        sizes.update(n)
        left.plot(n, [r["forwarded_mbps"] for r in rows], "o-", color=color, label=label)
        middle.plot(n, [r["hub_path_p99_ms"] for r in rows], "o-", color=color, label=f"{label}: through the hub")
        middle.plot(n, [r["direct_p99_ms"] for r in rows], "s--", color=color, label=f"{label}: direct")
        fit = [r for r in rows if not _saturated(r)]  # a saturated path's queues say nothing of the hub
        right.plot([r["participants"] for r in fit], [r["added_p99_ms"] for r in fit], "o-", color=color,
                   label=f"{label} p99")
        right.plot([r["participants"] for r in fit], [r["added_p50_ms"] for r in fit], "s--", color=color,
                   label=f"{label} p50")
    left.set_ylabel("forwarded Mbit/s")
    middle.set_ylabel("send to arrival p99, ms")
    middle.set_yscale("log")
    right.set_ylabel("added by the hub (hub path - direct), ms")
    right.set_title("rows where both paths deliver ≥ 95%", fontsize=9)
    right.axhline(2.0, color="grey", lw=0.8, ls=":")
    right.axhline(0.0, color="black", lw=0.6)
    for ax in (left, middle, right):
        ax.set_xlabel("participants")
        ax.set_xticks(sorted(sizes))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    if any(not 2 <= n <= 16 for n in args.participants):
        print("--participants must each be in 2..16", file=sys.stderr)
        return 2
    if not 0 < args.segment <= args.seconds:
        print("--segment must be in (0, --seconds]", file=sys.stderr)
        return 2
    import logging

    logging.getLogger("holoport").setLevel(logging.WARNING)  # joins and leaves by the dozen
    frame_bytes = args.frame_bytes or codec_frame_bytes(args.data or data_root() / "pointclouds" / "mvub")
    curves = {"off": [False], "on": [True], "both": [False, True]}[args.curve]
    from rich.progress import track

    configs = [(n, c) for c in curves for n in args.participants]
    records = [run_one(n, c, frame_bytes, args.fps, args.seconds, args.segment)
               for n, c in track(configs, description="loading the hub")]
    emit(records, COLUMNS, f"Hub load: {args.fps:g} fps per participant, {frame_bytes:,} B frames; "
         "send to arrival ms, through the hub and direct", args, plot=plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
