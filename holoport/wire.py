"""The Holoport wire format: every message is a ZeroMQ multipart message.

Frame 0 is a msgpack map, the header; frames 1.. are raw payload bytes (a codec stream
describes itself). Every header carries:

    v     int    protocol version (PROTOCOL_VERSION); another version is refused
    type  str    one of the MessageType values
and, as the type needs them:
    room  str    the room's name
    src   int    sender's participant id (the hub stamps it on forwarded frames)
    seq   int    the sender's sequence number
    ts    map    wall-clock seconds (time.time()) of each stage a frame passed:
                 capture, captured, encoded, sent, hub_in, hub_out
    key   bool   on frames: decodes on its own (absent: treat as true)
    off   float  on frames: the sender's clock offset to the hub (hub - sender), so that a
                 receiver can put every stamp on its own clock (``Node`` does)

Readers ignore keys they do not know, so fields can be added without a version change.
``decode`` validates sizes before parsing and raises :class:`WireError` for anything
malformed, so the hub can drop a bad message, count it and keep serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_FRAMES = 8


class MessageType:
    JOIN = "join"  # node -> hub: room, name
    WELCOME = "welcome"  # hub -> node: id, seat, seats, members
    REFUSED = "refused"  # hub -> node: reason
    JOINED = "joined"  # hub -> members: someone arrived (id, name, seat)
    LEFT = "left"  # hub -> members: someone left or timed out (id)
    FRAME = "frame"  # node -> hub -> members: a codec stream in payload frame 1
    LEAVE = "leave"  # node -> hub
    HEARTBEAT = "heartbeat"  # node -> hub, when it has nothing else to send
    STATS = "stats"  # anyone -> hub: request; hub -> asker: its counters
    CREDIT = "credit"  # node -> hub: n more frames may be sent to this node
    REJOIN = "rejoin"  # hub -> node: you are not a member (the hub restarted, or timed you out)
    KEYFRAME = "keyframe"  # node -> hub: "of" id needs a keyframe; hub -> that node: "from" id
    TIME = "time"  # node -> hub: t0 (node clock); hub -> node: t0, t1 received, t2 sent (hub clock)
    FEEDBACK = "feedback"  # node -> hub: "to" id, "r" [[seq, arrived (hub clock), bytes], ...]
    #                        of frames marked "fb"; hub -> that node: "from" id, "r"

    ALL = frozenset({JOIN, WELCOME, REFUSED, JOINED, LEFT, FRAME, LEAVE, HEARTBEAT, STATS, CREDIT,
                       REJOIN, TIME, KEYFRAME, FEEDBACK})


class WireError(ValueError):
    """A message that is not valid Holoport wire format."""


class VersionError(WireError):
    """A well-formed message of another protocol version. Its header is kept: a refusal
    (``type`` "refused", ``reason``) is the one message every version can read."""

    def __init__(self, version: Any, header: dict | None = None) -> None:
        super().__init__(
            f"protocol version {version!r} is not supported: this side speaks version "
            f"{PROTOCOL_VERSION}; run the same Holoport release on every node and the hub"
        )
        self.version = version
        self.header = header or {}

    @property
    def refusal(self) -> str | None:
        """The other side's reason, when the message is a refusal."""
        reason = self.header.get("reason")
        if self.header.get("type") == MessageType.REFUSED and isinstance(reason, str):
            return reason[:1000]
        return None


@dataclass
class Message:
    header: dict
    payloads: list = field(default_factory=list)  # bytes, memoryview or zmq.Frame

    @property
    def type(self) -> str:
        return self.header["type"]


def header(type_: str, **fields: Any) -> dict:
    """A header of ``type_`` at this protocol version."""
    if type_ not in MessageType.ALL:
        raise ValueError(f"unknown message type {type_!r}")
    return {"v": PROTOCOL_VERSION, "type": type_, **fields}


def encode(head: dict, payloads: list | tuple = ()) -> list:
    """The frames to pass to ``send_multipart``."""
    if len(payloads) > MAX_PAYLOAD_FRAMES:
        raise ValueError(f"{len(payloads)} payload frames exceed {MAX_PAYLOAD_FRAMES}")
    return [msgpack.packb(head, use_bin_type=True), *payloads]


def decode(frames: list) -> Message:
    """Parse and validate the frames of one message (routing identity already removed)."""
    if not frames:
        raise WireError("empty message")
    if len(frames) > 1 + MAX_PAYLOAD_FRAMES:
        raise WireError(f"{len(frames) - 1} payload frames exceed {MAX_PAYLOAD_FRAMES}")
    raw = frames[0]
    raw = raw.buffer if hasattr(raw, "buffer") else raw  # zmq.Frame
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        head = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"header is not msgpack: {exc}") from None
    if not isinstance(head, dict):
        raise WireError(f"header must be a map, got {type(head).__name__}")
    version = head.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise WireError("header has no integer protocol version 'v'")
    if version != PROTOCOL_VERSION:
        raise VersionError(version, head)
    kind = head.get("type")
    if not isinstance(kind, str) or kind not in MessageType.ALL:
        raise WireError(f"unknown message type {kind!r}")
    return Message(head, list(frames[1:]))
