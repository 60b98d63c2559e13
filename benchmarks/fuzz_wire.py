"""Fuzz the wire: hostile messages against a real hub, hostile forwarded messages against a
real receiver. The pass mark is 0 crashes, 0 hangs and bounded memory.

hub       A real `holoport hub` process (16 seats) on a free loopback port. Six raw ZeroMQ
          DEALER peers send structure-aware hostile messages: headers of every message type
          built from ``holoport.wire.SCHEMA``, then given fields of the wrong type or range
          (strings, NaN, inf, huge and negative ints, nested maps, int keys, long strings),
          fields missing, types confused, other versions, many distinct types; and raw
          garbage, truncated and extra multipart frames, oversized headers. Three of them
          join the room first (so the FRAME, CREDIT, KEYFRAME and FEEDBACK handlers run) and
          join again whenever the hub forgets them. Every --check-every inputs a well-behaved
          sender Node's frame must reach a well-behaved receiver Node in the same room, and
          a stats request must answer, each within --check-seconds; the hub's peak
          resident memory (VmHWM) is read then.
receiver  A real receiver in a child process: holoport.participant's own receive and render
          path (it sends nothing), whose hub is this fuzzer: a ROUTER that welcomes it,
          answers TIME, takes CREDIT/HEARTBEAT/KEYFRAME, and sends it hostile forwarded
          messages: FRAME headers with mutated fields; FRAME payloads from real baseline and
          octree streams (an octree sequence per sender) mutated by fuzz_codec.mutate, half
          of the flips with the container checksum recomputed; every other message type
          with bad fields; garbage. Lock step: after each input two probe frames in turn
          ask for an arrival report (``fb``); the second report shows the input was decoded
          and rendered, so a crash is the input's own, and no report within
          --hang-seconds while the child lives is a hang.

Failures: the process under test died (crashed: the traceback's last line, counted by
message and input kind; it is restarted and the run goes on), stopped answering (hangs),
its peak resident memory went over --max-rss-mb (memory), the hub stopped forwarding
(stalled), or the hub logged an exception a message caused (handler_errors: it survived
what its handlers did not foresee). Any of them makes the exit status 1.

Records (--json): per target and kind of input: target, kind, inputs, crashed, hangs,
memory, slowest_ms (receiver: from sending an input to its second report; hub: its slowest
liveness check, in the "all" row only), peak_rss_mb (the process under test, over all its
restarts); and a row of kind "all" per target with every failure by message and its
counters (hub: checks, stalled, handler_errors, restarts and the hub's own received,
dropped, refused, joins, forwarded; receiver: restarts and what its node counted: received,
rendered, malformed, decode_errors, missing_reference, unknown_sender, keyframe requests).

Throughput measured here (2 cores shared with other work): hub about 7,000 inputs/s
(100,000 in 14 s), receiver about 400 inputs/s (20,000 in 48 s; each input waits for two
reports).

Run: python -m benchmarks.fuzz_wire --target hub --inputs 250000 [--data DIR] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

import codec
from benchmarks.common import add_output_arguments, emit, script_main
from benchmarks.fuzz_codec import KINDS as STREAM_KINDS
from benchmarks.fuzz_codec import mutate as mutate_stream
from benchmarks.fuzz_codec import seed_cloud
from holoport import wire
from holoport.wire import MessageType as T

ROOT = Path(__file__).resolve().parent.parent
ROOM = "fuzz"
TYPES = sorted(T.ALL)
FIELDS = sorted({name for fields in wire.SCHEMA.values() for name in fields})
NUMBERS = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, -0.0, 0.5, -1, 0, 1, 2**31,
           -(2**31), 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]
WORDS = ["", "x", "nan", "inf", "1", "-1", "true", "null", "frame", "\x00", "ééé", "\u202e", ROOM, "HPCC"]
KEYS = [0, 1, -1, 2**40, None, 1.5, b"k", "", "x" * 100, True]
OPS = "sssssstttdddaaTvnk"  # mutation ops, weighted: set, stamps, delete, add, Type, version, nested, key


def pack(obj: Any) -> bytes:
    """msgpack bytes of anything the forge makes (what msgpack cannot pack becomes a byte
    no msgpack decoder accepts)."""
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (ValueError, OverflowError, TypeError):
        return b"\xc1"


# -- forging hostile messages ---------------------------------------------------------------
class Forge:
    """Structure-aware hostile messages: a valid header of any type, built from the wire
    schema, then mutated field by field; and raw garbage. ``ids`` gives the member ids known
    now, so that most ids forged are real and the handlers behind them run."""

    def __init__(self, rng: np.random.Generator, ids: Callable[[], list[int]]) -> None:
        self.rng = rng
        self.ids = ids

    def pick(self, items: Any) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def chance(self, p: float) -> bool:
        return float(self.rng.random()) < p

    def some_id(self) -> int:
        ids = self.ids()
        return self.pick(ids) if ids and self.chance(0.8) else int(self.rng.integers(1, 100))

    def hostile(self, depth: int = 0) -> Any:
        """A value no field accepts, or one of another field's type."""
        r, k = self.rng, int(self.rng.integers(13))
        if k == 0:
            return self.pick(NUMBERS)
        if k == 1:
            return self.pick([None, True, False])
        if k == 2:
            return int(r.integers(-(2**63), 2**63 - 1))
        if k == 3:
            return float(r.standard_normal()) * 10.0 ** int(r.integers(-300, 300))
        if k == 4:
            return self.pick(WORDS)
        if k == 5:
            return "x" * int(r.integers(65, 5000))
        if k == 6:
            return r.bytes(int(r.integers(0, 64)))
        if k == 7:
            return [] if depth > 1 else [self.hostile(depth + 1) for _ in range(int(r.integers(0, 4)))]
        if k == 8:
            if depth > 1:
                return self.pick([{}, {1: 2}, {"a": None}, {b"k": 1}, {(1, 2): 3}, {None: 1}, {1.5: "x"}])
            return {self.pick(KEYS): self.hostile(depth + 1)}
        if k == 9:
            nested: list = []
            for _ in range(int(r.integers(10, 300))):
                nested = [nested]
            return nested
        if k == 10:
            return list(range(int(r.integers(100, 5000))))
        if k == 11:
            return self.pick([msgpack.ExtType(int(r.integers(0, 128)), r.bytes(8)), msgpack.Timestamp(0, 0)])
        return self.valid(self.pick(FIELDS))  # another field's value: type confusion

    def valid(self, name: str) -> Any:
        maker = VALID.get(name)
        return maker(self) if maker else self.hostile(1)  # a field added to the schema since: fuzzed anyway

    def header(self, kind: str, keep: float = 0.9) -> dict:
        """A valid header of ``kind`` with most of its schema's fields."""
        return wire.header(kind, **{n: self.valid(n) for n in wire.SCHEMA[kind] if self.chance(keep)})

    def mutate(self, head: dict, focus: Iterable[str] = ()) -> dict:
        """``head`` with one to three hostile changes: a field of the wrong type or range (one
        of ``focus`` more often than not), the stamps damaged, a field deleted or added, the
        type confused, another version, bad members or reports, keys that are no strings."""
        head, focus = dict(head), list(focus)
        for _ in range(int(self.rng.integers(1, 4))):
            op = self.pick(OPS)
            if op == "s":
                name = self.pick(focus) if focus and self.chance(0.6) else self.pick(list(head) or FIELDS)
                head[name] = self.hostile()
            elif op == "t":
                head["ts"] = self.bad_stamps(head.get("ts"))
            elif op == "d" and head:
                del head[self.pick(list(head))]
            elif op == "a":
                head[self.pick(FIELDS)] = self.hostile()
            elif op == "T":
                head["type"] = self.pick(TYPES) if self.chance(0.7) else self.hostile()
            elif op == "v":
                head["v"] = self.pick([0, 2, -1, "1", 1.0, True, None, 2**64 - 1, [1]])
            elif op == "n":
                name = self.pick(["members", "r"])
                head[name] = self.bad_entries(name)
            elif op == "k":
                head[self.pick(KEYS)] = self.hostile()
        return head

    def bad_stamps(self, ts: Any) -> Any:
        """A frame's ``ts`` map damaged: a stage missing or of the wrong type, keys that are
        no strings or too long, too many stages, empty, or no map at all."""
        ts = dict(ts) if isinstance(ts, dict) else _stamps(self)
        k = int(self.rng.integers(7))
        if k == 0:
            ts.pop(self.pick(["sent", "capture"]), None)
        elif k == 1:
            ts[self.pick(["sent", "capture", "hub_in", "hub_out", "received"])] = self.hostile()
        elif k == 2:
            ts[self.pick(KEYS)] = time.time()
        elif k == 3:
            ts.update({f"s{i}": time.time() for i in range(self.pick([17, 100, 1000]))})
        elif k == 4:
            ts["x" * int(self.rng.integers(33, 300))] = time.time()
        elif k == 5:
            ts = {}
        else:
            return self.hostile()
        return ts

    def entry(self, name: str) -> Any:
        if name == "members":
            # "at" (when it joined) is what a hub's linked list adds; a welcome's drops it
            return {"id": self.some_id(), "name": "m", "seat": int(self.rng.integers(0, 16)), "at": time.time()}
        return [int(self.rng.integers(0, 1000)), time.time(), int(self.rng.integers(0, 100_000))]

    def bad_entries(self, name: str) -> list:
        """A ``members`` or ``r`` list with one entry bad, an element of one bad, one short, or
        too many entries."""
        items = [self.entry(name) for _ in range(int(self.rng.integers(1, 4)))]
        i, k = int(self.rng.integers(len(items))), int(self.rng.integers(4))
        if k == 0:
            items[i] = self.hostile(1)
        elif k == 1:
            key = self.pick(list(items[i]) if isinstance(items[i], dict) else [0, 1, 2])
            items[i][key] = self.hostile(1)
        elif k == 2:
            items *= self.pick([17, 65, 400])
        elif isinstance(items[i], dict):
            del items[i][self.pick(list(items[i]))]
        else:
            items[i] = items[i][: int(self.rng.integers(3))]
        return items

    def garbage(self, head: dict) -> list[bytes]:
        """Frames that are no valid message: random or truncated bytes, trailing bytes, msgpack
        that is no map, an oversized header, too many or empty parts, deep nesting, invalid
        UTF-8, lengths claiming gigabytes, a map of thousands of integer keys."""
        r, packed = self.rng, pack(head)
        k = int(r.integers(11))
        if k == 0:
            return [r.bytes(int(r.integers(0, 2048)))]
        if k == 1:
            return [packed[: int(r.integers(0, len(packed)))]]
        if k == 2:
            return [packed + r.bytes(int(r.integers(1, 64)))]
        if k == 3:
            return [pack(self.hostile())]
        if k == 4:
            return [pack({**head, "pad": "x" * (wire.MAX_HEADER_BYTES + int(r.integers(1, 4096)))})]
        if k == 5:
            return [packed] + [b"x"] * int(r.integers(wire.MAX_PAYLOAD_FRAMES + 1, 40))
        if k == 6:
            return [b""] * int(r.integers(1, 4))
        if k == 7:
            return [b"\x91" * int(r.integers(100, 100_000)) + b"\xc0"]
        if k == 8:
            return [b"\x82" + pack("v") + pack(1) + pack("type") + b"\xa5fr\xffme"]
        if k == 9:
            claim = self.pick([b"\xdb", b"\xdf", b"\xdd", b"\xc6"])  # str32, map32, array32, bin32
            return [claim + b"\xff\xff\xff\xff" + r.bytes(int(r.integers(0, 16)))]
        return [pack({i: i for i in range(int(r.integers(1000, 6000)))} | {"v": 1, "type": head.get("type")})]

    def payload(self, stream: bytes, large: int = 300_000) -> bytes:
        """A frame's payload: the stream itself mostly, else mutated, empty, random or large."""
        x = float(self.rng.random())
        if x < 0.8:
            return stream
        if x < 0.9:
            return mutate_stream(stream, self.pick(STREAM_KINDS), self.rng)
        if x < 0.95:
            return b""
        if x < 0.995:
            return self.rng.bytes(int(self.rng.integers(1, 4096)))
        return bytes(large)

    def parts(self, stream: bytes) -> list[bytes]:
        """A frame's payload parts: one mostly; none, several or more than the wire allows."""
        n = self.pick([1, 1, 1, 1, 1, 1, 0, 2, 3, wire.MAX_PAYLOAD_FRAMES + 1])
        return [self.payload(stream) for _ in range(n)]


def _stamps(f: Forge) -> dict:
    now = time.time()
    return {stage: now - 0.01 * (4 - i) for i, stage in enumerate(("capture", "captured", "encoded", "sent"))}


def _reports(f: Forge) -> list:
    return [f.entry("r") for _ in range(int(f.rng.integers(1, 5)))]


VALID: dict[str, Callable[[Forge], Any]] = {
    "room": lambda f: ROOM, "name": lambda f: f"fz{f.rng.integers(1000)}", "token": lambda f: "",
    "credit": lambda f: int(f.rng.integers(1, 65)), "id": Forge.some_id, "seat": lambda f: int(f.rng.integers(0, 16)),
    "seats": lambda f: 16, "members": lambda f: [f.entry("members") for _ in range(int(f.rng.integers(0, 4)))],
    "max_points": lambda f: wire.DEFAULT_MAX_POINTS, "reason": lambda f: "fuzz", "src": Forge.some_id,
    "seq": lambda f: int(f.rng.integers(0, 1 << 40)), "ts": _stamps, "key": lambda f: f.chance(0.5),
    "points": lambda f: int(f.rng.integers(0, 5000)), "off": lambda f: float(f.rng.normal(0, 0.01)),
    "fb": lambda f: f.chance(0.5), "page": lambda f: 0, "pages": lambda f: 1, "n": lambda f: int(f.rng.integers(1, 65)),
    "of": Forge.some_id, "from": Forge.some_id, "to": Forge.some_id, "r": _reports,
    "t0": lambda f: time.time(), "t1": lambda f: time.time(), "t2": lambda f: time.time(),
    "layer": lambda f: int(f.rng.integers(0, wire.MAX_LAYERS)), "base": lambda f: int(f.rng.integers(0, 1 << 40)),
    "up": lambda f: f.chance(0.5),
    "sizes": lambda f: [int(f.rng.integers(0, 100_000)) for _ in range(int(f.rng.integers(1, wire.MAX_LAYERS + 1)))],
    "stream": lambda f: 0 if f.chance(0.8) else int(f.rng.integers(1, wire.MAX_STREAMS)),
    "retry": lambda f: f.chance(0.5), "vkey": lambda f: "k" * 32,
    # voice (docs/voice.md)
    "t": lambda f: time.time(), "vad": lambda f: f.chance(0.5), "hin": lambda f: time.time(),
    "hout": lambda f: time.time(),
    # the cluster's (docs/cluster.md): what hubs answer and say to each other
    "hub": lambda f: int(f.rng.integers(0, 64)), "cascade": lambda f: "tcp://127.0.0.1:1", "at": lambda f: time.time(),
    "hubs": lambda f: [{"id": int(f.rng.integers(0, 64)), "site": "fz", "endpoint": "tcp://127.0.0.1:1", "key": "",
                        "members": 0, "mbps": 0.0, "cpu": 0.0, "room": f.chance(0.5)}
                       for _ in range(int(f.rng.integers(0, 4)))],
}


# -- processes under test ---------------------------------------------------------------------
def exception_lines(text: str) -> list[str]:
    """The line that ends each Python traceback in ``text`` (a log, or stderr): the error."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and line.strip() and not line[0].isspace():
            out.append(line.strip()[:300])
            inside = False
    return out


def die_with_parent() -> None:
    """First thing in a process under test: it gets SIGKILL when the fuzzer ends, however
    the fuzzer ends (Linux), so that no hub or receiver outlives a fuzzer that was killed."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != os.environ.get("HOLOPORT_FUZZER_PID", str(os.getppid())):
        os._exit(1)  # the fuzzer ended before the line above


class Process:
    """A process under test: its output in a file, its memory read from /proc, and never
    left running (``stop``, or ``kill``; ``die_with_parent`` if the fuzzer is killed)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NUMBA_NUM_THREADS": "1", "HOLOPORT_FUZZER_PID": str(os.getpid())}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.peak_mb = 0.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def memory_mb(self) -> float:
        """Its resident memory's peak so far (VmHWM), in MB, as last seen alive."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
        except OSError:
            pass
        return self.peak_mb

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def error(self) -> str:
        """Why it ended: the signal that killed it, else its last traceback's error, else
        its exit status."""
        rc = self.proc.poll()
        if rc is not None and rc < 0:
            return f"killed by {signal.Signals(-rc).name}"
        lines = exception_lines(self.output())
        return lines[-1] if lines else f"exit status {rc}"

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (it ends cleanly), then SIGKILL after ``grace`` seconds."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Tally:
    """What one kind of input did."""

    inputs: int = 0
    crashed: int = 0
    hangs: int = 0
    memory: int = 0
    slowest: float = 0.0


@dataclass
class Outcome:
    """A target's run: tallies per kind, failures by message, counters, peak memory."""

    target: str
    kinds: tuple[str, ...]
    tallies: dict[str, Tally] = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    peak_mb: float = 0.0
    timed_per_kind: bool = True  # False: ``slowest`` is the target's alone (the hub's checks)

    def __post_init__(self) -> None:
        self.tallies = {k: Tally() for k in self.kinds}

    def fail(self, kind: str, what: str, message: str) -> None:
        setattr(self.tallies[kind], what, getattr(self.tallies[kind], what) + 1)
        self.failures[f"{self.target} {what} on {kind}: {message}"] += 1

    def given_up(self, i: int, max_restarts: int) -> bool:
        """After ``max_restarts`` restarts the target stops (the inputs not sent are not counted):
        a process under test that fails on most inputs would otherwise take hours."""
        if self.counters["restarts"] < max_restarts:
            return False
        self.failures[f"{self.target}: stopped after {max_restarts} restarts, at input {i:,}"] += 1
        return True

    def records(self, extra: Iterable[str]) -> list[dict]:
        rows = [{"target": self.target, "kind": k, "inputs": t.inputs, "crashed": t.crashed, "hangs": t.hangs,
                 "memory": t.memory, "peak_rss_mb": self.peak_mb,
                 **({"slowest_ms": t.slowest * 1e3} if self.timed_per_kind else {})}
                for k, t in self.tallies.items()]
        total = {"target": self.target, "kind": "all", "peak_rss_mb": self.peak_mb,
                 **{w: sum(getattr(t, w) for t in self.tallies.values())
                    for w in ("inputs", "crashed", "hangs", "memory")},
                 "slowest_ms": max(t.slowest for t in self.tallies.values()) * 1e3}
        total.update({k: int(self.counters.get(k, 0)) for k in extra})
        total["failures"] = [f"{n} x {m}" for m, n in self.failures.most_common(50)]
        return [*rows, total]


# -- the hub target ---------------------------------------------------------------------------
HUB_KINDS = ("header", "member", "frame", "garbage")
MEMBER_TYPES = (T.FRAME, T.CREDIT, T.KEYFRAME, T.FEEDBACK, T.TIME, T.STATS, T.HEARTBEAT, T.JOIN, T.LEAVE)
HUB_COUNTERS = ("checks", "stalled", "handler_errors", "restarts", "received", "dropped_malformed", "refused",
                "joins", "forwarded", "timed_out", "control_dropped", "dropped_full")
PEERS, MEMBERS = 6, 3
HUB_CHILD = ("import sys; from benchmarks.fuzz_wire import die_with_parent; die_with_parent(); "
             "from holoport.cli import main; sys.exit(main(sys.argv[1:]))")  # `holoport hub ...`


@dataclass
class Peer:
    """A raw DEALER: the first MEMBERS of them join the room properly, the others never do
    (unless a forged join admits them)."""

    index: int
    sock: zmq.Socket
    member: bool
    joins: int = 0
    told_rejoin: bool = False


class HubFuzz:
    def __init__(self, args: argparse.Namespace, streams: list[bytes], small: bytes, workdir: Path) -> None:
        self.args, self.streams, self.small, self.workdir = args, streams, small, workdir
        self.out = Outcome("hub", HUB_KINDS, timed_per_kind=False)
        self.rng = np.random.default_rng(args.seed)
        self.known: set[int] = set()
        self.forge = Forge(self.rng, lambda: self._ids)
        self._ids: list[int] = []
        self.ctx = zmq.Context()
        self.hub: Process | None = None
        self.peers: list[Peer] = []
        self.nodes: list = []
        self.lives = 0
        self.last_stats: dict = {}
        self.last_kind = HUB_KINDS[0]
        self.reasons: Counter = Counter()  # the hub's drops by reason, over all its lives

    # life cycle
    def start(self) -> None:
        from holoport.endpoints import free_tcp_endpoint
        from holoport.hubstats import query_stats
        from holoport.node import JoinError, Node

        self.lives += 1
        self.endpoint = free_tcp_endpoint()
        self.hub = Process([sys.executable, "-c", HUB_CHILD, "hub", "--bind", self.endpoint, "--seats", "16",
                            "--quiet"], self.workdir / f"hub-{self.lives}.log")
        deadline = time.monotonic() + 60
        while True:
            if not self.hub.alive():
                raise RuntimeError(f"the hub did not start: {self.hub.output()[-2000:]}")
            try:
                query_stats(self.endpoint, timeout=1.0)
                break
            except JoinError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the hub did not answer within 60 s") from None
        self.sender = Node(self.endpoint, ROOM, "check-sender", decode=False).start()
        self.receiver = Node(self.endpoint, ROOM, "check-receiver", decode=False).start()
        self.nodes = [self.sender, self.receiver]
        self.known = {self.sender.id, self.receiver.id}
        self.peers = [self._peer(i) for i in range(PEERS)]
        self.last_stats = {}
        self.crash_counted = False
        self.blocked = False
        self._next_keepalive = 0.0

    def _peer(self, i: int) -> Peer:
        sock = self.ctx.socket(zmq.DEALER)
        for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 1000), (zmq.RCVHWM, 1000), (zmq.SNDTIMEO, 2000)):
            sock.setsockopt(opt, value)
        sock.connect(self.endpoint)
        peer = Peer(i, sock, member=i < MEMBERS)
        if peer.member:
            self._join(peer)
        return peer

    def _join(self, peer: Peer) -> None:
        peer.joins += 1
        self._send(peer, [pack(wire.header(T.JOIN, room=ROOM, name=f"m{peer.index}.{peer.joins}", credit=8))])
        peer.told_rejoin = False

    def finish(self, final: bool = True) -> None:
        """Close every socket, end the hub, and count what it logged and counted."""
        from holoport.hubstats import query_stats
        from holoport.node import JoinError

        if self.hub is not None and self.hub.alive() and final:
            with contextlib.suppress(JoinError):
                self.last_stats = query_stats(self.endpoint, timeout=self.args.check_seconds)
        for node in self.nodes:
            node.close()
        for peer in self.peers:
            peer.sock.close(0)
        self.nodes, self.peers = [], []
        if self.hub is not None:
            self.hub.stop(grace=10.0 if final else 2.0)
            self.out.peak_mb = max(self.out.peak_mb, self.hub.peak_mb)
            errors = exception_lines(self.hub.output())
            if self.crash_counted and self.hub.proc.returncode > 0 and errors:
                errors = errors[:-1]  # the one that ended it is counted as its crash
            self.out.counters["handler_errors"] += len(errors)
            for e in errors:
                self.out.failures[f"hub handler error: {e}"] += 1
            for key in HUB_COUNTERS[4:]:
                self.out.counters[key] += int(self.last_stats.get(key, 0))
            self.reasons.update(self.last_stats.get("by_reason", {}))
            self.hub = None

    def restart(self) -> None:
        self.out.counters["restarts"] += 1
        self.finish(final=False)
        self.start()

    # sending
    def _send(self, peer: Peer, frames: list[bytes]) -> None:
        try:
            peer.sock.send_multipart(frames)
        except zmq.Again:  # the hub has not taken anything for 2 s: is it there? (checked next)
            self.blocked = True

    def _drain(self) -> None:
        """Read what the hub sent each peer: learn ids, hand back credit, join again when told."""
        for peer in self.peers:
            for _ in range(256):
                try:
                    frames = peer.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    msg = wire.decode(frames)
                except wire.WireError:
                    self.out.counters["hub_sent_malformed"] += 1
                    continue
                self._learn(peer, msg)
            if peer.member and peer.told_rejoin:
                self._join(peer)
        self._ids = sorted(self.known)

    def _learn(self, peer: Peer, msg: wire.Message) -> None:
        h = msg.header
        if msg.type == T.WELCOME and wire.need(h, "id"):
            self.known.add(h["id"])
            self.known.update(m["id"] for m in h.get("members", []))
        elif msg.type == T.JOINED and wire.need(h, "id"):
            self.known.add(h["id"])
        elif msg.type == T.LEFT and wire.need(h, "id"):
            self.known.discard(h["id"])
        elif msg.type == T.REJOIN:
            peer.told_rejoin = True
        elif msg.type == T.FRAME and peer.member and self.forge.chance(0.7):
            with contextlib.suppress(zmq.Again):  # a member that hands back most of its credit
                peer.sock.send_multipart([pack(wire.header(T.CREDIT, n=1))], zmq.NOBLOCK)

    def _keepalive(self) -> None:
        """The check nodes stay members between checks (heartbeats; a REJOIN answered)."""
        if time.monotonic() >= self._next_keepalive:
            for node in self.nodes:
                node.heartbeat()
                node.poll(0)
            self._next_keepalive = time.monotonic() + 0.5

    # one input
    def step(self, i: int) -> None:
        kind = HUB_KINDS[i % len(HUB_KINDS)]
        self.last_kind = kind
        f = self.forge
        members = [p for p in self.peers if p.member]
        if kind == "header":
            head = f.header(f.pick(TYPES))
            head = head if f.chance(0.15) else f.mutate(head, wire.SCHEMA[head["type"]])
            peer, frames = f.pick(self.peers), [pack(head), *f.parts(f.pick(self.streams))[:1]]
        elif kind == "member":
            head = f.header(f.pick(MEMBER_TYPES))
            head = head if f.chance(0.2) else f.mutate(head, wire.SCHEMA[head["type"]])
            peer, frames = f.pick(members), [pack(head)]
            if head.get("type") == T.FRAME:
                frames.append(f.payload(f.pick(self.streams)))
        elif kind == "frame":
            head = f.header(T.FRAME, keep=0.95)
            head.pop("src", None)  # the hub stamps it
            if f.chance(0.6):
                head = f.mutate(head, wire.SCHEMA[T.FRAME])
            peer, frames = f.pick(members), [pack(head), *f.parts(f.pick(self.streams))]
        else:
            peer, frames = f.pick(self.peers), f.garbage(f.header(f.pick(TYPES)))
        self._send(peer, frames)  # a member that left is told to join again, and does at the next drain
        self.out.tallies[kind].inputs += 1

    # checks
    def check(self) -> None:
        """Is the hub alive, answering, forwarding, and within its memory bound?"""
        from holoport.hubstats import query_stats
        from holoport.node import JoinError

        self.out.counters["checks"] += 1
        kind, t0 = self.last_kind, time.perf_counter()
        if not self.hub.alive():
            return self._crashed(kind)
        peak = self.hub.memory_mb()
        self.out.peak_mb = max(self.out.peak_mb, peak)
        try:
            self.last_stats = query_stats(self.endpoint, timeout=self.args.check_seconds)
        except JoinError:
            if not self.hub.alive():
                return self._crashed(kind)
            self.out.fail(kind, "hangs", f"no stats answer within {self.args.check_seconds:g} s")
            return self.restart()
        if peak > self.args.max_rss_mb:
            self.out.fail(kind, "memory", f"hub resident memory {peak:.0f} MB over {self.args.max_rss_mb:.0f} MB")
            return self.restart()
        if not self._forwards():
            self.out.counters["stalled"] += 1
            self.out.failures[f"hub stalled: no frame forwarded within {self.args.check_seconds:g} s"] += 1
        tally = self.out.tallies[kind]
        tally.slowest = max(tally.slowest, time.perf_counter() - t0)

    def _crashed(self, kind: str) -> None:
        """The hub died: its last words are the crash, counted against the input kind sent last."""
        self.out.fail(kind, "crashed", self.hub.error())
        self.crash_counted = True
        self.restart()

    def _forwards(self) -> bool:
        """A well-behaved sender's frame reaches a well-behaved receiver in the same room."""
        deadline = time.monotonic() + self.args.check_seconds
        next_send = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                self.sender.heartbeat()
                self.sender.poll(0)  # a REJOIN or a welcome waiting for it
                self.sender.send_encoded(self.small, 64, {"capture": time.time()})
                next_send = time.monotonic() + 0.25
            self.receiver.heartbeat()
            if any(frame.sender == self.sender.id for frame in self.receiver.poll(0.05)):
                return True
        return False

    def run(self, inputs: int, progress: bool) -> Outcome:
        try:
            self.start()
            for i in _progress(range(inputs), "fuzzing the hub", progress):
                if self.out.given_up(i, self.args.max_restarts):
                    break
                self.step(i)
                if i % 16 == 0:
                    self._drain()
                    self._keepalive()
                    if not self.hub.alive():
                        self.check()
                if i + 1 == self.args.kill_hub_after:  # the test that shows a crash is seen
                    self.hub.proc.kill()
                    self.hub.proc.wait()
                if self.blocked or (i + 1) % self.args.check_every == 0 or i + 1 == inputs:
                    self.blocked = False
                    self.check()
        finally:
            self.finish()
            self.ctx.destroy(linger=0)
        return self.out


# -- the receiver target ----------------------------------------------------------------------
RECEIVER_KINDS = ("frame-header", "frame-payload", "control", "garbage")
CONTROL_TYPES = (T.JOINED, T.LEFT, T.WELCOME, T.TIME, T.FEEDBACK, T.KEYFRAME, T.REJOIN, T.REFUSED, T.STATS,
                 T.CREDIT, T.HEARTBEAT, T.JOIN, T.LEAVE)
RESTORE_TYPES = {T.WELCOME, T.JOINED, T.LEFT, T.REJOIN}  # they change whom the receiver knows
RECEIVER_COUNTERS = ("restarts", "received", "frames_rendered", "skipped_stale", "malformed", "decode_errors",
                     "missing_reference", "unknown_sender", "rejoins", "keyframe_requests_sent", "counted_runs")
RECEIVER_ID, PROBE_ID, PROBE_SEQ = 1, 2, 1 << 40
SENDERS = 8  # fuzzing senders, ids 3.., seats 2..: half send an octree sequence, half single streams
CHILD = ("import sys; from benchmarks.fuzz_wire import receiver_main; "
         "receiver_main(sys.argv[1], int(sys.argv[2]))")


def receiver_main(hub: str, fail_after: int = 0) -> None:
    """The receiver under test, run in a child process: a real participant (holoport.
    participant: Node.poll, its receive and render code) that sends nothing, so that every
    frame it decodes and renders is one the fuzzer forged. An exception ends it with the
    traceback; SIGTERM ends it cleanly, printing its node's counters as JSON.
    ``fail_after`` (tests only): raise after that many frames, to show a crash is seen."""
    import logging
    from dataclasses import asdict

    die_with_parent()
    from holoport.participant import Participant, ParticipantOptions

    logging.basicConfig(level=logging.ERROR)

    class Receiver(Participant):
        def _capture_and_send(self, node) -> None:  # the fuzzer is every sender
            pass

        def _receive(self, frames) -> None:
            super()._receive(frames)
            if fail_after and self.node.counters.received >= fail_after:
                raise RuntimeError(f"failing on purpose after {fail_after} frames (--fail-after)")

    receiver = Receiver(ParticipantOptions(hub=hub, room=ROOM, name="receiver", fps=50.0, duration=0,
                                           view_size=(160, 90)))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: receiver.stop_event.set())
    receiver.run()
    print(json.dumps({**asdict(receiver.node.counters), "frames_rendered": receiver.frames_rendered}), flush=True)


@dataclass
class Sender:
    """A fuzzing sender the receiver knows: its streams go out in turn."""

    id: int
    seat: int
    streams: list[bytes]
    sequence: bool  # the streams continue each other: only the first is a keyframe
    at: int = 0

    def next(self) -> tuple[bytes, bool]:
        """The next stream, and whether it decodes on its own."""
        i, self.at = self.at % len(self.streams), self.at + 1
        return self.streams[i], i == 0 or not self.sequence


class FakeHub:
    """The receiver's hub: a ROUTER on loopback that welcomes it (the same welcome each time,
    so a forged one is undone), answers its TIME requests and counts the rest."""

    def __init__(self, ctx: zmq.Context, senders: list[Sender], counters: Counter) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        for opt, value in ((zmq.LINGER, 0), (zmq.ROUTER_MANDATORY, 1), (zmq.SNDHWM, 1000)):
            self.sock.setsockopt(opt, value)
        self.sock.bind("tcp://127.0.0.1:0")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.senders, self.counters = senders, counters
        self.peer: bytes | None = None

    def welcome(self) -> list[bytes]:
        members = [{"id": PROBE_ID, "name": "probe", "seat": 1},
                   *({"id": s.id, "name": f"s{s.id}", "seat": s.seat} for s in self.senders)]
        return [pack(wire.header(T.WELCOME, room=ROOM, id=RECEIVER_ID, name="receiver", seat=0, seats=16,
                                 members=members, max_points=wire.DEFAULT_MAX_POINTS))]

    def send(self, frames: list[bytes]) -> None:
        if self.peer is None:
            return
        try:
            self.sock.send_multipart([self.peer, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:  # its queue is full or it is gone: the probe will tell
            self.counters["send_failed"] += 1

    def serve(self, child: Process, seconds: float, probe: int | None) -> bool:
        """Answer the receiver until it reports ``probe``'s arrival (True), or for
        ``seconds``, or until it joined (``probe`` None); False when that did not happen or
        the child ended."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(min(left, 0.25) * 1000) + 1):
                if not child.alive():
                    return False
                continue
            while True:
                try:
                    identity, *frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if self._answer(identity, frames, probe):
                    return True
        return False

    def _answer(self, identity: bytes, frames: list[bytes], probe: int | None) -> bool:
        try:
            msg = wire.decode(frames)
        except wire.WireError:
            self.counters["receiver_sent_malformed"] += 1
            return False
        if msg.type == T.JOIN:
            self.peer = identity
            self.send(self.welcome())
            return probe is None
        if identity != self.peer:  # an earlier child's last words
            return False
        h = msg.header
        if msg.type == T.TIME and wire.need(h, "t0"):
            now = time.time()
            self.send([pack(wire.header(T.TIME, t0=h["t0"], t1=now, t2=now))])
        elif msg.type == T.KEYFRAME:
            self.counters["keyframe_requests_sent"] += 1
        elif msg.type == T.FEEDBACK and probe is not None:
            return h.get("to") == PROBE_ID and any(r[0] == probe for r in h.get("r", []))
        return False


class ReceiverFuzz:
    def __init__(self, args: argparse.Namespace, senders: list[Sender], small: bytes, workdir: Path) -> None:
        self.args, self.senders, self.small, self.workdir = args, senders, small, workdir
        self.out = Outcome("receiver", RECEIVER_KINDS)
        self.rng = np.random.default_rng(args.seed)
        ids = [s.id for s in senders]
        self.forge = Forge(self.rng, lambda: ids)
        self.ctx = zmq.Context()
        self.fake = FakeHub(self.ctx, senders, self.out.counters)
        self.child: Process | None = None
        self.lives = 0
        self.probe = PROBE_SEQ

    def start(self) -> None:
        self.lives += 1
        self.fake.peer = None
        self.child = Process([sys.executable, "-c", CHILD, self.fake.endpoint, str(self.args.fail_after)],
                             self.workdir / f"receiver-{self.lives}.log")
        if not (self.fake.serve(self.child, 120.0, None) and self._probe(60.0) and self._warm_up()):
            output = self.child.output()[-3000:]
            self.child.kill()
            raise RuntimeError(f"the receiver did not join and answer: {output}")

    def _warm_up(self) -> bool:
        """One clean frame of every stream, decoded and rendered before anything is timed (the
        first decode of each codec loads its compiled kernels)."""
        for sender in {id(s.streams): s for s in self.senders}.values():
            for stream in sender.streams[:3]:
                head = self.forge.header(T.FRAME, keep=1.0) | {"src": sender.id, "key": True, "ts": _stamps(self.forge)}
                self.fake.send([pack(head), stream])
                if not (self._probe(60.0) and self._probe(60.0)):
                    return False
        return True

    def _probe(self, seconds: float) -> bool:
        """A frame from the probe sender that asks for an arrival report: the receiver polls."""
        self.probe += 1
        now = time.time()
        ts = {"capture": now, "captured": now, "encoded": now, "sent": now, "hub_in": now, "hub_out": now}
        self.fake.send([pack(wire.header(T.FRAME, room=ROOM, src=PROBE_ID, seq=self.probe, ts=ts, key=True,
                                         points=64, fb=True)), self.small])
        return self.fake.serve(self.child, seconds, self.probe)

    def finish(self) -> None:
        """End the child cleanly and add up what its node counted."""
        if self.child is None:
            return
        self.child.stop()
        self.out.peak_mb = max(self.out.peak_mb, self.child.peak_mb)
        lines = [line for line in self.child.output().splitlines() if line.startswith("{")]
        if lines and self.child.proc.returncode == 0:
            counts = json.loads(lines[-1])
            self.out.counters["counted_runs"] += 1
            for key in RECEIVER_COUNTERS:
                if isinstance(counts.get(key), int):
                    self.out.counters[key] += counts[key]
        self.child = None

    def restart(self) -> None:
        self.out.counters["restarts"] += 1
        self.finish()
        self.start()

    def forge_input(self, kind: str) -> tuple[list[list[bytes]], bool]:
        """One input's messages, and whether the receiver's welcome must be restored after
        them (they may have changed whom it knows)."""
        f = self.forge
        if kind in ("frame-header", "frame-payload"):
            sender = f.pick(self.senders)
            stream, key = sender.next()
            now = time.time()
            head = f.header(T.FRAME, keep=1.0) | {"src": sender.id, "key": key,
                                                  "ts": {**_stamps(f), "hub_in": now, "hub_out": now}}
            if not f.chance(0.2):  # mostly a plain stream; else parts of a layered frame (its codec is not)
                head.pop("layer", None)
                head.pop("base", None)
                head.pop("sizes", None)
            if kind == "frame-header":
                head = f.mutate(head, wire.SCHEMA[T.FRAME])
                frames = [pack(head), stream]
            else:
                frames = [pack(head), mutate_stream(stream, f.pick(STREAM_KINDS + ("flipped+crc",) * 2), f.rng)]
            return [frames], restores(head)
        base = f.header(f.pick(CONTROL_TYPES))
        if kind == "control":
            head = base if f.chance(0.2) else f.mutate(base, wire.SCHEMA[base["type"]])
            return [[pack(head)]], restores(base) or restores(head)
        return [f.garbage(base)], restores(base)

    def step(self, i: int) -> None:
        kind = RECEIVER_KINDS[i % len(RECEIVER_KINDS)]
        messages, restore = self.forge_input(kind)
        tally = self.out.tallies[kind]
        tally.inputs += 1
        t0 = time.perf_counter()
        for frames in messages:
            self.fake.send(frames)
        if restore:
            self.fake.send(self.fake.welcome())
        # a node reports a probe's arrival in the poll that drains it, before it decodes and
        # the participant renders: the second report shows all the input brought is done
        answered = self._probe(self.args.hang_seconds) and self._probe(self.args.hang_seconds)
        tally.slowest = max(tally.slowest, time.perf_counter() - t0)
        if not answered:
            if self.child.alive():
                self.out.fail(kind, "hangs", f"no arrival report within {self.args.hang_seconds:g} s")
                self.child.kill()
            else:
                self.out.fail(kind, "crashed", self.child.error())
            self.restart()
        elif i % 64 == 0 and self.child.memory_mb() > self.args.max_rss_mb:
            self.out.fail(kind, "memory", f"receiver resident memory {self.child.peak_mb:.0f} MB over "
                                          f"{self.args.max_rss_mb:.0f} MB")
            self.restart()

    def run(self, inputs: int, progress: bool) -> Outcome:
        try:
            self.start()
            for i in _progress(range(inputs), "fuzzing the receiver", progress):
                if self.out.given_up(i, self.args.max_restarts):
                    break
                self.step(i)
            self.child.memory_mb()
        finally:
            if self.child is not None:
                self.finish()
            self.ctx.destroy(linger=0)
        return self.out


def restores(head: dict) -> bool:
    """Whether a message of this header's type may change whom the receiver knows."""
    kind = head.get("type")
    return isinstance(kind, str) and kind in RESTORE_TYPES


def make_senders(data: Path | None, points: int, sequence: int = 8) -> tuple[list[Sender], bytes]:
    """The fuzzing senders, each with real streams: octree sequences (a keyframe, then frames
    that continue it) for half, single baseline and octree streams for the others; and the
    probe's small stream."""
    pos, col = seed_cloud(data, points)
    singles = [codec.BaselineCodec().encode(pos, col), codec.OctreeCodec(depth=9, slices=1).encode(pos, col),
               codec.OctreeCodec(depth=9, slices=3, color_step=16).encode(pos, col)]
    encoder = codec.OctreeEncoder(codec.OctreeCodec(depth=9, slices=1, color_step=8), keyframe_interval=sequence)
    moving = [encoder.encode((pos + np.float32(0.003 * k), col)).payload for k in range(sequence)]
    senders = [Sender(3 + i, 2 + i, *((moving, True) if i < SENDERS // 2 else (singles, False)))
               for i in range(SENDERS)]
    return senders, codec.BaselineCodec().encode(pos[:64], col[:64])


# -- running ----------------------------------------------------------------------------------
def _progress(items: range, description: str, show: bool):
    if not show:
        return items
    from rich.progress import track

    return track(items, total=len(items), description=description)


COLUMNS = ["target", "kind", "inputs", "crashed", "hangs", "memory", "slowest_ms", "peak_rss_mb"]


def fuzz(args: argparse.Namespace, progress: bool = True) -> list[dict]:
    """Run the targets ``args.target`` names; their records."""
    senders, small = make_senders(args.data, args.points)
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="holoport-fuzz-") as tmp:
        if args.target in ("hub", "both"):
            streams = sorted({s for sender in senders for s in sender.streams}, key=len)
            hub = HubFuzz(args, streams, small, Path(tmp))
            records += hub.run(args.inputs, progress).records(HUB_COUNTERS)
            records[-1]["drop_reasons"] = dict(hub.reasons.most_common())
        if args.target in ("receiver", "both"):
            out = ReceiverFuzz(args, senders, small, Path(tmp)).run(args.inputs, progress)
            records += out.records(RECEIVER_COUNTERS)
    return records


def failed(records: list[dict]) -> int:
    """How many failures the records hold (crashes, hangs, memory, stalls, handler errors)."""
    return sum(r[k] for r in records if r["kind"] == "all"
               for k in ("crashed", "hangs", "memory", "stalled", "handler_errors") if k in r)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=["hub", "receiver", "both"], default="both")
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per target (default 10,000)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of PLY frames the payload streams are made from (default <data>/pointclouds/mvub)")
    parser.add_argument("--points", type=int, default=3000, help="points in the payload streams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-every", type=int, default=1000, help="hub inputs between liveness checks")
    parser.add_argument("--check-seconds", type=float, default=2.0,
                        help="the hub's stats answer and a forwarded frame must come within this")
    parser.add_argument("--hang-seconds", type=float, default=10.0,
                        help="the receiver must report each input's probe within this")
    parser.add_argument("--max-rss-mb", type=float, default=1536.0, help="peak resident memory allowed")
    parser.add_argument("--max-restarts", type=int, default=100,
                        help="a target whose process under test had to be restarted this often stops")
    parser.add_argument("--fail-after", type=int, default=0, help=argparse.SUPPRESS)  # tests: a receiver that fails
    parser.add_argument("--kill-hub-after", type=int, default=0, help=argparse.SUPPRESS)  # tests: a hub that dies
    add_output_arguments(parser)


def report(records: list[dict]) -> None:
    """Each target's counters and failures, after the table."""
    for r in records:
        if r["kind"] == "all":
            counts = ", ".join(f"{k} {r[k]:,}" for k in r if k not in COLUMNS and isinstance(r[k], int))
            print(f"{r['target']}: {counts}")
            for failure in r["failures"]:
                print(f"FAILED {failure}")


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)  # SIGTERM unwinds like Ctrl-C: every process under test is ended


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    records = fuzz(args)
    emit(records, COLUMNS, f"Fuzzing the wire: {args.inputs:,} inputs per target", args)
    report(records)
    n = failed(records)
    print(f"{n} failure(s)")
    return 1 if n else 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
