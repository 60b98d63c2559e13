"""Choosing a hub of a cluster, and choosing again when it dies (docs/cluster.md).

A participant learns the cluster's live hubs from the directory (``holoport.cluster``'s
Registry, over Redis) or from any hub of the cluster (the ``hubs`` request), measures its
round trip to each at once, and ranks them: the nearest edge first, the least loaded among
hubs about as near. It joins the best that admits it. When that hub falls silent it ranks
again, fresh from the directory or a live hub when one answers, else from its last ranking
less the dead hub, and joins the best of the rest (``holoport.participant``).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import zmq
from zmq.utils import z85

from holoport import wire
from holoport.clock import ClockSync
from holoport.endpoints import require_loopback
from holoport.security import KeyPair, NodeSecurity
from holoport.session import JoinError
from holoport.wire import MessageType

log = logging.getLogger("holoport.hub_choice")

NEAR_S = 0.002  # round trips within max(NEAR_S, NEAR_SHARE x the best) of the best count as
NEAR_SHARE = 0.25  # equally near: measurement noise must not outweigh a hub's load
ASK_TIMEOUT = 1.0  # s a hub has to answer "hubs" before joining
REASK_TIMEOUT = 0.25  # s each live hub gets to answer "hubs" during a failover
MEASURE_TIMEOUT = 0.3  # s for all round-trip measurements together


class NoAnswer(JoinError):
    """Nothing answered the ``hubs`` request in time (no hub there, or a handshake that
    failed: joining it says which)."""


@dataclass
class Candidate:
    """A hub a participant may join, with its load as the directory last saw it."""

    id: int
    site: str
    endpoint: str
    key: str = ""  # z85 public key of its participant-facing CURVE key; "" for a plain hub
    members: int = 0
    mbps: float = 0.0
    cpu: float = 0.0
    serves: bool = False  # it has members of the room already
    rtt: float | None = None  # s, the shortest measured round trip; None: not reached in time


def from_records(records: Iterable, room: str) -> list[Candidate]:
    """Candidates from the directory's ``HubRecord``s (``Registry.hubs()``)."""
    return [Candidate(r.id, r.site, r.endpoint, r.key, r.members, r.mbps, r.cpu, r.serves(room)) for r in records]


def hub_key(candidate: Candidate) -> bytes | None:
    """The candidate's CURVE public key (z85, as ZeroMQ takes it), None for a plain hub;
    ValueError for one that is not a 32-byte key."""
    if not candidate.key:
        return None
    try:
        if len(candidate.key) == 40 and len(z85.decode(candidate.key)) == 32:
            return candidate.key.encode()
    except (KeyError, ValueError, struct.error):  # a character outside z85's alphabet, or a value past 32 bits
        pass
    raise ValueError(f"hub {candidate.id} advertises a key that is not a CURVE public key")


def candidate_security(candidate: Candidate, keys: KeyPair | None) -> NodeSecurity | None:
    """How to reach ``candidate``: CURVE with our key pair and its key, or plain."""
    public = hub_key(candidate)
    if public is None:
        return None
    if keys is None:
        raise ValueError(f"hub {candidate.id} ({candidate.endpoint}) encrypts: pass --key (our secret key)")
    return NodeSecurity(keys, public)


def usable(candidates: Iterable[Candidate], keys: KeyPair | None, insecure: bool) -> list[Candidate]:
    """The candidates we may reach: a valid endpoint and key, our key pair for an encrypting
    hub, and a plain hub only on this machine (or with --insecure); the rest are logged."""
    out = []
    for c in candidates:
        try:
            security = candidate_security(c, keys)
            require_loopback(c.endpoint, insecure, "hub", encrypted=security is not None)
        except ValueError as exc:
            log.warning("left out hub %s: %s", c.id, exc)
            continue
        out.append(c)
    return out


def _dealer(endpoint: str, security: NodeSecurity | None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_HEADER_BYTES)
    if security is not None:
        security.apply(sock)
    sock.connect(endpoint)
    return sock


def ask_hub(endpoint: str, room: str, security: NodeSecurity | None, insecure: bool,
            timeout: float = ASK_TIMEOUT) -> list[Candidate]:
    """The cluster's hubs as the hub at ``endpoint`` knows them: [] for a hub outside any
    cluster. Raises :class:`NoAnswer` when nothing answers in time, JoinError for an answer
    that is not a valid hub list (refused whole: a hub that lies is not trusted in part)."""
    require_loopback(endpoint, insecure, "hub", encrypted=security is not None)
    sock = _dealer(endpoint, security)
    try:
        sock.send_multipart(wire.encode(wire.header(MessageType.HUBS, room=room)))
        if not sock.poll(int(timeout * 1000)):
            raise NoAnswer(f"no hub answered at {endpoint} within {timeout:g} s")
        try:
            msg = wire.decode(sock.recv_multipart())
        except wire.VersionError as exc:  # a hub of another release: its refusal says why
            raise JoinError(f"the hub refused to admit us: {exc.refusal}" if exc.refusal is not None
                            else f"the hub at {endpoint} answered in another format: {exc}") from None
        except wire.WireError as exc:
            raise JoinError(f"the hub at {endpoint} answered with a malformed hub list: {exc}") from None
    finally:
        sock.close()
    if msg.type == MessageType.REJOIN:  # a hub of a release before clusters: it serves alone
        return []
    if msg.type == MessageType.REFUSED:
        raise JoinError(f"the hub at {endpoint} refused: {msg.header.get('reason')}")
    if msg.type != MessageType.HUBS or not wire.need(msg.header, "hubs"):
        raise JoinError(f"the hub at {endpoint} answered without a hub list")
    out = [Candidate(h["id"], h["site"], h["endpoint"], h["key"], h["members"], h["mbps"], h["cpu"], h["room"])
           for h in msg.header["hubs"]]
    for c in out:  # checked here, once: every later use of the key can then trust it
        try:
            hub_key(c)
        except ValueError as exc:
            raise JoinError(f"the hub at {endpoint} answered with a malformed hub list: {exc}") from None
    return out


def measure(candidates: list[Candidate], keys: KeyPair | None, insecure: bool, samples: int = 3,
            timeout: float = MEASURE_TIMEOUT) -> list[Candidate]:
    """The candidates with ``rtt`` set: the shortest of ``samples`` time round trips to each
    (the first includes setting up the connection), all measured at once within ``timeout``;
    None for a hub that did not answer in time, or that we may not reach (``usable``)."""
    reachable = {id(c) for c in usable(candidates, keys, insecure)}
    socks: dict[zmq.Socket, tuple[int, ClockSync]] = {}
    poller = zmq.Poller()
    try:
        for i, c in enumerate(candidates):
            if id(c) not in reachable:
                continue
            sock = _dealer(c.endpoint, candidate_security(c, keys))
            sync = ClockSync()
            sock.send_multipart(wire.encode(sync.request(every=0.0)))
            socks[sock] = (i, sync)
            poller.register(sock, zmq.POLLIN)
        answered = dict.fromkeys(socks, 0)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and any(n < samples for n in answered.values()):
            for sock, _ in poller.poll(int(left * 1000) + 1):
                i, sync = socks[sock]
                try:
                    msg = wire.decode(sock.recv_multipart(zmq.NOBLOCK))
                except (zmq.Again, wire.WireError):
                    continue
                if msg.type != MessageType.TIME or not sync.on_reply(msg.header, sync.clock()):
                    continue  # not an answer to our question (or an impossible one): no sample
                answered[sock] += 1
                if answered[sock] < samples:
                    sock.send_multipart(wire.encode(sync.request(every=0.0)))
        rtts = {i: sync.rtt for i, sync in socks.values()}
    finally:
        for sock in socks:
            sock.close()
    return [replace(c, rtt=rtts.get(i)) for i, c in enumerate(candidates)]


def rank(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Best first: the nearest hubs (round trip), and among hubs about as near as the
    nearest (within max(2 ms, 25 %)) the least loaded (members, then Mbit/s); a hub that
    already serves the room wins only a tie of load. Then the next group of equally near
    hubs, and so on; hubs not reached last, least loaded first."""
    candidates = list(candidates)

    def load(c: Candidate) -> tuple:
        return c.members, c.mbps, not c.serves

    measured = sorted((c for c in candidates if c.rtt is not None), key=lambda c: (c.rtt, c.id))
    out: list[Candidate] = []
    while measured:
        best = measured[0].rtt
        edge = best + max(NEAR_S, NEAR_SHARE * best)
        near = [c for c in measured if c.rtt <= edge]  # a prefix: measured is sorted
        measured = measured[len(near):]
        out += sorted(near, key=lambda c: (*load(c), c.rtt, c.id))
    return out + sorted((c for c in candidates if c.rtt is None), key=lambda c: (*load(c), c.id))


class HubChooser:
    """A participant's hubs: where the candidates come from (the directory at ``cluster``,
    the hub at ``hub``, or a given list), each ranking, and the last one to fall back on
    when neither the directory nor any hub answers during a failover."""

    def __init__(self, room: str, keys: KeyPair | None, insecure: bool, *, cluster: str | None = None,
                 password_file: str | None = None, hub: str | None = None,
                 hub_security: NodeSecurity | None = None, candidates: list[Candidate] | None = None) -> None:
        if sum(x is not None for x in (cluster, hub, candidates)) != 1:
            raise ValueError("candidates come from one place: a cluster URL, a hub, or a list")
        self.room = room
        self.keys = keys
        self.insecure = insecure
        self.hub = hub
        self.hub_security = hub_security
        self.last: list[Candidate] = list(candidates or [])
        self._registry = None
        if cluster is not None:  # imported here: redis takes 0.15 s to import, needless outside a cluster
            from holoport.cluster import Registry

            self._registry = Registry.from_options(cluster, password_file=password_file)

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()

    def security(self, candidate: Candidate) -> NodeSecurity | None:
        return candidate_security(candidate, self.keys)

    def first(self) -> list[Candidate]:
        """The ranking to join by; [] when ``hub`` is not in a cluster, or does not answer
        (joining it then gives the reason, as it always has)."""
        if self._registry is not None:
            from holoport.cluster import ClusterError

            try:
                records = self._registry.hubs()
            except ClusterError as exc:
                raise JoinError(f"the cluster's directory: {exc}") from None
            if not records:
                raise JoinError("the cluster's directory lists no live hub: start one with `holoport hub --cluster`")
            found = from_records(records, self.room)
        elif self.hub is not None:
            try:
                found = ask_hub(self.hub, self.room, self.hub_security, self.insecure)
            except NoAnswer:
                return []
            if not found:
                return []
        else:
            found = self.last
        if not (ranked := self._rank(found)):
            raise JoinError(f"none of the cluster's {len(found)} hubs may be reached from here (see the warnings: "
                            "--key for hubs that encrypt, --insecure for plain hubs on other machines)")
        return ranked

    def again(self, dead: str | None = None) -> list[Candidate]:
        """A fresh ranking after the hub at ``dead`` fell silent: from the directory, or the
        best live hub of the last ranking that answers, else the last ranking itself; the
        dead hub left out (its lease outlives it by up to 2 s). Never raises."""
        found: list[Candidate] | None = None
        if self._registry is not None:
            from holoport.cluster import ClusterError

            try:
                found = from_records(self._registry.hubs(), self.room)
            except ClusterError as exc:
                log.warning("the cluster's directory did not answer (%s): ranking the hubs we knew", exc)
        elif self.hub is not None:
            for c in [c for c in self.last if c.endpoint != dead][:2]:
                try:
                    found = ask_hub(c.endpoint, self.room, self.security(c), self.insecure, REASK_TIMEOUT) or None
                except (JoinError, ValueError):
                    continue
                break
        return self._rank([c for c in (found or self.last) if c.endpoint != dead])

    def _rank(self, candidates: list[Candidate]) -> list[Candidate]:
        self.last = rank(measure(usable(candidates, self.keys, self.insecure), self.keys, self.insecure))
        log.info("hubs ranked for room %r: %s", self.room, ", ".join(
            f"{c.id}@{c.site or '?'} {'-' if c.rtt is None else f'{c.rtt * 1e3:.1f} ms'} {c.members} members"
            for c in self.last))
        return self.last


def choose(room: str, *, cluster: str | None = None, password_file: str | None = None, hub: str | None = None,
           hub_security: NodeSecurity | None = None, keys: KeyPair | None = None,
           insecure: bool = False) -> list[Candidate]:
    """The ranked hubs for ``room``, from the directory at ``cluster`` or from the hub at
    ``hub`` ([] when that hub serves alone)."""
    chooser = HubChooser(room, keys, insecure, cluster=cluster, password_file=password_file, hub=hub,
                         hub_security=hub_security)
    try:
        return chooser.first()
    finally:
        chooser.close()
