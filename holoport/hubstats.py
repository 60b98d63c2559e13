"""``holoport stats``: ask a hub for its counters and its rooms' traffic, page by page."""

from __future__ import annotations

import msgpack
import zmq

from holoport import wire
from holoport.endpoints import require_loopback
from holoport.security import NodeSecurity
from holoport.session import JoinError
from holoport.wire import MessageType


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
