"""A participant's transport session with its hub: the socket, the handshake, joining and
staying joined (heartbeats, re-joins), and the room's roster.

:class:`~holoport.node.Node` is a session plus what travels over it (``holoport.sender``,
``holoport.receiver``, ``holoport.clock``, ``holoport.credits``); this module knows nothing of
frames or codecs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import zmq
import zmq.utils.monitor

from holoport import wire
from holoport.endpoints import require_loopback
from holoport.security import NodeSecurity
from holoport.wire import MessageType

log = logging.getLogger("holoport.node")


class JoinError(RuntimeError):
    """The node could not join: no hub answered, or the hub refused (the reason says why)."""


# a plain client meets a CURVE hub as a dropped connection, not always as a failed handshake
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_DISCONNECTED)


def _handshake_failure(event: int, hub: str, encrypted: bool) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (f"the hub at {hub} refused our key: ask its operator to add our public key "
                f"(NAME.key from `holoport keys NAME`) to the hub's --allow folder")
    if encrypted:
        return (f"the secure handshake with {hub} failed: check --hub-key (the hub's public "
                f"key) and that the hub runs with --key; a hub without encryption needs --insecure")
    return (f"the hub at {hub} closed the connection during the handshake, so it most likely "
            f"requires encryption: pass --key (our secret key) and "
            f"--hub-key (the hub's public key); `holoport keys NAME` makes a key pair")


@dataclass
class Peer:
    id: int
    name: str
    seat: int


@dataclass
class NodeCounters:
    sent: int = 0
    sent_bytes: int = 0
    received: int = 0
    received_bytes: int = 0
    skipped_stale: int = 0
    decode_errors: int = 0
    malformed: int = 0
    rejoins: int = 0
    missing_reference: int = 0  # frames that continued one we never decoded
    unknown_sender: int = 0  # frames from nobody the hub told us of (never drawn)
    join_resent: int = 0  # joins sent again because no welcome came
    refusals_waited: int = 0  # refusals that could pass (a same-named session timing out), waited out
    keyframe_requests: int = 0  # asked of us by receivers
    received_by_sender: dict = field(default_factory=dict)


class Session:
    """Joins ``room`` on ``hub`` and keeps the membership alive.

    Subclasses hear of membership changes through :meth:`_membership` (a new membership
    means new ids: streams start again) and :meth:`_peer_left`.
    """

    def __init__(self, hub: str, room: str, name: str, join_timeout: float, insecure: bool,
                 max_message_bytes: int, security: NodeSecurity | None, credit: int,
                 token: str | None) -> None:
        require_loopback(hub, insecure, "hub", encrypted=security is not None)
        self.hub = hub
        self.insecure = insecure
        self.room = room
        self.name = name
        self.join_timeout = join_timeout
        self.join_every = 1.0  # s between joins sent while no welcome comes
        self.max_message_bytes = max_message_bytes
        self.security = security
        self.credit = credit  # frames the hub may have on their way to us at once
        self.token = token  # a room's admission token, when it has one
        self.id: int | None = None
        self.seat: int | None = None
        self.seats: int | None = None
        self.peers: dict[int, Peer] = {}
        self.max_points = wire.DEFAULT_MAX_POINTS  # the hub's limit, from its welcome
        self.vkey: str | None = None
        self.counters = NodeCounters()
        self._rejoined = 0.0
        self._awaiting_welcome: float | None = None  # when we last asked to join, until welcomed
        self._forgotten = False  # the hub told us it no longer knows us: the next welcome is a new membership
        self._last_sent = 0.0
        self._owed: float | None = None  # since when the hub owes us an answer (silent_for)
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None

    # -- hooks for what travels over the session -------------------------------------------
    def _membership(self, new: bool) -> None:
        """Welcomed: ``new`` when ids may have changed (a first join, a restarted hub)."""

    def _peer_left(self, peer_id: int) -> None:
        """A member left, or lost its seat."""

    # -- life cycle ----------------------------------------------------------------------
    def start(self):
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        sock.setsockopt(zmq.RCVHWM, 64)
        sock.setsockopt(zmq.SNDHWM, 8)
        # the kernel would grow the send buffer past 1 MB: a second of hidden queue at 8
        # Mbit/s, invisible to the credit window and to rate control (docs/link-relay.md)
        sock.setsockopt(zmq.SNDBUF, 256 * 1024)
        if self.security is not None:
            self.security.apply(sock)
        self._sock = sock
        # a refused key or a mismatched security setting fails the handshake, which the
        # DEALER would retry in silence: watch for it (from before the first connection
        # attempt, which may fail at once) and say so
        monitor = sock.get_monitor_socket(_HANDSHAKE_FAILED)
        try:
            try:
                sock.connect(self.hub)
                self._await_welcome(monitor)
            finally:
                # stop monitoring before closing either socket: libzmq's I/O thread sends
                # events to the monitor in blocking mode, and one sent after the reader has
                # gone (a retried handshake, a disconnect while closing) hangs that thread,
                # and with it every socket of the process's shared context (libzmq #3575)
                sock.disable_monitor()
                monitor.close(0)
        except BaseException:
            self.close()
            raise
        return self

    def _await_welcome(self, monitor: zmq.Socket) -> None:
        self._send(self._join_header())
        deadline = time.monotonic() + self.join_timeout
        asked = time.monotonic()
        last_refusal: str | None = None
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            if time.monotonic() - asked >= self.join_every:  # a join, or its welcome, can be lost: ask again
                asked = time.monotonic()
                self.counters.join_resent += 1
                self._send(self._join_header())
            ready = dict(poller.poll(int(min(left, 1.0) * 1000) + 1))
            if monitor in ready:
                event = zmq.utils.monitor.recv_monitor_message(monitor)
                raise JoinError(_handshake_failure(event["event"], self.hub, self.security is not None))
            if self._sock not in ready:
                continue
            try:
                msg = wire.decode(self._sock.recv_multipart())
            except wire.VersionError as exc:  # a hub of another release: its refusal says why
                if exc.refusal is not None:
                    raise JoinError(f"the hub refused to admit us: {exc.refusal}") from None
                raise JoinError(f"the hub at {self.hub} answered in another format: {exc}") from None
            except wire.WireError as exc:
                raise JoinError(f"the hub at {self.hub} answered in another format: {exc}") from None
            if msg.type == MessageType.REFUSED:
                refusal = f"the hub refused to admit us: {msg.header.get('reason')}"
                if not msg.header.get("retry"):
                    raise JoinError(refusal)
                # a session of the same name or key that is about to time out: the join sent
                # again every second gets in once it has, or this refusal stands at the deadline
                self.counters.refusals_waited += 1
                last_refusal = refusal
                continue
            if msg.type == MessageType.WELCOME:
                self._welcome(msg.header)
                if self.id is not None:
                    self._heard()
                    return
        if last_refusal is not None:
            raise JoinError(last_refusal)
        raise JoinError(
            f"no hub answered at {self.hub} within {self.join_timeout:.0f} s; "
            f"start one with `holoport hub --bind {self.hub}` or check the address"
        )

    def _join_header(self) -> dict:
        extra = {"token": self.token} if self.token is not None else {}
        return wire.header(MessageType.JOIN, room=self.room, name=self.name, credit=self.credit, **extra)

    def _welcome(self, h: dict) -> None:
        if not wire.need(h, "id", "seat", "seats") or h["seat"] >= h["seats"]:
            self.counters.malformed += 1
            return
        # the answer to a join we only sent again (no welcome came) continues our membership;
        # after a "rejoin" (the hub forgot us, or restarted: ids start again) it is a new one
        same = h["id"] == self.id and not self._forgotten
        self._forgotten = False
        self.id, self.seat, self.seats = h["id"], h["seat"], h["seats"]
        before = set(self.peers)
        self.peers = {m["id"]: Peer(m["id"], m["name"], m["seat"]) for m in h.get("members", [])
                      if m["id"] != self.id and m["seat"] < self.seats}
        self.name = h.get("name", self.name)
        self.max_points = h.get("max_points", wire.DEFAULT_MAX_POINTS)
        self.vkey = h.get("vkey")  # the secret our voice connection attaches with (holoport.voice)
        self._awaiting_welcome = None
        if same:  # what travels goes on as it was, less those who left meanwhile
            for gone in before - set(self.peers):
                self._peer_left(gone)
            return
        self._membership(new=True)
        log.info("joined room %r as %s, seat %d of %d", self.room, self.name, self.seat, self.seats)

    def move_to(self, hub: str, security: NodeSecurity | None, join_timeout: float | None = None) -> None:
        """Leave this hub (a goodbye, should it still hear one) and join the room on ``hub``:
        a new membership, with a new id and seat, for a participant whose hub died
        (docs/cluster.md). Raises JoinError as :meth:`start` does, and then holds no
        connection: another ``move_to`` may follow.

        The join is sent again every quarter second, not every second: the new hub may
        still seat us as a member of the dead one (its cascade link not yet timed out), and
        refuses our name, with a retry, until it has let that membership go."""
        require_loopback(hub, self.insecure, "hub", encrypted=security is not None)
        self.stop()
        self.id = self.seat = self.seats = self.vkey = None
        self.peers = {}
        self._awaiting_welcome, self._forgotten, self._owed = None, False, None
        self.hub, self.security = hub, security
        kept = self.join_timeout, self.join_every
        self.join_timeout, self.join_every = join_timeout or self.join_timeout, 0.25
        try:
            self.start()
        finally:
            self.join_timeout, self.join_every = kept

    def stop(self) -> None:
        if self._sock is not None and self.id is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._send(wire.header(MessageType.LEAVE, room=self.room))
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- staying joined --------------------------------------------------------------------
    def silent_for(self) -> float:
        """Seconds since the hub began to owe us an answer (we asked it the time, which it
        always answers) with nothing at all heard from it since; 0 while it owes us nothing.
        Counted from the question, not from the last message heard, so that a stall of our
        own (a slow frame, a paused process, an empty room) never passes for a dead hub."""
        return 0.0 if self._owed is None else time.monotonic() - self._owed

    def _asked(self) -> None:
        if self._owed is None:
            self._owed = time.monotonic()

    def _heard(self) -> None:
        self._owed = None

    def _send(self, head: dict, payloads: list | tuple = ()) -> bool:
        """Queue one message for the hub without blocking; False when the queue is full
        (the hub is not keeping up: the caller drops it, never blocking capture)."""
        try:
            self._sock.send_multipart(wire.encode(head, payloads), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self._last_sent = time.monotonic()
        return True

    def heartbeat(self, interval: float = 1.0) -> None:
        """Tell the hub we are alive if nothing else was sent for ``interval`` seconds, and
        ask again to join when a re-join got no welcome within a second (the hub may have
        been paused, or its answer lost on the way)."""
        if time.monotonic() - self._last_sent >= interval:
            self._send(wire.header(MessageType.HEARTBEAT))
        if self._awaiting_welcome is not None and time.monotonic() - self._awaiting_welcome >= 1.0:
            self.counters.join_resent += 1
            self._rejoin()

    def _rejoin(self, forgotten: bool = False) -> None:
        self._forgotten |= forgotten
        self._awaiting_welcome = time.monotonic()
        self._send(self._join_header())

    def _roster(self, msg: wire.Message) -> bool:
        """Handle a message about the session itself (welcome, joined, left, refused,
        rejoin); False when it is about something else."""
        h = msg.header
        if msg.type == MessageType.JOINED:
            if not wire.need(h, "id", "name", "seat") or h["id"] == self.id or (self.seats and h["seat"] >= self.seats):
                self.counters.malformed += 1
                return True
            if h["seat"] == self.seat:  # our seat is someone else's: the hub forgot us, ask again
                self._rejoin(forgotten=True)
            for other in [p for p in self.peers.values() if p.seat == h["seat"]]:
                self.peers.pop(other.id)  # nobody keeps a seat given to someone else
                self._peer_left(other.id)
            self.peers[h["id"]] = Peer(h["id"], h["name"], h["seat"])
            log.info("%s joined at seat %s", h["name"], h["seat"])
        elif msg.type == MessageType.LEFT:
            if not wire.need(h, "id"):
                self.counters.malformed += 1
                return True
            peer = self.peers.pop(h["id"], None)
            self._peer_left(h["id"])
            log.info("%s left (%s)", peer.name if peer else h["id"], h.get("reason"))
        elif msg.type == MessageType.REFUSED:
            log.warning("the hub refused a message: %s", h.get("reason"))
        elif msg.type == MessageType.REJOIN:
            if time.monotonic() - self._rejoined >= 0.5:
                # the hub restarted (or dropped us): join again; the welcome renews id and seat
                log.warning("the hub no longer knows us: joining room %r again", self.room)
                self._rejoined = time.monotonic()
                self.counters.rejoins += 1
                self._rejoin(forgotten=True)
        elif msg.type == MessageType.WELCOME:
            self._welcome(h)
        else:
            return False
        return True
