"""The hub's per-receiver layer selection, on real ZeroMQ traffic: a real hub, real nodes,
receivers behind real link relays (``holoport.link.relay``) of different capacities.

The sender's parts are random bytes of a layered frame's sizes: the hub never reads a
payload, so these tests are about forwarding alone (the codec has tests of its own)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from holoport import wire
from holoport.hub import Hub
from holoport.link import Link, LinkConfig, Trace
from holoport.link.relay import LinkRelay
from holoport.node import Node

SIZES = (4_000, 8_000, 16_000, 32_000)  # a layered frame's parts, base first: 60 kB
FPS = 15  # 7.2 Mbit/s for every part, 0.5 for the base alone


@pytest.fixture
def hub():
    with Hub("tcp://127.0.0.1:0", heartbeat_timeout=5.0) as h:
        yield h


def _relay(hub: Hub, trace: Trace, delay_ms: float = 2.0) -> LinkRelay:
    up = Link(Trace.constant(100.0), LinkConfig(delay_ms=delay_ms), seed=1)
    return LinkRelay("tcp://127.0.0.1:0", hub.endpoint, up, Link(trace, LinkConfig(delay_ms=delay_ms), seed=2))


class Receiver(threading.Thread):
    """A node that polls and reports like a participant; per frame (base seq): when it was
    first shown and the most parts it was shown with."""

    def __init__(self, endpoint: str, name: str) -> None:
        super().__init__(daemon=True)
        self.node = Node(endpoint, "main", name, decode=False).start()
        self.shown: dict[int, tuple[float, int]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.node.heartbeat()
            for f in self.node.poll(0.01):
                first = self.shown.get(f.seq, (time.monotonic(), 0))[0]
                self.shown[f.seq] = (first, max(f.layers, self.shown.get(f.seq, (0, 0))[1]))

    def layers(self, since: float, until: float = float("inf")) -> list[int]:
        return [n for t, n in self.shown.values() if since <= t < until]

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.node.close()


def _send(hub: Hub, seconds: float, sizes=SIZES, on_frame=None) -> Node:
    """A layered sender at FPS for ``seconds`` (it asks for arrival reports)."""
    rng = np.random.default_rng(0)
    parts = [rng.bytes(n) for n in sizes]
    sender = Node(hub.endpoint, "main", "sender").start()
    sender.on_feedback = lambda *report: None  # its frames ask receivers for reports
    t0 = time.monotonic()
    k = 0
    while time.monotonic() < t0 + seconds:
        sender.send_layers(parts, 1000, {"capture": time.time()})
        if on_frame:
            on_frame(k)
        k += 1
        end = t0 + k / FPS
        while time.monotonic() < end:
            sender.heartbeat()
            sender.poll(max(0.0, end - time.monotonic()))
    return sender


def _member(hub: Hub, name: str) -> dict:
    return next(m for ms in hub.snapshot()["rooms"].values() for m in ms if m["name"] == name)


def test_a_thin_receiver_does_not_lower_another_receivers_layers(hub):
    """Three receivers: direct, behind 3 Mbit/s and behind 1 Mbit/s. Each gets every frame's
    base, and as many parts as its own link carries: quality ordered by capacity, and the
    direct one gets every part although two others cannot."""
    relays = [_relay(hub, Trace.constant(mbps)).start() for mbps in (3.0, 1.0)]
    receivers = [Receiver(e, n) for e, n in ((hub.endpoint, "direct"), (relays[0].endpoint, "mid"),
                                             (relays[1].endpoint, "thin"))]
    try:
        for r in receivers:
            r.start()
        start = time.monotonic()
        sender = _send(hub, 8.0)
        time.sleep(0.5)
        late = start + 4.0  # after the estimates settled
        direct, mid, thin = (r.layers(late) for r in receivers)
        print({r.node.name: (len(r.layers(late)), np.mean(r.layers(late))) for r in receivers})
        assert min(len(direct), len(mid), len(thin)) >= 0.8 * 4 * FPS  # every receiver at full frame rate
        assert np.mean(direct) > 3.8  # all four parts, as if the others were not there
        assert np.mean(direct) > np.mean(mid) > np.mean(thin) >= 1.0
        assert np.mean(thin) < 2.5  # 1 Mbit/s carries base + first part at most
        stats = {r.node.name: _member(hub, r.node.name) for r in receivers}
        assert stats["direct"]["layers_mean"] > stats["mid"]["layers_mean"] > stats["thin"]["layers_mean"]
        assert stats["thin"]["layer_parts_dropped"] > 0 and stats["direct"]["layer_parts_dropped"] < 0.05 * 3 * 8 * FPS
        for r in receivers:  # no part ever came without the parts before it
            assert r.node.layered.parts_late == 0
        sender.close()
    finally:
        for r in receivers:
            r.close()
        for relay in relays:
            relay.stop()


def test_layers_follow_a_capacity_drop_within_a_second_and_climb_back(hub):
    """20 Mbit/s, then 1.2 Mbit/s from 4 s to 8 s, then 20 again: the receiver is down to
    the base (and at most the first part) within a second of the drop, and back to every
    part within a few seconds of the end; frames keep coming throughout."""
    t = np.arange(0, 17, 0.5)
    mbps = np.where((t >= 4) & (t < 8), 1.2, 20.0)
    trace = Trace("drop", t, mbps * 1e6, 17.0)
    relay = _relay(hub, trace).start()
    receiver = Receiver(relay.endpoint, "mobile")
    try:
        receiver.start()
        start = time.monotonic()
        _send(hub, 16.0).close()
        before = receiver.layers(start + 2.0, start + 4.0)
        during = receiver.layers(start + 5.0, start + 8.0)
        after = receiver.layers(start + 12.0, start + 16.0)
        print(np.mean(before), np.mean(during), np.mean(after), len(during))
        assert np.mean(before) > 3.5
        assert np.mean(during) < 2.2 and len(during) >= 0.6 * 3 * FPS  # the base still comes
        assert np.mean(after) > 3.5
    finally:
        receiver.close()
        relay.stop()


def test_a_late_part_is_dropped_and_the_frame_still_shows(hub):
    """A receiver 60 ms away behind 10 Mbit/s, and frames whose last part is 150 kB: that
    part needs 120 ms on the link alone, so it can never be there by the deadline (150 ms
    from capture, less ``RECEIVER_S`` for decoding and drawing). The hub drops it; the
    parts before it (28 kB, 3.4 Mbit/s at 15 fps) arrive, and every frame shows."""
    relay = _relay(hub, Trace.constant(10.0), delay_ms=60.0).start()
    receiver = Receiver(relay.endpoint, "far")
    try:
        receiver.start()
        start = time.monotonic()
        _send(hub, 6.0, sizes=(4_000, 8_000, 16_000, 150_000)).close()
        time.sleep(0.5)
        shown = receiver.layers(start + 2.0)
        assert len(shown) >= 0.8 * 4 * FPS
        assert max(shown) == 3 and np.mean(shown) > 2.5
        assert _member(hub, "far")["layer_parts_dropped"] >= 4 * FPS
    finally:
        receiver.close()
        relay.stop()


def test_reports_the_hubs_stamps_contradict_are_dropped(hub):
    """A receiver that claims frames arrived 2.5 s late (before 2.5 s have passed), or
    reports frames it was never sent, steers nothing: the hub drops those reports and
    the sender never hears them."""
    heard = []
    sender = Node(hub.endpoint, "main", "sender").start()
    sender.on_feedback = lambda *r: heard.append(r)
    liar = Node(hub.endpoint, "main", "liar", decode=False).start()
    time.sleep(0.3)
    for _ in range(10):
        sender.send_layers([b"x" * 1000, b"y" * 2000], 10, {"capture": time.time()})
        time.sleep(0.05)
    got = []
    deadline = time.monotonic() + 3
    while len(got) < 10 and time.monotonic() < deadline:
        got += liar.poll(0.05)
    forged = [[f.seq, liar.sync.to_hub(time.time()) + 2.5, f.nbytes] for f in got]
    forged += [[10_000 + i, liar.sync.to_hub(time.time()), 1000] for i in range(5)]  # never sent
    liar._send(wire.header(wire.MessageType.FEEDBACK, to=sender.id, r=forged))
    time.sleep(0.3)
    sender.poll(0.2)
    # the liar's node reported the true arrivals by itself; none of the forged ones came through
    assert heard and all(arrived - sent < 1.0 and seq < 10_000 for _, seq, sent, arrived, _ in heard)
    assert hub.stats.reports_contradicted >= len(forged)
    assert _member(hub, "liar")["reports_dropped"] >= len(forged)
    sender.close()
    liar.close()


def test_join_with_adaptive_rate_sends_layers_and_stats_show_them(tmp_path):
    """`holoport join --codec octree --rate adaptive` as a real process: it sends a layered
    stream; a receiver on the hub's machine gets every part, one behind a 0.7 Mbit/s relay
    gets fewer, both at the sender's frame rate; `holoport stats` shows each one's layers."""
    import json
    import subprocess

    from holoport.endpoints import free_tcp_endpoint
    from tests.conftest import ROOT, holoport_cmd, spawn

    with Hub(free_tcp_endpoint(), seats=4) as hub:
        relay = _relay(hub, Trace.constant(0.7), delay_ms=5.0).start()
        receivers = [Receiver(hub.endpoint, "desk"), Receiver(relay.endpoint, "phone")]
        try:
            for r in receivers:
                r.start()
            start = time.monotonic()
            join = spawn("join", "--hub", hub.endpoint, "--codec", "octree", "--rate", "adaptive", "--name", "ana",
                         "--fps", "10", "--duration", "12", "--out", str(tmp_path / "out"))
            time.sleep(9)
            stats = subprocess.run(holoport_cmd("stats", "--hub", hub.endpoint), cwd=ROOT, capture_output=True,
                                   text=True, timeout=60, env={**os.environ, "COLUMNS": "250"})
            out = join.communicate(timeout=60)[0]
        finally:
            for r in receivers:
                r.close()
            relay.stop()
    assert join.returncode == 0, out
    assert "layers in" in stats.stdout, stats.stdout
    report = json.loads(next((tmp_path / "out").glob("seat*.json")).read_text())
    assert report["rate"]["parts_mean"] > 2  # the uplink (this machine) carries them all
    desk, phone = (r.layers(start + 6.0) for r in receivers)
    assert len(desk) >= 0.7 * 10 * 4 and len(phone) >= 0.6 * 10 * 4, (len(desk), len(phone))
    assert np.mean(desk) > np.mean(phone) >= 1, (np.mean(desk), np.mean(phone))
    assert np.mean(desk) >= report["rate"]["parts_mean"] - 0.3


def test_the_hub_never_sends_a_part_without_its_base(hub):
    """A receiver that stops reading: its credit runs out and the hub holds each sender's
    newest base for it. The parts of those frames are dropped, not sent ahead of their
    base: when it reads again, every part that comes follows the parts before it."""
    reader = Node(hub.endpoint, "main", "sleepy", decode=False, credit=1).start()
    sender = Node(hub.endpoint, "main", "sender").start()
    try:
        time.sleep(0.3)
        for _ in range(20):  # the receiver reads nothing meanwhile
            sender.send_layers([b"a" * 500, b"b" * 800, b"c" * 1200], 10, {"capture": time.time()})
            time.sleep(0.02)
        time.sleep(0.3)
        frames = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            frames += reader.poll(0.05)
        held = _member(hub, "sleepy")
        assert held["layer_parts_dropped"] >= 2 * 18  # the parts of every frame whose base waited
        assert frames and reader.layered.parts_late == 0
        assert max(f.layers for f in frames) <= 3
    finally:
        sender.close()
        reader.close()


def test_a_part_larger_than_its_base_announced_is_dropped(hub):
    """The base lists its parts' sizes and each receiver's selector plans by them: a part
    of another size is dropped, so a sender cannot slip 2 MB in where it announced 100 bytes."""
    sender = Node(hub.endpoint, "main", "sender").start()
    reader = Node(hub.endpoint, "main", "reader", decode=False).start()
    try:
        time.sleep(0.3)
        base = sender.send_encoded(b"a" * 100, 10, {"capture": time.time()}, layer=0, sizes=[100, 100])
        sender.send_encoded(b"b" * 2_000_000, 10, {"capture": time.time()}, layer=1, base=base["seq"])
        frames = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            frames += reader.poll(0.05)
        assert frames and max(f.layers for f in frames) == 1
        assert _member(hub, "reader")["layer_parts_dropped"] == 1
    finally:
        sender.close()
        reader.close()


def test_a_layered_sender_gone_before_its_uplink_report_is_removed_cleanly():
    """The hub reports a layered sender's part arrivals back to it after each burst; a
    sender gone meanwhile (its identity unroutable) is removed while the reports go out,
    and that must not break the loop that sends them (it ran outside the per-message
    guard: the hub stopped)."""
    import zmq

    from holoport.hub import Member

    class Unroutable:
        def send_multipart(self, *args, **kwargs):
            raise zmq.ZMQError(zmq.EHOSTUNREACH)

    hub = Hub("tcp://127.0.0.1:0")
    hub._sock = Unroutable()
    members = [Member(f"m{i}".encode(), i, f"m{i}", "main", i, time.monotonic()) for i in (1, 2)]
    for m in members:
        hub.members[m.identity] = m
        hub._by_id[m.id] = m
        hub._rooms.setdefault("main", {})[m.id] = m
        hub._heard_part(m, {"seq": 5, "fb": True}, time.time(), 100)
    hub._report_uplinks()
    assert hub.members == {} and hub._up_due == {}
