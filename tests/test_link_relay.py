"""The link relay with real ZeroMQ sockets, a real hub and real processes: rate, delay, loss
(as retransmission delay, every byte intact and in order), CURVE, and the two commands.

Tolerances are stated where they are used; the figures measured here are in
docs/link-relay.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import statistics
import struct
import threading
import time

import numpy as np
import pytest
import zmq

from holoport.cli import main
from holoport.endpoints import free_tcp_endpoint
from holoport.hub import Hub
from holoport.link import Link, LinkConfig, Trace
from holoport.link.relay import LinkRelay, parse_tcp
from holoport.node import JoinError, Node
from holoport.security import HubSecurity, KeyPair, NodeSecurity, create_keys, load_public
from tests.conftest import spawn

CTX = zmq.Context.instance()


def _links(mbps: float, **config) -> tuple[Link, Link]:
    return (Link(Trace.constant(mbps), LinkConfig(**config), seed=1),
            Link(Trace.constant(mbps), LinkConfig(**config), seed=2))


def _socket(kind: int, **options) -> zmq.Socket:
    sock = CTX.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    return sock


@contextlib.contextmanager
def _echo_server():
    """A ROUTER that sends every message back as it came, in a thread."""
    endpoint = free_tcp_endpoint()
    router = _socket(zmq.ROUTER)
    router.bind(endpoint)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if router.poll(50):
                router.send_multipart(router.recv_multipart())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        stop.set()
        thread.join(2)
        router.close()


def _round_trips(endpoint: str, n: int, size: int) -> list[float]:
    """``n`` request/reply round trips of ``size`` bytes through ``endpoint`` (after one to
    set the connection up); the replies must be the requests, byte for byte; seconds."""
    req = _socket(zmq.REQ, RCVTIMEO=5000)
    req.connect(endpoint)
    rng = np.random.default_rng(0)
    times = []
    try:
        for i in range(n + 1):
            body = struct.pack("!I", i) + rng.bytes(size - 4)
            t = time.monotonic()
            req.send(body)
            assert req.recv() == body
            if i:
                times.append(time.monotonic() - t)
    finally:
        req.close()
    return times


def _closed(sock: socket.socket) -> bool:
    """The peer closed: end of stream, or a reset (a close with unread bytes sends one)."""
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


# -- the relay on its own -----------------------------------------------------------------
def test_rate_follows_the_link_and_the_sender_feels_backpressure():
    """Constant 8 Mbit/s, a sender pushing 80 kB messages as fast as its socket takes them
    for 2.5 s: goodput 8 Mbit/s +-15% (measured here: 8.00), and because the relay stops
    reading when the link's queue holds 200 ms, the backlog stays bounded: the last
    message's one-way time stays under 1 s (measured ~0.55 s: 200 ms link queue plus the
    sockets' buffers on both sides of the relay)."""
    size, seconds = 80_000, 2.5
    pull = _socket(zmq.PULL)
    target = free_tcp_endpoint()
    pull.bind(target)
    with LinkRelay("tcp://127.0.0.1:0", target, *_links(8.0, delay_ms=0.0)) as relay:
        # a small send buffer and queue, as a sender that wants to notice a slow link sets
        push = _socket(zmq.PUSH, SNDHWM=2, SNDBUF=64 * 1024, SNDTIMEO=100)
        push.connect(relay.endpoint)
        stop = threading.Event()

        def send():
            payload = bytes(size - 8)
            while not stop.is_set():
                with contextlib.suppress(zmq.Again):
                    push.send(struct.pack("!d", time.monotonic()) + payload)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        arrivals, one_way = [], []
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                if pull.poll(100):
                    msg = pull.recv()
                    now = time.monotonic()
                    assert len(msg) == size
                    arrivals.append(now)
                    one_way.append(now - struct.unpack("!d", msg[:8])[0])
        finally:
            stop.set()
            sender.join(2)
            push.close()
            pull.close()
    goodput = (len(arrivals) - 1) * size * 8 / (arrivals[-1] - arrivals[0]) / 1e6
    print(f"goodput {goodput:.3f} Mbit/s over {len(arrivals)} messages; one-way first "
          f"{one_way[0] * 1e3:.0f} ms, last {one_way[-1] * 1e3:.0f} ms")
    assert len(arrivals) >= 20
    assert goodput == pytest.approx(8.0, rel=0.15)
    assert one_way[0] >= size * 8 / 8e6 * 0.98  # an 80 kB message takes 80 ms at 8 Mbit/s
    assert one_way[-1] < 1.0
    assert relay.counters.bytes_up >= len(arrivals) * size
    assert relay.counters.connections == 1 and relay.counters.lost_up == 0


def test_delay_both_ways_makes_the_round_trip():
    """40 ms one way, both ways, 1 Gbit/s: request/reply round trips are 80 ms, never less,
    and not much more (the relay's timers and Python; measured ~81 ms median; 15 ms of
    slack for this shared 2-core machine under load)."""
    with _echo_server() as target, \
            LinkRelay("tcp://127.0.0.1:0", target, *_links(1000.0, delay_ms=40.0)) as relay:
        rtts = _round_trips(relay.endpoint, 20, 200)
    median = statistics.median(rtts)
    print(f"round trip min {min(rtts) * 1e3:.1f} median {median * 1e3:.1f} max {max(rtts) * 1e3:.1f} ms")
    assert min(rtts) >= 0.0799
    assert median <= 0.095


def test_loss_costs_retransmission_time_and_never_bytes():
    """A reliable link losing 15% of packets in bursts (mean 2), 20 ms each way. One-packet
    pings: every lost packet costs exactly one round trip (40 ms), as the model states, so
    each round trip is 40 ms plus 40 ms per packet the relay counted lost. Then 150
    messages of 20 kB (14 packets each) both ways: all arrive intact and in order."""
    rtt = 0.040
    up, down = _links(100.0, delay_ms=20.0, loss=0.15, burst=2.0)
    with _echo_server() as target, LinkRelay("tcp://127.0.0.1:0", target, up, down) as relay:
        _round_trips(relay.endpoint, 0, 1000)  # the handshake's losses are not ours
        before = relay.counters.lost_up + relay.counters.lost_down
        times = _round_trips(relay.endpoint, 60, 1000)  # 1000 B: one packet (mtu 1448)
        lost = relay.counters.lost_up + relay.counters.lost_down - before
        extra = [round((t - rtt) / rtt) for t in times]
        clean = [t for t, k in zip(times, extra, strict=True) if k == 0]
        one_lost = [t for t, k in zip(times, extra, strict=True) if k == 1]
        print(f"{lost} packets lost in 60 round trips; median without loss {statistics.median(clean) * 1e3:.1f} ms, "
              f"with one lost packet {statistics.median(one_lost or [0]) * 1e3:.1f} ms ({len(one_lost)} trips); "
              f"median of all {statistics.median(times) * 1e3:.1f}, mean {statistics.mean(times) * 1e3:.1f} ms")
        assert lost >= 1 and one_lost
        assert abs(sum(extra) - lost) <= 2  # a scheduler stall of this busy machine may add one
        assert statistics.median(one_lost) - statistics.median(clean) == pytest.approx(rtt, abs=0.005)
        assert statistics.mean(times) == pytest.approx(rtt * (1 + lost / len(times)), abs=0.010)

        dealer = _socket(zmq.DEALER, RCVTIMEO=10_000)
        dealer.connect(relay.endpoint)
        rng = np.random.default_rng(1)
        sent = [struct.pack("!I", i) + rng.bytes(20_000) for i in range(150)]
        try:
            for body in sent:
                dealer.send(body)
            got = [dealer.recv() for _ in sent]
        finally:
            dealer.close()
        assert got == sent
        assert relay.counters.lost_up > 10 and relay.counters.lost_down > 10


def test_stop_closes_everything_and_bad_connections_just_close():
    """A client whose target never answers is closed after the connect timeout; a client
    that sends garbage and vanishes costs nothing; stop() closes open pairs at once."""
    dead = free_tcp_endpoint()  # nobody listens here
    with LinkRelay("tcp://127.0.0.1:0", dead, *_links(100.0), connect_timeout=0.5) as relay:
        host, port = parse_tcp(relay.endpoint)
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"\xff" * 5000)
            assert _closed(s)
        assert relay.counters.target_failures == 1

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (in the kernel), never speaks
        target = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        relay = LinkRelay("tcp://127.0.0.1:0", target, *_links(100.0, delay_ms=5.0)).start()
        host, port = parse_tcp(relay.endpoint)
        garbage = socket.create_connection((host, port), timeout=3)
        garbage.sendall(os.urandom(3000))
        garbage.close()
        held = socket.create_connection((host, port), timeout=3)
        deadline = time.monotonic() + 3
        while (relay.counters.connections < 2 or relay.counters.open < 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        t = time.monotonic()
        relay.stop()
        assert time.monotonic() - t < 1.0
        assert _closed(held)
        held.close()
        assert relay.counters.connections == 2


@pytest.mark.parametrize("fair", [False, True], ids=["fifo", "fair"])
def test_stop_with_grace_delivers_a_closed_clients_last_bytes(fair):
    """What a client sent just before closing is still on the link (300 ms here): stop()
    drops it, stop(grace=1) lets it arrive first."""
    for grace, expected in ((0.0, b""), (1.0, b"last words")):
        with socket.create_server(("127.0.0.1", 0)) as sink:
            relay = LinkRelay("tcp://127.0.0.1:0", f"tcp://127.0.0.1:{sink.getsockname()[1]}",
                              *_links(100.0, delay_ms=300.0), fair=fair).start()
            with socket.create_connection(parse_tcp(relay.endpoint), timeout=3) as client:
                far, _ = sink.accept()
                client.sendall(b"last words")
            time.sleep(0.05)  # the relay has read them and seen the close
            relay.stop(grace=grace)
            far.settimeout(3)
            got = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := far.recv(100):
                    got += chunk
            far.close()
            assert got == expected


def test_a_relay_refuses_what_it_cannot_emulate():
    with pytest.raises(ValueError, match="reliable"):
        LinkRelay("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", *_links(10.0, reliable=False))
    with pytest.raises(ValueError, match="tcp://"):
        LinkRelay("ipc:///tmp/x", "tcp://127.0.0.1:9", *_links(10.0))
    with LinkRelay("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", *_links(10.0)) as first, \
            pytest.raises(RuntimeError, match="cannot listen"):
        LinkRelay(first.endpoint, "tcp://127.0.0.1:9", *_links(10.0)).start()


# -- fair queueing ------------------------------------------------------------------------------
LINK_MBPS, BULK = 5.0, 10_000


def test_fair_queueing_lets_a_sparse_connection_pass_a_bulk_one():
    """Voice beside a hologram on one 5 Mbit/s uplink (5 ms one way), each on its own TCP
    connection: 100 B every 20 ms, alone and then beside 10 kB records sent as fast as they
    go (benchmarks/relay_fairness.py). Without fair queueing the small records wait behind
    the bulk connection's 200 ms of queue (measured here: +205 ms at p50); with it they pass
    it and wait the link's short queue plus at most one bulk chunk (5 + 13 ms at this rate;
    measured: +11 ms at p50, +16 ms at p95), and the bulk connection still gets the link's
    rate. The sink checks every byte and its order."""
    from benchmarks.relay_fairness import measure

    def passes(r: dict) -> bool:
        return (r["small_p95_ms"] - r["alone_p95_ms"] <= 25 and r["small_p50_ms"] - r["alone_p50_ms"] <= 15
                and r["bulk_mbps"] >= 0.9 * LINK_MBPS)

    fifo = measure(False, LINK_MBPS, alone_s=0.7, seconds=2.0)
    for _ in range(2):  # a second try only if this shared machine stalled the first (load above 5)
        fair = measure(True, LINK_MBPS, alone_s=0.7, seconds=2.0)
        if passes(fair):
            break
    for r in (fifo, fair):
        print(f"{r['mode']}: small flow alone p50 {r['alone_p50_ms']:.1f} p95 {r['alone_p95_ms']:.1f} ms; "
              f"beside bulk p50 {r['small_p50_ms']:.1f} p95 {r['small_p95_ms']:.1f} ms ({r['n']} records); "
              f"bulk {r['bulk_mbps']:.2f} Mbit/s")
        assert r["n"] >= 60
        assert r["alone_p50_ms"] < 25  # 5 ms of delay plus the relay's timers (slower on a busy machine)
    assert fifo["small_p50_ms"] - fifo["alone_p50_ms"] > 150  # the test can fail: FIFO makes voice wait
    assert fifo["bulk_mbps"] == pytest.approx(LINK_MBPS, rel=0.1)
    assert fair["small_p95_ms"] - fair["alone_p95_ms"] <= 25
    assert fair["small_p50_ms"] - fair["alone_p50_ms"] <= 15
    assert fair["bulk_mbps"] == pytest.approx(LINK_MBPS, rel=0.1)


def test_fair_queueing_keeps_the_link_busy_through_relay_stalls():
    """The fair scheduler keeps the link's own queue short, so a relay thread that wakes
    late would leave the link idle; it hands a chunk as of when it could have gone instead.
    A relay stalled for 150 ms every 250 ms still carries the link's rate."""
    from benchmarks.relay_fairness import Sink, goodput_mbps, send_records

    sink, stop = Sink(), threading.Event()
    try:
        with LinkRelay("tcp://127.0.0.1:0", sink.endpoint, *_links(LINK_MBPS, delay_ms=5.0), fair=True) as relay:
            sender = send_records(relay.endpoint, BULK, stop, None)
            since = time.monotonic() + 0.6
            time.sleep(0.8)
            assert relay._loop is not None
            for _ in range(6):
                relay._loop.call_soon_threadsafe(time.sleep, 0.15)  # blocks the relay's loop
                time.sleep(0.25)
            stop.set()
            sender.join(2)
    finally:
        sink.close()
    assert not sink.errors, sink.errors
    goodput = goodput_mbps(sink.flows[BULK], BULK, since)
    print(f"through stalls: {goodput:.2f} Mbit/s")
    assert goodput == pytest.approx(LINK_MBPS, rel=0.1)


def test_fair_queueing_leaves_one_connection_as_it_was():
    """One connection alone, as fast as it can into 5 Mbit/s: the same goodput and the same
    queueing delay (the link's 200 ms plus the sockets' buffers) with and without fair
    queueing, every byte intact and in order."""
    from benchmarks.relay_fairness import Sink, goodput_mbps, one_way_ms, send_records

    runs = {}
    for fair in (False, True):
        sink, stop = Sink(), threading.Event()
        try:
            with LinkRelay("tcp://127.0.0.1:0", sink.endpoint, *_links(LINK_MBPS, delay_ms=5.0),
                           fair=fair) as relay:
                sender = send_records(relay.endpoint, BULK, stop, None)
                since = time.monotonic() + 0.6  # the queue has filled
                time.sleep(1.8)
                stop.set()
                sender.join(2)
        finally:
            sink.close()
        assert not sink.errors, sink.errors
        bulk = sink.flows[BULK]
        runs[fair] = (goodput_mbps(bulk, BULK, since), float(np.median(one_way_ms(bulk, since))))
        print(f"fair={fair}: one connection {runs[fair][0]:.2f} Mbit/s, one-way median {runs[fair][1]:.0f} ms")
    for goodput, delay in runs.values():
        assert goodput == pytest.approx(LINK_MBPS, rel=0.1)
        assert delay > 200  # the link's queue is full and the relay pushes back
    assert runs[True][1] == pytest.approx(runs[False][1], abs=30)


def test_fair_queueing_keeps_every_byte_through_loss_and_outages():
    """Two connections through a fair relay whose links lose 5% of packets in bursts and
    hand over (outages) every 0.3 s on average, both ways: a bulk one echoing 60 messages of
    30 kB and a sparse one echoing 40 small ones, at once. Every message comes back intact
    and in order on its own connection, and the pipes end cleanly."""
    links = _links(20.0, delay_ms=10.0, loss=0.05, burst=2.0, handover_every_s=0.3)
    rng = np.random.default_rng(3)
    with _echo_server() as target, LinkRelay("tcp://127.0.0.1:0", target, *links, fair=True) as relay:
        plans = {"bulk": [struct.pack("!I", i) + rng.bytes(30_000) for i in range(60)],
                 "sparse": [struct.pack("!I", i) + rng.bytes(100) for i in range(40)]}
        got: dict[str, list[bytes]] = {}

        def echo(name: str, every: float) -> None:
            dealer = _socket(zmq.DEALER, RCVTIMEO=10_000)
            dealer.connect(relay.endpoint)
            try:
                for body in plans[name]:
                    dealer.send(body)
                    time.sleep(every)
                got[name] = [dealer.recv() for _ in plans[name]]
            finally:
                dealer.close()

        threads = [threading.Thread(target=echo, args=("bulk", 0.0)),
                   threading.Thread(target=echo, args=("sparse", 0.02))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        outages = len(relay.uplink.outages) + len(relay.downlink.outages)
    assert got == plans
    assert relay.counters.lost_up > 0 and relay.counters.lost_down > 0 and outages >= 2
    assert relay.counters.open == 0


def test_the_link_command_builds_a_fair_relay(monkeypatch):
    """`holoport link --fair-queue` asks for fair queueing; without it, the FIFO of before."""
    import holoport.link.relay as relay_module

    made = []

    class Spy(LinkRelay):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self.fair)

    monkeypatch.setattr(relay_module, "LinkRelay", Spy)
    listen = free_tcp_endpoint()
    for extra in (["--fair-queue"], []):
        assert main(["link", "--profile", "wired", "--listen", listen, "--duration", "0.2", "--quiet", *extra]) == 0
    assert made == [True, False]


# -- a meeting through it -------------------------------------------------------------------
def test_a_hub_and_two_nodes_one_through_an_encrypted_relay(tmp_path):
    """CURVE hub; ana through a 20 Mbit/s, 15 ms, 2%-loss relay, ben direct: frames flow
    both ways, ana's frames take at least the link's delay, and a stranger's refused key is
    still reported clearly through the relay (the bytes are opaque to it)."""
    allow = tmp_path / "allow"
    allow.mkdir()
    made = {n: create_keys(tmp_path / "keys", n) for n in ("hub", "ana", "ben", "eve")}
    for n in ("ana", "ben"):
        (allow / made[n][0].name).write_bytes(made[n][0].read_bytes())

    def security(name):
        return NodeSecurity(KeyPair.load(made[name][1]), load_public(made["hub"][0]))

    rng = np.random.default_rng(0)
    cloud = (rng.uniform(0, 1, (3000, 3)).astype(np.float32), rng.integers(0, 256, (3000, 3), dtype=np.uint8))
    links = _links(20.0, delay_ms=15.0, loss=0.02, burst=2.0)
    with Hub(free_tcp_endpoint(), seats=3, security=HubSecurity(KeyPair.load(made["hub"][1]), allow)) as hub, \
            LinkRelay("tcp://127.0.0.1:0", hub.endpoint, *links) as relay:
        with pytest.raises(JoinError, match="refused our key"):
            Node(relay.endpoint, "r", "eve", security=security("eve"), join_timeout=5).start()
        with Node(relay.endpoint, "r", "ana", security=security("ana")) as ana, \
                Node(hub.endpoint, "r", "ben", security=security("ben")) as ben:
            got: dict[str, list] = {"ana": [], "ben": []}
            deadline = time.monotonic() + 10
            while (len(got["ana"]) < 3 or len(got["ben"]) < 3) and time.monotonic() < deadline:
                ana.send(cloud)
                ben.send(cloud)
                for _ in range(3):
                    got["ana"] += ana.poll(0.03)
                    got["ben"] += ben.poll(0.03)
                ana.heartbeat()
                ben.heartbeat()
        assert relay.counters.bytes_up > 3 * 10_000 and relay.counters.bytes_down > 3 * 10_000
    assert len(got["ana"]) >= 3 and len(got["ben"]) >= 3
    assert all(len(f.positions) == 3000 for f in got["ana"] + got["ben"])
    net = [f.ts["received"] - f.ts["sent"] for f in got["ben"]]  # ana -> relay -> hub -> ben
    print(f"ana -> ben network ms: {[round(x * 1e3, 1) for x in net]}")
    assert min(net) >= 0.015 - 0.002  # the uplink's 15 ms (clock offsets are ~0 on one machine)


# -- the commands -----------------------------------------------------------------------------
def _meet_for(node_a: Node, node_b: Node | None, seconds: float, want: int) -> dict[str, int]:
    """Send a small cloud from our nodes every 0.1 s; count frames each receives by sender."""
    rng = np.random.default_rng(1)
    cloud = (rng.uniform(0, 1, (2000, 3)).astype(np.float32), np.zeros((2000, 3), np.uint8))
    seen: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    nodes = [n for n in (node_a, node_b) if n is not None]
    while time.monotonic() < deadline:
        for node in nodes:
            node.send(cloud)
            node.heartbeat()
            for f in node.poll(0.05):
                key = f"{node.name}<-{f.name}"
                seen[key] = seen.get(key, 0) + 1
        if len(seen) >= want and min(seen.values()) >= 5:
            break
    return seen


def test_the_link_command_relays_a_node_and_reports():
    """`holoport link` as a real process between an in-process hub and one of two nodes."""
    with Hub(free_tcp_endpoint(), seats=3) as hub:
        listen = free_tcp_endpoint()
        link = spawn("link", "--profile", "sub6-static", "--seed", "2", "--listen", listen,
                     "--hub", hub.endpoint, "--duration", "5", "--every", "1")
        lines = []
        for line in link.stdout:  # ready once it says where it listens
            lines.append(line)
            if line.startswith("relaying"):
                break
        with Node(listen, "r", "far") as far, Node(hub.endpoint, "r", "near") as near:
            seen = _meet_for(far, near, 4.0, want=2)
        out = "".join(lines) + link.communicate(timeout=20)[0]
    assert link.returncode == 0, out
    assert seen.get("far<-near", 0) >= 5 and seen.get("near<-far", 0) >= 5, seen
    assert "sub6-static: " in out and "uplink = downlink x 0.3" in out
    assert "Mbit/s (capacity now" in out  # status lines
    finished = next(line for line in out.splitlines() if line.startswith("link finished"))
    assert "connections 0 open, 1 in all" in finished


def test_join_through_a_link_as_a_real_process():
    """`holoport join --link` starts its relay in-process; frames reach it and come back, and
    its leaving reaches the hub at once (no heartbeat timeout)."""
    rng = np.random.default_rng(2)
    cloud = (rng.uniform(0, 1, (2000, 3)).astype(np.float32), np.zeros((2000, 3), np.uint8))
    with Hub(free_tcp_endpoint(), seats=3) as hub:
        join = spawn("join", "--hub", hub.endpoint, "--link", "sub6-static", "--link-seed", "1",
                     "--name", "mobile", "--duration", "4", "--fps", "5")
        from_mobile = 0
        with Node(hub.endpoint, "main", "desk") as desk:
            deadline = time.monotonic() + 30
            while join.poll() is None and time.monotonic() < deadline:
                desk.send(cloud)
                desk.heartbeat()
                from_mobile += sum(f.name == "mobile" for f in desk.poll(0.2))
        out = join.communicate(timeout=30)[0]
        assert hub.stats.timed_out == 0  # its LEAVE went through the link before the relay stopped
        assert "mobile" not in {m.name for m in hub.members.values()}
    assert join.returncode == 0, out
    assert "link sub6-static:" in out and "link: up" in out
    received = re.search(r"^mobile: sent \d+, received \d+ \{'desk': (\d+)\}", out, re.MULTILINE)
    assert received and int(received.group(1)) >= 5, out
    assert from_mobile >= 5


def test_link_errors_say_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOLOPORT_DATA", str(tmp_path))  # no traces there
    assert main(["link", "--profile", "mmwave-walking", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--trace" in err and "HOLOPORT_DATA" in err and "sub6-static" in err
    assert main(["link", "--profile", "wired", "--listen", "tcp://0.0.0.0:5599", "--quiet"]) == 1
    assert "--insecure" in capsys.readouterr().err
    assert main(["link", "--profile", "wired", "--hub", "tcp://192.0.2.1:5555", "--quiet"]) == 1
    assert "--key and --hub-key" in capsys.readouterr().err
    # the off-machine check is made against the real hub, not the loopback relay
    assert main(["join", "--hub", "tcp://192.0.2.1:5555", "--link", "wired", "--quiet"]) == 1
    assert "--insecure" in capsys.readouterr().err
    assert main(["join", "--link-seed", "3", "--quiet"]) == 1
    assert "--link PROFILE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["link", "--help"])
    assert exc.value.code == 0 and "profiles:" in capsys.readouterr().out
