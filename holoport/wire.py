"""The Holoport wire format: every message is a ZeroMQ multipart message.

Frame 0 is a msgpack map, the header; frames 1.. are raw payload bytes (a codec stream
describes itself). Every header carries:

    v     int    protocol version (PROTOCOL_VERSION); another version is refused
    type  str    one of the MessageType values
and, as the type needs them:
    room  str    the room's name
    src   int    sender's participant id (the hub stamps it on forwarded frames)
    seq   int    the sender's sequence number (one count over all of its streams)
    stream int   on frames and keyframe requests: which of the sender's streams (0, the
                 hologram, when absent; a second camera view or voice are others), so a
                 receiver keeps one decoder per (sender, stream)
    ts    map    wall-clock seconds (time.time()) of each stage a frame passed:
                 capture, captured, encoded, sent, hub_in, hub_out; a frame that came
                 from another hub of a cluster also carries that hub's as up_in, up_out
    key   bool   on frames: decodes on its own (absent: treat as true)
    off   float  on frames: the sender's clock offset to the hub (hub - sender), so that a
                 receiver can put every stamp on its own clock (``Node`` does)
    layer int    on frames of a layered stream (``codec.layered``): which part of the frame
                 this message carries (0, the base, when absent); every part is its own
                 message with its own ``seq``, and ``base`` names the seq of the frame's
                 base part, and the base lists every part's bytes in ``sizes``. The hub
                 forwards to each receiver the base and as many enhancement parts, in
                 order, as that receiver's downlink carries in time (``holoport.layers``);
                 only base parts take credit

Voice travels as "audio" messages (one Opus packet each, ``codec.opus``) on a second
connection of the node's, which introduces itself with "attach" (the member's id and the
secret ``vkey`` of its welcome): the hub forwards each one at once to every member that
listens, in order, never held for credit nor replaced (``holoport.voice``).

Readers ignore keys they do not know, so fields can be added without a version change.
``decode`` validates sizes before parsing and raises :class:`WireError` for anything
malformed, so the hub can drop a bad message, count it and keep serving.

Every field a reader acts on is checked against one schema (``SCHEMA``), by the hub on
what it receives and by the node on what the hub forwards: ``decode`` returns a header
that holds only the schema's fields, each of its declared type and range, so a handler
can index it without guarding against a string where a number belongs, a NaN, a map
with integer keys or a missing stage. The hub rebuilds every forwarded frame's header
from these fields; a node treats what arrives as untrusted all the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_PAYLOAD_FRAMES = 8
DEFAULT_MAX_POINTS = 1 << 20  # points per frame a hub admits unless told otherwise (--max-points)


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
    #                        of frames marked "fb"; hub -> that node: "from" id, "r"; or, for
    #                        a layered sender, "up": the hub's own arrival times of its frames
    AUDIO = "audio"  # node -> hub -> members: one voice packet (payload frame 1), on the voice socket
    ATTACH = "attach"  # a node's voice socket -> hub: id, vkey (from the welcome); hub -> it: id
    HUBS = "hubs"  # anyone -> hub: room; hub -> asker: the cluster's live hubs (docs/cluster.md)
    # hub <-> hub, on the cascade socket (docs/cluster.md):
    LINK = "link"  # subscriber -> publisher: room, hub, cascade, credit
    LINKED = "linked"  # publisher -> subscriber: room, hub, members (with "at", when each joined)
    UNLINK = "unlink"  # subscriber -> publisher: room

    ALL = frozenset({JOIN, WELCOME, REFUSED, JOINED, LEFT, FRAME, LEAVE, HEARTBEAT, STATS, CREDIT,
                       REJOIN, TIME, KEYFRAME, FEEDBACK, AUDIO, ATTACH, HUBS, LINK, LINKED, UNLINK})


class WireError(ValueError):
    """A message that is not valid Holoport wire format."""


class FieldError(WireError):
    """A message of a known type with a field of the wrong type or range."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


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


# -- the schema: every field a reader acts on, with its type and range ------------------
Check = Callable[[Any], Any]  # returns the clean value, or raises ValueError
MAX_ID = (1 << 53) - 1  # ids and sequence numbers stay exact as msgpack and float
MAX_STAGES = 16  # time stamps in one frame's ``ts``


def _int(lo: int, hi: int) -> Check:
    def check(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"an integer in {lo}..{hi}")
        return v
    return check


def _float(limit: float) -> Check:
    def check(v: Any) -> float:
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or abs(v) > limit:
            raise ValueError(f"a finite number within ±{limit:g}")
        return float(v)
    return check


def _str(lo: int, hi: int) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or not lo <= len(v) <= hi:
            raise ValueError(f"a string of {lo}..{hi} characters")
        return v
    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


_time = _float(1e12)  # seconds on some participant's clock


def _stamps(v: Any) -> dict[str, float]:
    if not isinstance(v, dict) or len(v) > MAX_STAGES:
        raise ValueError(f"a map of at most {MAX_STAGES} stage names to times")
    return {_str(1, 32)(k): _time(t) for k, t in v.items()}


def _reports(v: Any) -> list[list]:
    if not isinstance(v, list) or not 0 < len(v) <= MAX_REPORTS:
        raise ValueError(f"a list of 1..{MAX_REPORTS} [seq, arrived, bytes] reports")
    seq, size = _int(0, MAX_ID), _int(0, 1 << 40)
    out = []
    for r in v:
        if not isinstance(r, list) or len(r) != 3:
            raise ValueError("reports of [seq, arrived, bytes]")
        out.append([seq(r[0]), _time(r[1]), size(r[2])])
    return out


def _sizes(v: Any) -> list[int]:
    if not isinstance(v, list) or not 0 < len(v) <= MAX_LAYERS:
        raise ValueError(f"a list of 1..{MAX_LAYERS} part sizes")
    size = _int(0, 1 << 31)
    return [size(n) for n in v]


def _members(v: Any) -> list[dict]:
    if not isinstance(v, list) or len(v) > MAX_SEATS:
        raise ValueError(f"a list of at most {MAX_SEATS} members")
    out = []
    for m in v:
        if not isinstance(m, dict):
            raise ValueError("members as maps of id, name, seat")
        out.append({"id": _id(m.get("id")), "name": _name(m.get("name")), "seat": _seat(m.get("seat"))})
    return out


def _linked_members(v: Any) -> list[dict]:
    if not isinstance(v, list) or len(v) > MAX_SEATS:
        raise ValueError(f"a list of at most {MAX_SEATS} members")
    out = []
    for m in v:
        if not isinstance(m, dict):
            raise ValueError("members as maps of id, name, seat, at")
        out.append({"id": _id(m.get("id")), "name": _name(m.get("name")), "seat": _seat(m.get("seat")),
                    "at": _time(m.get("at"))})
    return out


def _hub_list(v: Any) -> list[dict]:
    if not isinstance(v, list) or len(v) > MAX_HUBS:
        raise ValueError(f"a list of at most {MAX_HUBS} hubs")
    out = []
    for h in v:
        if not isinstance(h, dict):
            raise ValueError("hubs as maps of id, site, endpoint, key, members, mbps, cpu, room")
        out.append({"id": _hub_no(h.get("id")), "site": _str(0, 64)(h.get("site")),
                    "endpoint": _endpoint(h.get("endpoint")), "key": _str(0, 64)(h.get("key", "")),
                    "members": _int(0, 1 << 31)(h.get("members", 0)), "mbps": _float(1e9)(h.get("mbps", 0.0)),
                    "cpu": _float(1e6)(h.get("cpu", 0.0)), "room": _bool(h.get("room", False))})
    return out


MAX_SEATS = 16
MAX_HUBS = 64  # hubs one "hubs" answer lists, at most
MAX_HUB_NO = (1 << 21) - 1  # a cluster's hub numbers: member ids are hub << 32 | k, within MAX_ID
_hub_no = _int(0, MAX_HUB_NO)
_endpoint = _str(6, 256)
MAX_REPORTS = 64  # arrival reports per feedback message
MAX_CREDIT = 64  # frames a receiver may have in flight, at most
MAX_STREAMS = 8  # streams one participant may send (hologram views, voice); "stream" 0 if absent
MAX_LAYERS = 8  # parts of one layered frame, at most
_id, _seat, _name = _int(1, MAX_ID), _int(0, MAX_SEATS - 1), _str(0, 64)

# per message type: field -> check. A field that is present must pass its check (else the
# whole message is malformed); absent fields stay absent, and each handler says which it
# needs (``need``). Fields not listed are dropped on decode.
SCHEMA: dict[str, dict[str, Check]] = {
    "join": {"room": _str(1, 64), "name": _name, "credit": _int(1, MAX_CREDIT), "token": _str(0, 256)},
    "welcome": {"room": _str(1, 64), "id": _id, "name": _name, "seat": _seat, "seats": _int(2, MAX_SEATS),
                "members": _members, "max_points": _int(1, 1 << 26), "vkey": _str(16, 64)},
    "refused": {"reason": _str(0, 1000), "retry": _bool},  # retry: it may pass in a few seconds
    # "room" and "at" (when it joined, hub clock) only between hubs, where one link carries many rooms
    "joined": {"id": _id, "name": _name, "seat": _seat, "room": _str(1, 64), "at": _time},
    "left": {"id": _id, "reason": _str(0, 200), "room": _str(1, 64)},
    "frame": {"room": _str(1, 64), "src": _id, "seq": _int(0, MAX_ID), "ts": _stamps, "key": _bool,
              "points": _int(0, 1 << 26), "off": _float(1e6), "fb": _bool, "stream": _int(0, MAX_STREAMS - 1),
              "layer": _int(0, MAX_LAYERS - 1), "base": _int(0, MAX_ID), "sizes": _sizes},
    "leave": {"room": _str(0, 64)},
    "heartbeat": {},
    "stats": {"page": _int(0, 1 << 20), "pages": _int(1, 1 << 20), "token": _str(0, 256), "room": _str(1, 64)},
    "credit": {"n": _int(1, MAX_CREDIT), "room": _str(1, 64)},
    "rejoin": {},
    "keyframe": {"of": _id, "from": _id, "stream": _int(0, MAX_STREAMS - 1)},
    "time": {"t0": _time, "t1": _time, "t2": _time},
    "feedback": {"to": _id, "from": _id, "r": _reports, "up": _bool},
    # voice: seq counts the packets of one voice stream (a gap is a loss; a jump of "t" with
    # no gap is silence the sender did not send); "t" is the first sample's capture time on
    # the sender's clock and "off" that clock's offset to the hub's, as on frames
    "audio": {"room": _str(1, 64), "src": _id, "seq": _int(0, MAX_ID), "t": _time, "off": _float(1e6),
              "vad": _bool, "stream": _int(0, MAX_STREAMS - 1), "hin": _time, "hout": _time},
    "attach": {"id": _id, "vkey": _str(16, 64)},
    "hubs": {"room": _str(1, 64), "hubs": _hub_list},
    "link": {"room": _str(1, 64), "hub": _hub_no, "cascade": _endpoint, "credit": _int(1, MAX_CREDIT)},
    "linked": {"room": _str(1, 64), "hub": _hub_no, "members": _linked_members},
    "unlink": {"room": _str(1, 64)},
}
MAX_AUDIO_BYTES = 4000  # one voice packet: Opus's largest 20 ms frame (1275 bytes) three times over


def need(head: dict, *names: str) -> bool:
    """Whether a validated header has every field a handler needs."""
    return all(n in head for n in names)


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
        raise WireError(f"too many payload frames: {len(frames) - 1}, at most {MAX_PAYLOAD_FRAMES}")
    raw = frames[0]
    raw = raw.buffer if hasattr(raw, "buffer") else raw  # zmq.Frame
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError(f"header too large: {len(raw)} bytes, at most {MAX_HEADER_BYTES}")
    try:
        head = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"header is not msgpack: {exc}") from None
    if not isinstance(head, dict):
        raise WireError(f"header is not a map: {type(head).__name__}")
    version = head.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise WireError("header has no integer protocol version 'v'")
    if version != PROTOCOL_VERSION:
        raise VersionError(version, head)
    kind = head.get("type")
    if not isinstance(kind, str) or kind not in MessageType.ALL:
        raise WireError("unknown message type")
    return Message(validate(kind, head), list(frames[1:]))


def validate(kind: str, head: dict) -> dict:
    """The header with only ``kind``'s schema fields, each checked (``WireError`` names the
    first bad one; the text is fixed, never the sender's, so counts keyed by it stay few)."""
    clean = {"v": PROTOCOL_VERSION, "type": kind}
    for name, check in SCHEMA[kind].items():
        if name in head:
            try:
                clean[name] = check(head[name])
            except (ValueError, TypeError) as exc:
                raise FieldError(kind, f"{kind} field '{name}' must be {exc}") from None
    return clean
