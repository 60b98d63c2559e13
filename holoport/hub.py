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
node the hub does not know (after a restart) is told to join again. Voice comes on a
member's second connection (attached with the welcome's secret) and goes out at once, in
order, to every member's voice connection: never credit-held, replaced or cached.
In a cluster (``cluster``: docs/cluster.md) the hub also links to the other hubs that serve
its rooms (``holoport.cascade``): their members are seated here as ``remote`` members, and
its own members' streams go to each of those hubs once, through a stand-in member per
(hub, room) flagged ``link``. docs/design.md has the whole protocol.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hmac
import logging
import resource
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import msgpack
import zmq

from holoport import wire
from holoport.cascade import Cascade, CascadeConfig
from holoport.layers import DEADLINE_S, ReceiverLayers
from holoport.security import HubSecurity
from holoport.stats import LatencyLog
from holoport.wire import MAX_CREDIT, MessageType

log = logging.getLogger("holoport.hub")

DEFAULT_CREDIT = 4  # a join that names no window gets this one: no member is sent frames unasked
MAX_PENDING = 256  # control messages waiting for one peer's full queue; past that it is not reading
MAX_PENDING_PEERS = 4096  # peers with waiting control messages, at most (non-members' replies beyond are lost)
STATS_PAGE = 200  # members per stats reply
MAX_REASONS = 64  # distinct drop reasons counted; the rest count as "other"


class Drop:
    """Why a message was dropped: fixed keys, so counting them costs bounded memory."""

    HANDLER = "a message that broke its handler"
    NOT_JOINED = "a message from a peer that has not joined"
    PAYLOAD_PARTS = "frame without exactly one payload part"
    TOO_MANY_POINTS = "frame declaring more points than the hub admits"
    STAGES = "frame with more time stamps than the hub can add to"
    NO_FIELDS = "message without the fields its type needs"
    KEYFRAME_NOBODY = "keyframe request for nobody in the room"
    FEEDBACK_NOBODY = "feedback for nobody in the room"
    FEEDBACK_CONTRADICTED = "feedback whose every report the hub's own stamps contradict"
    AUDIO_SIZE = "voice packet without exactly one payload part of at most MAX_AUDIO_BYTES"
    ATTACH_REFUSED = "a voice socket naming no member, or the wrong voice key"
    VOICE_ONLY = "a voice socket sent what only the main socket may"
    UNEXPECTED = "a message type participants do not send"
    OTHER = "other"


@dataclass
class Member:
    identity: bytes
    id: int
    name: str
    room: str
    seat: int
    last_seen: float
    # flow control: frames this member may still be sent, the sizes of those sent and not
    # yet handed back, and the newest frame held back per (sender, stream) meanwhile
    credit: int = DEFAULT_CREDIT
    inflight: deque = field(default_factory=deque)
    inflight_bytes: int = 0
    slots: dict = field(default_factory=dict)
    traffic: Traffic = field(default_factory=lambda: Traffic())
    last_key: dict = field(default_factory=dict)  # stream -> its latest keyframe, for whoever joins later
    key: str | None = None  # the CURVE public key it joined with (z85), on an encrypted hub
    key_asked: dict = field(default_factory=dict)  # stream -> when a keyframe was last asked of it
    # voice travels on a second connection of the member's (its own TCP flow, so a voice
    # packet never waits behind a hologram frame in one byte stream); it proves it belongs
    # to this member with the secret ``vkey`` of the welcome (and, on a CURVE hub, its key)
    vkey: str = field(default_factory=lambda: secrets.token_hex(16))
    voice: bytes | None = None  # the voice connection's identity, once attached
    speaking: bool = False  # its latest voice packet carried speech
    voice_in: int = 0
    voice_rate: VoiceRate = field(default_factory=lambda: VoiceRate())
    voice_over: int = 0  # its voice packets dropped for exceeding the rate one voice needs
    voice_ms: LatencyLog = field(default_factory=lambda: LatencyLog(keep=2000))  # voice packets' hub residence
    # layered streams: as a receiver, which parts it is sent and what its downlink carries
    # (holoport.layers); as a layered sender, the hub's arrival times of its parts, reported
    # back to it ("up" feedback) so that it adapts to its own uplink only
    layers: ReceiverLayers = field(default_factory=ReceiverLayers)
    up_reports: list = field(default_factory=list)
    # in a cluster (holoport.cascade): a member of another hub, seated here, is ``remote`` (the
    # link it came over); another hub that takes this room from us is a stand-in member whose
    # ``link`` is its identity on our cascade socket. Neither is a participant of this hub.
    joined_at: float = field(default_factory=time.time)  # wall clock: the earlier join keeps a contested seat
    remote: object = None
    link: bytes | None = None


class VoiceRate:
    """What one voice may send: Opus at 20 ms is 50 packets a second of at most ~1.3 kB at
    the highest bit rates; the hub copies each packet to every other member, so a member
    sending more would cost the room many times over. Two token buckets (packets and
    bytes), with a second's burst."""

    PACKETS_S = 110.0  # two 10 ms streams' worth, and a margin
    BYTES_S = 64_000.0  # 512 kbit/s: Opus's highest rate

    def __init__(self) -> None:
        self.packets = self.PACKETS_S
        self.bytes = self.BYTES_S
        self.last = time.monotonic()

    def take(self, now: float, size: int) -> bool:
        dt = max(0.0, now - self.last)
        self.last = now
        self.packets = min(self.PACKETS_S, self.packets + dt * self.PACKETS_S)
        self.bytes = min(self.BYTES_S, self.bytes + dt * self.BYTES_S)
        if self.packets < 1 or self.bytes < size:
            return False
        self.packets -= 1
        self.bytes -= size
        return True


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
    summary: tuple[float, dict] | None = None  # (when, as_dict()): percentiles are worked out twice a second at most

    def as_dict(self) -> dict:
        now = time.monotonic()
        if self.summary is None or now - self.summary[0] > 0.5:  # stats requests cost the hub loop
            self.summary = (now, self._as_dict())
        return self.summary[1]

    def _as_dict(self) -> dict:
        span = self.last_in - self.first_in
        p50, p99 = self.hub_ms.percentiles("hub", (50, 99))
        (wait99,) = self.hub_ms.percentiles("credit_wait", (99,))
        c50, c99 = self.hub_ms.percentiles("cascade", (50, 99))
        return {"frames_in": self.frames_in, "frames_out": self.frames_out, "bytes_in": self.bytes_in,
                "fps_in": (self.frames_in - 1) / span if span > 0 else 0.0,
                "mbps_in": self.bytes_in * 8 / span / 1e6 if span > 0 else 0.0,
                "stale_replaced": self.stale_replaced, "hub_p50_ms": p50, "hub_p99_ms": p99,
                "credit_wait_p99_ms": wait99, "cascade_p50_ms": c50, "cascade_p99_ms": c99}


@dataclass
class HubStats:
    received: int = 0
    forwarded: int = 0
    forwarded_bytes: int = 0
    dropped_malformed: int = 0
    dropped_full: int = 0  # frames a receiver's full queue refused
    dropped_budget: int = 0  # frames not queued: the hub's byte budget was spent
    control_dropped: int = 0  # control messages lost (a peer that never read: must stay 0 otherwise)
    control_waited: int = 0  # control messages that waited for a full queue, then went
    replies_dropped: int = 0  # time and stats answers to a peer whose queue was full (it may ask again)
    voice_in: int = 0  # voice packets received
    voice_forwarded: int = 0
    voice_dropped: int = 0  # voice packets a receiver's full voice queue refused
    voice_over_rate: int = 0  # voice packets beyond what one voice sends (VoiceRate): a flood
    voice_attached: int = 0
    stale_replaced: int = 0  # a held-back frame replaced by a newer one from the same sender
    layer_parts_forwarded: int = 0  # enhancement parts of layered frames sent to receivers
    layer_parts_dropped: int = 0  # not sent: late for that receiver, or its base never went
    reports_contradicted: int = 0  # arrival reports the hub's own stamps contradict (dropped)
    keyframe_requests: int = 0
    keyframe_coalesced: int = 0  # requests folded into one already on its way to the sender
    keyframes_forgotten: int = 0  # cached keyframes dropped to keep within the byte budget
    refused: int = 0
    timed_out: int = 0
    joins: int = 0
    paused_s: float = 0.0  # time the hub itself did not run (stopped, starved); not held against members
    queued_bytes: int = 0  # frame bytes the hub holds or has in flight now
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
        security: HubSecurity | None = None,
        room_tokens: dict[str, str] | None = None,
        max_points: int = wire.DEFAULT_MAX_POINTS,
        max_members: int = 4000,
        member_queue_bytes: int = 64 * 1024 * 1024,
        max_queued_bytes: int = 1024 * 1024 * 1024,
        handshake_timeout: float = 5.0,
        cluster: CascadeConfig | None = None,
    ) -> None:
        if not 2 <= seats <= wire.MAX_SEATS:
            raise ValueError(f"seats must be in 2..{wire.MAX_SEATS}, got {seats}")
        if not 1 <= max_points <= 1 << 26:
            raise ValueError(f"max_points must be in 1..{1 << 26}, got {max_points}")
        self.bind = bind
        self.seats = seats
        self.heartbeat_timeout = heartbeat_timeout
        self.max_message_bytes = max_message_bytes
        self.security = security  # None: plain TCP (loopback, or --insecure)
        self.room_tokens = dict(room_tokens or {})  # rooms that admit only who knows the token
        self.max_points = max_points  # announced in every welcome; receivers refuse bigger frames
        self.max_members = max_members
        self.member_queue_bytes = member_queue_bytes  # in flight to one member (one frame always may)
        self.max_queued_bytes = max_queued_bytes  # in flight, held and cached, all members together
        self.handshake_timeout = handshake_timeout
        self.stats = HubStats()
        self.members: dict[bytes, Member] = {}
        self._by_id: dict[int, Member] = {}
        self._rooms: dict[str, dict[int, Member]] = {}  # room -> its members by id (seats, names)
        self._by_key: dict[str, Member] = {}  # CURVE key -> its member: one key joins once
        self._voice: dict[bytes, Member] = {}  # voice connection identity -> its member
        # in a cluster, member ids carry the hub's number: unique across hubs without asking anyone
        self._next_id = (cluster.hub_no << 32 if cluster is not None else 0) + 1
        self.cascade = Cascade(self, cluster) if cluster is not None else None
        self._routes: dict[bytes, tuple[zmq.Socket, bytes]] = {}  # stand-in identity -> (socket, peer)
        self._foreign = 0  # remote members and stand-ins among ``members``: not this hub's participants
        self._load: dict = {"members": 0, "mbps": 0.0, "rooms": {}}  # for the cluster's directory
        self._load_at = (time.monotonic(), 0)
        self._emptied: dict[str, float] = {}  # room -> when its last own member left (linked_rooms)
        self._pending: dict[bytes, deque] = {}  # control messages waiting for a full queue, per peer
        self._gone = False  # the last send found its peer gone
        self._cached: dict[tuple[int, int], Member] = {}  # (member id, stream) with a cached keyframe, oldest first
        self._up_due: dict[int, Member] = {}  # layered senders with arrival reports to send back
        self._trim = False  # memory to hand back at the next sweep
        self._rejoin_told: dict[bytes, float] = {}  # when a stranger was last told to join again
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
        raise_fd_limit()
        if self._ctx.closed:  # served and stopped before: serve again
            self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable/full -> an error we count
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        # frames are credit-limited (<= MAX_CREDIT per member, each with at most MAX_LAYERS - 1
        # enhancement parts after it): the rest of the queue is room for control messages,
        # which must not be lost behind frames
        sock.setsockopt(zmq.SNDHWM, (wire.MAX_LAYERS + 3) * MAX_CREDIT)
        sock.setsockopt(zmq.RCVHWM, 1000)
        # a connection that never completes its handshake, or a peer that vanished without a
        # FIN, is closed by libzmq instead of holding a descriptor for good
        sock.setsockopt(zmq.HANDSHAKE_IVL, int(self.handshake_timeout * 1000))
        sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10000)
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
        if self.cascade is not None:
            try:
                self.cascade.open()
            except zmq.ZMQError:
                sock.close(0)
                self._sock = None
                raise
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
        cascade = self.cascade
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        next_sweep = time.monotonic() + 0.5
        next_tick = time.monotonic()
        last_turn = time.monotonic()
        try:
            while not self._stop.is_set():
                if cascade is not None and cascade.dirty:  # links came or went
                    cascade.dirty = False
                    poller = zmq.Poller()
                    for s in (sock, *cascade.sockets()):
                        poller.register(s, zmq.POLLIN)
                ready = dict(poller.poll(10 if self._pending else 100))
                now = time.monotonic()
                if now - last_turn > 1.0:  # the hub itself did not run (SIGSTOP, starved CPU):
                    self._excuse(now - last_turn)  # nobody could be heard meanwhile
                last_turn = now
                if sock in ready:
                    for _ in range(256):  # drain a burst, then sweep timeouts
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        try:
                            self._handle(frames)
                        except Exception:  # a message we did not foresee: drop it, keep serving
                            log.exception("dropped a message that broke its handler")
                            self._drop(Drop.HANDLER)
                if cascade is not None:
                    try:
                        for s in ready:
                            if s is cascade.router:
                                cascade.on_router()
                            elif s is cascade.monitor:
                                cascade.on_monitor()
                            elif s is not sock:
                                cascade.on_link(s)
                        if now >= next_tick:
                            next_tick = now + 0.1
                            cascade.tick(now)
                    except Exception:  # a fault of ours in the links: keep serving our own members
                        log.exception("the cascade failed a turn")
                        self._drop(Drop.HANDLER)
                if self._up_due:
                    self._report_uplinks()
                if self._pending:
                    self._flush_pending()
                if time.monotonic() >= next_sweep:
                    self._expire_silent()
                    self._update_load()
                    if self._trim:
                        self._trim = False
                        trim_memory()
                    next_sweep = time.monotonic() + 0.5
        finally:
            sock.close(0)
            self._sock = None
            if cascade is not None:
                cascade.close()
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
        except wire.FieldError as exc:
            if exc.kind == MessageType.JOIN and identity not in self.members:
                return self._refuse(identity, str(exc))  # a joiner is told why
            return self._drop(str(exc))
        except wire.WireError as exc:
            return self._drop(str(exc))
        head = msg.header
        kind = msg.type
        if kind == MessageType.ATTACH:
            return self._attach(identity, head, self._peer_key(frames))
        if identity in self._voice:
            return self._voice_message(self._voice[identity], kind, head, msg.payloads, arrived)
        member = self.members.get(identity)
        if member is not None:
            member.last_seen = time.monotonic()
        if kind == MessageType.JOIN:
            self._join(identity, head, self._peer_key(frames))
        elif kind == MessageType.TIME:  # NTP-style: the node works out offset and round trip
            if wire.need(head, "t0"):
                self._reply(identity, wire.header(MessageType.TIME, t0=head["t0"], t1=arrived, t2=time.time()))
        elif kind == MessageType.STATS:
            self._stats_reply(identity, head, member, self._peer_key(frames))
        elif kind == MessageType.HUBS:
            self._hubs_reply(identity, head)
        elif member is None:
            if kind not in (MessageType.LEAVE, MessageType.HEARTBEAT, MessageType.CREDIT):
                self._drop(Drop.NOT_JOINED)
            # a goodbye from a peer already removed (its socket's disconnect can overtake
            # its LEAVE) needs nothing; anything else comes from a node that believes it is
            # a member: this hub restarted, or timed it out. Tell it to join again (once
            # in a while: a node sends many frames before its new welcome arrives).
            if kind != MessageType.LEAVE:
                self._tell_rejoin(identity)
        elif kind == MessageType.FRAME:
            if len(msg.payloads) != 1:  # a truncated multipart, or extra parts
                return self._drop(Drop.PAYLOAD_PARTS)
            if not wire.need(head, "seq", "ts"):
                return self._drop(Drop.NO_FIELDS)
            if head.get("points", 0) > self.max_points:
                return self._drop(Drop.TOO_MANY_POINTS)
            if head.get("layer", 0) > 0:
                return self._forward_part(member, head, msg.payloads)
            self._forward(member, head, msg.payloads)
        elif kind == MessageType.AUDIO:  # a node without a voice connection may send on its main one
            self._voice_message(member, kind, head, msg.payloads, arrived)
        elif kind == MessageType.LEAVE:
            self._remove(member, "left")
        elif kind == MessageType.CREDIT:
            if not wire.need(head, "n"):
                return self._drop(Drop.NO_FIELDS)
            self._credit(member, head["n"])
        elif kind == MessageType.KEYFRAME:
            source = self._by_id.get(head.get("of"))
            if source is None or source.room != member.room or source is member:
                return self._drop(Drop.KEYFRAME_NOBODY)
            self.stats.keyframe_requests += 1
            now, stream = time.monotonic(), head.get("stream", 0)
            if now - source.key_asked.get(stream, -1.0) < 0.25:  # one is on its way: it serves everyone
                self.stats.keyframe_coalesced += 1
                return
            source.key_asked[stream] = now
            if source.remote is not None:  # its own hub asks it
                return self.cascade.keyframe(source, member.id, stream)
            self._control(source.identity, wire.header(MessageType.KEYFRAME, stream=stream, **{"from": member.id}))
        elif kind == MessageType.FEEDBACK:  # a receiver's arrival reports, for the sender's rate
            target = self._by_id.get(head.get("to"))
            if target is None or target.room != member.room or target is member or "r" not in head:
                return self._drop(Drop.FEEDBACK_NOBODY)
            now = time.time()  # its reports steer what it is sent, once the hub's own stamps agree
            kept = [r for r in head["r"] if member.layers.report(target.id, r[0], r[1], r[2], now)]
            self.stats.reports_contradicted += len(head["r"]) - len(kept)
            if not kept:
                return self._drop(Drop.FEEDBACK_CONTRADICTED)
            if target.remote is not None:
                return self.cascade.feedback(target, member.id, kept)
            self._control(target.identity, wire.header(MessageType.FEEDBACK, r=kept, **{"from": member.id}))
        elif kind != MessageType.HEARTBEAT:
            self._drop(Drop.UNEXPECTED)

    def _peer_key(self, frames: list) -> str | None:
        """The CURVE public key (z85) the peer authenticated with, on an encrypted hub."""
        if self.security is None:
            return None
        with contextlib.suppress(zmq.ZMQError, KeyError, AttributeError):
            return frames[1].get("User-Id") or None
        return None

    def _join(self, identity: bytes, head: dict, key: str | None) -> None:
        if not wire.need(head, "room", "name"):
            return self._refuse(identity, "join needs a room name of 1..64 characters and a display name")
        room, name = head["room"], head["name"]
        member = self.members.get(identity)
        if member is not None and member.room != room:
            return self._refuse(identity, f"already a member of room {member.room!r}: leave it first")
        if member is None:
            if self.security is not None and key is not None:  # a CURVE hub: the key says who it is
                name = self.security.name_of(key)
                if name is None:
                    return self._refuse(identity, "this key may ask for statistics but not join: "
                                                  "put its NAME.key in the hub's --allow folder")
            moved = self._moved_here(room, name, head.get("token"))
            refusal = self._admission(room, name, key, head.get("token"))
            if refusal:
                return self._refuse(identity, *refusal)
            taken = {m.seat for m in self._rooms.get(room, {}).values()}
            # in a cluster each hub fills seats from its own place on: two hubs seating
            # newcomers of one room at once rarely pick the same seat (see _remote_joined)
            start = moved if moved is not None else (self._next_id >> 32) % self.seats
            free = [s for s in [*range(start, self.seats), *range(start)] if s not in taken]
            if not free:
                return self._refuse(identity, f"room {room!r} is full ({self.seats} seats)")
            member = Member(identity, self._next_id, name or f"guest-{self._next_id}", room,
                            free[0], time.monotonic(), head.get("credit", DEFAULT_CREDIT), key=key)
            self._next_id += 1
            self.members[identity] = member
            self._by_id[member.id] = member
            new_room = room not in self._rooms
            self._rooms.setdefault(room, {})[member.id] = member
            if key is not None:
                self._by_key[key] = member
            self._rejoin_told.pop(identity, None)
            self.stats.joins += 1
            log.info("%s joined room %r at seat %d (id %d)", member.name, room, member.seat, member.id)
            for other in self._listeners(member):
                self._control(other.identity, self._joined(member))
            joining = True
            if self.cascade is not None and (new_room or not self.local_rooms().get(room)):
                self._update_load()
                self.cascade.rooms_changed()
        else:
            joining = False
        members = [{"id": m.id, "name": m.name, "seat": m.seat} for m in self._room(member) if m.link is None]
        self._control(identity, wire.header(
            MessageType.WELCOME, room=room, id=member.id, name=member.name, seat=member.seat,
            seats=self.seats, members=members, max_points=self.max_points, vkey=member.vkey))
        if joining:
            self._late_join(member)

    def _late_join(self, member: Member) -> None:
        """A late joiner (or another hub taking the room) sees everyone at once: their latest
        keyframes (another hub is sent only ours: it has the rest from their own hubs)."""
        for other in self._room(member):
            if member.link is not None and other.remote is not None:
                continue
            for stream, (head, payloads) in list(other.last_key.items()):
                self._offer(member, (other.id, stream), {**head, "ts": dict(head["ts"])}, payloads)

    @staticmethod
    def _joined(member: Member) -> dict:
        """The news of an arrival (room and time only matter to other hubs: nodes ignore them)."""
        return wire.header(MessageType.JOINED, id=member.id, name=member.name, seat=member.seat,
                           room=member.room, at=member.joined_at)

    def _moved_here(self, room: str, name: str, token: str | None) -> int | None:
        """A participant whose hub died joins here under its name while that hub's link has
        not yet timed out: its old self, seated here as a remote member of a link gone quiet,
        gives way (and its seat, which it takes back). Returns that seat."""
        if not name or self.cascade is None or self._admission(room, "", None, token) is not None:
            return None
        old = next((m for m in self._rooms.get(room, {}).values()
                    if m.name == name and m.remote is not None and m.remote.quiet), None)
        if old is None:
            return None
        self._remove(old, "moved to another hub")
        return old.seat

    def _admission(self, room: str, name: str, key: str | None, token: str | None) -> tuple[str, bool] | None:
        """Why a newcomer may not join ``room``, and whether that may pass by itself (a
        member of the same key or name that is about to time out); None: it may join."""
        if len(self.members) - self._foreign >= self.max_members:
            return f"the hub serves its limit of {self.max_members} members: try again later or another hub", False
        needed = self.room_tokens.get(room)
        if needed is not None and not (isinstance(token, str) and hmac.compare_digest(token.encode(), needed.encode())):
            return f"room {room!r} needs its token: " + ("the one given is wrong" if token else "pass --token"), False
        m = self._by_key.get(key) if key is not None else None
        if m is not None:
            return (f"the key of {m.name!r} is already in room {m.room!r}: one key joins once "
                    "(a participant that restarted is admitted when its old session times out)"), True
        if name and any(m.name == name for m in self._rooms.get(room, {}).values()):
            return (f"room {room!r} already has a member named {name!r}: pick another name (or wait "
                    f"{self.heartbeat_timeout:g} s for a session of yours that ended to time out)"), True
        return None

    def _forward(self, sender: Member, fields: dict, payloads: list) -> None:
        """Rebuild the header from the sender's validated fields and the hub's own, and offer
        the frame to every other member of the room."""
        now = time.time()
        stamps = _own_stamps(sender, fields["ts"])
        if len(stamps) > wire.MAX_STAGES - 3:  # room for hub_in, hub_held, hub_out
            return self._drop(Drop.STAGES)
        stream = fields.get("stream", 0)
        head = wire.header(MessageType.FRAME, room=sender.room, src=sender.id, seq=fields["seq"],
                           ts={**stamps, "hub_in": now}, key=fields.get("key", True),
                           points=fields.get("points", 0), stream=stream)
        for optional in ("off", "fb", "layer"):
            if optional in fields:
                head[optional] = fields[optional]
        size = sum(len(p) for p in payloads)
        if "layer" in fields:
            self._heard_part(sender, fields, now, size)
        t = sender.traffic
        t.frames_in += 1
        t.bytes_in += size
        t.first_in = t.first_in or now
        t.last_in = now
        if head["key"]:
            self._forget_key(sender, stream)
            if self._budget(size):
                sender.last_key[stream] = ({**head, "ts": dict(head["ts"])}, payloads)
                self._account(size)
                self._cached[(sender.id, stream)] = sender
        layered = fields.get("layer") == 0
        if layered:  # a layered frame's base: each receiver's selector plans its parts
            head["sizes"] = [size, *fields.get("sizes", [size])[1:]]  # the base's own size, not its word
            captured = stamps["capture"] + fields["off"] if "capture" in stamps and "off" in fields else now
            fps = t.as_dict()["fps_in"]
        for receiver in self._listeners(sender):
            if self.members.get(sender.identity) is not sender:  # removed meanwhile: its frame goes nowhere
                return
            if layered:
                receiver.layers.plan((sender.id, stream), fields["seq"], head["sizes"], captured + DEADLINE_S, now, fps)
            self._offer(receiver, (sender.id, stream), {**head, "ts": dict(head["ts"])}, payloads)

    # -- layered streams -----------------------------------------------------------------
    def _forward_part(self, sender: Member, fields: dict, payloads: list) -> None:
        """An enhancement part: to each receiver that was sent the parts before it, if its
        downlink carries it in time (``holoport.layers``); never held, never cached."""
        if not wire.need(fields, "base"):
            return self._drop(Drop.NO_FIELDS)
        now = time.time()
        size = _size(payloads)
        stream, seq = fields.get("stream", 0), fields["seq"]
        t = sender.traffic
        t.bytes_in += size
        t.last_in = now
        self._heard_part(sender, fields, now, size)
        stamps = _own_stamps(sender, fields["ts"])
        if len(stamps) > wire.MAX_STAGES - 3:
            return self._drop(Drop.STAGES)
        for receiver in self._listeners(sender):
            if receiver.identity in self._pending or not receiver.layers.offer(
                    (sender.id, stream), fields["base"], fields["layer"], size, now):
                self.stats.layer_parts_dropped += 1
                continue
            head = wire.header(MessageType.FRAME, room=sender.room, src=sender.id, seq=seq, stream=stream,
                               ts={**stamps, "hub_in": now, "hub_out": time.time()}, key=True,
                               points=fields.get("points", 0), layer=fields["layer"], base=fields["base"])
            for optional in ("off", "fb"):
                if optional in fields:
                    head[optional] = fields[optional]
            if not self._send(receiver.identity, wire.encode(head, payloads)):
                self.stats.layer_parts_dropped += 1
                continue
            out = head["ts"]["hub_out"]
            if fields.get("fb") is True:
                receiver.layers.log.add(sender.id, seq, out, size, fields["layer"])
            receiver.layers.sent((sender.id, stream), seq, size, out)
            self.stats.layer_parts_forwarded += 1
            self.stats.forwarded_bytes += size
            if receiver.link is not None:
                self.cascade.stats["bytes_out"] += size

    def _heard_part(self, sender: Member, fields: dict, now: float, size: int) -> None:
        """Note a layered part's arrival for the sender's uplink report (its own hub's)."""
        if fields.get("fb") is True and sender.remote is None:
            sender.up_reports.append([fields["seq"], now, size])
            self._up_due[sender.id] = sender

    def _report_uplinks(self) -> None:
        """Tell layered senders when their parts reached the hub (after each burst)."""
        due, self._up_due = self._up_due, {}  # a send may remove a sender that left meanwhile
        for sender in due.values():
            reports, sender.up_reports = sender.up_reports, []
            for at in range(0, len(reports), wire.MAX_REPORTS):  # every one, in order
                if self.members.get(sender.identity) is not sender:
                    break
                self._control(sender.identity, wire.header(MessageType.FEEDBACK, r=reports[at: at + wire.MAX_REPORTS],
                                                           up=True))

    # -- voice ---------------------------------------------------------------------------
    def _attach(self, identity: bytes, head: dict, key: str | None) -> None:
        """A member's voice connection introduces itself with the welcome's secret."""
        member = self._by_id.get(head.get("id"))
        vkey = head.get("vkey")
        if (member is None or not isinstance(vkey, str) or not hmac.compare_digest(vkey.encode(), member.vkey.encode())
                or (self.security is not None and key != member.key) or identity in self.members):
            return self._drop(Drop.ATTACH_REFUSED)
        if member.voice is not None and member.voice != identity:
            self._voice.pop(member.voice, None)
        previous = self._voice.get(identity)
        if previous is not None and previous is not member:  # the connection now speaks for another membership
            previous.voice = None
        if member.voice != identity:
            self.stats.voice_attached += 1
        member.voice = identity
        self._voice[identity] = member
        self._reply(identity, wire.header(MessageType.ATTACH, id=member.id))

    def _voice_message(self, member: Member, kind: str, head: dict, payloads: list, arrived: float) -> None:
        """Voice is forwarded at once to every member of the room that listens, in order:
        never held for credit, never replaced by a newer packet, never cached."""
        if kind == MessageType.HEARTBEAT:
            return
        if kind != MessageType.AUDIO:
            return self._drop(Drop.VOICE_ONLY)
        if len(payloads) != 1 or len(payloads[0]) > wire.MAX_AUDIO_BYTES:
            return self._drop(Drop.AUDIO_SIZE)
        if not wire.need(head, "seq", "t"):
            return self._drop(Drop.NO_FIELDS)
        member.last_seen = time.monotonic()
        if not member.voice_rate.take(member.last_seen, len(payloads[0])):  # a flood: every copy costs N-1
            member.voice_over += 1
            self.stats.voice_over_rate += 1
            return
        member.voice_in += 1
        member.speaking = head.get("vad", True)
        self.stats.voice_in += 1
        out = wire.header(MessageType.AUDIO, room=member.room, src=member.id, seq=head["seq"], t=head["t"],
                          vad=member.speaking, stream=head.get("stream", 0), hin=arrived)
        if "off" in head:
            out["off"] = head["off"]
        for receiver in self._listeners(member):
            target = receiver.identity if receiver.link is not None else receiver.voice  # another hub: its link
            if target is None:
                continue
            out["hout"] = time.time()
            if self._send(target, wire.encode(out, payloads)):
                self.stats.voice_forwarded += 1
                member.voice_ms.add("voice", (out["hout"] - arrived) * 1e3)
            else:
                self.stats.voice_dropped += 1
                if self._gone and receiver.link is None:  # that voice connection closed: it attaches again
                    self._voice.pop(receiver.voice, None)
                    receiver.voice = None

    def _forget_key(self, member: Member, stream: int | None = None) -> None:
        """Forget a member's cached keyframe of one stream, or of all its streams."""
        for s in [stream] if stream is not None else list(member.last_key):
            cached = member.last_key.pop(s, None)
            if cached is not None:
                self._account(-_size(cached[1]))
            self._cached.pop((member.id, s), None)

    def _offer(self, receiver: Member, slot: tuple[int, int], head: dict, payloads: list) -> None:
        """Send now if the receiver has credit and room in its byte budget, else hold it as
        the newest of its ``slot`` (sender id, stream) (control messages waiting for the
        receiver go first, and so does a frame of the same stream held before: a stream's
        frames never overtake each other)."""
        if self.members.get(receiver.identity) is not receiver:  # removed while this frame went round
            return
        size = _size(payloads)
        if (receiver.credit > 0 and receiver.identity not in self._pending and slot not in receiver.slots
                and (not receiver.inflight or receiver.inflight_bytes + size <= self.member_queue_bytes)):
            if not self._budget(size):
                self.stats.dropped_budget += 1
            elif not self._deliver(receiver, head, payloads) and self.members.get(receiver.identity) is receiver:
                self.stats.dropped_full += 1
            return
        old = receiver.slots.pop(slot, None)  # re-inserted last: slots flush oldest first
        freed = _size(old[1]) if old else 0
        if not self._budget(size - freed):
            self.stats.dropped_budget += 1
            if old:
                receiver.slots[slot] = old
            return
        if old:
            self.stats.stale_replaced += 1
            receiver.traffic.stale_replaced += 1
        head["ts"]["hub_held"] = time.time()  # from here the wait is the receiver's (credit)
        receiver.slots[slot] = (head, payloads)
        self._account(size - freed)

    def _deliver(self, receiver: Member, head: dict, payloads: list) -> bool:
        """Send a frame now; False when the receiver's queue is full or it is gone."""
        head["ts"]["hub_out"] = time.time()
        if not self._send(receiver.identity, wire.encode(head, payloads)):
            return False
        size = _size(payloads)
        out = head["ts"]["hub_out"]
        if head.get("fb") is True:  # only frames that ask for reports are reported on
            receiver.layers.log.add(head["src"], head["seq"], out, size)
        if head.get("layer") == 0:  # a layered frame's base: its enhancement parts may follow
            receiver.layers.on_base((head["src"], head.get("stream", 0)), head["seq"], out, size)
        self.stats.forwarded += 1
        self.stats.forwarded_bytes += size
        receiver.credit -= 1
        receiver.inflight.append(size)
        receiver.inflight_bytes += size
        self._account(size)
        receiver.traffic.frames_out += 1
        if receiver.link is not None:
            self.cascade.stats["frames_out"] += 1
            self.cascade.stats["bytes_out"] += size
        sender = self._by_id.get(head.get("src"))
        if sender is not None:  # the hub's own time: up to the send, or to holding it
            ts = head["ts"]
            sent = ts.get("hub_held", ts["hub_out"])
            sender.traffic.hub_ms.add("hub", (sent - ts["hub_in"]) * 1e3)
            if "hub_held" in ts:
                sender.traffic.hub_ms.add("credit_wait", (ts["hub_out"] - ts["hub_held"]) * 1e3)
            if "up_out" in ts:  # from its own hub's send to ours: the cascade hop
                sender.traffic.hub_ms.add("cascade", (sent - ts["up_out"]) * 1e3)
        return True

    def _credit(self, member: Member, n: int) -> None:
        member.credit = min(member.credit + n, MAX_CREDIT)
        for _ in range(min(n, len(member.inflight))):  # those frames left the hub's queue
            size = member.inflight.popleft()
            member.inflight_bytes -= size
            self._account(-size)
        self._release(member)

    def _release(self, member: Member) -> None:
        """Send held frames, oldest first, while credit and the member's budget allow."""
        while member.credit > 0 and member.slots and member.identity not in self._pending:
            slot = next(iter(member.slots))
            head, payloads = member.slots[slot]
            size = _size(payloads)
            if member.inflight and member.inflight_bytes + size > self.member_queue_bytes:
                return
            del member.slots[slot]
            self._account(-size)
            if not self._deliver(member, head, payloads):
                if self.members.get(member.identity) is member:  # a full queue: keep it first, try later
                    member.slots = {slot: (head, payloads), **member.slots}
                    self._account(size)
                return

    def _account(self, delta: int) -> None:
        self.stats.queued_bytes += delta

    def _budget(self, size: int) -> bool:
        """Whether ``size`` more bytes fit the hub's budget, after forgetting cached keyframes
        (oldest first) if need be: frames on their way matter more than a late joiner's
        first picture, and idle members' keyframes must not starve everyone else."""
        while self.stats.queued_bytes + size > self.max_queued_bytes:
            if not self._cached:
                return False
            (_, stream), member = next(iter(self._cached.items()))  # in caching order: oldest first
            self._forget_key(member, stream)
            self.stats.keyframes_forgotten += 1
        return True

    # -- sending -------------------------------------------------------------------------
    def _send(self, identity: bytes, frames: list) -> bool:
        """Queue one message for a peer without blocking; False when its queue is full or
        it is gone (then ``_gone`` is set, and a member gone without a goodbye is removed)."""
        self._gone = False
        sock, peer = self._routes.get(identity) or (self._sock, identity)
        try:
            sock.send_multipart([peer, *frames], zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._pending.pop(identity, None)
            member = self.members.get(identity)
            if member is not None:
                self._remove(member, "unreachable")
            self._gone = True  # after the removal, whose own sends reset it
            return False

    def _control(self, identity: bytes, head: dict, payloads: list | tuple = ()) -> None:
        """Send a control message, never dropping it for a full queue: it waits, in order,
        behind the peer's earlier control messages (and frames for that peer wait behind it)."""
        frames = wire.encode(head, payloads)
        waiting = self._pending.get(identity)
        if waiting is None:
            if self._send(identity, frames) or self._gone:
                return
            if identity not in self.members and len(self._pending) >= MAX_PENDING_PEERS:
                self.stats.control_dropped += 1  # a stranger that reads nothing, among thousands
                return
            waiting = self._pending[identity] = deque()
        if len(waiting) >= MAX_PENDING:  # it has read nothing for a long time
            self.stats.control_dropped += 1
            self._pending.pop(identity, None)
            member = self.members.get(identity)
            if member is not None:
                self._remove(member, "not reading")
            return
        self.stats.control_waited += 1
        waiting.append(frames)

    def _flush_pending(self) -> None:
        for identity in list(self._pending):
            waiting = self._pending.get(identity)
            if waiting is None:  # its member was removed meanwhile
                continue
            while waiting and self._send(identity, waiting[0]):
                waiting.popleft()
            if not waiting:
                self._pending.pop(identity, None)
                member = self.members.get(identity)
                if member is not None:
                    self._release(member)

    def _reply(self, identity: bytes, head: dict, payloads: list | tuple = ()) -> None:
        """Answer a request (time, stats) if the asker's queue has room: it can ask again, and
        answers queued for a peer that asks without reading would only cost memory."""
        if identity in self._pending or not self._send(identity, wire.encode(head, payloads)):
            self.stats.replies_dropped += 1

    def _tell_rejoin(self, identity: bytes) -> None:
        now = time.monotonic()
        if now - self._rejoin_told.get(identity, -1.0) < 0.5:
            return
        if len(self._rejoin_told) >= MAX_PENDING_PEERS:
            self._rejoin_told.clear()
        self._rejoin_told[identity] = now
        self._control(identity, wire.header(MessageType.REJOIN))

    def _refuse(self, identity: bytes, reason: str, retry: bool = False) -> None:
        self.stats.refused += 1
        log.warning("refused a participant: %s", reason)
        self._control(identity, wire.header(MessageType.REFUSED, reason=reason[:1000], retry=retry))

    def _drop(self, reason: str) -> None:
        self.stats.dropped_malformed += 1
        key = reason.split(":")[0][:80]
        counts = self.stats.by_reason
        if key not in counts and len(counts) >= MAX_REASONS:
            key = Drop.OTHER
        counts[key] = counts.get(key, 0) + 1
        log.debug("dropped a message: %s", reason)

    def _remove(self, member: Member, why: str) -> None:
        if self.members.pop(member.identity, None) is None:
            return
        if member.link is not None or member.remote is not None:
            self._foreign -= 1
        if member.link is not None:
            self._routes.pop(member.identity, None)
            self.cascade.stand_in_gone(member.link, member.room)
        else:
            self._by_id.pop(member.id, None)
        if member.remote is not None:
            member.remote.members.pop(member.id, None)
        room = self._rooms.get(member.room, {})
        room.pop(member.id, None)
        if not room:
            self._rooms.pop(member.room, None)
        if member.key is not None and self._by_key.get(member.key) is member:
            del self._by_key[member.key]
        if member.voice is not None and self._voice.get(member.voice) is member:
            self._voice.pop(member.voice, None)
            self._pending.pop(member.voice, None)
        self._pending.pop(member.identity, None)
        self._up_due.pop(member.id, None)
        held = member.inflight_bytes + sum(_size(p) for _, p in member.slots.values())
        self._account(-held)
        self._forget_key(member)
        member.slots.clear()
        member.inflight.clear()
        member.inflight_bytes = 0
        log.info("%s (id %d) %s room %r", member.name, member.id, why, member.room)
        if member.link is None:
            for other in self._room(member):
                # nobody is shown a frame from someone who left
                for slot in [k for k in other.slots if k[0] == member.id]:
                    self._account(-_size(other.slots.pop(slot)[1]))
                other.layers.forget(member.id)
            for other in self._listeners(member):
                self._control(other.identity, wire.header(MessageType.LEFT, id=member.id, reason=why, room=member.room))
        self._trim |= held > 16 * 1024 * 1024  # frames that big came from fresh pages: give them back
        if self.cascade is not None and member.link is None and member.remote is None and not any(
                m.remote is None and m.link is None for m in self._rooms.get(member.room, {}).values()):
            self._update_load()  # our last member of the room left: the others may stop sending it
            self._emptied[member.room] = time.monotonic()
            self.cascade.rooms_changed()

    def _expire_silent(self) -> None:
        deadline = time.monotonic() - self.heartbeat_timeout
        for member in [m for m in self.members.values() if m.last_seen < deadline and m.remote is None]:
            self.stats.timed_out += 1
            self._remove(member, "timed out of")

    def _excuse(self, gap: float) -> None:
        """The hub was not running for ``gap`` s: members' silence meanwhile is not theirs."""
        self.stats.paused_s += gap
        if self.cascade is not None:
            self.cascade.excuse(gap)
        now = time.monotonic()
        for m in self.members.values():
            m.last_seen = min(m.last_seen + gap, now)

    def _room(self, member: Member) -> list[Member]:
        """The other members of ``member``'s room (remote ones and other hubs' stand-ins included)."""
        return [m for m in self._rooms.get(member.room, {}).values() if m is not member]

    def _listeners(self, member: Member) -> list[Member]:
        """Who is sent ``member``'s frames, voice and comings and goings: this hub's own
        participants, and the other hubs that take the room when ``member`` is ours (what came
        from another hub never goes on to a third: every hub links to every other one)."""
        return [m for m in self._rooms.get(member.room, {}).values()
                if m is not member and m.remote is None and (m.link is None or member.remote is None)]

    # -- the cluster (holoport.cascade calls these) -------------------------------------
    def local_rooms(self) -> dict[str, int]:
        """Room -> this hub's own participants in it."""
        return self._load["rooms"]

    def linked_rooms(self, linger: float) -> set[str]:
        """The rooms to keep links for: ours, and those whose last member left us less than
        ``linger`` s ago (one who joins again, after a seat conflict or a restart, must find
        the other hubs' members still seated, or it takes a seat of theirs again)."""
        now = time.monotonic()
        for room in [r for r, t in self._emptied.items() if now - t >= linger or r in self._load["rooms"]]:
            del self._emptied[room]
        return self._load["rooms"].keys() | self._emptied.keys()

    def _update_load(self) -> None:
        rooms: dict[str, int] = {}
        for m in self.members.values():
            if m.remote is None and m.link is None:
                rooms[m.room] = rooms.get(m.room, 0) + 1
        now, sent = time.monotonic(), self.stats.forwarded_bytes
        then, before = self._load_at
        mbps = (sent - before) * 8 / (now - then) / 1e6 if now - then >= 0.25 else self._load["mbps"]
        if now - then >= 0.25:
            self._load_at = (now, sent)
        self._load = {"members": sum(rooms.values()), "mbps": round(mbps, 3), "rooms": rooms}

    def cluster_load(self) -> dict:
        """What the directory says of this hub (read by ClusterAgent's thread: a dict swapped whole)."""
        return self._load

    def _add_stand_in(self, sock: zmq.Socket, ident: bytes, room: str, stand_in_id: int, credit: int) -> Member:
        """Another hub takes ``room`` from us: a member of the room that is sent what our own
        members send, over our cascade socket."""
        identity = b"\x00L" + ident + room.encode()  # a zero byte first: no peer may choose such an id
        member = Member(identity, stand_in_id, "", room, -1, time.monotonic(), credit, link=ident,
                        layers=ReceiverLayers(whole=True))
        self.members[identity] = member
        self._rooms.setdefault(room, {})[member.id] = member
        self._routes[identity] = (sock, ident)
        self._foreign += 1
        return member

    def _local_roster(self, room: str) -> list[dict]:
        return [{"id": m.id, "name": m.name, "seat": m.seat, "at": m.joined_at}
                for m in self._rooms.get(room, {}).values() if m.remote is None and m.link is None]

    def _remote_joined(self, link, room: str, member_id: int, name: str, seat: int, at: float) -> Member | None:
        """A member of another hub, seated in our room. Two hubs that seated someone in the
        same seat at once settle it alike: the earlier join (then the lower id) keeps it; one
        of ours that loses is asked to join again, and gets a free seat."""
        if member_id in self._by_id or room not in self._rooms or seat >= self.seats:
            return None
        rival = next((m for m in self._rooms[room].values() if m.seat == seat and m.link is None), None)
        if rival is not None:
            self.cascade.stats["seat_conflicts"] += 1
            if (rival.joined_at, rival.id) < (at, member_id):
                return None  # theirs moves, and its hub tells us it left
            self._remove(rival, "gave its seat to an earlier join on another hub")
            if rival.remote is None:
                self._control(rival.identity, wire.header(MessageType.REJOIN))
        identity = b"\x00R" + member_id.to_bytes(8, "big")
        member = Member(identity, member_id, name, room, seat, time.monotonic(), remote=link, joined_at=at)
        self.members[identity] = member
        self._by_id[member_id] = member
        self._rooms.setdefault(room, {})[member_id] = member
        self._foreign += 1
        log.info("%s (id %d, hub %d) is in room %r at seat %d", name, member_id, link.hub, room, seat)
        for other in self._listeners(member):
            self._control(other.identity, self._joined(member))
        return member

    def _remote_frame(self, sender: Member, head: dict, payloads: list) -> None:
        """A frame or part of another hub's member, for our own members."""
        if head.get("points", 0) > self.max_points:
            return self._drop(Drop.TOO_MANY_POINTS)
        if head.get("layer", 0) > 0:
            return self._forward_part(sender, head, payloads)
        self._forward(sender, head, payloads)

    def _remote_keyframe(self, head: dict) -> None:
        """Another hub's receiver needs a keyframe of one of ours."""
        source = self._by_id.get(head.get("of"))
        if source is None or source.remote is not None or not wire.need(head, "from"):
            return self._drop(Drop.KEYFRAME_NOBODY)
        self._control(source.identity, wire.header(MessageType.KEYFRAME, stream=head.get("stream", 0),
                                                   **{"from": head["from"]}))

    def _remote_feedback(self, head: dict) -> None:
        """Another hub's receiver's reports on one of ours (that hub checked them against its log)."""
        target = self._by_id.get(head.get("to"))
        if target is None or target.remote is not None or not wire.need(head, "from", "r"):
            return self._drop(Drop.FEEDBACK_NOBODY)
        self._control(target.identity, wire.header(MessageType.FEEDBACK, r=head["r"], **{"from": head["from"]}))

    def _hubs_reply(self, identity: bytes, head: dict) -> None:
        """The cluster's live hubs as the directory last listed them (none outside a cluster):
        the asker measures its round trip to each and picks (holoport.hub_choice)."""
        view = self.cascade.view() if self.cascade is not None else None
        room = head.get("room", "")
        hubs = [] if view is None else sorted(view.hubs, key=lambda r: not r.serves(room))[:wire.MAX_HUBS]
        self._reply(identity, wire.header(MessageType.HUBS, room=room, hubs=[
            {"id": r.id, "site": r.site[:64], "endpoint": r.endpoint, "key": r.key, "members": r.members,
             "mbps": r.mbps, "cpu": r.cpu, "room": r.serves(room)} for r in hubs]))

    # -- statistics ----------------------------------------------------------------------
    def _stats_reply(self, identity: bytes, head: dict, asker: Member | None, key: str | None) -> None:
        """One page of the statistics, in a payload frame: the hub's counters, and the
        members of each room the asker may see (its own room; rooms without a token on a
        plain hub; any room for an admin key or whoever gives the room's token)."""
        admin = self.security is not None and key is not None and self.security.is_admin(key)

        def visible(room: str) -> bool:
            if admin or (asker is not None and asker.room == room):
                return True
            needed = self.room_tokens.get(room)
            if needed is None:
                return self.security is None
            token = head.get("token")
            return head.get("room") == room and isinstance(token, str) and hmac.compare_digest(
                token.encode(), needed.encode())

        shown = [m for m in sorted(self.members.values(), key=lambda m: (m.room, m.id))
                 if m.link is None and visible(m.room)]
        pages = max(1, -(-len(shown) // STATS_PAGE))
        page = min(head.get("page", 0), pages - 1)
        rooms: dict[str, list] = {}
        for m in shown[page * STATS_PAGE:(page + 1) * STATS_PAGE]:
            rooms.setdefault(m.room, []).append(_member_stats(m))
        body = {**self.stats.as_dict(), "members": len(self.members) - self._foreign,
                "room_count": len(self._rooms), "rooms": rooms}
        if self.cascade is not None:
            body["cascade"] = self.cascade.as_dict()
        self._reply(identity, wire.header(MessageType.STATS, page=page, pages=pages),
                    [msgpack.packb(body, use_bin_type=True)])

    def snapshot(self) -> dict:
        """Every counter and every member's traffic (in this process: no visibility rules)."""
        rooms: dict[str, list] = {}
        for m in self.members.values():
            if m.link is None:
                rooms.setdefault(m.room, []).append(_member_stats(m))
        out = {**self.stats.as_dict(), "members": len(self.members) - self._foreign, "rooms": rooms}
        if self.cascade is not None:
            out["cascade"] = self.cascade.as_dict()
        return out


def _member_stats(m: Member) -> dict:
    return {"id": m.id, "name": m.name, "seat": m.seat, "hub": m.remote.hub if m.remote is not None else None,
            **m.traffic.as_dict(), **_voice_stats(m), **m.layers.as_dict()}


def _own_stamps(sender: Member, ts: dict) -> dict:
    """A frame's stamps less the hubs' (ours are added afresh): a participant's word on a
    hub's times is not taken; a remote member's own hub's, moved onto our clock, are kept."""
    theirs = ("hub_",) if sender.remote is not None else ("hub_", "up_")
    return {k: t for k, t in ts.items() if not k.startswith(theirs)}


def _voice_stats(m: Member) -> dict:
    p50, p99 = m.voice_ms.percentiles("voice", (50, 99))
    return {"voice": m.voice is not None, "speaking": m.speaking, "voice_in": m.voice_in,
            "voice_hub_p50_ms": p50, "voice_hub_p99_ms": p99}


def _size(payloads: list | tuple) -> int:
    return sum(len(p) for p in payloads)


def raise_fd_limit(want: int = 65536) -> int:
    """Raise this process's open-file limit toward ``want`` (as far as the hard limit
    lets): every connection is a descriptor, and at the common default of 1,024 a crowd of
    idle connections would lock everyone else out. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_LIBC: list = []


def trim_memory() -> None:
    """Hand freed heap pages back to the kernel (glibc keeps them otherwise)."""
    if not _LIBC:
        with contextlib.suppress(OSError):
            _LIBC.append(ctypes.CDLL(ctypes.util.find_library("c")))
    with contextlib.suppress(AttributeError, IndexError):
        _LIBC[0].malloc_trim(0)
