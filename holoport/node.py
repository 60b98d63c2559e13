"""A participant node: joins a room on a hub, sends encoded clouds, yields decoded ones.

Usable as a library::

    with Node("tcp://127.0.0.1:5555", room="demo", name="ana") as node:
        node.send(positions, colors)
        for frame in node.poll(timeout=0.1):
            print(frame.name, frame.positions.shape)

``poll`` drains everything that arrived, keeps only the newest frame per sender (older
ones are counted as skipped, never decoded), and decodes those; a frame that fails to
decode is counted and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgpack
import numpy as np
import zmq
import zmq.utils.monitor

import codec
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
class RemoteFrame:
    sender: int
    name: str
    seat: int
    seq: int
    positions: np.ndarray
    colors: np.ndarray
    ts: dict  # stage timestamps from the header, plus received and decoded
    nbytes: int


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


class Node:
    def __init__(
        self,
        hub: str = "tcp://127.0.0.1:5555",
        room: str = "main",
        name: str = "",
        encoder=None,
        join_timeout: float = 5.0,
        insecure: bool = False,
        max_message_bytes: int = 64 * 1024 * 1024,
        security: NodeSecurity | None = None,
        credit: int = 4,
        token: str | None = None,
        clock: Callable[[], float] = time.time,
        decode: bool = True,
    ) -> None:
        require_loopback(hub, insecure, "hub", encrypted=security is not None)
        if not 1 <= credit <= 64:
            raise ValueError(f"credit must be in 1..64 frames, got {credit}")
        self.credit = credit  # frames the hub may have on their way to us at once
        self.token = token  # a room's admission token, when it has one
        self.clock = clock  # wall clock, seconds; stamps from elsewhere are converted to it
        self.decode = decode  # False: frames come back as payload sizes and stamps only (relays, load tests)
        self.offset: float | None = None  # hub clock - our clock, from the best recent sample
        self.rtt: float | None = None  # round trip of that sample
        self._time_samples: deque[tuple[float, float]] = deque(maxlen=8)
        self._next_sync = 0.0
        self.security = security
        self.hub = hub
        self.room = room
        self.name = name
        self.encoder = encoder or codec.get_codec("baseline")
        self.join_timeout = join_timeout
        self.max_message_bytes = max_message_bytes
        self.id: int | None = None
        self.seat: int | None = None
        self.seats: int | None = None
        self.peers: dict[int, Peer] = {}
        self.counters = NodeCounters()
        self._seq = 0
        self._rejoined = 0.0
        self._awaiting_welcome: float | None = None  # when we last asked to join, until welcomed
        self._forgotten = False  # the hub told us it no longer knows us: the next welcome is a new membership
        self.max_points = wire.DEFAULT_MAX_POINTS  # the hub's limit, from its welcome
        self._owed = 0  # credit to hand back to the hub
        self._decoders: dict[int, codec.OctreeDecoder] = {}  # per sender: octree streams carry state
        self._asked_key: dict[int, float] = {}
        self._last_sent = 0.0
        # rate control: a callback (receiver id, seq, sent, arrived, bytes; our clock) makes
        # our frames ask their receivers for arrival reports ("fb")
        self.on_feedback: Callable[[int, int, float, float, int], None] | None = None
        self._sent_log: dict[int, tuple[float, int]] = {}  # seq -> (sent, bytes), recent ones
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> Node:
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
        self.sync_clock()  # the first sample, answered while the first frames arrive
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
            if time.monotonic() - asked >= 1.0:  # a join, or its welcome, can be lost: ask again
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
        self.peers = {m["id"]: Peer(m["id"], m["name"], m["seat"]) for m in h.get("members", [])
                      if m["id"] != self.id and m["seat"] < self.seats}
        self.name = h.get("name", self.name)
        self.max_points = h.get("max_points", wire.DEFAULT_MAX_POINTS)
        self._awaiting_welcome = None
        if same:  # its credit window and our streams go on as they were
            for gone in set(self._decoders) - set(self.peers):
                del self._decoders[gone]
            return
        self._decoders.clear()  # ids may be new (a restarted hub): streams start again
        self._owed = 0  # a (re)join starts a fresh credit window
        log.info("joined room %r as %s, seat %d of %d", self.room, self.name, self.seat, self.seats)

    def stop(self) -> None:
        if self._sock is not None and self.id is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._send(wire.header(MessageType.LEAVE, room=self.room))
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- sending -------------------------------------------------------------------------
    def send(self, positions: np.ndarray, colors: np.ndarray, ts: dict | None = None) -> dict:
        """Encode and send one cloud; returns the header it went out with."""
        ts = dict(ts or {})
        ts.setdefault("capture", self.clock())
        payload = self.encoder.encode(positions, colors)
        ts["encoded"] = self.clock()
        return self.send_encoded(payload, len(positions), ts, bool(getattr(self.encoder, "keyframe", True)))

    def send_encoded(self, payload: bytes, points: int, ts: dict | None = None, key: bool = True) -> dict:
        """Send a frame that is already a codec stream (a recording, a load test)."""
        ts = dict(ts or {})
        self._seq += 1
        head = wire.header(MessageType.FRAME, room=self.room, seq=self._seq, ts=ts, points=points, key=key)
        if self.offset is not None:
            head["off"] = self.offset
        if self.on_feedback is not None:
            head["fb"] = True
        ts["sent"] = self.clock()
        if self._send(head, [payload]):
            self.counters.sent += 1
            self.counters.sent_bytes += len(payload)
            if self.on_feedback is not None:
                self._sent_log[self._seq] = (ts["sent"], len(payload))
                self._sent_log.pop(self._seq - 512, None)
        return head

    def sent_frame(self, seq: int) -> tuple[float, int] | None:
        """(sent at, payload bytes) of one of our recent frames, while ``on_feedback`` is set."""
        return self._sent_log.get(seq)

    def frames(self, timeout: float = 0.1) -> Iterator[RemoteFrame]:
        """Decoded remote frames as they come, for ``for frame in node.frames():`` (keeps
        the node alive with heartbeats while it waits)."""
        while self._sock is not None:
            self.heartbeat()
            yield from self.poll(timeout)

    def log_stats(self) -> None:
        """One line for the node's log: what arrived from whom, what was lost, the clock."""
        c = self.counters
        log.info("sent %d (%.1f MB); received %d %s; stale skipped %d, undecodable %d, "
                 "missing references %d, keyframes asked of us %d; clock offset %s ms (rtt %s ms)",
                 c.sent, c.sent_bytes / 1e6, c.received, c.received_by_sender, c.skipped_stale,
                 c.decode_errors, c.missing_reference, c.keyframe_requests,
                 "?" if self.offset is None else f"{self.offset * 1e3:.2f}",
                 "?" if self.rtt is None else f"{self.rtt * 1e3:.2f}")

    def heartbeat(self, interval: float = 1.0) -> None:
        """Tell the hub we are alive if nothing else was sent for ``interval`` seconds, and
        ask again to join when a re-join got no welcome within a second (the hub may have
        been paused, or its answer lost on the way)."""
        if time.monotonic() - self._last_sent >= interval:
            self._send(wire.header(MessageType.HEARTBEAT))
        if self._awaiting_welcome is not None and time.monotonic() - self._awaiting_welcome >= 1.0:
            self.counters.join_resent += 1
            self._rejoin()
        self.sync_clock()

    def _rejoin(self, forgotten: bool = False) -> None:
        self._forgotten |= forgotten
        self._awaiting_welcome = time.monotonic()
        self._send(self._join_header())

    def sync_clock(self, every: float = 2.0) -> None:
        """Ask the hub for the time (at most every ``every`` s); the reply arrives through
        ``poll``. Offsets from the 8 latest samples: the one with the shortest round trip."""
        if time.monotonic() >= self._next_sync:
            self._next_sync = time.monotonic() + every
            self._send(wire.header(MessageType.TIME, t0=self.clock()))

    def _time_reply(self, h: dict, t3: float) -> None:
        if not wire.need(h, "t0", "t1", "t2") or not h["t0"] <= t3:
            self.counters.malformed += 1
            return
        t0, t1, t2 = h["t0"], h["t1"], h["t2"]
        if abs(t1 - t0) > 1e7 or t2 < t1 or (t3 - t0) < (t2 - t1):  # a broken clock or a lie
            self.counters.malformed += 1
            return
        rtt = (t3 - t0) - (t2 - t1)
        self._time_samples.append((rtt, ((t1 - t0) + (t2 - t3)) / 2))
        rtt, offset = min(self._time_samples)
        # the true offset lies within rtt/2 of the estimate: where that includes zero (the
        # same machine, or synchronized clocks) applying it would only add noise
        self.rtt, self.offset = rtt, (0.0 if abs(offset) <= rtt / 2 else offset)

    def _to_local(self, head: dict) -> None:
        """Put a frame's stamps on our clock: the sender's via its offset, the hub's via ours."""
        ts, off = head["ts"], head.get("off")
        if self.offset is None:
            return
        for stage, t in ts.items():
            if stage.startswith("hub_"):
                ts[stage] = t - self.offset
            elif off is not None:
                ts[stage] = t + off - self.offset

    def _send(self, head: dict, payloads: list | tuple = ()) -> bool:
        try:
            self._sock.send_multipart(wire.encode(head, payloads), zmq.NOBLOCK, copy=False)
        except zmq.Again:  # the hub is not keeping up: drop this frame, never block capture
            return False
        self._last_sent = time.monotonic()
        return True

    # -- receiving -----------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> list[RemoteFrame]:
        """Wait up to ``timeout`` s for messages, drain them, decode the newest per sender.

        Every frame taken off the socket is credit handed back to the hub, which sends at
        most ``credit`` frames ahead and meanwhile keeps only each sender's newest: a node
        that stops polling holds up nobody and, when it polls again, gets fresh frames."""
        newest: dict[int, wire.Message] = {}
        self._hand_back_credit()
        if not self._sock.poll(int(timeout * 1000)):
            return []
        taken = 0
        reports: dict[int, list] = {}  # per sender that asked: arrivals, on the hub's clock
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            received = self.clock()
            try:
                msg = wire.decode(frames)
            except wire.FieldError as exc:
                taken += exc.kind == MessageType.FRAME  # the hub counted it against our credit
                self.counters.malformed += 1
                continue
            except wire.WireError:
                self.counters.malformed += 1
                continue
            if msg.type == MessageType.FRAME:
                taken += 1
                head = msg.header
                if not wire.need(head, "src", "seq", "ts") or len(msg.payloads) != 1:
                    self.counters.malformed += 1
                    continue
                src = head["src"]
                if src not in self.peers:  # never drawn at no seat: the hub told us of everyone
                    self.counters.unknown_sender += 1
                    continue
                self._to_local(head)
                head["ts"]["received"] = received
                if head.get("fb") is True:
                    reports.setdefault(src, []).append(
                        [head["seq"], received + (self.offset or 0.0), len(msg.payloads[0].buffer)])
                if src in newest:
                    self.counters.skipped_stale += 1
                newest[src] = msg
            else:
                self._control(msg)
        self._owed += taken
        self._hand_back_credit()
        for src, r in reports.items():
            self._send(wire.header(MessageType.FEEDBACK, to=src, r=r[-64:]))
        # a peer may have left, or lost its seat, after its frame came: such frames are not drawn
        # (nor decoded)
        return [f for f in (self._decode(m) for src, m in newest.items() if src in self.peers) if f is not None]

    def _hand_back_credit(self) -> None:
        """Tell the hub about drained frames. Credit whose message could not be queued is
        kept and retried on every poll, else a full queue would shrink the window for good."""
        while self._owed > 0:
            n = min(self._owed, 64)
            if not self._send(wire.header(MessageType.CREDIT, n=n)):
                return
            self._owed -= n

    def _decode(self, msg: wire.Message) -> RemoteFrame | None:
        head = msg.header
        payload = msg.payloads[0].buffer
        src = head["src"]
        if not self.decode:
            empty = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
            return self._frame(head, src, *empty, len(payload))
        try:
            positions, colors = self._decode_payload(src, payload)
            if not (np.isfinite(positions).all() if len(positions) else True):
                raise codec.CodecError("positions that are not finite")
        except codec.MissingReference:  # we skipped or lost the frame this one continues
            self.counters.missing_reference += 1
            if time.monotonic() - self._asked_key.get(src, -1.0) >= 0.5:
                self._asked_key[src] = time.monotonic()
                self._send(wire.header(MessageType.KEYFRAME, of=src))
            return None
        except codec.CodecError as exc:
            self.counters.decode_errors += 1
            log.warning("dropped an undecodable frame from %s: %s", head.get("src"), exc)
            return None
        return self._frame(head, src, positions, colors, len(payload))

    def _frame(self, head: dict, src: int, positions, colors, nbytes: int) -> RemoteFrame:
        ts = head["ts"]
        ts["decoded"] = self.clock()
        peer = self.peers.get(src) or Peer(src, f"id{src}", -1)
        c = self.counters
        c.received += 1
        c.received_bytes += nbytes
        c.received_by_sender[peer.name] = c.received_by_sender.get(peer.name, 0) + 1
        return RemoteFrame(src, peer.name, peer.seat, head["seq"], positions, colors, ts, nbytes)

    def _decode_payload(self, src: int, payload) -> tuple[np.ndarray, np.ndarray]:
        """Decode within the hub's points-per-frame limit: a stream that declares more is
        refused before anything is allocated for it."""
        if codec.container.peek_codec_id(payload) == codec.OctreeCodec.codec_id:
            return self._decoders.setdefault(src, codec.OctreeDecoder()).decode(payload, max_points=self.max_points)
        return codec.decode(payload, max_points=self.max_points)

    def _control(self, msg: wire.Message) -> None:
        h = msg.header
        if msg.type == MessageType.JOINED:
            if not wire.need(h, "id", "name", "seat") or h["id"] == self.id or (self.seats and h["seat"] >= self.seats):
                self.counters.malformed += 1
                return
            if h["seat"] == self.seat:  # our seat is someone else's: the hub forgot us, ask again
                self._rejoin(forgotten=True)
            for other in [p for p in self.peers.values() if p.seat == h["seat"]]:
                self.peers.pop(other.id)  # nobody keeps a seat given to someone else
            self.peers[h["id"]] = Peer(h["id"], h["name"], h["seat"])
            log.info("%s joined at seat %s", h["name"], h["seat"])
        elif msg.type == MessageType.LEFT:
            if not wire.need(h, "id"):
                self.counters.malformed += 1
                return
            peer = self.peers.pop(h["id"], None)
            self._decoders.pop(h["id"], None)
            log.info("%s left (%s)", peer.name if peer else h["id"], h.get("reason"))
        elif msg.type == MessageType.REFUSED:
            log.warning("the hub refused a message: %s", h.get("reason"))
        elif msg.type == MessageType.REJOIN and time.monotonic() - self._rejoined >= 0.5:
            # the hub restarted (or dropped us): join again; the welcome renews id and seat
            log.warning("the hub no longer knows us: joining room %r again", self.room)
            self._rejoined = time.monotonic()
            self.counters.rejoins += 1
            self._rejoin(forgotten=True)
        elif msg.type == MessageType.WELCOME:
            self._welcome(h)
        elif msg.type == MessageType.TIME:
            self._time_reply(h, self.clock())
        elif msg.type == MessageType.FEEDBACK:
            self._feedback(h)
        elif msg.type == MessageType.KEYFRAME:
            if not wire.need(h, "from"):
                self.counters.malformed += 1
                return
            self.counters.keyframe_requests += 1
            if hasattr(self.encoder, "request_keyframe"):  # stateless codecs send nothing else
                self.encoder.request_keyframe()


    def _feedback(self, h: dict) -> None:
        """A receiver's arrival reports of our frames, handed to ``on_feedback`` on our clock."""
        if self.on_feedback is None or not wire.need(h, "from", "r"):
            return
        receiver = h["from"]
        for r in h["r"]:
            if r[0] not in self._sent_log:
                continue
            sent, nbytes = self._sent_log[r[0]]
            arrived = r[1] - (self.offset or 0.0)
            if -1.0 <= arrived - sent <= 30.0:  # else a broken clock or a lie: not evidence
                self.on_feedback(receiver, r[0], sent, arrived, nbytes)


def query_stats(hub: str, security: NodeSecurity | None = None, timeout: float = 3.0,
                insecure: bool = False, room: str | None = None, token: str | None = None) -> dict:
    """The hub's counters and, per room we may see, each member's traffic (``holoport
    stats``), gathered over as many pages as the hub has. ``room`` and ``token`` show a
    room that has a token."""
    require_loopback(hub, insecure, "hub", encrypted=security is not None)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, 16 * 1024 * 1024)
    ask = {k: v for k, v in (("room", room), ("token", token)) if v is not None}
    merged: dict = {}
    left = MAX_STATS_BYTES  # what the answers may take in all, whatever the other side says
    try:
        if security is not None:
            security.apply(sock)
        sock.connect(hub)
        page, pages = 0, 1
        while page < pages:
            sock.send_multipart(wire.encode(wire.header(MessageType.STATS, page=page, **ask)))
            if not sock.poll(int(timeout * 1000)):
                raise JoinError(f"no hub answered at {hub} within {timeout:.0f} s; is one running there "
                                f"(`holoport hub --bind {hub}`)? An encrypted hub answers only with --key "
                                "and --hub-key")
            try:
                frames = sock.recv_multipart()
                left -= sum(len(f) for f in frames)
                if left < 0:
                    raise JoinError(f"the hub at {hub} sent more than {MAX_STATS_BYTES >> 20} MB of statistics")
                msg = wire.decode(frames)
                body = msgpack.unpackb(msg.payloads[0], raw=False, strict_map_key=False) if msg.payloads else None
            except wire.VersionError as exc:  # a hub of another release: its refusal says why
                raise JoinError(f"the hub refused: {exc.refusal}" if exc.refusal is not None
                                else f"the hub at {hub} answered in another format: {exc}") from None
            except (wire.WireError, ValueError, msgpack.UnpackException) as exc:
                raise JoinError(f"the hub at {hub} answered in another format: {exc}") from None
            if msg.type != MessageType.STATS or not _stats_page(body):
                raise JoinError(f"the hub at {hub} answered without statistics")
            pages = min(msg.header.get("pages", 1), 10_000)
            rooms = merged.setdefault("rooms", {})
            merged.update({k: v for k, v in body.items() if k != "rooms"})
            for name, members in body["rooms"].items():
                rooms.setdefault(name, []).extend(members)
            page += 1
    finally:
        sock.close()
    return merged


MAX_STATS_BYTES = 64 << 20  # all pages of one stats answer together (4,000 members take ~1 MB)


def _stats_page(body: object) -> bool:
    """Whether a stats page has the shape ``holoport stats`` reads: rooms of member maps."""
    return (isinstance(body, dict) and isinstance(body.get("rooms"), dict)
            and all(isinstance(name, str) and isinstance(members, list) and all(isinstance(m, dict) for m in members)
                    for name, members in body["rooms"].items()))
