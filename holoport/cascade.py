"""Hub-to-hub links of a cluster (a cascade, as SFUs do it; docs/cluster.md).

A hub with members of room R *subscribes* to every other hub that serves R: one DEALER
per remote hub, shared by every room it takes from there (:class:`Link`). The remote hub
(the publisher) keeps a stand-in member per (subscriber, room) in that room, flagged
``link``: it is sent the frames, parts, voice and roster of the publisher's own members,
under credit and newest-frame-wins like any receiver, but never what the publisher itself
took from another hub. So each stream crosses each hub-to-hub hop once, and the
subscriber fans it out to its own members. The members a link brings are ``remote``
members of the subscriber's room: seated, named, heard and seen like its own, but served
by their own hub (feedback and keyframe requests for them go back over the link).

Every hub is a CURVE server on its cascade socket with the cluster's key pair (the same
files on every hub) and admits only that public key; a hub with other keys is refused
and logged. Everything from another hub is checked as from anyone (wire schema, ids that
belong to that link), since a bug there must not take the hub down.

Clocks: a subscriber measures its offset to each publisher on the link (NTP style, as a
node does with its hub) and moves every stamp it takes from there onto its own clock, and
every arrival report it sends there onto the publisher's.

This class holds the sockets and the links' state; the room logic stays in the hub, which
calls in here and is called back (``Hub._remote_*``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import zmq
import zmq.utils.monitor
from zmq.auth.thread import ThreadAuthenticator

from holoport import wire
from holoport.clock import ClockSync
from holoport.security import KeyPair
from holoport.wire import MAX_CREDIT, MessageType

if TYPE_CHECKING:
    from holoport.cluster import ClusterView
    from holoport.hub import Hub, Member

log = logging.getLogger("holoport.cascade")

LINK_CREDIT = 32  # frames a publisher may have on their way to one subscriber's room
HEARTBEAT_S = 0.5  # each side says it is alive this often on every link
SILENCE_S = 1.5  # a link this long silent is down: the members it brought have left
RESUBSCRIBE_S = 1.0  # a subscription not answered is asked again this often
LINGER_S = 2.0  # a room's links outlive its last member here this long: one who rejoins (a seat
#                 conflict, a restart) finds the other hubs' members still seated
CLOCK_EVERY_S = 1.0  # clock samples on each link
LINK_QUEUE = 10_000  # messages queued per link pipe (credit and byte budgets bound frames)
REFUSAL_LOG_S = 30.0  # a refused hub retries every second: say so once in this long
# a hub with another cluster key fails the CURVE handshake before any ZAP check can run
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass
class CascadeConfig:
    """How a hub takes part in a cluster: its number, its cascade socket, the cluster keys."""

    hub_no: int
    bind: str  # the cascade socket (port 0 picks one)
    advertise_host: str | None = None  # the host other hubs reach us at (default: bind's)
    keys: KeyPair | None = None  # the cluster's key pair; None: plain (loopback or --insecure)
    view: object = None  # () -> ClusterView, the directory as last read (ClusterAgent.view)
    on_rooms: object = None  # () -> None: this hub's rooms changed (ClusterAgent.publish_now)


@dataclass
class Link:
    """Our subscription to one remote hub."""

    hub: int
    endpoint: str
    sock: zmq.Socket
    rooms: dict[str, float] = field(default_factory=dict)  # room -> when we last asked for it
    linked: set[str] = field(default_factory=set)  # rooms it answered for
    last_heard: float = 0.0  # monotonic; 0: never
    last_sent: float = 0.0
    clock: ClockSync = field(default_factory=ClockSync)  # their clock against ours, as a node's with its hub
    taken: dict[str, int] = field(default_factory=dict)  # frames per room since our last credit
    members: dict[int, Member] = field(default_factory=dict)  # id -> the remote member it brought
    bytes_in: int = 0  # frame and part payload bytes taken from it
    frames_in: int = 0
    warned: bool = False

    @property
    def offset(self) -> float:
        """Our clock minus theirs (0 until measured, and where it is within the round trip's error)."""
        return -(self.clock.offset or 0.0)

    @property
    def up(self) -> bool:
        return self.last_heard > 0 and time.monotonic() - self.last_heard < SILENCE_S

    @property
    def quiet(self) -> bool:
        """Missed its last heartbeat: the hub may be dead (``up`` until SILENCE_S says it is)."""
        return not self.last_heard or time.monotonic() - self.last_heard > 1.5 * HEARTBEAT_S


@dataclass
class Subscriber:
    """Another hub that takes rooms from us, on our cascade socket."""

    ident: bytes
    hub: int
    endpoint: str
    rooms: dict[str, Member] = field(default_factory=dict)  # room -> its stand-in member
    last_seen: float = 0.0
    last_sent: float = 0.0


class _ClusterKeyCheck:
    """ZAP credentials hook: only the cluster's public key may connect."""

    def __init__(self, public: bytes) -> None:
        self.public = public
        self.refused = 0

    def callback(self, domain: str, z85_key: bytes) -> bool:
        if z85_key == self.public:
            return True
        self.refused += 1
        log.warning("refused a hub whose cluster key is not ours: %s (check --cluster-key on every hub)",
                    z85_key.decode(errors="replace"))
        return False


class Cascade:
    def __init__(self, hub: Hub, config: CascadeConfig) -> None:
        self.hub = hub
        self.config = config
        self.hub_no = config.hub_no
        self.ctx = zmq.Context()  # its own: the ZAP handler serves its whole context
        self.router: zmq.Socket | None = None
        self.endpoint: str | None = None  # as advertised to other hubs
        self.links: dict[int, Link] = {}  # remote hub number -> our subscription there
        self.subscribers: dict[bytes, Subscriber] = {}
        self.reverse: dict[int, tuple[str, set[str]]] = {}  # hubs that subscribed to us: endpoint, rooms
        self.dirty = True  # the set of sockets changed: the hub's poller is rebuilt
        self.stats = {"links_up": 0, "links_down": 0, "frames_in": 0, "bytes_in": 0, "frames_out": 0,
                      "bytes_out": 0, "dropped": 0, "seat_conflicts": 0, "refused": 0}
        self._auth: ThreadAuthenticator | None = None
        self._check: _ClusterKeyCheck | None = None
        self.monitor: zmq.Socket | None = None  # handshake failures on our cascade socket
        self._refusals = 0  # handshakes failed there
        self._refusal_logged = -REFUSAL_LOG_S
        self._next_stand_in = -1

    # -- sockets ---------------------------------------------------------------------------
    def open(self) -> str:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self.hub.max_message_bytes)
        sock.setsockopt(zmq.SNDHWM, LINK_QUEUE)
        sock.setsockopt(zmq.RCVHWM, LINK_QUEUE)
        sock.setsockopt(zmq.HANDSHAKE_IVL, 5000)
        keys = self.config.keys
        if keys is not None:
            self._check = _ClusterKeyCheck(keys.public)
            self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("holoport.cascade.zap"))
            self._auth.start()
            self._auth.configure_curve_callback(domain="*", credentials_provider=self._check)
            sock.curve_secretkey = keys.secret
            sock.curve_publickey = keys.public
            sock.curve_server = True
            # read in the hub's loop for as long as the socket lives (and disabled before it
            # closes: libzmq sends monitor events blocking, see holoport/session.py)
            self.monitor = sock.get_monitor_socket(_HANDSHAKE_FAILED)
        sock.bind(self.config.bind)
        self.router = sock
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        host = self.config.advertise_host or urlsplit(bound).hostname
        self.endpoint = f"tcp://{host}:{urlsplit(bound).port}"
        log.info("cascade socket on %s (advertised as %s, %s)", bound, self.endpoint,
                 "CURVE with the cluster key" if keys else "unencrypted")
        return self.endpoint

    def sockets(self) -> list[zmq.Socket]:
        extra = [self.monitor] if self.monitor is not None else []
        return [self.router, *extra, *(link.sock for link in self.links.values())]

    def on_monitor(self) -> None:
        """A peer failed the handshake on our cascade socket: not one of the cluster's hubs."""
        while True:
            try:
                event = zmq.utils.monitor.recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self._refusals += 1
            now = time.monotonic()
            if now - self._refusal_logged >= REFUSAL_LOG_S:
                self._refusal_logged = now
                log.warning("refused a hub whose cluster key is not ours (%s, %d so far): every hub "
                            "needs the same --cluster-key", event.get("endpoint", b"").decode(errors="replace"),
                            self._refusals)

    def close(self) -> None:
        for link in list(self.links.values()):
            link.sock.close(0)
        self.links.clear()
        if self.router is not None:
            if self.monitor is not None:
                self.router.disable_monitor()
                self.monitor.close(0)
                self.monitor = None
            self.router.close(0)
            self.router = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self.ctx.destroy(linger=0)

    def _connect(self, hub_no: int, endpoint: str) -> Link:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # nothing queues for a hub we are not connected to
        sock.setsockopt(zmq.MAXMSGSIZE, self.hub.max_message_bytes)
        sock.setsockopt(zmq.SNDHWM, LINK_QUEUE)
        sock.setsockopt(zmq.RCVHWM, LINK_QUEUE)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        keys = self.config.keys
        if keys is not None:
            sock.curve_secretkey = keys.secret
            sock.curve_publickey = keys.public
            sock.curve_serverkey = keys.public
        sock.connect(endpoint)
        link = self.links[hub_no] = Link(hub_no, endpoint, sock, last_sent=time.monotonic())
        self.dirty = True
        log.info("linking to hub %d at %s", hub_no, endpoint)
        return link

    def _drop_link(self, link: Link, why: str) -> None:
        self._link_down(link, why)
        link.sock.close(0)
        self.links.pop(link.hub, None)
        self.dirty = True

    # -- what the hub tells us ---------------------------------------------------------------
    def rooms_changed(self) -> None:
        if callable(self.config.on_rooms):
            self.config.on_rooms()

    def view(self) -> ClusterView | None:
        return self.config.view() if callable(self.config.view) else None

    def tick(self, now: float) -> None:
        """Heartbeats, clocks, silence, and links to match the rooms we serve (every ~0.1 s)."""
        view = self.view()
        wanted: dict[int, tuple[str, set[str]]] = {}
        local_rooms = self.hub.linked_rooms(LINGER_S)
        if view is not None:
            for rec in view.hubs:
                if rec.id == self.hub_no or not rec.cascade:
                    continue
                rooms = {r for r in rec.rooms if r in local_rooms}
                if rooms:
                    wanted[rec.id] = (rec.cascade, rooms)
        for hub_no, (endpoint, rooms) in self.reverse.items():
            rooms = rooms & local_rooms
            if rooms:
                ep, have = wanted.get(hub_no, (endpoint, set()))
                wanted[hub_no] = (ep, have | rooms)
        live = {rec.id for rec in view.hubs} if view is not None and view.ok else None
        for hub_no, link in list(self.links.items()):
            want = wanted.get(hub_no)
            if want is None or want[0] != link.endpoint:
                if live is not None and hub_no not in live:
                    self._drop_link(link, "its lease lapsed")
                elif want is None:
                    self._drop_link(link, "no room of ours is served there")
                else:
                    self._drop_link(link, "it moved")
                continue
            for room in [r for r in link.rooms if r not in want[1]]:
                self._unsubscribe(link, room)
        for hub_no, (endpoint, rooms) in wanted.items():
            link = self.links.get(hub_no) or self._connect(hub_no, endpoint)
            for room in rooms:
                if room not in link.linked and now - link.rooms.get(room, -RESUBSCRIBE_S) >= RESUBSCRIBE_S:
                    # until the connection is up (IMMEDIATE) nothing is queued: ask again next tick
                    asked = self._link_send(link, wire.header(MessageType.LINK, room=room, hub=self.hub_no,
                                                              cascade=self.endpoint, credit=LINK_CREDIT))
                    link.rooms[room] = now if asked else -RESUBSCRIBE_S
        for link in list(self.links.values()):
            if link.last_heard and now - link.last_heard >= SILENCE_S and link.linked:
                self._link_down(link, f"silent for {SILENCE_S:g} s")
            elif not link.last_heard and not link.warned and now - link.last_sent > 3.0 and link.rooms:
                link.warned = True
                log.warning("hub %d at %s does not answer on its cascade socket (is it up? same --cluster-key?)",
                            link.hub, link.endpoint)
            if now - link.last_sent >= HEARTBEAT_S:
                self._link_send(link, wire.header(MessageType.HEARTBEAT))
            if (ask := link.clock.request(CLOCK_EVERY_S)) is not None:
                self._link_send(link, ask)
        for sub in list(self.subscribers.values()):
            if now - sub.last_seen >= SILENCE_S:
                self._forget_subscriber(sub, f"silent for {SILENCE_S:g} s")
            elif now - sub.last_sent >= HEARTBEAT_S:
                sub.last_sent = now
                self._router_send(sub.ident, wire.header(MessageType.HEARTBEAT))
        self.stats["refused"] = self._refusals + (self._check.refused if self._check is not None else 0)

    def excuse(self, gap: float) -> None:
        """The hub did not run for ``gap`` s: the other hubs' silence meanwhile is not theirs."""
        for link in self.links.values():
            if link.last_heard:
                link.last_heard += gap
        for sub in self.subscribers.values():
            sub.last_seen += gap

    def _unsubscribe(self, link: Link, room: str) -> None:
        link.rooms.pop(room, None)
        link.linked.discard(room)
        self._link_send(link, wire.header(MessageType.UNLINK, room=room))
        for member in [m for m in link.members.values() if m.room == room]:
            self._remote_left(link, member.id, "unlinked")

    def _link_down(self, link: Link, why: str) -> None:
        if link.linked or link.members:
            self.stats["links_down"] += 1
            log.warning("link to hub %d (%s) is down: %s", link.hub, link.endpoint, why)
        link.linked.clear()
        link.rooms = dict.fromkeys(link.rooms, -RESUBSCRIBE_S)
        link.last_heard = 0.0
        link.taken.clear()
        for member_id in list(link.members):
            self._remote_left(link, member_id, "its hub is unreachable")

    # -- sending ------------------------------------------------------------------------------
    def _link_send(self, link: Link, head: dict, payloads: list | tuple = ()) -> bool:
        try:
            link.sock.send_multipart(wire.encode(head, payloads), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        link.last_sent = time.monotonic()
        return True

    def _router_send(self, ident: bytes, head: dict) -> bool:
        try:
            self.router.send_multipart([ident, *wire.encode(head)], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def keyframe(self, source: Member, from_id: int, stream: int) -> None:
        """A local receiver needs a keyframe of a remote sender: ask its hub."""
        self._link_send(source.remote, wire.header(MessageType.KEYFRAME, of=source.id, stream=stream,
                                                   **{"from": from_id}))

    def feedback(self, target: Member, from_id: int, reports: list) -> None:
        """A local receiver's arrival reports on a remote sender's frames, moved onto its hub's clock."""
        link = target.remote
        moved = [[seq, arrived - link.offset, size] for seq, arrived, size in reports]
        self._link_send(link, wire.header(MessageType.FEEDBACK, to=target.id, r=moved, **{"from": from_id}))

    # -- from subscribers (our cascade socket) -------------------------------------------------
    def on_router(self) -> None:
        for _ in range(256):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._from_subscriber(frames[0].bytes, wire.decode(frames[1:]))
            except wire.WireError as exc:
                self._dropped(str(exc))
            except Exception:
                log.exception("dropped a cascade message that broke its handler")
                self._dropped("handler")

    def _from_subscriber(self, ident: bytes, msg: wire.Message) -> None:
        head, kind, hub = msg.header, msg.type, self.hub
        sub = self.subscribers.get(ident)
        now = time.monotonic()
        if kind == MessageType.LINK:
            if not wire.need(head, "room", "hub", "cascade"):
                return self._dropped("link without room, hub or cascade")
            if head["hub"] == self.hub_no:
                return self._dropped("a link from ourselves")
            room = head["room"]
            if room not in hub.local_rooms():  # nothing to send: it asks again while the directory lists us
                return self._dropped("a link for a room we do not serve")
            if sub is None:
                sub = self.subscribers[ident] = Subscriber(ident, head["hub"], head["cascade"])
            sub.last_seen = now
            stand_in = sub.rooms.get(room)
            if stand_in is None:
                stand_in = sub.rooms[room] = hub._add_stand_in(self.router, ident, room, self._next_stand_in,
                                                               head.get("credit", LINK_CREDIT))
                self._next_stand_in -= 1
                log.info("hub %d takes room %r from us", sub.hub, room)
            self._router_send(ident, wire.header(MessageType.LINKED, room=room, hub=self.hub_no,
                                                 members=hub._local_roster(room)))
            hub._late_join(stand_in)  # our senders' latest keyframes, as for any late joiner
            # answered in kind: we take the room from them too, without waiting for the directory
            endpoint, rooms = self.reverse.get(sub.hub, (sub.endpoint, set()))
            self.reverse[sub.hub] = (head["cascade"], rooms | {room})
            link = self.links.get(sub.hub)
            if link is not None and room not in link.linked:
                link.rooms[room] = -RESUBSCRIBE_S  # ask at the next tick, not a second later
            return
        if sub is None:
            return self._dropped("a message from a hub that has not linked")
        sub.last_seen = now
        for stand_in in sub.rooms.values():
            stand_in.last_seen = now
        if kind == MessageType.UNLINK:
            stand_in = sub.rooms.pop(head.get("room"), None)
            if stand_in is not None:
                hub._remove(stand_in, "unlinked")
            endpoint, rooms = self.reverse.get(sub.hub, (sub.endpoint, set()))
            self.reverse[sub.hub] = (endpoint, rooms - {head.get("room")})
        elif kind == MessageType.CREDIT:
            stand_in = sub.rooms.get(head.get("room"))
            if stand_in is None or not wire.need(head, "n"):
                return self._dropped("credit for a room not linked")
            hub._credit(stand_in, head["n"])
        elif kind == MessageType.KEYFRAME:
            hub._remote_keyframe(head)
        elif kind == MessageType.FEEDBACK:
            hub._remote_feedback(head)
        elif kind == MessageType.TIME:
            if wire.need(head, "t0"):
                arrived = time.time()
                self._router_send(ident, wire.header(MessageType.TIME, t0=head["t0"], t1=arrived, t2=time.time()))
        elif kind != MessageType.HEARTBEAT:
            self._dropped("a message type hubs do not send on links")

    def _forget_subscriber(self, sub: Subscriber, why: str) -> None:
        log.info("hub %d no longer takes rooms from us: %s", sub.hub, why)
        self.subscribers.pop(sub.ident, None)
        for stand_in in sub.rooms.values():
            self.hub._remove(stand_in, "unlinked")
        self.reverse.pop(sub.hub, None)

    def stand_in_gone(self, ident: bytes, room: str) -> None:
        """The hub removed a stand-in (its queue unreachable): forget it here too."""
        sub = self.subscribers.get(ident)
        if sub is not None:
            sub.rooms.pop(room, None)

    # -- from publishers (our links) -----------------------------------------------------------
    def on_link(self, sock: zmq.Socket) -> None:
        link = next((x for x in self.links.values() if x.sock is sock), None)
        if link is None:
            return
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                self._from_publisher(link, wire.decode(frames))
            except wire.WireError as exc:
                self._dropped(str(exc))
            except Exception:
                log.exception("dropped a cascade message that broke its handler")
                self._dropped("handler")
            if link.hub not in self.links:  # dropped meanwhile
                return
        for room, n in link.taken.items():  # credit back for what we took: our own receivers
            while n > 0:  # hold the newest per sender for themselves
                self._link_send(link, wire.header(MessageType.CREDIT, room=room, n=min(n, MAX_CREDIT)))
                n -= MAX_CREDIT
        link.taken.clear()

    def _from_publisher(self, link: Link, msg: wire.Message) -> None:
        head, kind, hub = msg.header, msg.type, self.hub
        if not link.last_heard:
            self.stats["links_up"] += 1
            link.warned = False
            log.info("link to hub %d (%s) is up", link.hub, link.endpoint)
        link.last_heard = time.monotonic()
        if kind == MessageType.FRAME:
            room = head.get("room")
            sender = link.members.get(head.get("src"))
            if room in link.linked:
                link.taken[room] = link.taken.get(room, 0) + (head.get("layer", 0) == 0)
            if sender is None or sender.room != room or len(msg.payloads) != 1 or not wire.need(head, "seq", "ts"):
                return self._dropped("a frame from nobody that link brought")
            size = len(msg.payloads[0])
            link.frames_in += 1
            link.bytes_in += size
            self.stats["frames_in"] += 1
            self.stats["bytes_in"] += size
            ts = head["ts"]
            stamps = {k: v for k, v in ts.items() if not k.startswith(("hub_", "up_"))}
            for ours, theirs in (("up_in", "hub_in"), ("up_out", "hub_out")):
                if theirs in ts:
                    stamps[ours] = ts[theirs] + link.offset
            head["ts"] = stamps
            if "off" in head:  # the sender's clock to its hub's, then to ours
                head["off"] += link.offset
            hub._remote_frame(sender, head, msg.payloads)
        elif kind == MessageType.AUDIO:
            speaker = link.members.get(head.get("src"))
            if speaker is None or speaker.room != head.get("room"):
                return self._dropped("voice from nobody that link brought")
            if "off" in head:
                head["off"] += link.offset
            hub._voice_message(speaker, kind, head, msg.payloads, time.time())
        elif kind == MessageType.LINKED:
            room = head.get("room")
            if room not in link.rooms or not wire.need(head, "members"):
                return self._dropped("linked for a room we did not ask")
            link.linked.add(room)
            listed = {m["id"] for m in head["members"]}
            for member in [m for m in link.members.values() if m.room == room and m.id not in listed]:
                self._remote_left(link, member.id, "left")
            for m in head["members"]:
                if m["id"] not in link.members:
                    self._remote_joined(link, room, m)
        elif kind == MessageType.JOINED:
            if head.get("room") not in link.linked or not wire.need(head, "id", "name", "seat"):
                return self._dropped("joined for a room not linked")
            self._remote_joined(link, head["room"], head)
        elif kind == MessageType.LEFT:
            if head.get("room") not in link.linked or not wire.need(head, "id"):
                return self._dropped("left for a room not linked")
            self._remote_left(link, head["id"], head.get("reason", "left"))
        elif kind == MessageType.TIME:
            if not link.clock.on_reply(head, time.time()):
                self._dropped("a clock answer that cannot be true")
        elif kind != MessageType.HEARTBEAT:
            self._dropped("a message type hubs do not send on links")

    def _remote_joined(self, link: Link, room: str, m: dict) -> None:
        if m["id"] >> 32 != link.hub:  # ids carry their hub's number: another's is a lie or a loop
            return self._dropped("a member id of another hub")
        member = self.hub._remote_joined(link, room, m["id"], m["name"], m["seat"], m.get("at", 0.0) + link.offset)
        if member is not None:
            link.members[member.id] = member

    def _remote_left(self, link: Link, member_id: int, why: str) -> None:
        member = link.members.pop(member_id, None)
        if member is not None:
            self.hub._remove(member, why)

    def _dropped(self, why: str) -> None:
        self.stats["dropped"] += 1
        self.hub._drop(f"cascade: {why}")

    def as_dict(self) -> dict:
        return {**self.stats, "hub_no": self.hub_no, "endpoint": self.endpoint,
                "links": [{"hub": x.hub, "endpoint": x.endpoint, "up": x.up, "rooms": sorted(x.linked),
                           "frames_in": x.frames_in, "bytes_in": x.bytes_in, "members": len(x.members),
                           "offset_ms": x.offset * 1e3, "rtt_ms": None if x.clock.rtt is None else x.clock.rtt * 1e3}
                          for x in self.links.values()],
                "subscribers": [{"hub": s.hub, "rooms": sorted(s.rooms),
                                 "frames_out": sum(m.traffic.frames_out for m in s.rooms.values())}
                                for s in self.subscribers.values()]}
