"""Relay rate: what the live link relay (holoport.link.relay.LinkRelay) carries, and its CPU.

A ZeroMQ PUSH sends --size-byte messages as fast as its socket takes them through an
in-process relay whose uplink is a constant --mbps link (no delay, no loss) to a PULL, for
--seconds: goodput (message bytes received per second, from the first message to the
last) against the link's rate shows where the relay, not the link, is the limit. Then a
paced run: --paced-fps messages of --paced-size bytes a second through an mmwave-walking
uplink at the rate they need (--paced-mbps), with the relay thread's CPU time (Linux
/proc/self/task, that thread only) over wall time.

Records: run ("ceiling" or "paced"), link_mbps, offered_mbps (paced only), goodput_mbps,
share (goodput over the link's rate), relay_cpu (share of one core), load_1min.

Run: python -m benchmarks.relay_rate --json docs/bench/relay.json --markdown docs/bench/relay.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from pathlib import Path

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["run", "link_mbps", "offered_mbps", "goodput_mbps", "share", "relay_cpu", "load_1min"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mbps", type=float, nargs="+", default=[100.0, 500.0, 1000.0, 3000.0],
                        help="link rates for the ceiling runs")
    parser.add_argument("--size", type=int, default=100_000, help="message bytes (ceiling)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--paced-fps", type=float, default=30.0)
    parser.add_argument("--paced-size", type=int, default=140_000, help="bytes per paced message")
    parser.add_argument("--paced-mbps", type=float, default=150.0,
                        help="the paced run's uplink (mmwave-walking's delay and handovers)")
    add_output_arguments(parser)


def _thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(link_mbps: float, size: int, seconds: float, fps: float | None, config) -> tuple[float, float | None]:
    import zmq

    from holoport.endpoints import free_tcp_endpoint
    from holoport.link import Link, LinkConfig, Trace
    from holoport.link.relay import LinkRelay

    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    target = free_tcp_endpoint()
    pull.bind(target)
    up = Link(Trace.constant(link_mbps), config, seed=1)
    down = Link(Trace.constant(link_mbps), LinkConfig(delay_ms=0.0), seed=2)
    with LinkRelay("tcp://127.0.0.1:0", target, up, down) as relay:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, 4)
        push.setsockopt(zmq.SNDTIMEO, 100)
        push.connect(relay.endpoint)
        stop = threading.Event()
        payload = bytes(size)

        def send():
            k = 0
            start = time.monotonic()
            while not stop.is_set():
                if fps:
                    wait = start + k / fps - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                with contextlib.suppress(zmq.Again):
                    push.send(payload)
                    k += 1

        sender = threading.Thread(target=send, daemon=True)
        thread = relay._thread
        cpu0 = _thread_cpu(thread.native_id) if thread is not None else None
        t0 = time.monotonic()
        sender.start()
        arrivals = []
        try:
            while time.monotonic() < t0 + seconds:
                if pull.poll(100):
                    pull.recv()
                    arrivals.append(time.monotonic())
        finally:
            cpu = (_thread_cpu(thread.native_id) - cpu0) / (time.monotonic() - t0) if cpu0 is not None else None
            stop.set()
            sender.join(2)
            push.close()
            pull.close()
    if len(arrivals) < 2:
        return 0.0, cpu
    return (len(arrivals) - 1) * size * 8 / (arrivals[-1] - arrivals[0]) / 1e6, cpu


def run(args: argparse.Namespace) -> int:
    from holoport.link import LinkConfig, get_profile

    load = os.getloadavg()[0]
    records = []
    for mbps in args.mbps:
        goodput, cpu = one(mbps, args.size, args.seconds, None, LinkConfig(delay_ms=0.0))
        records.append({"run": "ceiling", "link_mbps": mbps, "offered_mbps": None, "goodput_mbps": goodput,
                        "share": goodput / mbps, "relay_cpu": cpu, "load_1min": load})
    offered = args.paced_fps * args.paced_size * 8 / 1e6
    goodput, cpu = one(args.paced_mbps, args.paced_size, args.seconds, args.paced_fps,
                       get_profile("mmwave-walking").up)
    records.append({"run": "paced", "link_mbps": args.paced_mbps, "offered_mbps": offered,
                    "goodput_mbps": goodput, "share": goodput / args.paced_mbps, "relay_cpu": cpu,
                    "load_1min": load})
    emit(records, COLUMNS, f"Link relay: {args.size:,} B messages as fast as they go (ceiling), and "
         f"{args.paced_fps:g} fps of {args.paced_size:,} B (paced); {args.seconds:g} s each, load average "
         f"{load:.2f}", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
