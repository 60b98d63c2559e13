"""Hub cluster: what a cascade hop adds, what crosses between hubs, and how fast a room heals.

For each hub count H in --hubs (default 1 2 3) and with CURVE on (--curve: participants to
hubs with each hub's key and an allow folder, hub to hub with a cluster key; `off`: plain,
`both`: each), this benchmark starts a redis-server of its own (--redis-server, default the
one on PATH) on a free loopback port, H real `holoport hub --cluster` processes (one site
each) and, in this process, --participants N (default 8) nodes in one room, spread round
robin over the hubs. Each node runs in a thread with a ZeroMQ context of its own (one I/O
thread that encrypts and decrypts for it, as if it were a process of its own), sends frames
already encoded of --frame-bytes (default 100,000) at --fps (default 30), its sending phase
spread over a frame period as independent cameras' would be, and takes frames off without
decoding them.

Method, the meeting. The nodes join one by one, 0.3 s apart; each polls its roster all the
time, noting when it first lists each peer. After the room agrees and a second of warm-up,
--seconds (default 6) are measured. Every clock here is this machine's, so each frame's
stamps are read as they came off the wire (a node's and a link's offset estimates would only
add their noise; the link's, which the frame's `off` carries, is taken back out): `sent`
(the sender, just before its send), `hub_in`/`hub_out` (the receiver's hub; `hub_held` when
it held the frame for credit), `up_in`/`up_out` (the sender's hub, for a frame that crossed
a cascade: up_out is its send to the link) and `received` (the receiving node, as it took
the frame off its socket). A receiver keeps the newest frame
of each sender in one drain, as a node does; only those are timed.

Records (one per hub count and CURVE setting):
- `hub_p50_ms`, `hub_p99_ms`: a hub's own time per frame, pooled: hub_in to hub_out (or to
  hub_held) at the receiver's hub for every frame, plus up_in to up_out at the sender's hub
  for each frame that crossed (once per frame and receiving hub).
- `cascade_p50_ms`, `cascade_p99_ms`: what the cascade hop adds to a frame that crossed:
  up_out at the sender's hub to hub_out (or hub_held) at the receiver's hub, per delivery,
  i.e. the hub-to-hub leg and the second hub's own time, as the hubs' own `cascade_p*_ms`
  statistics count it (None for one hub). `cascade_hop_p50_ms`/`p99`: the leg alone
  (up_out to hub_in), once per frame and receiving hub.
- `local_send_to_arrival_p50_ms`/`p99` and `cascaded_send_to_arrival_p50_ms`/`p99`: sent to
  received, for frames between members of one hub and for frames that crossed.
- `interhub_bytes_ratio`: payload bytes that came in over hub-to-hub links (the sum of every
  hub's cascade bytes_in) over one copy of each remote stream (the payload bytes each node
  sent times the number of other hubs with members in the room): 1.0 when each stream
  crosses to each other hub once. `interhub_dropped`: frames that should have crossed and
  did not (a link behind drops stale frames; also frames in flight at the window's edges).
  `full_mesh_bytes_ratio`: what forwarding one copy per remote receiver would have put on
  the links (each sender's bytes times the members not on its hub) over what crossed.
- `roster_converge_max_s`: for each join, from the newcomer's welcome until every node in the
  room before it lists it and it lists each of them; the largest. `roster_unconverged`:
  pairs that never did (within 5 s).
- `delivered`: the share of frames sent that were timed at all N - 1 receivers (well under 1:
  the machine is saturated, and queues, not hubs, set the delays; then `saturated` is true).
- `forwarded_mbps` (every hub's sends to members and to links, together) and
  `hub_cpu_s_per_gbit` (every hub process's CPU seconds, from /proc, per forwarded Gbit);
  `forwarded_mbps_per_hub_max`; `link_offset_max_ms`, the largest clock offset a link
  estimated between hubs that share one clock (the error it puts into up_* stamps).

Method, the failure phase (H >= 2; smaller, to keep the run short: --kill-participants
(default 4) nodes at --kill-fps (15) with --kill-frame-bytes (10,000) in a room of their own,
round robin over the hubs). Each node watches its hub and fails over with the participant's
own logic: `holoport.participant`'s liveness check (the hub asked the time every TIME_EVERY
s, taken for dead after DEAD_AFTER s without a word) and `Participant._fail_over` (a fresh
ranking from the directory by `holoport.hub_choice.HubChooser`, then the best hub that
admits it). --kills (default 20) times: SIGKILL the next hub in turn; for each node that was
on it, the time from the kill until frames flow again both ways: it has received a frame
sent after the kill by a node that was not on the dead hub, and some other node has received
a frame it sent after the kill. Then that hub is started again (a new process on a new port:
it gets a new number), the nodes that fled move back to it (a planned move, to give every
kill the same layout), and once the directory lists H hubs and every node has had a fresh
frame from every other, the next kill follows; a room that does not come whole within 15 s
ends the phase, said in `unsettled` (with each node's and hub's view), and `kills` counts
the kills done. Records: `kills`, `rejoin_p50_s`,
`rejoin_max_s`, `rejoin_over_3s` (kills' nodes past 3 s, or never, within 10 s:
`rejoin_failed`), `rejoin_s` (every sample), `failover_join_p50_s` (the participant's own
count: from finding the hub dead to the new hub's welcome), `join_refusals_waited` (joins the
new hub refused for a while: the name was still held there, by the dead hub's member).

Run: holoport bench cluster --json docs/bench/cluster.json --markdown docs/bench/cluster.md \
         --plot docs/bench/cluster.png
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main

if TYPE_CHECKING:
    import zmq

    from holoport.hub_choice import HubChooser
    from holoport.node import Node, RemoteFrame
    from holoport.security import KeyPair, NodeSecurity

COLUMNS = ["hubs", "participants", "curve", "forwarded_mbps", "hub_cpu_s_per_gbit", "delivered",
           "hub_p50_ms", "hub_p99_ms", "cascade_p50_ms", "cascade_p99_ms",
           "local_send_to_arrival_p50_ms", "local_send_to_arrival_p99_ms",
           "cascaded_send_to_arrival_p50_ms", "cascaded_send_to_arrival_p99_ms",
           "interhub_bytes_ratio", "full_mesh_bytes_ratio", "roster_converge_max_s",
           "kills", "rejoin_p50_s", "rejoin_max_s", "rejoin_over_3s"]

JOIN_EVERY_S = 0.3  # between the joins of the meeting
CONVERGE_WAIT_S = 5.0  # a roster that has not converged by then is counted as such
WARMUP_S = 1.0
DRAIN_S = 0.3  # senders paused this long before the window's counters are read
REJOIN_TARGET_S = 3.0  # issue 18: frames flowing again within 3 s of a hub's SIGKILL
REJOIN_WAIT_S = 10.0  # a kill's nodes not flowing again by then count as failed
SETTLE_WAIT_S = 15.0
HUB_START_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hubs", type=int, nargs="*", default=[1, 2, 3], help="hub counts to run (default 1 2 3)")
    parser.add_argument("--participants", type=int, default=8, help="nodes in the measured room, 2..16 (default 8)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second per participant")
    parser.add_argument("--frame-bytes", type=int, default=100_000, help="payload bytes per frame")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per configuration")
    parser.add_argument("--curve", choices=["off", "on", "both"], default="on",
                        help="CURVE between participants and hubs (hub keys, allow folder) and between hubs "
                             "(cluster key); default on")
    parser.add_argument("--kills", type=int, default=20, help="hub SIGKILLs per configuration of 2+ hubs")
    parser.add_argument("--kill-participants", type=int, default=4, help="nodes during the kills (default 4)")
    parser.add_argument("--kill-fps", type=float, default=15.0, help="their frames per second (default 15)")
    parser.add_argument("--kill-frame-bytes", type=int, default=10_000, help="their payload bytes (default 10,000)")
    parser.add_argument("--redis-server", default=shutil.which("redis-server"), metavar="PATH",
                        help="the redis-server binary (default: the one on PATH)")
    parser.add_argument("--data", type=Path, default=None,
                        help="accepted as the other benchmarks do; frames here are synthetic")
    add_output_arguments(parser)


# -- small helpers ------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _pct(samples: Iterable[float], q: float) -> float | None:
    values = list(samples)
    return float(np.percentile(values, q)) if values else None


def _wait(until: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class HubProcess:
    """One `holoport hub --cluster` process, its number in the cluster and its log."""

    slot: int
    endpoint: str
    proc: subprocess.Popen
    log: Path
    number: int | None = None


class Cluster:
    """Redis, the hubs (one per slot, i.e. per site) and every key the run needs."""

    def __init__(self, redis_binary: str, hubs: int, curve: bool, seats: int, folder: Path) -> None:
        from holoport.cluster import Registry
        from holoport.security import KeyPair, create_keys

        self.folder, self.curve, self.seats = folder, curve, seats
        from benchmarks.redis_process import RedisServer

        self.redis = RedisServer(binary=redis_binary)
        self.registry = Registry(self.redis.url, timeout_s=2.0)
        self.hubs: list[HubProcess] = []
        keys = folder / "keys"
        self.allow = folder / "allow"
        self.allow.mkdir()
        self.hub_keys: list[tuple[Path, KeyPair]] = []  # per slot: the secret file, the pair
        self.cluster_key: Path | None = None
        self._pairs: dict[str, KeyPair] = {}
        if curve:
            self.cluster_key = create_keys(keys, "cluster")[1]
            for slot in range(hubs):
                secret = create_keys(keys, f"hub{slot}")[1]
                self.hub_keys.append((secret, KeyPair.load(secret)))
        try:
            for slot in range(hubs):
                self.hubs.append(self._spawn(slot))
            for hub in self.hubs:
                self._ready(hub)
        except BaseException:
            self.close()
            raise

    # -- keys ---------------------------------------------------------------------------------
    def keys_of(self, name: str) -> KeyPair | None:
        """The participant's key pair (made and allow-listed at first use); None without CURVE.
        On a CURVE hub a key's file name is who joins: ``name``."""
        if not self.curve:
            return None
        if name not in self._pairs:
            from holoport.security import KeyPair, create_keys

            public, secret = create_keys(self.folder / "keys", name)
            (self.allow / public.name).write_bytes(public.read_bytes())
            self._pairs[name] = KeyPair.load(secret)
        return self._pairs[name]

    def security(self, name: str, slot: int) -> NodeSecurity | None:
        from holoport.security import NodeSecurity

        return NodeSecurity(self.keys_of(name), self.hub_keys[slot][1].public) if self.curve else None

    def _admin(self, slot: int) -> NodeSecurity | None:
        """The hub's own key pair: it may see every room's statistics."""
        from holoport.security import NodeSecurity

        if not self.curve:
            return None
        pair = self.hub_keys[slot][1]
        return NodeSecurity(pair, pair.public)

    # -- hubs -----------------------------------------------------------------------------------
    def _spawn(self, slot: int) -> HubProcess:
        from holoport.endpoints import free_tcp_endpoint

        endpoint = free_tcp_endpoint()
        args = [sys.executable, "-m", "holoport", "hub", "--bind", endpoint, "--seats", str(self.seats), "--quiet",
                "--cluster", self.redis.url, "--site", f"site-{slot}"]
        if self.curve:
            args += ["--key", str(self.hub_keys[slot][0]), "--allow", str(self.allow),
                     "--cluster-key", str(self.cluster_key)]
        log = self.folder / f"hub{slot}-{time.monotonic_ns()}.log"
        with log.open("wb") as out:  # several hubs share the machine's cores: numba keeps to one thread
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        return HubProcess(slot, endpoint, proc, log)

    def _ready(self, hub: HubProcess) -> None:
        """Until the hub answers and the directory lists it (so the others link to it)."""
        from holoport.hubstats import query_stats

        deadline = time.monotonic() + HUB_START_S
        while hub.number is None:
            try:
                hub.number = query_stats(hub.endpoint, self._admin(hub.slot), timeout=0.5)["cascade"]["hub_no"]
            except Exception:
                if hub.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"hub {hub.slot} did not start: {_tail(hub.log)}") from None
        if not _wait(lambda: hub.number in self.directory(), max(1.0, deadline - time.monotonic()), 0.05):
            raise RuntimeError(f"hub {hub.number} never appeared in the directory: {_tail(hub.log)}")

    def directory(self) -> set[int]:
        """The numbers of the hubs the directory lists now."""
        from holoport.cluster import ClusterError

        try:
            return {r.id for r in self.registry.hubs()}
        except ClusterError:
            return set()

    def stats(self, slot: int) -> dict:
        from holoport.hubstats import query_stats

        return query_stats(self.hubs[slot].endpoint, self._admin(slot), timeout=5.0)

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(h.proc.pid) for h in self.hubs)

    def kill(self, slot: int) -> None:
        hub = self.hubs[slot]
        hub.proc.send_signal(signal.SIGKILL)
        hub.proc.wait()

    def restart(self, slot: int) -> HubProcess:
        """A new hub process for the slot (its site and key), on a new port: a new number."""
        hub = self.hubs[slot] = self._spawn(slot)
        self._ready(hub)
        return hub

    def chooser(self, room: str, name: str) -> HubChooser:
        """How a participant ranks the cluster's hubs (from the directory, as `holoport join --cluster`)."""
        from holoport.hub_choice import HubChooser

        return HubChooser(room, self.keys_of(name), False, cluster=self.redis.url)

    def close(self) -> None:
        for hub in self.hubs:
            if hub.proc.poll() is None:
                hub.proc.send_signal(signal.SIGINT)  # a clean stop withdraws its record
        for hub in self.hubs:
            try:
                hub.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                hub.proc.kill()
                hub.proc.wait()
        self.registry.close()
        self.redis.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the participants -----------------------------------------------------------------------
def _node_class() -> type[Node]:
    """A Node that keeps each frame's stamps as they came (``raw_*``) beside the ones its clock
    sync moved onto its own clock: on one machine every clock is the same, and the offset
    estimates (the node's, the links') would only add their noise to the differences."""
    from holoport.clock import ClockSync
    from holoport.node import Node

    class RawStamps(ClockSync):
        def to_local(self, head: dict) -> None:
            raw = {f"raw_{k}": v for k, v in head["ts"].items()}
            raw["raw_off"] = head.get("off")  # the clock offsets the stamps travelled with
            super().to_local(head)
            head["ts"].update(raw)

    class BenchNode(Node):
        @property
        def sync(self) -> ClockSync:
            return self._raw_sync

        @sync.setter
        def sync(self, value: ClockSync) -> None:  # Node.move_to makes a new one for each hub
            self._raw_sync = value if isinstance(value, RawStamps) else RawStamps(value.clock)

    return BenchNode


@dataclass
class Sample:
    """One frame a participant took off its socket (and kept: the newest of its sender)."""

    sender: str
    seq: int
    slot: int  # the receiver's hub
    trip_ms: float  # sent -> received
    own_ms: float  # the receiver's hub: hub_in -> hub_out (or hub_held)
    up_own_ms: float | None  # the sender's hub, for a frame that crossed: up_in -> up_out
    cascade_ms: float | None  # up_out -> hub_out (or hub_held)
    hop_ms: float | None  # up_out -> hub_in


@dataclass
class BenchParticipant:
    """One participant in a thread: sends, polls, keeps its roster's first sightings and its
    frames' stamps, and (``watch``) fails over as `holoport join` does.

    During a failover ``Participant._fail_over`` is called with this object as its
    participant: it uses ``hubs``, ``stop_event``, ``failovers`` and ``_seated`` alone."""

    name: str
    slot: int
    ctx: zmq.Context  # its own
    payload: bytes
    fps: float
    stop_event: threading.Event
    paused: threading.Event  # set: send nothing (the hubs' counters come to rest)
    hubs: HubChooser | None = None  # when watching the hub
    watch: bool = False
    node: Node | None = None
    welcomed: float = 0.0  # monotonic
    recording: bool = False
    samples: list[Sample] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)  # peer name -> monotonic, first listed
    epoch: float = math.inf  # wall clock: frames sent after it are noted in ``first``
    first: dict[str, float] = field(default_factory=dict)  # sender -> monotonic of its first such frame
    failovers: list[float] = field(default_factory=list)
    move: tuple | None = None  # a planned move for the thread: (slot, endpoint, security)
    moved: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    room: str = "bench"

    def join(self, endpoint: str, security: NodeSecurity | None) -> None:
        node = _node_class()(endpoint, self.room, self.name, security=security, decode=False, join_timeout=10.0)
        node._ctx = self.ctx  # its own context, not the process's shared one
        self.node = node.start()
        self.welcomed = time.monotonic()
        if self.watch:
            self._seated(node)

    def start(self, first_send: float) -> None:
        self.thread = threading.Thread(target=self._run, args=(first_send,), name=f"bench-{self.name}", daemon=True)
        self.thread.start()

    def _seated(self, node: Node) -> None:
        """As the participant does once seated in a cluster: ask the hub the time often, so
        that its silence shows."""
        from holoport.participant import TIME_EVERY

        node.time_every = TIME_EVERY

    def _run(self, next_tick: float) -> None:
        from holoport.node import JoinError
        from holoport.participant import DEAD_AFTER, Participant

        node, period = self.node, 1.0 / self.fps
        try:
            while not self.stop_event.is_set():
                if self.move is not None:
                    slot, endpoint, security = self.move
                    self.move = None
                    try:
                        node.move_to(endpoint, security, 5.0)
                        self.slot, self.welcomed = slot, time.monotonic()
                        self._seated(node)
                    except JoinError as exc:
                        self.errors.append(f"moving to {endpoint}: {exc}")
                        if not (self.watch and Participant._fail_over(self, node, None)):
                            return
                    self.moved.set()
                now = time.monotonic()
                if now >= next_tick:
                    if not self.paused.is_set():
                        node.send_encoded(self.payload, 0, {"capture": time.time()})
                    next_tick = max(next_tick + period, now - period)
                node.heartbeat()
                frames = node.poll(max(0.0, min(0.01, next_tick - time.monotonic())))
                now = time.monotonic()
                for peer in node.peers.values():
                    self.seen.setdefault(peer.name, now)
                for f in frames:
                    self._took(f, now)
                # holoport.participant's test of its hub, and its failover
                if self.watch and node.silent_for() >= DEAD_AFTER and not Participant._fail_over(self, node, None):
                    return
        except Exception as exc:  # said in the record, not lost in a thread
            self.errors.append(f"{type(exc).__name__}: {exc}")
            raise

    def _took(self, f: RemoteFrame, now: float) -> None:
        ts = f.ts

        def raw(k: str) -> float | None:
            return ts.get(f"raw_{k}", ts.get(k))

        if raw("sent") is not None and raw("sent") >= self.epoch:
            self.first.setdefault(f.name, now)
        if not self.recording:
            return
        own_end = raw("hub_held") or raw("hub_out")
        up_in, up_out = raw("up_in"), raw("up_out")
        crossed = up_out is not None
        if crossed and ts.get("raw_off") is not None:
            # the link moved the sender's hub's stamps by its offset estimate, and added the
            # same to the frame's `off` (the sender's own offset, 0 on one machine): undone
            up_out -= ts["raw_off"]
            up_in = None if up_in is None else up_in - ts["raw_off"]
        self.samples.append(Sample(
            f.name, f.seq, self.slot, (ts["received"] - raw("sent")) * 1e3, (own_end - raw("hub_in")) * 1e3,
            (up_out - up_in) * 1e3 if crossed and up_in is not None else None,
            (own_end - up_out) * 1e3 if crossed else None,
            (raw("hub_in") - up_out) * 1e3 if crossed else None))

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.node is not None:
            self.node.stop()
        if self.hubs is not None:
            self.hubs.close()


def _join_all(cluster: Cluster, room: str, n: int, fps: float, frame_bytes: int, watch: bool,
              gap: float) -> tuple[list[BenchParticipant], list[zmq.Context]]:
    """N participants, round robin over the hubs, joined ``gap`` s apart, each sending from
    its join on (phases spread over a frame period)."""
    import zmq

    payload = np.random.default_rng(n).integers(0, 256, frame_bytes, dtype=np.uint8).tobytes()
    stop, paused = threading.Event(), threading.Event()
    contexts = [zmq.Context() for _ in range(n)]
    parts: list[BenchParticipant] = []
    began = time.monotonic()
    try:
        for i in range(n):
            name, slot = f"p{i}", i % len(cluster.hubs)
            p = BenchParticipant(name, slot, contexts[i], payload, fps, stop, paused, watch=watch, room=room,
                                 hubs=cluster.chooser(room, name) if watch else None)
            p.join(cluster.hubs[slot].endpoint, cluster.security(name, slot))
            parts.append(p)
            p.start(max(time.monotonic(), began + i * (1.0 / fps) / n))
            time.sleep(max(0.0, began + (i + 1) * gap - time.monotonic()))
    except BaseException:
        _leave(parts, contexts)
        raise
    return parts, contexts


def _leave(parts: list[BenchParticipant], contexts: list[zmq.Context]) -> None:
    if parts:
        parts[0].stop_event.set()
    for p in parts:
        p.stop()
    for c in contexts:
        c.destroy(linger=0)


def _roster_times(parts: list[BenchParticipant]) -> tuple[float | None, int]:
    """For each join, its welcome to the last sighting either way between it and those
    already in the room; the largest, and the pairs never seen."""
    worst, missing = 0.0, 0
    for j, newcomer in enumerate(parts):
        for earlier in parts[:j]:
            for t in (earlier.seen.get(newcomer.name), newcomer.seen.get(earlier.name)):
                if t is None:
                    missing += 1
                else:
                    worst = max(worst, t - newcomer.welcomed)
    return (worst if len(parts) > 1 else None), missing


def _all_see_all(parts: list[BenchParticipant]) -> bool:
    names = {p.name for p in parts}
    return all(names - {p.name} <= {q.name for q in list(p.node.peers.values())} for p in parts)


# -- the meeting ----------------------------------------------------------------------------
def measure_meeting(cluster: Cluster, n: int, fps: float, frame_bytes: int, seconds: float) -> dict:
    h = len(cluster.hubs)
    parts, contexts = _join_all(cluster, "bench", n, fps, frame_bytes, watch=False, gap=JOIN_EVERY_S)
    try:
        _wait(lambda: _all_see_all(parts), CONVERGE_WAIT_S)
        converge, unconverged = _roster_times(parts)
        time.sleep(WARMUP_S)
        # the window starts and ends with the senders paused and what was on its way arrived,
        # so that the hubs' counters and the nodes' agree on which frames it holds
        paused = parts[0].paused
        paused.set()
        time.sleep(DRAIN_S)
        before = [cluster.stats(s) for s in range(h)]
        sent0 = [(p.node.counters.sent, p.node.counters.sent_bytes) for p in parts]
        for p in parts:
            p.samples.clear()
            p.recording = True
        cpu0, t0 = cluster.cpu_seconds(), time.monotonic()
        paused.clear()
        time.sleep(seconds)
        paused.set()
        cpu1, t1 = cluster.cpu_seconds(), time.monotonic()
        time.sleep(DRAIN_S)
        for p in parts:
            p.recording = False
        sent1 = [(p.node.counters.sent, p.node.counters.sent_bytes) for p in parts]
        after = [cluster.stats(s) for s in range(h)]
        errors = [e for p in parts for e in p.errors]
    finally:
        _leave(parts, contexts)
    if errors:
        raise RuntimeError(f"participants failed: {errors[:3]}")
    samples = [s for p in parts for s in p.samples]
    frames_sent = [b[0] - a[0] for a, b in zip(sent0, sent1, strict=True)]
    bytes_sent = [b[1] - a[1] for a, b in zip(sent0, sent1, strict=True)]
    on_hub = [sum(1 for p in parts if p.slot == s) for s in range(h)]
    other_hubs = sum(1 for m in on_hub if m) - 1
    crossed_bytes = sum(a["cascade"]["bytes_in"] - b["cascade"]["bytes_in"] for a, b in zip(after, before, strict=True))
    crossed_frames = sum(a["cascade"]["frames_in"] - b["cascade"]["frames_in"]
                         for a, b in zip(after, before, strict=True))
    one_copy = sum(bytes_sent) * other_hubs
    per_receiver = sum(b * (n - on_hub[p.slot]) for p, b in zip(parts, bytes_sent, strict=True))
    forwarded = [a["forwarded_bytes"] - b["forwarded_bytes"] for a, b in zip(after, before, strict=True)]
    gbits = sum(forwarded) * 8 / 1e9
    span = t1 - t0
    # the sender's hub's time and the hop alone: once per frame and receiving hub
    per_hop = {(s.sender, s.seq, s.slot): s for s in samples if s.cascade_ms is not None}
    local = [s.trip_ms for s in samples if s.cascade_ms is None]
    crossed = [s.trip_ms for s in samples if s.cascade_ms is not None]
    own = [s.own_ms for s in samples] + [s.up_own_ms for s in per_hop.values() if s.up_own_ms is not None]
    cascade = [s.cascade_ms for s in samples if s.cascade_ms is not None]
    hop = [s.hop_ms for s in per_hop.values()]
    offsets = [abs(x["offset_ms"]) for st in after for x in st["cascade"]["links"]]
    delivered = len(samples) / (sum(frames_sent) * (n - 1)) if sum(frames_sent) else None
    return {
        "sent_fps": sum(frames_sent) / span / n,
        "forwarded_mbps": gbits * 1e3 / span, "forwarded_mbps_per_hub_max": max(forwarded) * 8 / 1e6 / span,
        "hub_cpu_s_per_gbit": (cpu1 - cpu0) / gbits if gbits else None,
        "delivered": delivered, "saturated": delivered is None or delivered < 0.95,
        "frames_timed": len(samples), "frames_crossed_timed": len(crossed),
        "hub_p50_ms": _pct(own, 50), "hub_p99_ms": _pct(own, 99),
        "cascade_p50_ms": _pct(cascade, 50), "cascade_p99_ms": _pct(cascade, 99),
        "cascade_hop_p50_ms": _pct(hop, 50), "cascade_hop_p99_ms": _pct(hop, 99),
        "local_send_to_arrival_p50_ms": _pct(local, 50), "local_send_to_arrival_p99_ms": _pct(local, 99),
        "cascaded_send_to_arrival_p50_ms": _pct(crossed, 50), "cascaded_send_to_arrival_p99_ms": _pct(crossed, 99),
        "interhub_bytes": crossed_bytes, "one_copy_bytes": one_copy,
        "interhub_bytes_ratio": crossed_bytes / one_copy if one_copy else None,
        "interhub_dropped": sum(frames_sent) * other_hubs - crossed_frames if other_hubs else None,
        "full_mesh_bytes_ratio": per_receiver / crossed_bytes if crossed_bytes else None,
        "roster_converge_max_s": converge, "roster_unconverged": unconverged,
        "link_offset_max_ms": max(offsets) if offsets else None,
    }


# -- the failure phase ----------------------------------------------------------------------
def _flows(m: BenchParticipant, parts: list[BenchParticipant], survivors: list[BenchParticipant],
           since: float) -> float | None:
    """When frames flowed again both ways for ``m`` (monotonic), or None: the first frame it
    had from a survivor (anyone else when none survived) and the first of its that another had."""
    sources = survivors or [p for p in parts if p is not m]
    heard = [m.first[p.name] for p in sources if p.name in m.first]
    told = [p.first[m.name] for p in parts if p is not m and m.name in p.first]
    if not heard or not told:
        return None
    return max(min(heard), min(told)) - since


def _everyone_fresh(parts: list[BenchParticipant]) -> bool:
    return all(p.name in q.first for p in parts for q in parts if q is not p)


def measure_kills(cluster: Cluster, kills: int, n: int, fps: float, frame_bytes: int,
                  progress: Callable[[int], None]) -> dict:
    h = len(cluster.hubs)
    parts, contexts = _join_all(cluster, "kills", n, fps, frame_bytes, watch=True, gap=0.05)
    rejoin: list[float] = []
    failed = done = 0
    unsettled: list[str] = []
    try:
        for k in range(kills):
            try:  # the room whole (again) before each kill
                _settle(cluster, parts, h)
            except Unsettled as exc:  # said in the record; the kills after it would measure a broken room
                unsettled.append(str(exc))
                progress(kills - done)
                break
            victim = k % h
            on_victim = [p for p in parts if p.slot == victim]
            survivors = [p for p in parts if p.slot != victim]
            epoch, t0 = time.time(), time.monotonic()
            for p in parts:
                p.first, p.epoch = {}, epoch
            cluster.kill(victim)
            times: dict[str, float] = {}

            def recovered(on=on_victim, sv=survivors, t=t0, out=times) -> bool:
                for m in on:
                    if m.name not in out and (x := _flows(m, parts, sv, t)) is not None:
                        out[m.name] = x
                return len(out) == len(on)

            _wait(recovered, REJOIN_WAIT_S)
            rejoin += list(times.values())
            failed += len(on_victim) - len(times)
            hub = cluster.restart(victim)
            for m in on_victim:  # back where they were: every kill finds the same layout
                m.moved.clear()
                m.move = (victim, hub.endpoint, cluster.security(m.name, victim))
            for m in on_victim:
                m.moved.wait(10.0)
            done += 1
            progress(1)
        errors = [e for p in parts for e in p.errors]
        failover_join = [x for p in parts for x in p.failovers]
        waited = sum(p.node.counters.refusals_waited for p in parts)
    finally:
        _leave(parts, contexts)
    over = sum(1 for x in rejoin if x > REJOIN_TARGET_S) + failed
    return {"kills": done, "unsettled": unsettled, "rejoin_s": rejoin, "rejoin_failed": failed, "rejoin_over_3s": over,
            "rejoin_p50_s": _pct(rejoin, 50),
            "rejoin_max_s": (max(rejoin) if rejoin else None) if not failed else REJOIN_WAIT_S,
            "failover_join_p50_s": _pct(failover_join, 50), "join_refusals_waited": waited,
            "kill_errors": errors[:5]}


def _settle(cluster: Cluster, parts: list[BenchParticipant], h: int) -> None:
    """Until the directory lists the H live hubs alone and every node had a frame sent from
    now on from every other: the room is whole again."""
    epoch = time.time()
    for p in parts:
        p.first, p.epoch = {}, epoch
    live = {hub.number for hub in cluster.hubs}
    if not _wait(lambda: cluster.directory() == live and _everyone_fresh(parts), SETTLE_WAIT_S, 0.05):
        raise Unsettled(f"the cluster did not settle within {SETTLE_WAIT_S:g} s: directory "
                        f"{sorted(cluster.directory())}, live {sorted(live)}; who heard whom: "
                        f"{[_who(p) for p in parts]}; "
                        f"{[e for p in parts for e in p.errors][:3]}; hubs: {_links(cluster)}")


def _who(p: BenchParticipant) -> dict:
    node = p.node
    return {"name": p.name, "slot": p.slot, "hub": node.hub, "id": node.id, "seat": node.seat,
            "heard": sorted(p.first), "peers": sorted((q.name, q.id, q.seat) for q in list(node.peers.values())),
            "failovers": len(p.failovers), "unknown_sender": node.counters.unknown_sender,
            "rejoins": node.counters.rejoins}


class Unsettled(RuntimeError):
    """The room did not come whole again after a kill: what each hub's links said is in the message."""


def _links(cluster: Cluster) -> list:
    """Each hub's view of the room and its links, for a message."""
    out = []
    for slot, hub in enumerate(cluster.hubs):
        try:
            st = cluster.stats(slot)
        except Exception as exc:
            out.append((hub.number, repr(exc)))
            continue
        c = st["cascade"]
        out.append({"hub": hub.number,
                    "members": {r: [(m["name"], m["hub"]) for m in ms] for r, ms in st["rooms"].items()},
                    "links": [(x["hub"], x["up"], x["rooms"], x["members"]) for x in c["links"]],
                    "subscribers": [(x["hub"], x["rooms"]) for x in c["subscribers"]]})
    return out


# -- one configuration, the table, the plot -------------------------------------------------
def run_one(h: int, curve: bool, args: argparse.Namespace, progress: Callable[[int], None]) -> dict:
    n = args.participants
    seats = max(n, args.kill_participants, 2)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="holoport-cluster-") as tmp, \
            Cluster(args.redis_server, h, curve, seats, Path(tmp)) as cluster:
        record = {"hubs": h, "participants": n, "curve": curve, "frame_bytes": args.frame_bytes, "fps": args.fps,
                  "seconds": args.seconds,
                  **measure_meeting(cluster, n, args.fps, args.frame_bytes, args.seconds)}
        progress(1)
        kills = {"kills": 0, "unsettled": [], "rejoin_s": [], "rejoin_failed": None, "rejoin_over_3s": None,
                 "rejoin_p50_s": None, "rejoin_max_s": None, "failover_join_p50_s": None,
                 "join_refusals_waited": None, "kill_errors": []}
        if h >= 2 and args.kills > 0:
            kills = measure_kills(cluster, args.kills, args.kill_participants, args.kill_fps,
                                  args.kill_frame_bytes, progress)
    return {**record, **kills, "config_s": time.monotonic() - began,
            "kill_participants": args.kill_participants if kills["kills"] else None,
            "kill_fps": args.kill_fps if kills["kills"] else None,
            "kill_frame_bytes": args.kill_frame_bytes if kills["kills"] else None}


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    metrics = [("hub", "a hub's own time"), ("cascade", "cascade hop (+ 2nd hub)"),
               ("local_send_to_arrival", "send→arrival, same hub"),
               ("cascaded_send_to_arrival", "send→arrival, across hubs")]
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    width = 0.8 / len(metrics)
    labels = [f"{r['hubs']} hub{'s' if r['hubs'] > 1 else ''}" + ("" if len({x['curve'] for x in records}) == 1
                                                                   else (", CURVE" if r["curve"] else ", plain"))
              for r in records]
    for j, ((key, text), color) in enumerate(zip(metrics, colors, strict=True)):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(records))]
        p99 = [r.get(f"{key}_p99_ms") or 0.0 for r in records]
        p50 = [r.get(f"{key}_p50_ms") or 0.0 for r in records]
        left.bar(xs, p99, width, color=color, alpha=0.45, label=f"{text}: p99")
        left.bar(xs, p50, width * 0.5, color=color, label="p50")
    left.set_xticks(range(len(records)), labels)
    left.set_ylabel("ms")
    left.axhline(2.0, color="grey", lw=0.8, ls=":", label="2 ms (issue 18: cascade p99)")
    left.set_title("per-hop latency (p50 dark, p99 light)", fontsize=10)
    left.legend(fontsize=7, ncol=2)
    left.grid(alpha=0.3, axis="y")
    killed = [(label, r["rejoin_s"]) for label, r in zip(labels, records, strict=True) if r.get("rejoin_s")]
    if killed:
        right.boxplot([v for _, v in killed], tick_labels=[k for k, _ in killed], whis=(0, 100))
        for i, (_, v) in enumerate(killed, 1):
            right.plot(np.full(len(v), i) + np.random.default_rng(i).uniform(-0.12, 0.12, len(v)), v, ".",
                       color="tab:purple", alpha=0.6)
        right.axhline(REJOIN_TARGET_S, color="tab:red", lw=0.8, ls="--", label="3 s target")
        right.set_ylim(0, 1.1 * max(REJOIN_TARGET_S, *(max(v) for _, v in killed)))
        right.legend(fontsize=8, loc="lower right")
    right.set_ylabel("s from SIGKILL to frames flowing again")
    right.set_title("re-join after a hub's death (each dot: one participant, one kill)", fontsize=10)
    right.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> int:
    if args.redis_server is None or not Path(args.redis_server).is_file():
        print("holoport bench cluster needs redis-server (Debian: apt-get install redis-server), or "
              "--redis-server PATH", file=sys.stderr)
        return 2
    if not 2 <= args.participants <= 16 or not 2 <= args.kill_participants <= 16:
        print("--participants and --kill-participants must be in 2..16", file=sys.stderr)
        return 2
    if any(not 1 <= h <= 8 for h in args.hubs) or not args.hubs:
        print("--hubs must each be in 1..8", file=sys.stderr)
        return 2
    if args.seconds <= 0 or args.fps <= 0 or args.kill_fps <= 0 or args.frame_bytes <= 0 \
            or args.kill_frame_bytes <= 0 or args.kills < 0:
        print("--seconds, --fps, --kill-fps, --frame-bytes and --kill-frame-bytes must be > 0, --kills >= 0",
              file=sys.stderr)
        return 2
    import logging

    logging.getLogger("holoport").setLevel(logging.ERROR)  # joins, failovers and links by the dozen
    from rich.progress import Progress

    curves = {"off": [False], "on": [True], "both": [False, True]}[args.curve]
    configs = [(h, c) for c in curves for h in args.hubs]
    steps = sum(1 + (args.kills if h >= 2 else 0) for h, _ in configs)
    records = []
    started = time.monotonic()
    with Progress(transient=True) as bar:
        task = bar.add_task("hub cluster", total=steps)
        for h, c in configs:
            bar.update(task, description=f"{h} hub{'s' if h > 1 else ''}, CURVE {'on' if c else 'off'}")
            records.append(run_one(h, c, args, lambda k: bar.advance(task, k)))
    emit(records, COLUMNS, f"Hub cluster: {args.participants} participants, {args.fps:g} fps, {args.frame_bytes:,} B "
         f"frames; kills with {args.kill_participants} at {args.kill_fps:g} fps, {args.kill_frame_bytes:,} B",
         args, plot=plot)
    for r in records:
        for why in r["unsettled"]:
            print(f"{r['hubs']} hubs: after kill {r['kills']} of {args.kills}, {why[:2000]}", file=sys.stderr)
    print(f"{len(records)} configurations in {time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
