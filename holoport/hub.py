"""The room hub: one ROUTER socket that admits participants to rooms and forwards frames.

Each participant node is a DEALER. The hub answers a join with a welcome (the node's id,
its seat and the room's size, so every node builds the same room) or a refusal that says
why; it forwards each frame to every other member of the sender's room, stamping the
sender's id and its own in/out times; it tells members when someone joins, leaves or goes
silent. Malformed messages are dropped and counted, never fatal. Forwarding never blocks:
a receiver whose queue is full loses that frame (counted), and nobody else waits for it.
With ``security`` (``holoport.security.HubSecurity``) the socket is a CURVE server that
admits only allow-listed keys. Nodes that join with a credit window are sent at most that
many frames ahead; beyond it the hub holds one newest frame per (receiver, sender). Each
sender's latest keyframe waits for late joiners; keyframe requests go to the sender; a
node the hub does not know (after a restart) is told to join again. docs/design.md has
the whole protocol.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import zmq

from holoport import wire
from holoport.security import HubSecurity
from holoport.stats import LatencyLog
from holoport.wire import MessageType

log = logging.getLogger("holoport.hub")

MAX_CREDIT = 64  # frames a receiver may have in flight, at most


@dataclass
class Member:
    identity: bytes
    id: int
    name: str
    room: str
    seat: int
    last_seen: float
    # flow control: frames this member may still be sent (None: no flow control, for
    # clients that ask for none), and the newest frame held back per sender meanwhile
    credit: int | None = None
    slots: dict = field(default_factory=dict)
    traffic: Traffic = field(default_factory=lambda: Traffic())
    last_key: tuple | None = None  # this member's latest keyframe, for whoever joins later


@dataclass
class Traffic:
    """What one member sent through the hub and was sent, for ``holoport stats``."""

    frames_in: int = 0
    bytes_in: int = 0
    first_in: float = 0.0
    last_in: float = 0.0
    frames_out: int = 0
    stale_replaced: int = 0  # frames held for this member, replaced by newer ones
    hub_ms: LatencyLog = field(default_factory=lambda: LatencyLog(keep=2000))  # its frames' hub residence

    def as_dict(self) -> dict:
        span = self.last_in - self.first_in
        p50, p99 = self.hub_ms.percentiles("hub", (50, 99))
        (wait99,) = self.hub_ms.percentiles("credit_wait", (99,))
        return {"frames_in": self.frames_in, "frames_out": self.frames_out,
                "fps_in": (self.frames_in - 1) / span if span > 0 else 0.0,
                "mbps_in": self.bytes_in * 8 / span / 1e6 if span > 0 else 0.0,
                "stale_replaced": self.stale_replaced, "hub_p50_ms": p50, "hub_p99_ms": p99,
                "credit_wait_p99_ms": wait99}


@dataclass
class HubStats:
    received: int = 0
    forwarded: int = 0
    forwarded_bytes: int = 0
    dropped_malformed: int = 0
    dropped_full: int = 0
    stale_replaced: int = 0  # a held-back frame replaced by a newer one from the same sender
    keyframe_requests: int = 0
    refused: int = 0
    timed_out: int = 0
    joins: int = 0
    by_reason: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Hub:
    """``with Hub("tcp://127.0.0.1:5555") as hub:`` runs it in a thread; ``run()`` in front."""

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:5555",
        seats: int = 6,
        heartbeat_timeout: float = 2.5,  # + the 0.5 s sweep: the room is told within 3 s
        max_message_bytes: int = 64 * 1024 * 1024,
        queue_frames: int = 16,
        security: HubSecurity | None = None,
        room_tokens: dict[str, str] | None = None,
    ) -> None:
        if not 2 <= seats <= 16:
            raise ValueError(f"seats must be in 2..16, got {seats}")
        self.bind = bind
        self.seats = seats
        self.heartbeat_timeout = heartbeat_timeout
        self.max_message_bytes = max_message_bytes
        self.queue_frames = queue_frames
        self.security = security  # None: plain TCP (loopback, or --insecure)
        self.room_tokens = dict(room_tokens or {})  # rooms that admit only who knows the token
        self.stats = HubStats()
        self.members: dict[bytes, Member] = {}
        self._by_id: dict[int, Member] = {}
        self._next_id = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # a context of its own: a ZAP handler serves its whole context, and the process's
        # shared one also carries nodes and other hubs (tests, the demo) that must not
        # depend on this hub's authenticator
        self._ctx = zmq.Context()
        self._sock: zmq.Socket | None = None
        self.endpoint: str | None = None

    # -- life cycle ----------------------------------------------------------------------
    def open(self) -> str:
        """Bind the socket; returns the endpoint actually bound (port 0 picks one)."""
        if self._ctx.closed:  # served and stopped before: serve again
            self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable/full -> an error we count
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        sock.setsockopt(zmq.SNDHWM, self.queue_frames)
        sock.setsockopt(zmq.RCVHWM, 1000)
        if self.security is not None:
            self.security.apply(self._ctx, sock)
        deadline = time.monotonic() + 2.0
        while True:  # a hub restarted in place may find its port still closing for a moment
            try:
                sock.bind(self.bind)
                break
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    sock.close(0)
                    raise
                time.sleep(0.05)
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("hub listening on %s (%d seats per room, %s)", self.endpoint, self.seats,
                 f"CURVE, {self.security.allowed()} keys allowed" if self.security else "unencrypted")
        return self.endpoint

    def start(self) -> Hub:
        if self._sock is None:
            self.open()
        self._thread = threading.Thread(target=self.run, name="holoport-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self) -> None:
        """Serve until :meth:`stop` (or a signal handler calling it)."""
        if self._sock is None:
            self.open()
        sock = self._sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        next_sweep = time.monotonic() + 0.5
        try:
            while not self._stop.is_set():
                if poller.poll(100):
                    for _ in range(256):  # drain a burst, then sweep timeouts
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        try:
                            self._handle(frames)
                        except Exception:  # a message we did not foresee: drop it, keep serving
                            log.exception("dropped a message that broke its handler")
                            self._drop("a message that broke its handler")
                if time.monotonic() >= next_sweep:
                    self._expire_silent()
                    next_sweep = time.monotonic() + 0.5
        finally:
            sock.close(0)
            self._sock = None
            if self.security is not None:
                self.security.close()
            self._ctx.destroy(linger=0)
            log.info("hub stopped: %s", self.stats.as_dict())

    # -- messages ------------------------------------------------------------------------
    def _handle(self, frames: list) -> None:
        arrived = time.time()
        self.stats.received += 1
        identity = frames[0].bytes
        try:
            msg = wire.decode(frames[1:])
        except wire.VersionError as exc:
            self._refuse(identity, f"protocol version {exc.version!r} is not supported by this hub, which speaks "
                                   f"version {wire.PROTOCOL_VERSION}; run the same Holoport release on every node "
                                   "and the hub")
            return
        except wire.WireError as exc:
            self._drop(str(exc))
            return
        member = self.members.get(identity)
        if member is not None:
            member.last_seen = time.monotonic()
        kind = msg.type
        if kind == MessageType.JOIN:
            self._join(identity, msg.header)
        elif kind == MessageType.TIME:  # NTP-style: the node works out offset and round trip
            t0 = msg.header.get("t0")
            if isinstance(t0, float | int):
                self._send(identity, wire.header(MessageType.TIME, t0=t0, t1=arrived, t2=time.time()))
        elif kind == MessageType.STATS:
            self._send(identity, wire.header(MessageType.STATS, stats=self.snapshot()))
        elif member is None:
            if kind not in (MessageType.LEAVE, MessageType.HEARTBEAT, MessageType.CREDIT):
                self._drop(f"{kind} from a peer that has not joined")
            # a goodbye from a peer already removed (its socket's disconnect can overtake
            # its LEAVE) needs nothing; anything else comes from a node that believes it is
            # a member: this hub restarted, or timed it out. Tell it to join again.
            if kind != MessageType.LEAVE:
                self._send(identity, wire.header(MessageType.REJOIN))
        elif kind == MessageType.FRAME:
            if len(msg.payloads) != 1:  # a truncated multipart, or extra parts
                return self._drop(f"frame with {len(msg.payloads)} payload parts instead of 1")
            self._forward(member, msg)
        elif kind == MessageType.LEAVE:
            self._remove(member, "left")
        elif kind == MessageType.CREDIT:
            self._credit(member, msg.header.get("n"))
        elif kind == MessageType.KEYFRAME:
            of = msg.header.get("of")
            source = self._by_id.get(of) if isinstance(of, int) else None
            if source is None or source.room != member.room or source is member:
                return self._drop("keyframe request for nobody in the room")
            self.stats.keyframe_requests += 1
            self._send(source.identity, wire.header(MessageType.KEYFRAME, **{"from": member.id}))
        elif kind == MessageType.FEEDBACK:  # a receiver's arrival reports, for the sender's rate
            to = msg.header.get("to")
            target = self._by_id.get(to) if isinstance(to, int) else None
            reports = msg.header.get("r")
            if target is None or target.room != member.room or target is member:
                return self._drop("feedback for nobody in the room")
            if not _valid_reports(reports):
                return self._drop("feedback without a list of [seq, arrived, bytes] reports")
            self._send(target.identity, wire.header(MessageType.FEEDBACK, r=reports, **{"from": member.id}))
        elif kind != MessageType.HEARTBEAT:
            self._drop(f"unexpected {kind} from a participant")

    def _join(self, identity: bytes, head: dict) -> None:
        room, name = head.get("room"), head.get("name")
        if not isinstance(room, str) or not room or len(room) > 64:
            return self._refuse(identity, "join needs a room name of 1..64 characters")
        if not isinstance(name, str) or len(name) > 64:
            return self._refuse(identity, "join needs a display name of at most 64 characters")
        member = self.members.get(identity)
        needed = self.room_tokens.get(room)
        if member is None and needed is not None:
            token = head.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token.encode(), needed.encode()):
                return self._refuse(identity, f"room {room!r} needs its token: "
                                    + ("the one given is wrong" if token else "pass --token"))
        joining = member is None
        if joining:
            taken = {m.seat for m in self.members.values() if m.room == room}
            free = [s for s in range(self.seats) if s not in taken]
            if not free:
                return self._refuse(identity, f"room {room!r} is full ({self.seats} seats)")
            credit = head.get("credit")
            if credit is not None and (not isinstance(credit, int) or not 1 <= credit <= MAX_CREDIT):
                return self._refuse(identity, f"join credit must be an integer in 1..{MAX_CREDIT}")
            member = Member(identity, self._next_id, name or f"guest-{self._next_id}", room,
                            free[0], time.monotonic(), credit)
            self._next_id += 1
            self.members[identity] = member
            self._by_id[member.id] = member
            self.stats.joins += 1
            log.info("%s joined room %r at seat %d (id %d)", member.name, room, member.seat, member.id)
            for other in self._room(member):
                self._send(other.identity, wire.header(
                    MessageType.JOINED, id=member.id, name=member.name, seat=member.seat))
        members = [{"id": m.id, "name": m.name, "seat": m.seat} for m in self._room(member)]
        self._send(identity, wire.header(
            MessageType.WELCOME, room=room, id=member.id, name=member.name, seat=member.seat,
            seats=self.seats, members=members))
        if joining:  # a late joiner sees everyone at once: their latest keyframes
            for other in self._room(member):
                if other.last_key is not None:
                    head, payloads = other.last_key
                    self._offer(member, other.id, {**head, "ts": dict(head["ts"])}, payloads)

    def _forward(self, sender: Member, msg: wire.Message) -> None:
        head = msg.header
        ts = head.get("ts")
        head["ts"] = dict(ts) if isinstance(ts, dict) else {}
        head["ts"]["hub_in"] = time.time()
        head["src"] = sender.id
        head["room"] = sender.room
        t = sender.traffic
        t.frames_in += 1
        t.bytes_in += sum(len(p) for p in msg.payloads)
        t.first_in = t.first_in or head["ts"]["hub_in"]
        t.last_in = head["ts"]["hub_in"]
        if head.get("key", True) is not False:
            sender.last_key = ({**head, "ts": dict(head["ts"])}, msg.payloads)
        for receiver in self._room(sender):
            self._offer(receiver, sender.id, head, msg.payloads)

    def _offer(self, receiver: Member, sender_id: int, head: dict, payloads: list) -> None:
        """Send now if the receiver has credit, else hold it as that sender's newest."""
        if receiver.credit is None or receiver.credit > 0:
            self._deliver(receiver, head, payloads)
            return
        if sender_id in receiver.slots:
            self.stats.stale_replaced += 1
            receiver.traffic.stale_replaced += 1
            del receiver.slots[sender_id]  # re-inserted last: slots flush oldest first
        held = {**head, "ts": dict(head["ts"])}
        held["ts"]["hub_held"] = time.time()  # from here the wait is the receiver's (credit)
        receiver.slots[sender_id] = (held, payloads)

    def _deliver(self, receiver: Member, head: dict, payloads: list) -> None:
        head["ts"]["hub_out"] = time.time()
        if self._send(receiver.identity, head, payloads):
            self.stats.forwarded += 1
            self.stats.forwarded_bytes += sum(len(p) for p in payloads)
            if receiver.credit is not None:
                receiver.credit -= 1
            receiver.traffic.frames_out += 1
            sender = self._by_id.get(head.get("src"))
            if sender is not None:  # the hub's own time: up to the send, or to holding it
                ts = head["ts"]
                sender.traffic.hub_ms.add("hub", (ts.get("hub_held", ts["hub_out"]) - ts["hub_in"]) * 1e3)
                if "hub_held" in ts:
                    sender.traffic.hub_ms.add("credit_wait", (ts["hub_out"] - ts["hub_held"]) * 1e3)

    def _credit(self, member: Member, n) -> None:
        if member.credit is None:
            return  # joined without flow control
        if not isinstance(n, int) or not 1 <= n <= MAX_CREDIT:
            return self._drop("credit message without a count in 1..MAX_CREDIT")
        member.credit = min(member.credit + n, MAX_CREDIT)
        while member.credit > 0 and member.slots:
            sender_id = next(iter(member.slots))
            head, payloads = member.slots.pop(sender_id)
            self._deliver(member, head, payloads)

    def _send(self, identity: bytes, head: dict, payloads: list | tuple = ()) -> bool:
        try:
            self._sock.send_multipart([identity, *wire.encode(head, payloads)],
                                      zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # the receiver's queue is full: it loses this frame, not others
            self.stats.dropped_full += 1
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            member = self.members.get(identity)  # gone without saying goodbye
            if member is not None:
                self._remove(member, "unreachable")
        return False

    def _refuse(self, identity: bytes, reason: str) -> None:
        self.stats.refused += 1
        log.warning("refused a participant: %s", reason)
        self._send(identity, wire.header(MessageType.REFUSED, reason=reason))

    def _drop(self, reason: str) -> None:
        self.stats.dropped_malformed += 1
        key = reason.split(":")[0][:60]
        self.stats.by_reason[key] = self.stats.by_reason.get(key, 0) + 1
        log.debug("dropped a message: %s", reason)

    def _remove(self, member: Member, why: str) -> None:
        if self.members.pop(member.identity, None) is None:
            return
        self._by_id.pop(member.id, None)
        log.info("%s (id %d) %s room %r", member.name, member.id, why, member.room)
        for other in self._room(member):
            other.slots.pop(member.id, None)  # nobody is shown a frame from someone who left
            self._send(other.identity, wire.header(MessageType.LEFT, id=member.id, reason=why))

    def _expire_silent(self) -> None:
        deadline = time.monotonic() - self.heartbeat_timeout
        for member in [m for m in self.members.values() if m.last_seen < deadline]:
            self.stats.timed_out += 1
            self._remove(member, "timed out of")

    def _room(self, member: Member) -> list[Member]:
        return [m for m in self.members.values() if m.room == member.room and m is not member]

    def snapshot(self) -> dict:
        rooms: dict[str, list] = {}
        for m in self.members.values():
            rooms.setdefault(m.room, []).append({"id": m.id, "name": m.name, "seat": m.seat,
                                                 **m.traffic.as_dict()})
        return {**self.stats.as_dict(), "rooms": rooms}


MAX_REPORTS = 64  # per feedback message


def _valid_reports(reports: object) -> bool:
    return (isinstance(reports, list) and 0 < len(reports) <= MAX_REPORTS
            and all(isinstance(r, list) and len(r) == 3 and isinstance(r[0], int)
                    and isinstance(r[1], float | int) and math.isfinite(r[1])
                    and isinstance(r[2], int) for r in reports))
