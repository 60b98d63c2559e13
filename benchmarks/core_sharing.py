"""Core sharing: how much a loop slows down while the machine's other core runs one too.

Two numba loops (compiled once, released from the GIL), each timed alone on one thread and
then on two threads at once (each thread its own copy of the work):

- ``integer``: eight independent chains of integer multiply-add and xor-shift, bound by the
  core's arithmetic units. On two real cores it would not slow down; on two hyperthreads of
  one core it runs nearly twice as long.
- ``memory latency``: a pointer chase through a random cycle over --mib MiB (every step
  waits for a cache miss), bound by memory latency, which two threads of one core overlap.

Records: loop, threads, ms (median wall time per call over --repeats), cpu_ms (median CPU
time of the calling thread: time another process took the core away does not count, time
lost to the other thread on the same core does), slowdown (cpu_ms against one thread),
load_1min (the machine's load average when the run began: other processes make "alone"
not alone, which cpu_ms mostly, not wholly, sees through).

Run: python -m benchmarks.core_sharing --json docs/bench/cores.json --markdown docs/bench/cores.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import numpy as np
from numba import njit

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["round", "loop", "threads", "ms", "cpu_ms", "slowdown", "load_1min"]


@njit(nogil=True, cache=True)
def integer_chains(n):  # pragma: no cover - numba
    a0, a1, a2, a3 = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    a4, a5, a6, a7 = np.uint64(5), np.uint64(6), np.uint64(7), np.uint64(8)
    m = np.uint64(6364136223846793005)
    c = np.uint64(1442695040888963407)
    s = np.uint64(29)
    for _ in range(n):
        a0 = (a0 * m + c) ^ (a0 >> s)
        a1 = (a1 * m + c) ^ (a1 >> s)
        a2 = (a2 * m + c) ^ (a2 >> s)
        a3 = (a3 * m + c) ^ (a3 >> s)
        a4 = (a4 * m + c) ^ (a4 >> s)
        a5 = (a5 * m + c) ^ (a5 >> s)
        a6 = (a6 * m + c) ^ (a6 >> s)
        a7 = (a7 * m + c) ^ (a7 >> s)
    return a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7


@njit(nogil=True, cache=True)
def chase(nxt, steps):  # pragma: no cover - numba
    i = 0
    for _ in range(steps):
        i = nxt[i]
    return i


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=15, help="calls timed per loop and thread count")
    parser.add_argument("--iterations", type=int, default=20_000_000, help="integer loop iterations")
    parser.add_argument("--mib", type=int, default=256, help="size of the pointer chase's array")
    parser.add_argument("--steps", type=int, default=2_000_000, help="pointer chase steps")
    parser.add_argument("--rounds", type=int, default=4, help="times the whole measurement is repeated")
    add_output_arguments(parser)


def timed(fn, threads: int, repeats: int) -> tuple[float, float]:
    """Median wall and CPU ms of one call while ``threads`` threads each call ``fn`` at once."""
    times: list[float] = []
    cpu: list[float] = []
    lock = threading.Lock()

    def worker(barrier):
        barrier.wait()
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        c1, t1 = time.thread_time(), time.perf_counter()
        with lock:
            times.append((t1 - t0) * 1e3)
            cpu.append((c1 - c0) * 1e3)

    for _ in range(repeats):
        barrier = threading.Barrier(threads)
        pool = [threading.Thread(target=worker, args=(barrier,)) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    return statistics.median(times), statistics.median(cpu)


def run(args: argparse.Namespace) -> int:
    n = args.mib * (1 << 20) // 8
    order = np.random.default_rng(0).permutation(n)
    nxt = np.empty(n, np.int64)
    nxt[order] = np.roll(order, -1)  # one cycle through every slot
    copies = [nxt, nxt.copy()]  # each thread chases its own array
    integer_chains(10)
    chase(nxt, 10)
    records = []
    loops = {"integer": lambda k: integer_chains(args.iterations),
             "memory latency": lambda k: chase(copies[k], args.steps)}
    for k in range(args.rounds):
        load = os.getloadavg()[0]
        for name, fn in loops.items():
            base = None
            for threads in (1, 2):
                counter = iter(range(threads * args.repeats))
                ms, cpu = timed(lambda fn=fn, counter=counter: fn(next(counter) % 2), threads, args.repeats)
                base = base or cpu
                records.append({"round": k + 1, "loop": name, "threads": threads, "ms": ms, "cpu_ms": cpu,
                                "slowdown": cpu / base, "load_1min": load, "cpus": os.cpu_count()})
    emit(records, COLUMNS, f"Core sharing on {os.cpu_count()} CPUs: one loop alone and beside itself "
         f"(median of {args.repeats} calls; slowdown in CPU time)", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
