"""A real-time link relay: a TCP proxy whose two directions behave like a 5G link's.

A participant's node connects to the relay instead of the hub; for every connection the
relay opens one to the hub and pumps bytes both ways, client -> hub through the uplink
:class:`~holoport.link.model.Link` and hub -> client through the downlink. Each chunk read
is handed to ``link.send(now, size)`` and written to the other side when the model says it
arrives, in order. The bytes are opaque, so plain and CURVE-encrypted ZeroMQ both pass.

Why it looks the way it does:

- **A byte stream, not packets.** ZeroMQ runs over TCP, so the relay can only delay bytes,
  never drop or reorder them: loss costs the retransmission delay the model states, and the
  link must be ``reliable``. Frames are dropped where Holoport drops them: at the hub's
  newest-frame slots and at the sender's full socket.
- **Backpressure.** A direction stops reading while the link's queue needs more than 200 ms
  to send (``QUEUE_S``: a base station's buffer for one user, shared by all of the user's
  connections, as the link is); TCP flow control then pushes back to the ZeroMQ sender,
  whose queue fills and whose frames are skipped, as on a real uplink, instead of the relay
  buffering without limit. Bytes that are only propagating (delay, retransmission waits)
  do not count, so delay and loss cost time but not rate, as the model says. The relay
  reads straight from its sockets (no user-space buffer) and keeps their kernel receive
  buffers at 64 KiB, so little hides on the loopback side; the sender's own socket buffers
  are the sender's (see docs/link-relay.md).
- **Chunks of about 10 ms.** A chunk is delivered whole when its last byte arrives, so a
  chunk that ends one message and starts the next delays the first by the second's share.
  Reads are therefore capped at 10 ms of the link's current capacity (at least 8 KiB, at
  most 64 KiB): 10 KB at 8 Mbit/s, 64 KiB from 52 Mbit/s up.
- **Fair queueing, if asked** (``fair=True``). A phone puts a fair-queueing qdisc in front
  of its radio (FQ-CoDel is the default on Apple platforms and on most Linux systems
  through systemd's ``net.core.default_qdisc``; the RAN schedules per bearer too), so a
  sparse flow such as voice on its own socket passes a bulk flow (a hologram) that has built
  a queue, instead of waiting behind its 200 ms. Each connection then keeps its own pending
  chunks (read while they and the link's queue need less than QUEUE_S to send: one
  connection alone has the same backpressure and totals as without), and one scheduler per
  direction hands them to the link only while the link's own queue is short (a few ms, as
  BQL keeps a NIC's ring), choosing among connections by deficit round robin with
  FQ-CoDel's sparse-flow rule: a connection that had nothing pending gets the next turn.
  Without it, as before, one FIFO serves every connection.
- **One asyncio loop in a background thread.** Every wait is a timed sleep or an event, no
  polling; all link calls happen on that thread (a lock guards the status reads from
  others), so the link sees non-decreasing times, as it requires.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from holoport.link.model import Delivery, Link

log = logging.getLogger("holoport.link.relay")

READ_MAX = 64 * 1024  # the largest chunk handed to the link at once
READ_MIN = 8 * 1024  # the smallest cap on a read, whatever the capacity
READ_SLICE_S = 0.010  # reads are capped at this much of the link's current capacity
QUEUE_S = 0.200  # stop reading while the link's queue holds more than this much sending...
HOLD_MAX = 64 * 1024 * 1024  # ...or a direction holds this many bytes undelivered (memory's sake)
SOCKET_RCVBUF = 64 * 1024  # the relay's sockets' kernel receive buffers (fixed: no autotuning)
RETRY_S = 0.2  # between attempts to reach the target
# fair queueing: the link's own queue is refilled while it holds less than this, so a sparse
# connection's chunk waits this plus at most one chunk behind a bulk one; short enough for
# voice, long enough that a late timer (the GIL, a busy core) does not leave the link idle
FAIR_LINK_QUEUE_S = READ_SLICE_S / 2
# deficit round robin's quantum, bytes a turn: FQ-CoDel's is one packet; ours are chunks,
# read in at most this many bytes at low rates, so a turn is one such chunk
FAIR_QUANTUM = READ_MIN
# ...and with fair queueing reads are finer: a chunk is delivered whole, so a sparse
# connection's message can wait for the bulk chunk being "transmitted"; fq_codel schedules
# packets, and 8 KiB at 5 Mbit/s would be 13 ms, so chunks here are 2.5 ms of capacity, at
# least one packet (1448 bytes)
FAIR_READ_SLICE_S = 0.0025
FAIR_READ_MIN = 1448


def parse_tcp(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` as (host, port); ``*`` means every interface."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ValueError(f"expected an endpoint like tcp://127.0.0.1:5556, got {endpoint!r}")
    host = "0.0.0.0" if parts.hostname == "*" else parts.hostname
    return host, port


def _tcp(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


@dataclass
class RelayCounters:
    """What went through; read from any thread (plain ints, updated on the relay's)."""

    connections: int = 0  # accepted from clients
    open: int = 0  # pairs relaying now
    target_failures: int = 0  # clients closed because the target could not be reached
    bytes_up: int = 0  # delivered client -> target
    bytes_down: int = 0  # delivered target -> client
    lost_up: int = 0  # packets the uplink lost (and resent, at the model's cost in delay)
    lost_down: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Pipe:
    """One direction of one connection: read -> link -> deliver at the arrival time."""

    def __init__(self, relay: LinkRelay, link: Link, up: bool, src: socket.socket, dst: socket.socket,
                 fair: _FairLink | None = None) -> None:
        self.relay, self.link, self.up = relay, link, up
        self.src, self.dst = src, dst
        self.fair = fair  # None: chunks go to the link as they are read (one FIFO for all)
        self.queue: deque[tuple[float, bytes]] = deque()  # (monotonic delivery time, bytes)
        self.held = 0  # bytes read and not yet written
        self.eof = False
        self.delivered = asyncio.Event()  # wakes the reader paused on backpressure
        self.arrived = asyncio.Event()  # wakes the writer waiting for a chunk
        # fair queueing only: chunks read and not yet handed to the link, and the scheduler's state
        self.pending: deque[tuple[float, bytes]] = deque()  # (links' time when read, bytes)
        self.pending_bytes = 0
        self.deficit = 0  # deficit round robin's credit, bytes
        self.listed = False  # on the scheduler's new or old list
        self.taken = asyncio.Event()  # wakes the reader paused while its pending bytes fill its share

    async def run(self) -> None:
        """Returns when the source ended and everything read was delivered, or at once
        (raising) when the destination fails."""
        reader = asyncio.create_task(self._take())
        try:
            await self._deliver()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if self.fair is not None:
                self.fair.forget(self)

    def to_link(self, chunk: bytes, at: float | None = None) -> None:
        """Send ``chunk`` over the link now (or as of the links' time ``at``); the writer
        delivers it when the link says."""
        relay = self.relay
        delivery = relay.send(self.link, len(chunk), at)
        assert delivery.arrival is not None  # reliable links always deliver
        self.queue.append((relay.t0 + delivery.arrival, chunk))
        if delivery.lost_packets:
            if self.up:
                relay.counters.lost_up += delivery.lost_packets
            else:
                relay.counters.lost_down += delivery.lost_packets
        self.arrived.set()

    async def _take(self) -> None:
        relay, link, fair = self.relay, self.link, self.fair
        loop = asyncio.get_running_loop()
        try:
            while True:
                if fair is None:
                    if (wait := relay.queue_wait(link)) > 0:  # the link's queue is full
                        await asyncio.sleep(wait)
                        continue
                elif (ahead := relay.ahead(link, self.pending_bytes)) >= QUEUE_S:
                    if self.pending_bytes:  # the scheduler taking some of them makes room
                        self.taken.clear()
                        await self.taken.wait()
                    else:  # the link's own queue alone (an outage): wait it out, as without
                        await asyncio.sleep(ahead - QUEUE_S)
                    continue
                if self.held > HOLD_MAX:  # bytes waiting out a long delay: bound the memory
                    self.delivered.clear()
                    await self.delivered.wait()
                    continue
                # straight from the kernel, no user-space buffer: what is not read yet stays
                # in TCP's window and pushes back to the sender
                chunk = await loop.sock_recv(self.src, relay.read_size(link))
                if not chunk:
                    return
                self.held += len(chunk)
                if fair is None:
                    self.to_link(chunk)
                else:
                    fair.add(self, chunk)
        except OSError as exc:  # a reset is the end of this side's stream
            log.debug("link relay: read ended by %r", exc)
        except Exception:  # never expected; still end this side cleanly
            log.exception("link relay: reading failed")
        finally:
            self.eof = True
            self.arrived.set()

    async def _deliver(self) -> None:
        counters = self.relay.counters
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                if self.eof and not self.pending:
                    return
                self.arrived.clear()
                await self.arrived.wait()
                continue
            wait = self.queue[0][0] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            due = []
            while self.queue and self.queue[0][0] <= now:
                due.append(self.queue.popleft()[1])
            if not due:  # woken a hair early
                continue
            data = due[0] if len(due) == 1 else b"".join(due)
            await loop.sock_sendall(self.dst, data)  # the far side's TCP window pushes back here
            self.held -= len(data)
            if self.up:
                counters.bytes_up += len(data)
            else:
                counters.bytes_down += len(data)
            self.delivered.set()


class _FairLink:
    """One direction's scheduler with fair queueing: FQ-CoDel's flow scheduler (RFC 8290,
    section 4.2) over connections, with whole chunks for packets (a chunk is the unit the
    link delivers, so splitting one would change what a lone connection sees). It keeps
    the link's own queue under FAIR_LINK_QUEUE_S, so that the choice of what goes next is
    made here, where a sparse connection can still pass a bulk one."""

    def __init__(self, relay: LinkRelay, link: Link) -> None:
        self.relay, self.link = relay, link
        self.new: deque[_Pipe] = deque()  # connections that had nothing pending: served first
        self.old: deque[_Pipe] = deque()
        self.woken = asyncio.Event()
        self.sent = 0.0  # the links' time of the last chunk handed to the link (never decreases)

    def add(self, pipe: _Pipe, chunk: bytes) -> None:
        pipe.pending.append((self.relay.now(), chunk))
        pipe.pending_bytes += len(chunk)
        if not pipe.listed:
            pipe.listed = True
            pipe.deficit = FAIR_QUANTUM
            self.new.append(pipe)
        self.woken.set()

    def forget(self, pipe: _Pipe) -> None:
        """A pipe that ended: what it had pending is lost with its connection."""
        for flows in (self.new, self.old):
            with contextlib.suppress(ValueError):
                flows.remove(pipe)
        pipe.listed = False
        pipe.pending.clear()
        pipe.pending_bytes = 0

    def _next(self) -> _Pipe | None:
        """The pipe whose chunk goes next: new connections first, deficit round robin."""
        while self.new or self.old:
            flows = self.new or self.old
            pipe = flows[0]
            if pipe.deficit <= 0:  # its turn is used up: credit for the next, to the back
                pipe.deficit += FAIR_QUANTUM
                flows.popleft()
                self.old.append(pipe)
            elif not pipe.pending:
                flows.popleft()
                # a new connection that emptied goes through the old ones once before it
                # may count as new again, so a flow cannot stay "new" by sending in bursts
                if flows is self.new and self.old:
                    self.old.append(pipe)
                else:
                    pipe.listed = False
            else:
                return pipe
        return None

    async def run(self) -> None:
        relay, link = self.relay, self.link
        while True:
            if not (self.new or self.old):
                self.woken.clear()
                await self.woken.wait()
                continue
            if (wait := relay.backlog(link) - FAIR_LINK_QUEUE_S) > 0:
                await asyncio.sleep(wait)
                continue
            pipe = self._next()
            if pipe is None:
                continue
            read, chunk = pipe.pending.popleft()
            pipe.pending_bytes -= len(chunk)
            pipe.deficit -= len(chunk)
            # as of when it could have gone: a timer that fired late (a busy core, the GIL)
            # must not leave the link idle while bytes were waiting, as the deep FIFO never does
            self.sent = min(relay.now(), max(self.sent, read))
            pipe.to_link(chunk, self.sent)
            pipe.taken.set()


class LinkRelay:
    """``with LinkRelay("tcp://127.0.0.1:0", hub, up, down) as relay:`` relays in a thread;
    connect to ``relay.endpoint``. One uplink and one downlink serve every connection, as a
    participant's access link carries all its sockets. ``fair``: the connections share each
    direction by fair queueing (a sparse one, such as voice on its own socket, passes a bulk
    one) instead of one FIFO."""

    def __init__(self, listen: str, target: str, uplink: Link, downlink: Link,
                 connect_timeout: float = 10.0, fair: bool = False) -> None:
        for name, link in (("uplink", uplink), ("downlink", downlink)):
            if not link.config.reliable:
                raise ValueError(f"the {name} is unreliable (datagram) but the relay carries a TCP "
                                 f"byte stream, which can only be delayed: use a reliable link")
        self.listen = listen
        self.target = target
        self._listen_at = parse_tcp(listen)
        self._target_at = parse_tcp(target)
        self.uplink = uplink
        self.downlink = downlink
        self.connect_timeout = connect_timeout  # how long a client waits for the target to answer
        self.fair = fair
        self._fair_links: dict[bool, _FairLink] = {}  # up -> scheduler, while running with fair
        self.counters = RelayCounters()
        self.endpoint: str | None = None
        self.t0 = 0.0  # time.monotonic() at the links' time 0
        self._lock = threading.Lock()  # the links are not thread-safe; status reads come from elsewhere
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._pairs: set[asyncio.Task] = set()
        self._startup_error: BaseException | None = None

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> LinkRelay:
        """Bind and start relaying; raises RuntimeError when the address cannot be bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, args=(ready,), name="holoport-link-relay",
                                        daemon=True)
        self._thread.start()
        ready.wait(10)
        if self._startup_error is not None or self.endpoint is None:
            self._thread.join(timeout=5)
            self._thread = None
            raise RuntimeError(f"the link relay cannot listen on {self.listen}: "
                               f"{self._startup_error or 'it did not start'}; pick another address "
                               f"or port (port 0 picks a free one)")
        log.info("link relay on %s -> %s (up %s, down %s%s)", self.endpoint, self.target,
                 self.uplink.trace.name, self.downlink.trace.name, "; fair queueing" if self.fair else "")
        return self

    def stop(self, grace: float = 0.0) -> None:
        """Close the listener and every connection. With ``grace``, first wait up to that
        many seconds for connections whose client has closed to deliver what they hold (a
        node's last words, its LEAVE, are still on the link when it closes); the rest of the
        undelivered bytes are lost."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if grace > 0 and loop is not None:
            with contextlib.suppress(RuntimeError, TimeoutError, concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self._settle(grace), loop).result(grace + 1)
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> LinkRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the pipes ask --------------------------------------------------------------
    def now(self) -> float:
        """Seconds on the links' clock (0 until the relay starts)."""
        return time.monotonic() - self.t0 if self.t0 else 0.0

    def send(self, link: Link, nbytes: int, at: float | None = None) -> Delivery:
        """``nbytes`` leave now, or at the links' time ``at`` (not before the last send)."""
        with self._lock:
            return link.send(self.now() if at is None else at, nbytes)

    def capacity(self, link: Link) -> float:
        """The link's capacity now, bit/s (0 during an outage)."""
        with self._lock:
            return link.capacity_at(self.now())

    def queue_wait(self, link: Link) -> float:
        """Seconds until the link's queue (shared by every connection, like a base station's
        buffer for one user) needs at most QUEUE_S to send; <= 0: read now. Bytes already sent
        and only propagating (delay, retransmission waits) do not count: the model says
        delay and loss cost time, not rate."""
        with self._lock:
            return link.busy_until - self.now() - QUEUE_S

    def backlog(self, link: Link) -> float:
        """Seconds the link's own queue needs to send what it holds (<= 0: idle)."""
        with self._lock:
            return link.busy_until - self.now()

    def ahead(self, link: Link, pending: int) -> float:
        """Fair queueing: seconds of sending ahead of a connection's next byte, counting
        its own ``pending`` bytes at the link's capacity now and the link's queue (infinite
        while the capacity is 0 and bytes are pending). One connection alone is thus held to
        the QUEUE_S that the link's queue is held to without fair queueing."""
        with self._lock:
            now = self.now()
            ahead = max(0.0, link.busy_until - now)
            if pending:
                rate = link.capacity_at(now)
                ahead += pending * 8 / rate if rate > 0 else math.inf
            return ahead

    def read_size(self, link: Link) -> int:
        if self.fair:
            return int(min(READ_MAX, max(FAIR_READ_MIN, self.capacity(link) * FAIR_READ_SLICE_S / 8)))
        return int(min(READ_MAX, max(READ_MIN, self.capacity(link) * READ_SLICE_S / 8)))

    def snapshot(self) -> dict:
        """Counters plus each direction's capacity now (Mbit/s), for status lines."""
        return {**self.counters.as_dict(), "up_capacity_mbps": self.capacity(self.uplink) / 1e6,
                "down_capacity_mbps": self.capacity(self.downlink) / 1e6}

    # -- the loop thread -----------------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # never leave start() waiting
            self._startup_error = self._startup_error or exc
            log.exception("link relay failed")
        finally:
            ready.set()
            loop.close()
            self._loop = None

    async def _main(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        host, port = self._listen_at
        try:
            listener = socket.create_server((host, port), family=_family(host))
        except OSError as exc:
            self._startup_error = exc
            ready.set()
            return
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF)  # accepted ones inherit it
        listener.setblocking(False)
        bound = listener.getsockname()
        self.endpoint = _tcp(bound[0], bound[1])
        self.t0 = self.t0 or time.monotonic()  # a restarted relay goes on with the links' clock
        if self.fair:
            self._fair_links = {True: _FairLink(self, self.uplink), False: _FairLink(self, self.downlink)}
        schedulers = [asyncio.create_task(f.run()) for f in self._fair_links.values()]
        ready.set()
        accepting = asyncio.create_task(self._accept(listener))
        try:
            await self._stopping.wait()
        finally:
            accepting.cancel()
            pairs = [accepting, *self._pairs, *schedulers]
            for task in pairs:
                task.cancel()
            await asyncio.gather(*pairs, return_exceptions=True)
            listener.close()

    async def _settle(self, grace: float) -> None:
        if self._pairs:
            await asyncio.wait(list(self._pairs), timeout=grace)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors, say: wait and go on
                log.warning("link relay: accept failed: %r", exc)
                await asyncio.sleep(RETRY_S)
                continue
            task = asyncio.create_task(self._serve_pair(client))
            self._pairs.add(task)
            task.add_done_callback(self._pairs.discard)

    async def _open_target(self) -> socket.socket | None:
        """A connection to the target, retried every RETRY_S for ``connect_timeout`` s: a hub
        that is restarting or not started yet looks to the client like a slow answer, as it
        would without the relay, rather than a closed connection."""
        host, port = self._target_at
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.connect_timeout
        while True:
            sock = _socket(_family(host))
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)),
                                       max(0.1, deadline - time.monotonic()))
                return sock
            except (OSError, asyncio.TimeoutError) as exc:
                sock.close()
                if time.monotonic() + RETRY_S > deadline:
                    log.warning("link relay: %s did not answer within %g s (%r); closing the client",
                                self.target, self.connect_timeout, exc)
                    return None
                await asyncio.sleep(RETRY_S)
            except BaseException:
                sock.close()
                raise

    async def _serve_pair(self, client: socket.socket) -> None:
        counters = self.counters
        counters.connections += 1
        target: socket.socket | None = None
        try:
            _tune(client)
            target = await self._open_target()
            if target is None:
                counters.target_failures += 1
                return
            counters.open += 1
            fair = self._fair_links
            up = asyncio.create_task(_Pipe(self, self.uplink, True, client, target, fair.get(True)).run())
            down = asyncio.create_task(_Pipe(self, self.downlink, False, target, client, fair.get(False)).run())
            try:  # either side ending (after its last bytes are through) ends the pair
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                counters.open -= 1
                for t in (up, down):
                    t.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # stop(): close at once
        except Exception as exc:  # a broken connection must never take the relay down
            log.warning("link relay: connection ended by %r", exc)
        finally:
            for sock in (client, target):
                if sock is not None:
                    sock.close()  # what the kernel holds still goes out, then FIN


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _tune(sock: socket.socket) -> None:
    """Non-blocking, no Nagle (ZeroMQ sets TCP_NODELAY on its own sockets too), and a small
    receive buffer, so that bytes the relay has not read stay in the sender's window."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF)


def _socket(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    _tune(sock)
    return sock
