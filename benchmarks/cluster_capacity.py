"""Hub cluster capacity: machines and inter-site traffic for many rooms over many edge sites.

From the figures `holoport bench cluster` measured (--bench, its JSON), this model works out
what --rooms (default 1,000) rooms of --room-size (8) participants need across --sites (20)
edge sites: hub machines, and traffic between sites, as a function of how a room's
participants spread over sites. It is arithmetic on measured figures, not a simulation of
hubs; every assumption below is printed with the results and written into them.

Measured inputs (from --bench, the records of the --curve setting, default CURVE on):
- CPU seconds per forwarded Gbit: every hub's CPU over every hub's forwarded bits (sends to
  members and to other hubs), pooled over the bench's configurations with two hubs or more
  (they include the cost of hub-to-hub links: taking streams in, sending them on).
- The cascade's bytes ratio: bytes on hub-to-hub links per copy of a remote stream (1.0:
  each stream crosses to each other hub once); the model sends that many per copy.
- The cascade's added latency (p50/p99) for a frame that crosses (the bench's configuration
  with the fewest hubs that has a cascade: one hop, the least contention), and the largest
  forwarded rate per hub process it measured: a hub process loaded beyond it is extrapolated
  (the `extrapolation` column says by how much).
- The stream: --stream-mbps, default the bench's (its frame bytes x fps x 8).

Assumptions:
- Every participant sends one stream of --stream-mbps all the time and receives everyone
  else's (a hub forwards each to each other member of the room: n - 1 per stream).
- Each site serves the participants there (the nearest edge, as HubChooser ranks by round
  trip). A room's members at one site share one hub (room affinity: HubChooser's load rank
  does not promise it; where they scatter, streams also cross within the site).
- A room spanning k sites has a hub at each; each sender's stream crosses once to each of
  the k - 1 other sites (the cascade), times the measured bytes ratio. A full mesh (a copy
  per remote receiver) would carry each stream once per member at another site.
- A hub's CPU is linear in what it forwards (the measured seconds per Gbit); CURVE costs as
  measured (participants to hubs and hub to hub both encrypted, with --curve on).
- A machine has --cores cores used to --cpu-utilisation (hub processes, one per core: a
  hub's loop is one thread) and a --nic-gbps network card used to --nic-utilisation in each
  direction; a site needs the machines its busier bound asks for (at least one where it has
  participants). Rooms are small next to a machine, so they pack without waste.
- Placements: "k sites" - every room spans exactly k sites (chosen at random), members as
  even as the room size allows; "uniform" - each member at a site drawn uniformly; "local
  X" - a room has a home site (uniform) and each member is there with probability X, else
  at a uniformly drawn other site. Random placements use --seed.

Records: scenario, sites_per_room (mean), stream_mbps, forwarded_gbps (every hub's sends),
hub_ingress_gbps (from participants and from other hubs), intersite_gbps (the cascade),
full_mesh_intersite_gbps and mesh_over_cascade, crossed_share (deliveries whose stream
crossed sites), hub_machines, machines_per_site_max, cpu_cores (busy), bound (cpu or nic:
what sets the machine count at the busiest site), per_hub_mbps (forwarded per hub process
at that site's load) and extrapolation (per_hub_mbps over the bench's largest per hub).
Where it bends shows in the k sweep: inter-site traffic grows with k - 1 while a full mesh
grows with the members elsewhere; a hub's forwarding grows by (k - 1)/(n - 1) of its local
fan-out, so machines follow the sites a room spans.

Run: python -m benchmarks.cluster_capacity --bench docs/bench/cluster.json \\
         --json docs/bench/cluster-capacity.json --markdown docs/bench/cluster-capacity.md \\
         --plot docs/bench/cluster-capacity.png
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["scenario", "sites_per_room", "stream_mbps", "forwarded_gbps", "hub_ingress_gbps", "intersite_gbps",
           "full_mesh_intersite_gbps", "mesh_over_cascade", "crossed_share", "hub_machines",
           "machines_per_site_max", "cpu_cores", "bound", "per_hub_mbps", "extrapolation"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench", dest="bench_json", metavar="PATH", type=Path,  # `bench`: the subcommand's
                        default=Path("docs/bench/cluster.json"),
                        help="the JSON of `holoport bench cluster` (default docs/bench/cluster.json)")
    parser.add_argument("--curve", choices=["on", "off"], default="on", help="which of its records to use")
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--room-size", type=int, default=8)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--stream-mbps", type=float, default=None,
                        help="one participant's stream (default: the bench's, frame bytes x fps x 8)")
    parser.add_argument("--cores", type=int, default=16, help="cores per hub machine")
    parser.add_argument("--cpu-utilisation", type=float, default=0.6, help="of those cores, at most")
    parser.add_argument("--nic-gbps", type=float, default=25.0, help="a machine's network card, each direction")
    parser.add_argument("--nic-utilisation", type=float, default=0.8, help="of the card, at most")
    parser.add_argument("--local-share", type=float, nargs="*", default=[0.75, 0.9],
                        help="local-biased placements: the share of a room at its home site")
    parser.add_argument("--seed", type=int, default=1)
    add_output_arguments(parser)


@dataclass(frozen=True)
class Measured:
    """What the model takes from the bench."""

    cpu_s_per_gbit: float
    interhub_bytes_ratio: float
    cascade_p50_ms: float | None
    cascade_p99_ms: float | None
    hub_p99_ms: float | None
    per_hub_mbps_max: float
    stream_mbps: float
    source: str


def measured(records: list[dict], curve: bool, source: str) -> Measured:
    """The bench's figures for one CURVE setting (ValueError when it has none to use)."""
    rows = [r for r in records if bool(r.get("curve")) == curve and r.get("hub_cpu_s_per_gbit")]
    if not rows:
        raise ValueError(f"{source} holds no record with CURVE {'on' if curve else 'off'} and a CPU figure")
    multi = [r for r in rows if r["hubs"] >= 2] or rows
    gbit = [r["forwarded_mbps"] * r.get("seconds", 1.0) / 1e3 for r in multi]
    cpu = sum(r["hub_cpu_s_per_gbit"] * g for r, g in zip(multi, gbit, strict=True)) / sum(gbit)
    ratios = [r["interhub_bytes_ratio"] for r in rows if r.get("interhub_bytes_ratio") is not None]
    cascade = [r for r in rows if r.get("cascade_p50_ms") is not None]
    hop = min(cascade, key=lambda r: r["hubs"]) if cascade else None  # one hop, the fewest hubs sharing the machine
    stream = rows[0]["frame_bytes"] * rows[0]["fps"] * 8 / 1e6
    return Measured(cpu, max(ratios) if ratios else 1.0,
                    hop["cascade_p50_ms"] if hop else None, hop["cascade_p99_ms"] if hop else None,
                    max(r["hub_p99_ms"] for r in rows if r.get("hub_p99_ms") is not None),
                    max(r.get("forwarded_mbps_per_hub_max") or r["forwarded_mbps"] / r["hubs"] for r in rows),
                    stream, source)


@dataclass(frozen=True)
class Machine:
    cores: int
    cpu_utilisation: float
    nic_gbps: float
    nic_utilisation: float


def place_even(rooms: int, n: int, sites: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Members per (room, site): each room at exactly k random sites, as even as n allows."""
    counts = np.zeros((rooms, sites), dtype=np.int64)
    share = [n // k + (i < n % k) for i in range(k)]
    for room in range(rooms):
        counts[room, rng.choice(sites, size=k, replace=False)] = share
    return counts


def place_random(rooms: int, n: int, sites: int, local: float | None, rng: np.random.Generator) -> np.ndarray:
    """Members per (room, site): each member at a uniform site (``local`` None), or at its
    room's home site with probability ``local`` and else at a uniform other site."""
    counts = np.zeros((rooms, sites), dtype=np.int64)
    for room in range(rooms):
        if local is None:
            where = rng.integers(0, sites, n)
        else:
            home = rng.integers(sites)
            others = (home + rng.integers(1, sites, n)) % sites  # uniform over the other sites
            where = np.where(rng.random(n) < local, home, others)
        np.add.at(counts[room], where, 1)
    return counts


def model(counts: np.ndarray, m: Measured, machine: Machine, scenario: str) -> dict:
    """Load per site and what it takes, for members per (room, site)."""
    n = counts.sum(axis=1, keepdims=True)  # room sizes
    k = (counts > 0).sum(axis=1, keepdims=True)  # sites per room
    r = m.stream_mbps / 1e3  # Gbit/s per stream
    local = counts * (n - 1) * r  # each member is sent everyone else's stream by its site's hub
    cascade_out = counts * (k - 1) * r * m.interhub_bytes_ratio  # each local stream to each other site, once
    cascade_in = np.where(counts > 0, (n - counts) * r * m.interhub_bytes_ratio, 0.0)
    uploads = counts * r
    forwarded = (local + cascade_out).sum(axis=0)  # per site
    ingress = (uploads + cascade_in).sum(axis=0)
    egress = forwarded
    cpu = forwarded * m.cpu_s_per_gbit  # cores busy per site
    by_cpu = np.ceil(cpu / (machine.cores * machine.cpu_utilisation) - 1e-9)
    nic = machine.nic_gbps * machine.nic_utilisation
    by_nic = np.ceil(np.maximum(egress, ingress) / nic - 1e-9)
    used = counts.sum(axis=0) > 0
    machines = np.where(used, np.maximum(np.maximum(by_cpu, by_nic), 1), 0)
    busiest = int(np.argmax(forwarded))
    per_hub = forwarded[busiest] * 1e3 / max(1.0, machines[busiest] * machine.cores)
    mesh = (counts * (n - counts) * r).sum()
    intersite = cascade_out.sum()
    deliveries = (counts * (n - 1)).sum()
    crossed = (counts * (n - counts)).sum()  # a member receives each stream from another site
    return {"scenario": scenario, "sites_per_room": float(k.mean()), "stream_mbps": m.stream_mbps,
            "forwarded_gbps": float(forwarded.sum()), "hub_ingress_gbps": float(ingress.sum()),
            "intersite_gbps": float(intersite), "full_mesh_intersite_gbps": float(mesh),
            "mesh_over_cascade": float(mesh / intersite) if intersite else None,
            "crossed_share": float(crossed / deliveries), "hub_machines": int(machines.sum()),
            "machines_per_site_max": int(machines.max()), "cpu_cores": float(cpu.sum()),
            "bound": "nic" if by_nic[busiest] >= by_cpu[busiest] else "cpu",
            "per_hub_mbps": float(per_hub), "extrapolation": float(per_hub / m.per_hub_mbps_max),
            "cascaded_added_p50_ms": m.cascade_p50_ms, "cascaded_added_p99_ms": m.cascade_p99_ms}


def scenarios(args: argparse.Namespace, m: Measured, machine: Machine) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    n, out = args.room_size, []
    for k in range(1, min(n, args.sites) + 1):
        out.append(model(place_even(args.rooms, n, args.sites, k, rng), m, machine, f"{k} site{'s' if k > 1 else ''}"))
    out.append(model(place_random(args.rooms, n, args.sites, None, rng), m, machine, "uniform"))
    for share in args.local_share:
        out.append(model(place_random(args.rooms, n, args.sites, share, rng), m, machine, f"local {share:g}"))
    return out


def assumptions(args: argparse.Namespace, m: Measured) -> dict:
    return {"bench": m.source, "curve": args.curve, "rooms": args.rooms, "room_size": args.room_size,
            "sites": args.sites, "stream_mbps": m.stream_mbps,
            "cpu_s_per_forwarded_gbit": m.cpu_s_per_gbit, "interhub_bytes_ratio": m.interhub_bytes_ratio,
            "bench_per_hub_mbps_max": m.per_hub_mbps_max, "bench_hub_p99_ms": m.hub_p99_ms,
            "bench_cascade_p50_ms": m.cascade_p50_ms, "bench_cascade_p99_ms": m.cascade_p99_ms,
            "cores_per_machine": args.cores, "cpu_utilisation": args.cpu_utilisation,
            "nic_gbps": args.nic_gbps, "nic_utilisation": args.nic_utilisation,
            # where the machine's bound turns: above this the cores run out before the card
            "cpu_binds_above_s_per_gbit": args.cores * args.cpu_utilisation / (args.nic_gbps * args.nic_utilisation),
            "local_shares": args.local_share, "seed": args.seed,
            "model": "each member receives n-1 streams from its site's hub; each stream crosses once to each "
                     "other site of its room (x the bytes ratio); CPU linear in forwarded bits; a site needs "
                     "max(CPU, NIC) machines, at least 1 where it has members; a room's members at a site "
                     "share one hub"}


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in records if r["scenario"].endswith(("site", "sites"))]
    others = [r for r in records if r not in sweep]
    k = [r["sites_per_room"] for r in sweep]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.plot(k, [r["intersite_gbps"] for r in sweep], "o-", label="cascade (one copy per remote site)")
    left.plot(k, [r["full_mesh_intersite_gbps"] for r in sweep], "s--", label="full mesh (one per remote receiver)")
    right.plot(k, [r["hub_machines"] for r in sweep], "o-", color="tab:green", label="hub machines")
    for r, marker in zip(others, "^vD*P", strict=False):
        left.plot(r["sites_per_room"], r["intersite_gbps"], marker, color="black", label=r["scenario"])
        right.plot(r["sites_per_room"], r["hub_machines"], marker, color="black", label=r["scenario"])
    left.set_ylabel("inter-site Gbit/s")
    right.set_ylabel("hub machines (all sites)")
    for ax in (left, right):
        ax.set_xlabel("sites a room spans")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    if not args.bench_json.is_file():
        print(f"no bench results at {args.bench_json}: run `holoport bench cluster --json {args.bench_json}` first",
              file=sys.stderr)
        return 2
    if args.room_size < 2 or args.sites < 1 or args.rooms < 1 or args.cores < 1:
        print("--room-size must be >= 2, --sites, --rooms and --cores >= 1", file=sys.stderr)
        return 2
    if not all(0 < x <= 1 for x in (args.cpu_utilisation, args.nic_utilisation)) or \
            not all(0 <= x <= 1 for x in args.local_share):
        print("utilisations must be in (0, 1], --local-share in [0, 1]", file=sys.stderr)
        return 2
    try:
        m = measured(json.loads(args.bench_json.read_text()), args.curve == "on", str(args.bench_json))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"cannot use {args.bench_json}: {exc}", file=sys.stderr)
        return 2
    if args.stream_mbps is not None:
        m = Measured(**{**m.__dict__, "stream_mbps": args.stream_mbps})
    machine = Machine(args.cores, args.cpu_utilisation, args.nic_gbps, args.nic_utilisation)
    records = scenarios(args, m, machine)
    given = assumptions(args, m)
    emit(records, COLUMNS, f"Cluster capacity: {args.rooms:,} rooms of {args.room_size} over {args.sites} sites, "
         f"{m.stream_mbps:g} Mbit/s streams, {m.cpu_s_per_gbit:.3f} CPU s per forwarded Gbit (measured)", args,
         plot=plot, json_records=[{**r, "inputs": given} for r in records])
    notes = "\n".join(f"- {k}: {v}" for k, v in given.items())
    print(f"assumptions:\n{notes}")
    if args.markdown:
        with open(args.markdown, "a") as out:
            out.write(f"\nAssumptions and measured inputs:\n\n{notes}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
