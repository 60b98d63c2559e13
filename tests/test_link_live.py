"""Rate adaptation on real nodes: arrival reports through a real hub, and a live sender
over a thin emulated link (a real relay) that keeps its frames fresh by adapting."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.live_rate import run_sender
from holoport import wire
from holoport.hub import Hub
from holoport.node import Node


@pytest.fixture
def hub():
    with Hub("tcp://127.0.0.1:0", heartbeat_timeout=5.0) as h:
        yield h


def _cloud(n: int = 300):
    rng = np.random.default_rng(n)
    return rng.random((n, 3), dtype=np.float32), rng.integers(0, 256, (n, 3), dtype=np.uint8)


def test_receivers_report_arrivals_to_a_sender_that_asks(hub):
    got = []
    with Node(hub.endpoint, "r", "a") as a, Node(hub.endpoint, "r", "b") as b, \
            Node(hub.endpoint, "r", "c") as c:
        a.on_feedback = lambda *report: got.append(report)
        for _ in range(5):
            a.send(_cloud())
            time.sleep(0.03)
            b.poll(0.02)
            c.poll(0.02)
        c.on_feedback = None
        deadline = time.monotonic() + 2
        while len(got) < 10 and time.monotonic() < deadline:
            a.poll(0.05)
            b.poll(0.01)
            c.poll(0.01)
        assert {r[0] for r in got} == {b.id, c.id}  # from each receiver
        for _receiver, seq, sent, arrived, nbytes in got:
            assert 1 <= seq <= 5 and nbytes > 100
            assert 0 <= arrived - sent < 0.5  # on the sender's clock
        before = len(got)
        b.send(_cloud())  # b's frames do not ask: nobody reports them
        time.sleep(0.1)
        a.poll(0.05)
        c.poll(0.05)
        assert len(got) == before and b.counters.sent == 1


def test_malformed_feedback_is_dropped_and_counted_and_the_hub_keeps_serving(hub):
    with Node(hub.endpoint, "r", "a") as a, Node(hub.endpoint, "r", "b") as b:
        before = hub.stats.dropped_malformed
        bad = [dict(to=999, r=[[1, 1.0, 10]]),  # nobody
               dict(to=b.id, r="many"),  # no list
               dict(to=b.id, r=[[1, 2.0, 3]] * 65),  # too long
               dict(to=[b.id], r=[[1, 2.0, 3]]),  # an id that is not a number
               dict(to=b.id, r=[[1, float("nan"), 3]])]  # not a time
        for fields in bad:
            a._send(wire.header(wire.MessageType.FEEDBACK, **fields))
        a._send(wire.header(wire.MessageType.KEYFRAME, of={"x": 1}))  # the same for keyframes
        deadline = time.monotonic() + 2
        while hub.stats.dropped_malformed < before + 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.stats.dropped_malformed == before + 6
        a.send(_cloud())  # and still forwards
        got = []
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            got = b.poll(0.05)
        assert got and got[0].name == "a"


def test_a_sender_ignores_reports_that_cannot_be_true(hub):
    got = []
    with Node(hub.endpoint, "r", "a") as a, Node(hub.endpoint, "r", "b") as b:
        a.on_feedback = lambda *report: got.append(report)
        a.send(_cloud())
        nbytes = a.sent_frame(1)[1]
        time.sleep(0.1)
        for arrived in (1e9, -1e9, time.time() + 3600):  # finite, but no clock is that wrong
            b._send(wire.header(wire.MessageType.FEEDBACK, to=a.id, r=[[1, arrived, nbytes]]))
        b._send(wire.header(wire.MessageType.FEEDBACK, to=a.id, r=[[1, time.time(), nbytes]]))
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            a.poll(0.05)
        a.poll(0.1)
        assert len(got) == 1 and got[0][1] == 1  # only the plausible one


def test_a_live_sender_adapts_to_a_thin_uplink_and_keeps_frames_fresh(hub):
    """1 Mbit/s up: the top rung needs ~1.8 Mbit/s at 15 fps. The fixed sender's frames
    queue for seconds; the adaptive one's arrive in a fraction of one."""
    fixed, _, fixed_lat, _ = run_sender(hub.endpoint, "fixed", 1.0, 8.0)
    adaptive, _, adaptive_lat, _ = run_sender(hub.endpoint, "adaptive", 1.0, 8.0)
    top = fixed.ladder.rungs[-1]
    assert top.mbps(15) > 1.2  # the premise: the top rung does not fit
    assert fixed_lat and np.median(fixed_lat) > 1000
    assert len(adaptive_lat) > 30 and np.median(adaptive_lat) < 400  # frames of the last 4 s
    lower = sum(n for name, n in adaptive.summary()["rungs"].items() if name != top.name)
    assert lower > sum(adaptive.chosen.values()) / 2  # it mostly sent lower rungs


def test_join_with_adaptive_rate_over_a_thin_link_as_a_real_process(tmp_path):
    """`holoport join --codec octree --rate rungs --link wired --link-trace` (1 Mbit/s):
    the participant measures its ladder, hears the receiver's reports and steps down."""
    import json

    from holoport.endpoints import free_tcp_endpoint
    from tests.conftest import spawn

    thin = tmp_path / "thin"
    thin.write_text("".join(f"{t}\t1.0\n" for t in range(1, 31)))
    with Hub(free_tcp_endpoint(), seats=3) as hub:
        join = spawn("join", "--hub", hub.endpoint, "--link", "wired", "--link-trace", str(thin),
                     "--codec", "octree", "--rate", "rungs", "--name", "mobile", "--duration", "10",
                     "--out", str(tmp_path / "out"))
        with Node(hub.endpoint, "main", "desk") as desk:  # a receiver that reports arrivals
            deadline = time.monotonic() + 60
            while join.poll() is None and time.monotonic() < deadline:
                desk.heartbeat()
                desk.poll(0.05)
        out = join.communicate(timeout=30)[0]
    assert join.returncode == 0, out
    assert "rate: frames per rung" in out
    report = json.loads(next((tmp_path / "out").glob("seat*.json")).read_text())
    rungs = report["rate"]["rungs"]
    assert sum(rungs.values()) > 50 and report["rate"]["target_mbps"]  # the desk reported
    assert report["mbps_sent"] < 1.0  # what fits the link, not the top rung's ~1.8
    assert sum(n for name, n in rungs.items() if name.startswith("lod0")) < sum(rungs.values()) / 2, rungs
