"""End to end with real processes: `holoport hub` and `holoport join` talking over loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from codec import BaselineCodec
from holoport import wire
from holoport.endpoints import free_tcp_endpoint
from holoport.hubstats import query_stats
from render import Room
from tests.conftest import ROOT, holoport_cmd, spawn

NAMES = ["ana", "ben", "chiara"]


def _hub_stats(endpoint: str) -> dict:
    return query_stats(endpoint)


def _finish(procs, timeout=30):
    outputs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outputs.append(out)
    return outputs


def _wait_for_members(endpoint: str, room: str, count: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = _hub_stats(endpoint)
        if len(stats["rooms"].get(room, [])) == count:
            return stats
        time.sleep(0.2)
    raise AssertionError(f"{count} members never joined room {room}: {stats}")


@pytest.fixture(scope="module")
def meeting(tmp_path_factory):
    """Three participants meet for a few seconds; their outputs are what the tests read."""
    out = tmp_path_factory.mktemp("meeting")
    endpoint = free_tcp_endpoint()
    hub = spawn("hub", "--bind", endpoint, "--seats", "3")
    time.sleep(0.5)
    procs = [spawn("join", "--hub", endpoint, "--room", "e2e", "--name", name, "--body", str(i),
                   "--fps", "10", "--duration", "6", "--out", str(out), "--dump", "4")
             for i, name in enumerate(NAMES)]
    outputs = _finish(procs, timeout=90)
    hub_stats = _hub_stats(endpoint)
    hub.send_signal(signal.SIGINT)
    hub_out, _ = hub.communicate(timeout=10)
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text
    assert hub.returncode == 0, hub_out
    reports = {r["name"]: r for r in (json.loads(p.read_text()) for p in out.glob("seat*.json"))}
    return out, reports, hub_stats


def test_every_participant_received_and_decoded_frames_from_both_others(meeting):
    _, reports, hub_stats = meeting
    assert set(reports) == set(NAMES)
    for name, r in reports.items():
        others = set(NAMES) - {name}
        assert set(r["received_by_sender"]) == others
        for sender in others:
            assert r["received_by_sender"][sender] >= 10, r["received_by_sender"]
        assert r["decode_errors"] == 0
        assert r["frames_sent"] >= 20
    assert hub_stats["forwarded"] >= sum(r["frames_received"] for r in reports.values())
    assert hub_stats["dropped_malformed"] == 0, hub_stats["by_reason"]


def test_decoded_clouds_match_what_was_sent_within_the_quantization_error(meeting):
    out, reports, _ = meeting
    tolerance = BaselineCodec().max_error * 1.001
    seats = {name: r["seat"] for name, r in reports.items()}
    matched = set()
    for receiver in NAMES:
        received = np.load(out / f"seat{seats[receiver]}_received.npz")
        for i in range(len(received.files) // 4):
            sender, seq = str(received[f"{i}_sender"]), int(received[f"{i}_seq"])
            sent = np.load(out / f"seat{seats[sender]}_sent.npz")
            for j in range(len(sent.files) // 3):
                if int(sent[f"{j}_seq"]) != seq:
                    continue
                _assert_same_cloud(sent[f"{j}_positions"], sent[f"{j}_colors"],
                                   received[f"{i}_positions"], received[f"{i}_colors"], tolerance)
                matched.add((receiver, sender))
    assert len(matched) == 6, f"only these (receiver, sender) pairs could be compared: {matched}"


def _assert_same_cloud(pos_a, col_a, pos_b, col_b, tolerance):
    assert len(pos_a) == len(pos_b) > 1000
    codec = BaselineCodec()
    def order(p, c):
        q = np.floor((p - np.array(codec.origin)) / codec.voxel_size + 0.5).astype(np.int64)
        return np.lexsort((c[:, 2], c[:, 1], c[:, 0], q[:, 2], q[:, 1], q[:, 0]))
    a, b = order(pos_a, col_a), order(pos_b, col_b)
    np.testing.assert_array_equal(col_a[a], col_b[b])
    assert np.abs(pos_a[a] - pos_b[b]).max() <= tolerance


def test_each_seat_sees_both_remote_participants_where_their_seats_are(meeting):
    out, reports, _ = meeting
    for name, r in reports.items():
        view = r["view"]
        ids = np.load(out / view["ids"])
        h, w = ids.shape
        assert len(view["clouds"]) == 2
        room = Room(r["seats"])
        camera = room.seat_camera(r["seat"], w, h)
        for cloud in view["clouds"]:
            assert cloud["name"] != name
            assert np.count_nonzero(ids == cloud["index"]) > 2000  # a person, not a speck
            u, v, _ = camera.project(room.seat_position(cloud["seat"])[None] + [0, 1.0, 0])[0]
            window = ids[max(0, int(v) - 25):int(v) + 25, max(0, int(u) - 25):int(u) + 25]
            assert (window == cloud["index"]).any(), f"{name} does not see {cloud['name']} at its seat"
        assert Path(out / view["image"]).stat().st_size > 10_000
        assert (out / r["animation"]).exists()


def test_latency_is_measured_for_every_stage(meeting):
    _, reports, _ = meeting
    for r in reports.values():
        for stage in ("capture", "encode", "send", "network", "decode", "wait", "render", "end_to_end"):
            p50, p95, p99 = (r["latency"][stage][q] for q in ("p50_ms", "p95_ms", "p99_ms"))
            assert p50 is not None and 0 <= p50 <= p95 <= p99 < 5000, (stage, r["latency"][stage])


def test_the_hub_survives_a_participant_killed_mid_meeting(tmp_path):
    endpoint = free_tcp_endpoint()
    hub = spawn("hub", "--bind", endpoint, "--seats", "3", "--heartbeat-timeout", "1")
    time.sleep(0.5)
    procs = [spawn("join", "--hub", endpoint, "--room", "k", "--name", name, "--body", str(i),
                   "--fps", "10", "--out", str(tmp_path)) for i, name in enumerate(NAMES)]
    try:
        _wait_for_members(endpoint, "k", 3)
        time.sleep(1.5)
        procs[0].send_signal(signal.SIGKILL)  # no leave message, possibly mid-send
        procs[0].wait(5)
        stats = _wait_for_members(endpoint, "k", 2, timeout=5)  # dropped: unreachable or silent
        before = stats["forwarded"]
        time.sleep(2.0)
        after = _hub_stats(endpoint)["forwarded"]
        assert after - before >= 20, "frames stopped flowing between the survivors"
        for p in procs[1:]:
            p.send_signal(signal.SIGINT)
        outputs = _finish(procs[1:])
        for p, text in zip(procs[1:], outputs, strict=True):
            assert p.returncode == 0, text
        survivors = {r["name"]: r for r in (json.loads(f.read_text()) for f in tmp_path.glob("*.json"))}
        assert set(survivors) == {"ben", "chiara"}
        assert survivors["ben"]["received_by_sender"]["chiara"] >= 20
        assert survivors["chiara"]["received_by_sender"]["ben"] >= 20
    finally:
        for p in [*procs, hub]:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_a_meeting_with_the_octree_codec_delivers_the_voxelized_clouds(tmp_path):
    from codec import _kdtree, for_meeting

    endpoint = free_tcp_endpoint()
    hub = spawn("hub", "--bind", endpoint, "--seats", "2")
    time.sleep(0.5)
    procs = [spawn("join", "--hub", endpoint, "--room", "oct", "--name", name, "--body", str(i),
                   "--fps", "10", "--duration", "5", "--out", str(tmp_path), "--dump", "3",
                   "--codec", "octree", "--color-step", "1") for i, name in enumerate(NAMES[:2])]
    outputs = _finish(procs, timeout=60)
    hub.send_signal(signal.SIGINT)
    hub.communicate(timeout=10)
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text
    reports = {r["name"]: r for r in (json.loads(f.read_text()) for f in tmp_path.glob("seat*.json"))}
    half_diagonal = np.sqrt(3) * for_meeting("octree", color_step=1).max_error * 1.001
    compared = 0
    for receiver, sender in (("ana", "ben"), ("ben", "ana")):
        assert reports[receiver]["received_by_sender"][sender] >= 8
        got = np.load(tmp_path / f"seat{reports[receiver]['seat']}_received.npz")
        sent = np.load(tmp_path / f"seat{reports[sender]['seat']}_sent.npz")
        sent_by_seq = {int(sent[f"{j}_seq"]): j for j in range(len(sent.files) // 3)}
        for i in range(len(got.files) // 4):
            j = sent_by_seq.get(int(got[f"{i}_seq"]))
            if j is None:
                continue
            a = sent[f"{j}_positions"].astype(np.float64)
            b = got[f"{i}_positions"].astype(np.float64)
            assert len(b) <= len(a)  # cells merge points, never add any
            for src, dst in ((a, b), (b, a)):  # every point has a partner within one cell
                _, d2 = _kdtree.nearest(dst, _kdtree.build(dst), src)
                assert np.sqrt(d2.max()) <= half_diagonal
            compared += 1
    assert compared >= 2


def _hub_and_two(room: str, duration: float):
    """A `holoport hub` process and two `holoport join` processes in ``room``."""
    endpoint = free_tcp_endpoint()
    hub = spawn("hub", "--bind", endpoint, "--seats", "3")
    time.sleep(0.5)
    procs = [spawn("join", "--hub", endpoint, "--room", room, "--name", name, "--body", str(i),
                   "--fps", "10", "--duration", str(duration)) for i, name in enumerate(NAMES[:2])]
    return endpoint, hub, procs


def test_a_hub_killed_and_restarted_mid_meeting_has_frames_flowing_again_within_5_s():
    endpoint, hub, procs = _hub_and_two("again", 14)
    try:
        _wait_for_members(endpoint, "again", 2, timeout=30)
        hub.kill()  # SIGKILL: no goodbye, every membership lost
        hub.wait(timeout=10)
        hub = spawn("hub", "--bind", endpoint, "--seats", "3")
        restarted = time.monotonic()
        _wait_for_members(endpoint, "again", 2, timeout=5)
        while _hub_stats(endpoint)["forwarded"] < 2 and time.monotonic() - restarted < 5:
            time.sleep(0.1)
        assert _hub_stats(endpoint)["forwarded"] >= 2, "no frames forwarded within 5 s of the restart"
        assert time.monotonic() - restarted < 5
    finally:
        outputs = _finish(procs, timeout=60)
        hub.send_signal(signal.SIGINT)
        hub.communicate(timeout=10)
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text


def test_holoport_stats_shows_each_members_traffic_during_a_meeting(tmp_path):
    endpoint, hub, procs = _hub_and_two("shown", 8)
    try:
        _wait_for_members(endpoint, "shown", 2, timeout=30)
        time.sleep(2.0)
        out = tmp_path / "stats.json"
        result = subprocess.run(holoport_cmd("stats", "--hub", endpoint, "--json", str(out)), cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    finally:
        _finish(procs, timeout=60)
        hub.send_signal(signal.SIGINT)
        hub.communicate(timeout=10)
    assert result.returncode == 0, result.stderr
    assert "room shown" in result.stdout and "fps in" in result.stdout
    members = json.loads(out.read_text())["rooms"]["shown"]
    assert sorted(m["name"] for m in members) == NAMES[:2]
    for m in members:
        assert 3 < m["fps_in"] < 13 and m["mbps_in"] > 0.1 and m["frames_out"] > 5
        assert m["hub_p50_ms"] is not None and 0 <= m["hub_p50_ms"] <= m["hub_p99_ms"] < 100


# A participant that speaks ZMTP 3.0 by hand (NULL security, DEALER), so that it can stop
# halfway through a frame: it joins, sends a frame's header part and half of a 20 MB
# payload part, says so, and waits to be killed.
_HALF_A_FRAME = r'''
import socket, struct, sys, time
import msgpack
from holoport import wire

def part(data, more):
    return bytes([(1 if more else 0) | 2]) + struct.pack(">Q", len(data)) + data

s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + bytes(31))
greeting = b""
while len(greeting) < 64:
    greeting += s.recv(64 - len(greeting))
ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
s.sendall(bytes([0x04, len(ready)]) + ready)
s.sendall(part(msgpack.packb(wire.header("join", room="cut", name="victim")), False))
time.sleep(0.5)
payload = 20_000_000
s.sendall(part(msgpack.packb(wire.header("frame", room="cut", seq=1, ts={})), True)
          + bytes([2]) + struct.pack(">Q", payload) + bytes(payload // 2))
print("half a frame sent", flush=True)
time.sleep(120)
'''


def test_the_hub_survives_a_participant_killed_halfway_through_a_frame():
    from holoport.node import Node

    endpoint = free_tcp_endpoint()
    # the victim never sends a heartbeat: a long timeout keeps it a member until we kill it
    # (it then leaves by that timeout at the latest; what matters is that the hub serves on)
    hub = spawn("hub", "--bind", endpoint, "--seats", "3", "--heartbeat-timeout", "6")
    host, port = endpoint.rsplit("/", 1)[1].split(":")
    victim = None
    try:
        time.sleep(0.5)
        with Node(endpoint, "cut", "ana") as a, Node(endpoint, "cut", "ben") as b:
            victim = subprocess.Popen([sys.executable, "-c", _HALF_A_FRAME, host, port], cwd=ROOT,
                                      stdout=subprocess.PIPE, text=True)

            def members(count: int) -> None:  # wait, keeping our two nodes alive meanwhile
                deadline = time.monotonic() + 15
                while len(_hub_stats(endpoint)["rooms"].get("cut", [])) != count:
                    assert time.monotonic() < deadline, f"the room never had {count} members"
                    for node in (a, b):
                        node.heartbeat()
                        node.poll(0.05)

            assert victim.stdout.readline().strip() == "half a frame sent"
            members(3)  # the victim had joined
            victim.kill()
            victim.wait(5)
            members(2)  # and is gone
            rng = np.random.default_rng(0)
            positions = rng.uniform([-0.3, 0, -0.2], [0.3, 1.8, 0.2], (3000, 3)).astype(np.float32)
            colors = rng.integers(0, 256, (3000, 3), dtype=np.uint8)
            got, deadline = 0, time.monotonic() + 10
            while got < 20 and time.monotonic() < deadline:
                a.send((positions, colors))
                got += len(b.poll(0.05))
                a.heartbeat()
            assert got >= 20, "frames stopped flowing after the half-sent frame"
        assert hub.poll() is None, "the hub died"
        assert _hub_stats(endpoint)["forwarded"] >= 20
    finally:
        for p in (victim, hub):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()


def test_a_participant_of_another_protocol_version_is_told_why_it_was_refused():
    """A real `holoport join` process built for protocol version N+1 against our hub."""
    endpoint = free_tcp_endpoint()
    hub = spawn("hub", "--bind", endpoint)
    try:
        time.sleep(0.5)
        newer = (f"import sys; from holoport import wire; wire.PROTOCOL_VERSION += 1; from holoport.cli import main; "
                 f"sys.exit(main(['join', '--hub', '{endpoint}', '--duration', '2']))")
        result = subprocess.run([sys.executable, "-c", newer], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 3, result.stdout + result.stderr
        assert (f"the hub refused to admit us: protocol version {wire.PROTOCOL_VERSION + 1} is not supported by "
                f"this hub, which speaks version {wire.PROTOCOL_VERSION}") in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert hub.poll() is None and _hub_stats(endpoint)["refused"] == 1
    finally:
        hub.send_signal(signal.SIGINT)
        hub.communicate(timeout=10)
