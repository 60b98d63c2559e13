"""Link delay: the one-way delay a profile's link delivers, against the one it is configured with.

A reliable link (ZeroMQ over TCP) delivers in order, so a message whose random delay draw is
short still waits for an earlier one whose draw was long: with sends close together, the
delivered delay's tail is longer than the configured log-normal's. For every profile this
sends --bytes every --every-ms for --seconds on the profile's uplink configuration with
capacity taken away as a factor (a constant --mbps, 10 Gbit/s by default), once with its delay
alone and once with everything (delay, loss, handovers), and reports the configured median and
p99 one-way delay and the delivered ones (arrival - send - transmission time).

Records: profile, what ("delay only" or "all"), every_ms, sends, configured_p50_ms,
configured_p99_ms, p50_ms, p99_ms.

Run: python -m benchmarks.link_delay --json docs/bench/link-delay.json --markdown docs/bench/link-delay.md
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["profile", "what", "every_ms", "sends", "configured_p50_ms", "configured_p99_ms", "p50_ms", "p99_ms"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profiles", nargs="*", default=None, help="default: every profile")
    parser.add_argument("--every-ms", type=float, nargs="+", default=[10.0, 33.3, 100.0],
                        help="time between sends")
    parser.add_argument("--bytes", type=int, default=1000, help="bytes per send")
    parser.add_argument("--seconds", type=float, default=600.0, help="simulated seconds per run")
    parser.add_argument("--mbps", type=float, default=10_000.0, help="constant capacity")
    parser.add_argument("--seed", type=int, default=1)
    add_output_arguments(parser)


def measure(config, every_ms: float, nbytes: int, seconds: float, mbps: float, seed: int) -> np.ndarray:
    from holoport.link import Link, Trace

    link = Link(Trace.constant(mbps), config, seed=seed)
    n = int(seconds * 1e3 / every_ms)
    sending = nbytes * 8 / (mbps * 1e6)
    out = []
    for i in range(n):
        t = i * every_ms / 1e3
        d = link.send(t, nbytes)
        if d.arrival is not None:
            out.append((d.arrival - t - sending) * 1e3)  # all but this message's transmission
    return np.array(out)


def run(args: argparse.Namespace) -> int:
    from holoport.link import PROFILES

    names = args.profiles or list(PROFILES)
    records = []
    for name in names:
        if name not in PROFILES:
            raise SystemExit(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
        config = PROFILES[name].up
        alone = dataclasses.replace(config, loss=0.0, handover_every_s=0.0)
        for what, c in (("delay only", alone), ("all", config)):
            for every in args.every_ms:
                delays = measure(c, every, args.bytes, args.seconds, args.mbps, args.seed)
                records.append({"profile": name, "what": what, "every_ms": every, "sends": len(delays),
                                "configured_p50_ms": c.delay_quantile(0.5) * 1e3,
                                "configured_p99_ms": c.delay_quantile(0.99) * 1e3,
                                "p50_ms": float(np.percentile(delays, 50)) if len(delays) else None,
                                "p99_ms": float(np.percentile(delays, 99)) if len(delays) else None})
    emit(records, COLUMNS, f"One-way delay delivered by each profile's uplink model: {args.bytes} B sends, "
         f"{args.mbps:g} Mbit/s, {args.seconds:g} s, seed {args.seed}", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
