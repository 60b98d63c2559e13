"""Relay fairness: does a sparse connection (voice) wait behind a bulk one (a hologram)
on the live link relay's uplink, with and without fair queueing?

Per link rate and mode, through an in-process LinkRelay whose uplink is a constant --mbps
link with --delay-ms one way: a client sends --small-bytes records every --every-ms on its
own TCP connection, alone for --alone-s, then beside a second connection that sends
--bulk-bytes records as fast as its socket takes them (64 KiB send buffer) for --seconds
(the first --warmup-s of it let the queue fill and are not counted). A sink checks every
byte and its order and notes when each record was whole; records carry their send time
(one process, one clock). The small flow's one-way delay alone and beside the bulk one,
and the bulk flow's goodput, show whether voice passes the hologram's queue and what that
costs the hologram.

Records: mode ("fifo": one queue for every connection, as by default; "fair": LinkRelay(fair=True)),
link_mbps, alone_p50_ms, alone_p95_ms (the small flow alone), small_p50_ms, small_p95_ms,
small_p99_ms (beside the bulk flow), added_p95_ms (small_p95_ms - alone_p95_ms), bulk_mbps,
relay_cpu (the relay thread's CPU time over the run's wall time, Linux only), load_1min.

Run: python -m benchmarks.relay_fairness --json docs/bench/relay-fairness.json --markdown docs/bench/relay-fairness.md
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import struct
import threading
import time

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["mode", "link_mbps", "alone_p50_ms", "alone_p95_ms", "small_p50_ms", "small_p95_ms", "small_p99_ms",
           "added_p95_ms", "bulk_mbps", "relay_cpu", "load_1min"]
RECORD = struct.Struct("!IId")  # record bytes, sequence number, time.monotonic() when sent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mbps", type=float, nargs="+", default=[5.0, 20.0], help="uplink rates, Mbit/s")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="one-way delay of the link")
    parser.add_argument("--small-bytes", type=int, default=100, help="bytes per small record (a voice packet)")
    parser.add_argument("--every-ms", type=float, default=20.0, help="between small records")
    parser.add_argument("--bulk-bytes", type=int, default=10_000, help="bytes per bulk record")
    parser.add_argument("--alone-s", type=float, default=2.0, help="seconds of the small flow alone")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of both flows")
    parser.add_argument("--warmup-s", type=float, default=0.5, help="of --seconds, not counted")
    add_output_arguments(parser)


def record(size: int, seq: int) -> bytes:
    """One record: header, then its sequence number's byte repeated (the sink checks it)."""
    return RECORD.pack(size, seq, time.monotonic()) + bytes([seq % 251]) * (size - RECORD.size)


class Sink:
    """A TCP server that reads records from every connection, checks every byte and their
    order, and notes when each record was whole: ``flows[record size] = [(sent, arrived)]``;
    ``errors`` says what was damaged or out of order."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        self.flows: dict[int, list[tuple[float, float]]] = {}
        self.errors: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n:
                if not (part := conn.recv(n - len(data))):
                    raise EOFError
                data += part
            return data

        expected = 0
        with conn, contextlib.suppress(EOFError, OSError):
            while True:
                size, seq, sent = RECORD.unpack(exactly(RECORD.size))
                if not RECORD.size <= size <= 1 << 20:
                    self.errors.append(f"a record of {size} B: the stream is damaged")
                    return
                body = exactly(size - RECORD.size)
                if seq != expected or body != bytes([seq % 251]) * len(body):
                    self.errors.append(f"record {seq} of {size} B out of order or damaged (expected {expected})")
                    return
                expected += 1
                self.flows.setdefault(size, []).append((sent, time.monotonic()))

    def close(self) -> None:
        self.server.close()


def send_records(endpoint: str, size: int, stop: threading.Event, every: float | None) -> threading.Thread:
    """A thread sending ``size``-byte records to ``endpoint`` on its own connection: one
    every ``every`` s, or (None) as fast as its socket takes them, with a 64 KiB send buffer
    (as a sender that wants to notice a slow link keeps it), until ``stop``."""
    from holoport.link.relay import parse_tcp

    def send() -> None:
        with contextlib.suppress(OSError), socket.create_connection(parse_tcp(endpoint), timeout=1.0) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            start, seq = time.monotonic(), 0
            while not stop.is_set():
                if every is not None and (wait := start + seq * every - time.monotonic()) > 0:
                    time.sleep(wait)
                with contextlib.suppress(TimeoutError):  # lets a blocked sender see stop
                    sock.sendall(record(size, seq))
                    seq += 1

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def one_way_ms(records: list[tuple[float, float]], since: float, until: float = math.inf) -> np.ndarray:
    """One-way delays, ms, of the records sent in [since, until)."""
    return np.array([(b - a) * 1e3 for a, b in records if since <= a < until])


def goodput_mbps(records: list[tuple[float, float]], size: int, since: float) -> float:
    """Record bytes a second (Mbit/s) from the first record whole after ``since`` to the last."""
    arrived = [b for _, b in records if b >= since]
    if len(arrived) < 2:
        return 0.0
    return (len(arrived) - 1) * size * 8 / (arrived[-1] - arrived[0]) / 1e6


def _cpu(thread: threading.Thread | None) -> float | None:
    """CPU seconds of one thread of this process; None where /proc cannot say."""
    from benchmarks.relay_rate import _thread_cpu

    with contextlib.suppress(OSError, TypeError, IndexError, ValueError):
        return _thread_cpu(thread.native_id) if thread is not None else None
    return None


def measure(fair: bool, mbps: float, delay_ms: float = 5.0, small: int = 100, every: float = 0.020,
            bulk: int = 10_000, alone_s: float = 1.0, seconds: float = 2.0, warmup_s: float = 0.5) -> dict:
    """One run (see the module's docstring); raises AssertionError if a byte came damaged
    or out of order. ``n``: the small records counted beside the bulk flow."""
    from holoport.link import Link, LinkConfig, Trace
    from holoport.link.relay import LinkRelay

    up = Link(Trace.constant(mbps), LinkConfig(delay_ms=delay_ms), seed=1)
    down = Link(Trace.constant(mbps), LinkConfig(delay_ms=delay_ms), seed=2)
    sink, stop = Sink(), threading.Event()
    try:
        with LinkRelay("tcp://127.0.0.1:0", sink.endpoint, up, down, fair=fair) as relay:
            cpu0 = _cpu(relay._thread)
            senders = [send_records(relay.endpoint, small, stop, every)]
            t0 = time.monotonic()
            time.sleep(alone_s)
            bulk_starts = time.monotonic()
            senders.append(send_records(relay.endpoint, bulk, stop, None))
            time.sleep(seconds)
            stop.set()
            cpu1 = _cpu(relay._thread)
            cpu = (cpu1 - cpu0) / (time.monotonic() - t0) if cpu0 is not None and cpu1 is not None else None
            for thread in senders:
                thread.join(2)
    finally:
        sink.close()
    assert not sink.errors, sink.errors
    small_flow, bulk_flow = sink.flows.get(small, []), sink.flows.get(bulk, [])
    alone = one_way_ms(small_flow, t0 + 0.1, bulk_starts)  # after the connection's set-up
    beside = one_way_ms(small_flow, bulk_starts + warmup_s)
    if not len(alone) or not len(beside):
        raise RuntimeError(f"too few small records arrived ({len(alone)} alone, {len(beside)} beside the bulk flow)")
    alone_p50, alone_p95 = np.percentile(alone, [50, 95])
    p50, p95, p99 = np.percentile(beside, [50, 95, 99])
    return {"mode": "fair" if fair else "fifo", "link_mbps": mbps, "alone_p50_ms": float(alone_p50),
            "alone_p95_ms": float(alone_p95), "small_p50_ms": float(p50), "small_p95_ms": float(p95),
            "small_p99_ms": float(p99), "added_p95_ms": float(p95 - alone_p95),
            "bulk_mbps": goodput_mbps(bulk_flow, bulk, bulk_starts + warmup_s), "relay_cpu": cpu,
            "n": len(beside)}


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted({r["link_mbps"] for r in records})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.2
    for k, (mode, key, color) in enumerate((("fifo", "small_p50_ms", "tab:red"), ("fifo", "small_p95_ms", "salmon"),
                                            ("fair", "small_p50_ms", "tab:blue"),
                                            ("fair", "small_p95_ms", "lightblue"))):
        values = [next((r[key] for r in records if r["mode"] == mode and r["link_mbps"] == m), 0) for m in rates]
        ax.bar([i + (k - 1.5) * width for i in range(len(rates))], values, width, color=color,
               label=f"{mode} {key.split('_')[1]}")
    alone = [max(r["alone_p95_ms"] for r in records if r["link_mbps"] == m) for m in rates]
    ax.plot(range(len(rates)), alone, "k_", markersize=40, label="alone p95")
    ax.set_xticks(range(len(rates)), [f"{m:g} Mbit/s" for m in rates])
    ax.set_ylabel("small flow one-way delay beside a bulk flow, ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    load = os.getloadavg()[0]
    records = []
    for mbps in args.mbps:
        for fair in (False, True):
            r = measure(fair, mbps, args.delay_ms, args.small_bytes, args.every_ms / 1e3, args.bulk_bytes,
                        args.alone_s, args.seconds, args.warmup_s)
            r.pop("n")
            records.append({**r, "load_1min": load})
    emit(records, COLUMNS, f"Link relay fairness: {args.small_bytes} B every {args.every_ms:g} ms beside "
         f"{args.bulk_bytes:,} B records as fast as they go, each on its own connection; {args.delay_ms:g} ms "
         f"one way; load average {load:.2f}", args, plot=plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
