"""A participant node: a session with the hub (``holoport.session``) and the streams that
travel over it: encoded frames out (``holoport.sender``), decoded frames in
(``holoport.receiver``), the clock (``holoport.clock``) and the receive window
(``holoport.credits``).

Usable as a library::

    with Node("tcp://127.0.0.1:5555", room="demo", name="ana") as node:
        node.send(Cloud(positions, colors))
        for frame in node.poll(timeout=0.1):
            print(frame.name, frame.positions.shape)

``poll`` drains everything that arrived, keeps only the newest frame per (sender, stream)
(older ones are counted as skipped, never decoded), and decodes those; a frame that fails
to decode is counted and dropped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import zmq

import codec
from holoport import wire
from holoport.clock import ClockSync
from holoport.credits import CreditWindow
from holoport.receiver import LayeredFrames, Receivers, RemoteFrame, StreamKey, keyframe_request
from holoport.security import NodeSecurity
from holoport.sender import FeedbackCallback, Senders
from holoport.session import JoinError, NodeCounters, Peer, Session
from holoport.wire import MessageType

__all__ = ["JoinError", "Node", "NodeCounters", "Peer", "RemoteFrame"]

log = logging.getLogger("holoport.node")


class Node(Session):
    def __init__(
        self,
        hub: str = "tcp://127.0.0.1:5555",
        room: str = "main",
        name: str = "",
        encoder: codec.Encoder | codec.Codec | None = None,
        join_timeout: float = 5.0,
        insecure: bool = False,
        max_message_bytes: int = 64 * 1024 * 1024,
        security: NodeSecurity | None = None,
        credit: int = 4,
        token: str | None = None,
        clock: Callable[[], float] = time.time,
        decode: bool = True,
    ) -> None:
        """``encoder``: stream 0's (the hologram), or a codec whose stream encoder to use
        (default: the baseline codec's); ``add_stream`` adds more."""
        self.credits = CreditWindow(credit)
        super().__init__(hub, room, name, join_timeout, insecure, max_message_bytes, security,
                         credit, token)
        self.clock = clock  # wall clock, seconds; stamps from elsewhere are converted to it
        self.sync = ClockSync(clock)
        self.time_every = 2.0  # s between time requests; shorter where the answers also tell the hub is alive
        self._time_asked = -math.inf
        self.decode = decode  # False: frames come back as payload sizes and stamps only (relays, load tests)
        self.senders = Senders(_stream_encoder(encoder))
        self.receivers = Receivers(self.counters)
        self.layered = LayeredFrames()

    # -- what the session tells us ------------------------------------------------------
    def start(self) -> Node:
        super().start()
        self.sync_clock()  # the first sample, answered while the first frames arrive
        return self

    def _membership(self, new: bool) -> None:
        self.receivers.forget()  # ids may be new (a restarted hub): streams start again
        self.layered.forget()
        self.credits.reset()

    def _peer_left(self, peer_id: int) -> None:
        self.receivers.forget(peer_id)
        self.layered.forget(peer_id)

    # -- the clock ------------------------------------------------------------------------
    @property
    def offset(self) -> float | None:
        """Hub clock minus ours, seconds (None until the first answer)."""
        return self.sync.offset

    @property
    def rtt(self) -> float | None:
        return self.sync.rtt

    def sync_clock(self, every: float | None = None) -> None:
        """Ask the hub for the time (at most every ``every`` s, default ``time_every``); the
        reply arrives through ``poll``, and until anything does the hub owes us one
        (``silent_for``): also when the question could not be queued, for a queue that stays
        full is a connection where nothing leaves (a dead hub's, once it has filled)."""
        now = time.monotonic()
        if now - self._time_asked < (self.time_every if every is None else every):
            return
        self._time_asked = now
        self._send(self.sync.request(every=0.0))
        self._asked()

    def heartbeat(self, interval: float = 1.0) -> None:
        super().heartbeat(interval)
        self.sync_clock()

    def move_to(self, hub: str, security: NodeSecurity | None, join_timeout: float | None = None) -> None:
        self.sync = ClockSync(self.clock)  # another hub, maybe another machine: its clock anew
        self._time_asked = -math.inf
        super().move_to(hub, security, join_timeout)

    # -- sending -------------------------------------------------------------------------
    @property
    def encoder(self) -> codec.Encoder:
        """Stream 0's encoder (the hologram); assign another to switch (rate control)."""
        return self.senders.encoders[0]

    @encoder.setter
    def encoder(self, encoder: codec.Encoder | codec.Codec) -> None:
        self.senders.encoders[0] = _stream_encoder(encoder)

    @property
    def on_feedback(self) -> FeedbackCallback | None:
        """Set it to have our frames ask their receivers for arrival reports ("fb"), which
        reach it as (receiver id, seq, sent, arrived, bytes) on our clock."""
        return self.senders.on_feedback

    @on_feedback.setter
    def on_feedback(self, callback: FeedbackCallback | None) -> None:
        self.senders.on_feedback = callback

    def add_stream(self, encoder: codec.Encoder | codec.Codec) -> int:
        """Another stream of ours (a second camera view, voice); returns its number."""
        return self.senders.add(_stream_encoder(encoder))

    def send(self, frame, ts: dict | None = None, stream: int = 0) -> dict:
        """Encode and send one frame of ``stream`` (a :class:`codec.Cloud` or (positions,
        colors) for a hologram); returns the header it went out with."""
        if ts is not None and not isinstance(ts, dict):
            raise TypeError("send(frame, ts): pass one frame, e.g. Cloud(positions, colors)")
        ts = dict(ts or {})
        ts.setdefault("capture", self.clock())
        encoded = self.senders.encode(stream, frame)
        ts["encoded"] = self.clock()
        return self.send_encoded(encoded.payload, encoded.points, ts, encoded.keyframe, stream)

    def send_layers(self, parts: list[bytes], points: int, ts: dict | None = None, stream: int = 0) -> list[dict]:
        """Send one frame of a layered stream (``codec.layered``), base first, each part its
        own message: the hub sends each receiver as many parts as its downlink carries in
        time. Returns the headers they went out with."""
        if not 1 <= len(parts) <= wire.MAX_LAYERS:
            raise ValueError(f"a layered frame has 1..{wire.MAX_LAYERS} parts, not {len(parts)}")
        heads = [self.send_encoded(parts[0], points, ts, True, stream, layer=0, sizes=[len(p) for p in parts])]
        for i, part in enumerate(parts[1:], 1):
            heads.append(self.send_encoded(part, points, ts, True, stream, layer=i, base=heads[0]["seq"]))
        return heads

    def send_encoded(self, payload: bytes, points: int, ts: dict | None = None, key: bool = True,
                     stream: int = 0, **fields) -> dict:
        """Send a frame that is already a codec stream (a recording, a load test)."""
        ts = dict(ts or {})
        seq = self.senders.next_seq()
        head = wire.header(MessageType.FRAME, room=self.room, seq=seq, ts=ts, points=points, key=key,
                           stream=stream, **fields)
        if self.offset is not None:
            head["off"] = self.offset
        if self.on_feedback is not None:
            head["fb"] = True
        ts["sent"] = self.clock()
        if self._send(head, [payload]):
            self.counters.sent += 1
            self.counters.sent_bytes += len(payload)
            self.senders.sent(seq, ts["sent"], len(payload))
        return head

    def sent_frame(self, seq: int) -> tuple[float, int] | None:
        """(sent at, payload bytes) of one of our recent frames, while ``on_feedback`` is set."""
        return self.senders.sent_frame(seq)

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

    # -- receiving -----------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> list[RemoteFrame]:
        """Wait up to ``timeout`` s for messages, drain them, decode the newest per (sender,
        stream).

        Every frame taken off the socket is credit handed back to the hub, which sends at
        most ``credit`` frames ahead and meanwhile keeps only each stream's newest: a node
        that stops polling holds up nobody and, when it polls again, gets fresh frames."""
        newest: dict[StreamKey, wire.Message] = {}
        upgraded: set[StreamKey] = set()  # layered frames that gained parts
        self.credits.hand_back(self._send)
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
            self._heard()
            try:
                msg = wire.decode(frames)
            except wire.FieldError as exc:
                taken += exc.kind == MessageType.FRAME  # the hub counted it against our credit
                self.counters.malformed += 1
                continue
            except wire.WireError:
                self.counters.malformed += 1
                continue
            if msg.type != MessageType.FRAME:
                self._control(msg)
                continue
            head = msg.header
            taken += head.get("layer", 0) == 0  # enhancement parts take no credit
            if not wire.need(head, "src", "seq", "ts") or len(msg.payloads) != 1:
                self.counters.malformed += 1
                continue
            src = head["src"]
            if src not in self.peers:  # never drawn at no seat: the hub told us of everyone
                self.counters.unknown_sender += 1
                continue
            self.sync.to_local(head)
            head["ts"]["received"] = received
            if head.get("fb") is True:
                reports.setdefault(src, []).append(
                    [head["seq"], self.sync.to_hub(received), len(msg.payloads[0].buffer)])
            key = (src, head.get("stream", 0))
            if head.get("layer", 0) > 0:
                if self.layered.add(key, head, msg.payloads[0]):
                    upgraded.add(key)
                continue
            if key in newest:
                self.counters.skipped_stale += 1
            newest[key] = msg
            if "layer" in head:
                self.layered.start(key, head, msg.payloads[0])
        self.credits.taken(taken)
        self.credits.hand_back(self._send)
        for src, r in reports.items():
            self._send(wire.header(MessageType.FEEDBACK, to=src, r=r[-wire.MAX_REPORTS:]))
        # a peer may have left, or lost its seat, after its frame came: such frames are not drawn
        # (nor decoded)
        decoded = [self._decode(k, m) for k, m in newest.items() if k[0] in self.peers]
        decoded += [self._decode_parts(k) for k in upgraded - set(newest) if k[0] in self.peers]
        return [f for f in decoded if f is not None]

    def _decode(self, key: StreamKey, msg: wire.Message) -> RemoteFrame | None:
        if "layer" in msg.header:
            return self._decode_parts(key)
        payload = msg.payloads[0].buffer
        if not self.decode:
            return self._frame(key, msg.header, codec.Cloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)),
                               len(payload))
        try:
            frame = self.receivers.decode(key, payload, self.max_points)
        except codec.MissingReference:  # we skipped or lost the frame this one continues
            if self.receivers.should_ask(key):
                self._send(keyframe_request(key))
            return None
        return None if frame is None else self._frame(key, msg.header, frame, len(payload))

    def _decode_parts(self, key: StreamKey) -> RemoteFrame | None:
        """The newest layered frame of ``key`` at every part that has come so far."""
        pending = self.layered.frames.get(key)
        if pending is None:
            return None
        parts = pending.ready()
        if not self.decode:
            frame = codec.Cloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
        else:
            frame = self.receivers.decode_parts(key, parts, self.max_points)
            if frame is None:
                return None
        pending.shown = len(parts)
        out = self._frame(key, dict(pending.head, ts=dict(pending.head["ts"])), frame, sum(len(p) for p in parts))
        out.layers = len(parts)
        return out

    def _frame(self, key: StreamKey, head: dict, frame, nbytes: int) -> RemoteFrame:
        ts = head["ts"]
        ts["decoded"] = self.clock()
        src = key[0]
        peer = self.peers.get(src) or Peer(src, f"id{src}", -1)
        c = self.counters
        c.received += 1
        c.received_bytes += nbytes
        c.received_by_sender[peer.name] = c.received_by_sender.get(peer.name, 0) + 1
        return RemoteFrame(src, peer.name, peer.seat, head["seq"], frame, ts, nbytes, key[1])

    def _control(self, msg: wire.Message) -> None:
        if self._roster(msg):
            return
        h = msg.header
        if msg.type == MessageType.TIME:
            if not self.sync.on_reply(h, self.clock()):
                self.counters.malformed += 1
        elif msg.type == MessageType.FEEDBACK:
            self.senders.feedback(h, self.sync)
        elif msg.type == MessageType.KEYFRAME:
            if not wire.need(h, "from"):
                self.counters.malformed += 1
                return
            self.counters.keyframe_requests += 1
            self.senders.want_keyframe(h.get("stream", 0))


def _stream_encoder(encoder: codec.Encoder | codec.Codec | None) -> codec.Encoder:
    if encoder is None:
        return codec.BaselineCodec().encoder()
    if isinstance(encoder, codec.Codec):
        return encoder.encoder()
    if not isinstance(encoder, codec.Encoder):
        raise TypeError(f"a node sends with a codec.Encoder or a codec.Codec, not {type(encoder).__name__}")
    return encoder
