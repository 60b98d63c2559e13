"""Hubs in a cluster: a real redis-server, real `holoport hub --cluster` processes, real nodes.

A room spanning three hubs (one roster everywhere, every sender's frames crossing to each
other hub once), a hub's lease lapsing when it is killed, Redis going away and coming back,
a hub with the wrong cluster keys refused, and a hub that cannot reach Redis refusing to
start.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from codec import Cloud
from holoport.hubstats import query_stats
from holoport.node import Node
from holoport.security import create_keys
from tests.conftest import spawn
from tests.redis_server import free_port, redis_server_fixture, requires_redis  # noqa: F401

pytestmark = requires_redis

CLOUD = Cloud(np.random.default_rng(1).random((500, 3), dtype=np.float32), np.zeros((500, 3), np.uint8))


class ClusterHub:
    """One `holoport hub --cluster` process on a free loopback port."""

    def __init__(self, redis_url: str, site: str, cluster_key: Path | None) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        args = ["hub", "--bind", self.endpoint, "--cluster", redis_url, "--site", site]
        if cluster_key is not None:
            args += ["--cluster-key", str(cluster_key)]
        self.proc = spawn(*args)
        self.output = ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                query_stats(self.endpoint, timeout=0.5)
                return
            except Exception:
                assert self.proc.poll() is None, self.finish()
                time.sleep(0.1)
        raise AssertionError(f"hub at {self.endpoint} did not answer: {self.finish()}")

    def stats(self) -> dict:
        return query_stats(self.endpoint, timeout=2.0)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.finish()

    def finish(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.output += self.proc.stdout.read()
            self.proc.stdout.close()
            self.proc.stdout = None
        return self.output


@pytest.fixture
def cluster_keys(tmp_path) -> tuple[Path, Path]:
    """The cluster's key pair, and another one (a hub of another cluster)."""
    return create_keys(tmp_path, "cluster")[1], create_keys(tmp_path, "other")[1]


@pytest.fixture
def hubs(redis_server, cluster_keys):
    started: list[ClusterHub] = []

    def start(n: int, key: Path | None = cluster_keys[0]) -> list[ClusterHub]:
        new = [ClusterHub(redis_server.url, f"edge-{len(started) + i}", key) for i in range(n)]
        started.extend(new)
        for hub in new:
            hub.wait_ready()
        return new

    yield start
    for hub in started:
        hub.finish()


def _pump(nodes: list[Node], seconds: float, until=None, send: bool = True) -> dict[str, dict[str, int]]:
    """Every node sends at ~30 fps and polls; frames received per (receiver, sender name)."""
    got: dict[str, dict[str, int]] = {n.name: {} for n in nodes}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for node in nodes:
            if send:
                node.send(CLOUD)
            node.heartbeat()
            for frame in node.poll(0.0):
                got[node.name][frame.name] = got[node.name].get(frame.name, 0) + 1
        if until is not None and until():
            break
        time.sleep(0.03)
    return got


def _roster(node: Node) -> set[tuple[str, int]]:
    return {(p.name, p.seat) for p in node.peers.values()}


def _converged(nodes: list[Node]) -> bool:
    seats = {n.name: n.seat for n in nodes}
    return len(set(seats.values())) == len(nodes) and all(
        _roster(n) == {(m.name, m.seat) for m in nodes if m is not n} for n in nodes)


def test_a_room_spans_three_hubs(hubs):
    a, b, c = hubs(3)
    nodes: list[Node] = []
    try:
        # the room's roster is the same everywhere within a second of each join
        for h, name in ((a, "ana"), (b, "cy"), (a, "ben"), (c, "di")):
            nodes.append(Node(h.endpoint, room="r", name=name).start())
            joined = time.monotonic()
            _pump(nodes, 5.0, until=lambda: _converged(nodes), send=False)
            assert _converged(nodes), [(n.name, n.seat, _roster(n)) for n in nodes]
            assert time.monotonic() - joined < 1.0, (name, time.monotonic() - joined)
        got = _pump(nodes, 2.0)
        for node in nodes:
            assert set(got[node.name]) == {m.name for m in nodes if m is not node}, got
        # each sender's frames reach each other hub once: what a hub took from a remote
        # member equals what that member sent its own hub
        sent = {n.name: n.counters.sent for n in nodes}
        for hub, here in ((a, {"ana", "ben"}), (b, {"cy"}), (c, {"di"})):
            stats = hub.stats()
            listed = {m["name"]: m for m in stats["rooms"]["r"]}
            assert set(listed) == {n.name for n in nodes}
            for name, m in listed.items():
                if name in here:
                    assert m["hub"] is None
                else:
                    assert m["hub"] is not None and m["frames_in"] == sent[name], (hub.endpoint, name, m, sent)
            cascade = stats["cascade"]
            others = 2  # every hub has members: each takes our senders' frames once
            assert cascade["frames_out"] == others * sum(sent[n] for n in here), cascade
            assert cascade["frames_in"] == sum(v for k, v in sent.items() if k not in here), cascade
        # a leave reaches every hub's members within a second
        next(n for n in nodes if n.name == "cy").stop()
        left = time.monotonic()
        rest = [n for n in nodes if n.name != "cy"]
        _pump(rest, 3.0, until=lambda: all("cy" not in {p.name for p in n.peers.values()} for n in rest), send=False)
        assert time.monotonic() - left < 1.0
    finally:
        for node in nodes:
            node.stop()


def test_frames_from_another_hub_carry_both_hubs_stamps(hubs):
    a, b = hubs(2)
    ana = Node(a.endpoint, room="r", name="ana").start()
    ben = Node(b.endpoint, room="r", name="ben").start()
    try:
        _pump([ana, ben], 5.0, until=lambda: _converged([ana, ben]), send=False)
        frames = []
        deadline = time.monotonic() + 5
        while len(frames) < 20 and time.monotonic() < deadline:
            ana.send(CLOUD)
            ana.heartbeat()
            ben.heartbeat()
            frames += ben.poll(0.03)
        assert len(frames) >= 20
        for f in frames:
            ts = f.ts
            assert ts["sent"] <= ts["up_in"] <= ts["up_out"] <= ts["hub_in"] <= ts["hub_out"] <= ts["received"], ts
        stats = a.stats()["rooms"]["r"]
        cascade = {m["name"]: m for m in b.stats()["rooms"]["r"]}["ana"]
        assert cascade["cascade_p50_ms"] is not None and cascade["cascade_p50_ms"] < 50, cascade
        assert {m["name"] for m in stats} == {"ana", "ben"}
    finally:
        ana.stop()
        ben.stop()


def test_a_killed_hub_is_gone_from_redis_and_from_the_room(hubs, redis_server):
    a, b = hubs(2)
    ana = Node(a.endpoint, room="r", name="ana").start()
    ben = Node(b.endpoint, room="r", name="ben").start()
    try:
        _pump([ana, ben], 5.0, until=lambda: _converged([ana, ben]), send=False)
        assert _converged([ana, ben])
        keys = {k.decode() for k in redis_server.client().keys("holoport:hub:*")}
        assert len(keys) == 2
        b.kill()
        killed = time.monotonic()
        _pump([ana], 4.0, until=lambda: not ana.peers, send=False)
        assert not ana.peers and time.monotonic() - killed < 2.5  # the link's silence ends it
        while time.monotonic() - killed < 3.5 and len(redis_server.client().keys("holoport:hub:*")) > 1:
            time.sleep(0.05)
        assert len(redis_server.client().keys("holoport:hub:*")) == 1  # its lease lapsed
        assert time.monotonic() - killed < 3.5
        _pump([ana], 0.5, send=False)
        links = a.stats()["cascade"]["links"]
        assert links == [], links  # and the surviving hub dropped its link
    finally:
        ana.stop()
        ben.close()


def test_meetings_go_on_without_redis_and_the_cluster_heals(hubs, redis_server):
    a, b = hubs(2)
    ana = Node(a.endpoint, room="r", name="ana").start()
    ben = Node(b.endpoint, room="r", name="ben").start()
    late = None
    try:
        _pump([ana, ben], 5.0, until=lambda: _converged([ana, ben]), send=False)
        redis_server.kill()
        got = _pump([ana, ben], 3.0)
        assert got["ana"].get("ben", 0) > 20 and got["ben"].get("ana", 0) > 20, got
        # a join to a room a hub already serves works without Redis, and sees the other hub's member
        late = Node(a.endpoint, room="r", name="cy").start()
        _pump([ana, ben, late], 3.0, until=lambda: _converged([ana, ben, late]), send=False)
        assert _converged([ana, ben, late])
        redis_server.start()  # empty: every hub writes its record again
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len(redis_server.client().keys("holoport:hub:*")) < 2:
            time.sleep(0.05)
        assert len(redis_server.client().keys("holoport:hub:*")) == 2
        # and a new room across hubs finds its way again
        di = Node(a.endpoint, room="s", name="di").start()
        ed = Node(b.endpoint, room="s", name="ed").start()
        try:
            _pump([di, ed], 5.0, until=lambda: _converged([di, ed]), send=False)
            assert _converged([di, ed])
        finally:
            di.stop()
            ed.stop()
    finally:
        for node in (ana, ben, late):
            if node is not None:
                node.stop()


def test_a_hub_with_other_cluster_keys_is_refused_and_logged(hubs, cluster_keys):
    (a,) = hubs(1)
    (stranger,) = hubs(1, key=cluster_keys[1])
    ana = Node(a.endpoint, room="r", name="ana").start()
    ben = Node(stranger.endpoint, room="r", name="ben").start()
    try:
        _pump([ana, ben], 3.0, send=False)
        assert not ana.peers and not ben.peers
        assert a.stats()["cascade"]["refused"] >= 1
    finally:
        ana.stop()
        ben.stop()
    assert "refused a hub whose cluster key is not ours" in a.finish()


def test_a_hub_that_cannot_reach_redis_does_not_start(tmp_path, redis_server):
    dead = f"redis://127.0.0.1:{free_port()}"
    proc = spawn("hub", "--bind", f"tcp://127.0.0.1:{free_port()}", "--cluster", dead)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "no Redis answered" in out, out
    proc = spawn("hub", "--bind", f"tcp://127.0.0.1:{free_port()}", "--cluster", "redis://:secret@127.0.0.1:1")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "never the command line" in out, out


def test_voice_feedback_and_keyframe_requests_cross_the_link(hubs):
    import zmq

    from holoport import wire
    from holoport.wire import MessageType

    a, b = hubs(2)
    ana = Node(a.endpoint, room="r", name="ana").start()
    ben = Node(b.endpoint, room="r", name="ben").start()
    voice = zmq.Context.instance().socket(zmq.DEALER)
    voice.setsockopt(zmq.LINGER, 0)
    try:
        _pump([ana, ben], 5.0, until=lambda: _converged([ana, ben]), send=False)
        # ben's receivers' arrival reports reach ana, on ana's clock
        reports = []
        ana.on_feedback = lambda *r: reports.append(r)
        _pump([ana, ben], 2.0, until=lambda: len(reports) >= 5)
        assert len(reports) >= 5 and {r[0] for r in reports} == {ben.id}, reports
        for _, _, sent, arrived, _ in reports:
            assert 0 <= arrived - sent < 1.0, reports
        # ben asks ana for a keyframe through both hubs
        asked = ana.counters.keyframe_requests
        ben._send(wire.header(MessageType.KEYFRAME, of=ana.id, stream=0))
        _pump([ana, ben], 2.0, until=lambda: ana.counters.keyframe_requests > asked, send=False)
        assert ana.counters.keyframe_requests == asked + 1
        # ana's voice reaches ben's voice connection on the other hub
        voice.connect(b.endpoint)
        voice.send_multipart(wire.encode(wire.header(MessageType.ATTACH, id=ben.id, vkey=ben.vkey)))
        assert voice.poll(3000) and wire.decode(voice.recv_multipart()).type == MessageType.ATTACH
        heard = []
        deadline = time.monotonic() + 3.0
        seq = 0
        while not heard and time.monotonic() < deadline:
            ana._send(wire.header(MessageType.AUDIO, seq=seq, t=time.time(), vad=True), [b"\x01" * 60])
            seq += 1
            _pump([ana, ben], 0.05, send=False)
            while voice.poll(0):
                msg = wire.decode(voice.recv_multipart())
                if msg.type == MessageType.AUDIO:
                    heard.append(msg.header)
        assert heard and heard[0]["src"] == ana.id, heard
    finally:
        voice.close(0)
        ana.stop()
        ben.stop()


def test_a_hostile_hub_with_the_cluster_key_cannot_take_a_hub_down(hubs, redis_server, cluster_keys):
    """A fake hub that holds the cluster key and lies both ways: as a hub our hub takes room
    "r" from (forged and garbled frames, rosters, voice, clocks) and as one that takes rooms
    from ours (links for rooms we do not serve, credit and feedback for nobody, garbage).
    Our hub drops and counts it all, keeps its own members' meeting going, and seats no
    more remote members than the room has seats."""
    import zmq

    from benchmarks.fuzz_wire import Forge, pack
    from holoport import wire
    from holoport.cluster import ClusterAgent, HubRecord, Registry
    from holoport.security import KeyPair

    (a,) = hubs(1)
    keys = KeyPair.load(cluster_keys[0])
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.curve_secretkey, router.curve_publickey, router.curve_server = keys.secret, keys.public, True
    port = router.bind_to_random_port("tcp://127.0.0.1")
    registry = Registry(redis_server.url)
    fake_no = registry.next_hub_id()
    agent = ClusterAgent(registry, HubRecord(fake_no, "liar", "tcp://127.0.0.1:1", f"tcp://127.0.0.1:{port}"),
                         load=lambda: {"members": 1, "mbps": 0.0, "rooms": {"r": 1}}).start()
    ana = Node(a.endpoint, room="r", name="ana").start()
    ben = Node(a.endpoint, room="r", name="ben").start()
    ours = next(r for r in registry.hubs() if r.id != fake_no)
    dealer = ctx.socket(zmq.DEALER)
    dealer.curve_secretkey, dealer.curve_publickey, dealer.curve_serverkey = keys.secret, keys.public, keys.public
    dealer.connect(ours.cascade)
    rng = np.random.default_rng(18)
    forge = Forge(rng, lambda: [ana.id, ben.id, (fake_no << 32) + 1, (ours.id << 32) + 5])
    try:
        ident = None
        deadline = time.monotonic() + 10
        while ident is None and time.monotonic() < deadline:  # our hub subscribes to the liar's room
            _pump([ana, ben], 0.1, send=False)
            if router.poll(0):
                frames = router.recv_multipart()
                if wire.decode(frames[1:]).type == wire.MessageType.LINK:
                    ident = frames[0]
        assert ident is not None, "our hub never linked to the fake one"
        to_us = ["frame", "audio", "joined", "left", "linked", "time", "heartbeat", "welcome", "stats"]
        to_them = ["link", "unlink", "credit", "keyframe", "feedback", "time", "frame", "join"]
        for i in range(3000):
            kind = forge.pick(to_us)
            head = forge.header(kind)
            head.setdefault("room", "r")
            if kind in ("joined", "linked"):  # believable rosters of many, of our hub number and theirs
                head.update(id=(forge.pick([fake_no, ours.id]) << 32) + int(rng.integers(1, 40)), room="r",
                            members=[{"id": (fake_no << 32) + k, "name": f"m{k}", "seat": k % 16, "at": 0.0}
                                     for k in range(1, 17)])
            x = rng.random()
            frames = forge.garbage(head) if x < 0.2 else [pack(forge.mutate(head) if x < 0.6 else head),
                                                          *forge.parts(b"\x00" * 100)]
            router.send_multipart([ident, *frames])
            other = forge.header(forge.pick(to_them))
            other["room"] = f"room{i}" if rng.random() < 0.5 else "r"
            y = rng.random()
            other = forge.mutate(other) if 0.2 <= y < 0.6 else other
            dealer.send_multipart(forge.garbage(other) if y < 0.2 else [pack(other)])
            if i % 100 == 0:
                _pump([ana, ben], 0.02)
        got = _pump([ana, ben], 2.0)
        assert got["ana"].get("ben", 0) > 20 and got["ben"].get("ana", 0) > 20, got
        stats = a.stats()
        assert stats["dropped_malformed"] > 1000, stats["by_reason"]
        remote = [m for m in stats["rooms"].get("r", []) if m["hub"] is not None]
        assert len(remote) <= 6 and stats["members"] == 2, stats["rooms"]
        assert len(stats["cascade"]["subscribers"]) <= 1 and all(
            set(s["rooms"]) <= {"r"} for s in stats["cascade"]["subscribers"]), stats["cascade"]
        assert a.proc.poll() is None
    finally:
        agent.stop()
        registry.close()
        ana.stop()
        ben.stop()
        ctx.destroy(linger=0)
    assert "Traceback" not in a.finish()
