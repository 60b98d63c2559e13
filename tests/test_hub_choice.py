"""Choosing a hub of a cluster and failing over (holoport.hub_choice, docs/cluster.md): the
ranking as a pure function; round trips measured against real hubs, one behind a real link
relay; hub lists from real hubs, a real Redis directory and a hub that lies; a real hub
process SIGKILLed under a participant, which must be sending through another hub within 3 s.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from holoport import wire
from holoport.cli import main
from holoport.cluster import HubRecord, Registry
from holoport.endpoints import free_tcp_endpoint
from holoport.hub import Hub
from holoport.hub_choice import Candidate, HubChooser, NoAnswer, ask_hub, choose, measure, rank, usable
from holoport.hubstats import query_stats
from holoport.link import Link, LinkConfig, Trace
from holoport.link.relay import LinkRelay
from holoport.node import JoinError, Node
from holoport.participant import Participant, ParticipantOptions
from holoport.security import HubSecurity, KeyPair, create_keys
from tests.conftest import spawn
from tests.redis_server import NOT_INSTALLED, REDIS_SERVER, RedisServer, redis_server_fixture  # noqa: F401


def _c(id: int, rtt: float | None, members: int = 0, mbps: float = 0.0, serves: bool = False) -> Candidate:
    return Candidate(id, f"site-{id}", f"tcp://127.0.0.1:{5000 + id}", members=members, mbps=mbps, serves=serves,
                     rtt=None if rtt is None else rtt / 1e3)


def _ids(candidates: list[Candidate]) -> list[int]:
    return [c.id for c in candidates]


# -- rank: pure ------------------------------------------------------------------------------
def test_the_nearest_hub_wins_over_a_lighter_one_further_away():
    assert _ids(rank([_c(1, 30.0), _c(2, 10.0, members=5)])) == [2, 1]


def test_among_hubs_about_as_near_the_least_loaded_wins_members_then_mbps():
    # within 25 % of the best (10 ms): 12 ms is as near; 13 ms is not
    assert _ids(rank([_c(1, 10.0, members=3), _c(2, 12.0, members=1), _c(3, 13.0)])) == [2, 1, 3]
    assert _ids(rank([_c(1, 10.0, members=1, mbps=80.0), _c(2, 11.0, members=1, mbps=20.0)])) == [2, 1]


def test_on_loopback_scale_round_trips_2_ms_count_as_equal():
    assert _ids(rank([_c(1, 0.1, members=4), _c(2, 1.9, members=0), _c(3, 2.2)])) == [2, 1, 3]


def test_serving_the_room_only_breaks_a_tie_of_load():
    assert _ids(rank([_c(1, 5.0, members=2, serves=True), _c(2, 5.0, members=1)])) == [2, 1]
    assert _ids(rank([_c(1, 5.0, members=2), _c(2, 5.5, members=2, serves=True)])) == [2, 1]


def test_farther_hubs_are_ranked_group_by_group_and_unreachable_ones_last():
    ranked = rank([_c(1, None, members=0), _c(2, 40.0, members=9), _c(3, 45.0, members=1), _c(4, 5.0, members=7),
                   _c(5, None, members=3, serves=True), _c(6, 5.5, members=2)])
    assert _ids(ranked) == [6, 4, 3, 2, 1, 5]


def test_rank_leaves_its_input_alone():
    given = [_c(1, 9.0), _c(2, 1.0)]
    assert _ids(rank(given)) == [2, 1] and _ids(given) == [1, 2]
    assert rank([]) == []


def test_hubs_we_may_not_reach_are_left_out_with_a_reason(tmp_path):
    keys = KeyPair.load(create_keys(tmp_path, "ana")[1])
    hub_public = KeyPair.load(create_keys(tmp_path, "hub")[1]).public.decode()
    plain_far = Candidate(1, "far", "tcp://10.1.2.3:5555")
    encrypted_far = Candidate(2, "far", "tcp://10.1.2.4:5555", key=hub_public)
    bad_scheme = Candidate(3, "x", "udp://127.0.0.1:5555")
    assert _ids(usable([plain_far, encrypted_far, bad_scheme], keys, insecure=False)) == [2]
    assert _ids(usable([plain_far, encrypted_far], None, insecure=False)) == []  # no key pair of ours
    assert _ids(usable([plain_far], None, insecure=True)) == [1]


# -- measure and ask_hub: real hubs ----------------------------------------------------------
def _delay_links(one_way_ms: float) -> tuple[Link, Link]:
    return (Link(Trace.constant(200.0), LinkConfig(delay_ms=one_way_ms), seed=1),
            Link(Trace.constant(200.0), LinkConfig(delay_ms=one_way_ms), seed=2))


def test_round_trips_are_measured_at_once_and_the_direct_hub_ranks_before_the_one_behind_a_slow_link(tmp_path):
    made = {n: create_keys(tmp_path / "keys", n) for n in ("hub", "ana")}
    allow = tmp_path / "allow"
    allow.mkdir()
    (allow / "ana.key").write_bytes(made["ana"][0].read_bytes())
    hub_keys, ours = KeyPair.load(made["hub"][1]), KeyPair.load(made["ana"][1])
    with Hub(free_tcp_endpoint(), seats=3) as near, Hub(free_tcp_endpoint(), seats=3) as far, \
            Hub(free_tcp_endpoint(), seats=3, security=HubSecurity(hub_keys, allow)) as secure, \
            LinkRelay("tcp://127.0.0.1:0", far.endpoint, *_delay_links(20.0)) as relay:
        candidates = [Candidate(1, "far", relay.endpoint), Candidate(2, "near", near.endpoint, members=4),
                      Candidate(3, "gone", free_tcp_endpoint()),
                      Candidate(4, "secure", secure.endpoint, key=hub_keys.public.decode(), members=5)]
        t0 = time.monotonic()
        measured = {c.id: c.rtt for c in measure(candidates, ours, insecure=False, samples=3, timeout=1.0)}
        took = time.monotonic() - t0
        assert measured[3] is None  # nothing listens there
        assert measured[2] < 0.01 and measured[4] < 0.01, measured  # loopback, CURVE with our keys and its key
        assert 0.04 <= measured[1] < 0.2, measured  # 20 ms each way through the relay
        assert took < 1.2  # all at once: the dead one costs the timeout, once
        assert _ids(rank(measure(candidates, ours, insecure=False, timeout=1.0)))[-2:] == [1, 3]
        # without our key pair the encrypting hub is not even tried
        assert {c.id: c.rtt for c in measure(candidates[3:], None, insecure=False)}[4] is None


def test_a_hub_outside_any_cluster_answers_an_empty_list():
    with Hub(free_tcp_endpoint(), seats=3) as hub:
        assert ask_hub(hub.endpoint, "r", None, insecure=False) == []
        assert choose("r", hub=hub.endpoint) == []
    t0 = time.monotonic()
    with pytest.raises(NoAnswer, match="no hub answered"):
        ask_hub(free_tcp_endpoint(), "r", None, insecure=False, timeout=0.3)
    assert time.monotonic() - t0 < 1.0


KEY = zmq.curve_keypair()[0].decode()  # a well-formed z85 CURVE public key
GOOD = {"id": 7, "site": "edge", "endpoint": "tcp://127.0.0.1:6000", "key": KEY, "members": 2, "mbps": 1.5,
        "cpu": 0.2, "room": True}
LIES = [
    ({"type": "hubs", "hubs": "many"}, "malformed hub list"),
    ({"type": "hubs", "hubs": [{**GOOD, "endpoint": 5}]}, "malformed hub list"),
    ({"type": "hubs", "hubs": [{**GOOD, "id": -1}]}, "malformed hub list"),
    ({"type": "hubs", "hubs": [{**GOOD, "mbps": float("nan")}]}, "malformed hub list"),
    ({"type": "hubs", "hubs": [{**GOOD, "key": "~" * 40}]}, "not a CURVE public key"),
    ({"type": "hubs", "hubs": [{**GOOD, "key": "short"}]}, "not a CURVE public key"),
    ({"type": "hubs", "hubs": [GOOD] * (wire.MAX_HUBS + 1)}, "malformed hub list"),
    ({"type": "hubs"}, "without a hub list"),
    ({"type": "welcome", "id": 1, "seat": 0, "seats": 2}, "without a hub list"),
    ({"type": "refused", "reason": "busy"}, "refused: busy"),
    ({"v": 99, "type": "refused", "reason": "speak 99"}, "refused to admit us: speak 99"),
    ([1, 2, 3], "malformed hub list"),
    (b"\xc1 not msgpack", "malformed hub list"),
]


def test_a_hub_list_that_lies_is_refused_whole_with_a_clear_error():
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"

    def answer(body) -> None:
        identity, _ = router.recv_multipart()
        raw = body if isinstance(body, bytes) else msgpack.packb(
            {"v": wire.PROTOCOL_VERSION, **body} if isinstance(body, dict) else body)
        router.send_multipart([identity, raw])

    try:
        for body, message in LIES:
            asker = threading.Thread(target=answer, args=(body,))
            asker.start()
            with pytest.raises(JoinError, match=message):
                ask_hub(endpoint, "r", None, insecure=False, timeout=3)
            asker.join(5)
        asker = threading.Thread(target=answer, args=({"type": "hubs", "hubs": [GOOD]},))
        asker.start()
        assert ask_hub(endpoint, "r", None, insecure=False, timeout=3) == [
            Candidate(7, "edge", "tcp://127.0.0.1:6000", KEY, 2, 1.5, 0.2, True)]
        asker.join(5)
    finally:
        router.close(0)


# -- the directory in Redis ------------------------------------------------------------------
def test_the_directory_gives_the_ranking_and_holoport_stats_lists_it(redis_server, tmp_path, capsys):
    with Hub(free_tcp_endpoint(), seats=3) as busy, Hub(free_tcp_endpoint(), seats=3) as idle:
        registry = Registry(redis_server.url)
        for record in (HubRecord(1, "edge-1", busy.endpoint, "tcp://127.0.0.1:1", members=3, mbps=12.0,
                                 rooms={"r": 2, "q": 1}, started=time.time() - 60),
                       HubRecord(2, "edge-2", idle.endpoint, "tcp://127.0.0.1:2"),
                       HubRecord(3, "edge-3", free_tcp_endpoint(), "tcp://127.0.0.1:3", rooms={"r": 1})):
            registry.publish(record)
        ranked = choose("r", cluster=redis_server.url)
        assert _ids(ranked) == [2, 1, 3], ranked  # both live hubs as near: the idle first; the dead last
        assert ranked[1].serves and not ranked[0].serves and ranked[2].rtt is None
        out = tmp_path / "cluster.json"
        assert main(["stats", "--cluster", redis_server.url, "--json", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "edge-1" in printed and idle.endpoint in printed and "rooms" in printed
        listed = json.loads(out.read_text())
        assert [h["id"] for h in listed["hubs"]] == [1, 2, 3]
        assert listed["rooms"] == {"r": {"1": 2, "3": 1}, "q": {"1": 1}}
        registry.close()
    redis_server.kill()
    with pytest.raises(JoinError, match="no Redis answered"):
        choose("r", cluster=redis_server.url)
    assert main(["stats", "--cluster", redis_server.url]) == 3
    assert main(["stats", "--cluster", "redis://user:secret@127.0.0.1:1"]) == 1  # a password on the command line


# -- failover --------------------------------------------------------------------------------
def _hub_process(endpoint: str):
    hub = spawn("hub", "--bind", endpoint, "--seats", "4", "--quiet")
    query_stats(endpoint, timeout=30)  # up and answering
    return hub


def test_a_participant_whose_hub_is_killed_sends_through_another_within_3_s():
    first, second = free_tcp_endpoint(), free_tcp_endpoint()
    hubs = [_hub_process(first), _hub_process(second)]
    # the directory's view: the second hub busier, so the participant starts on the first
    chooser = HubChooser("fo", None, False, candidates=[Candidate(1, "edge-1", first),
                                                         Candidate(2, "edge-2", second, members=3)])
    participant = Participant(ParticipantOptions(hub=first, room="fo", name="ana", voice=False, duration=30.0,
                                                 fps=15.0, view_size=(64, 36)), hubs=chooser)
    reports: list[dict] = []
    runner = threading.Thread(target=lambda: reports.append(participant.run()), daemon=True)
    try:
        with Node(second, "fo", "ben", decode=False) as ben:
            runner.start()
            deadline = time.monotonic() + 20
            while getattr(getattr(participant, "node", None), "id", None) is None and time.monotonic() < deadline:
                ben.heartbeat()
                ben.poll(0.05)
            assert participant.node.hub == first
            time.sleep(0.5)  # a meeting in progress
            hubs[0].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            got = []
            while not got and time.monotonic() - killed < 10:
                ben.heartbeat()
                got = [f for f in ben.poll(0.02) if f.name == "ana"]
            flowing = time.monotonic() - killed
            assert got, "no frame from the participant within 10 s of its hub's death"
            print(f"frames flowing again {flowing:.2f} s after the SIGKILL")
            assert flowing <= 3.0
            assert participant.node.hub == second
            assert "ana" in {m["name"] for m in query_stats(second)["rooms"]["fo"]}
        participant.stop_event.set()
        runner.join(15)
        report = reports[0]
        assert report["failovers"] == 1 and report["hub"] == second
        assert 0 < report["failover_s"][0] < flowing
        assert report["frames_sent"] > 0
    finally:
        participant.stop_event.set()
        if runner.is_alive():
            runner.join(15)
        for hub in hubs:
            if hub.poll() is None:
                hub.send_signal(signal.SIGINT)
            with contextlib.suppress(Exception):
                hub.communicate(timeout=10)


def test_holoport_join_through_a_cluster_fails_over_when_its_hub_is_killed(tmp_path):
    """Real processes end to end: Redis with a password, two `holoport hub --cluster`, a
    `holoport join --cluster` that picks the idler hub; its hub is SIGKILLed; a member of
    the other hub gets its frames (from its new membership there) within 3 s."""
    if REDIS_SERVER is None:
        pytest.skip(NOT_INSTALLED)
    password = tmp_path / "redis.password"
    password.write_text("s3cret\n")
    procs = []
    with RedisServer(password="s3cret") as server:
        cluster = ["--cluster", server.url, "--redis-password-file", str(password)]
        try:
            endpoints = [free_tcp_endpoint(), free_tcp_endpoint()]
            procs += [spawn("hub", "--bind", ep, "--site", f"edge-{i}", *cluster) for i, ep in enumerate(endpoints)]
            for ep in endpoints:
                query_stats(ep, timeout=30)
            registry = Registry.from_options(server.url, password_file=str(password))
            numbers = {r.endpoint: r.id for r in registry.hubs()}
            registry.close()
            idle, busy = endpoints
            with Node(busy, "r", "ben", decode=False) as ben, Node(busy, "r", "cleo", decode=False) as cleo:
                procs.append(spawn("join", *cluster, "--room", "r", "--name", "ana", "--no-voice", "--duration", "30",
                                   "--out", str(tmp_path / "out"), "--view-size", "64x36"))

                def frames_from_ana(timeout: float, besides: int | None = None) -> tuple[list, float]:
                    t0 = time.monotonic()
                    while time.monotonic() - t0 < timeout:
                        for n in (ben, cleo):
                            n.heartbeat()
                        cleo.poll(0)
                        got = [f for f in ben.poll(0.02) if f.name == "ana" and f.sender != besides]
                        if got:
                            return got, time.monotonic() - t0
                    return [], timeout

                got, _ = frames_from_ana(30)
                assert got, "ana's frames never reached the other hub's member"
                first_id = got[0].sender
                assert first_id >> 32 == numbers[idle], "ana should have chosen the idle hub"
                time.sleep(0.5)
                procs[0].send_signal(signal.SIGKILL)
                got, flowing = frames_from_ana(10, besides=first_id)
                assert got and got[0].sender >> 32 == numbers[busy], "no frames from ana's new membership"
                print(f"holoport join: frames flowing again {flowing:.2f} s after its hub's SIGKILL")
                assert flowing <= 3.0
            procs[2].send_signal(signal.SIGINT)
            out = procs[2].communicate(timeout=30)[0]
            assert procs[2].returncode == 0, out
            report = json.loads(next((tmp_path / "out").glob("seat*.json")).read_text())
            assert report["failovers"] == 1 and report["hub"] == busy, out
            assert report["failover_s"][0] < flowing
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                with contextlib.suppress(Exception):
                    proc.communicate(timeout=10)


def test_a_node_moved_to_another_hub_is_a_new_member_there_and_its_voice_follows():
    from capture.audio import ArraySource
    from holoport.voice import VoiceChannel

    noise = (np.random.default_rng(0).standard_normal(48_000 * 6) * 0.2).astype(np.float32)
    with Hub(free_tcp_endpoint(), seats=3) as first, Hub(free_tcp_endpoint(), seats=3) as second, \
            Node(first.endpoint, "v", "ana", decode=False) as ana, \
            Node(second.endpoint, "v", "ben", decode=False) as ben, \
            VoiceChannel(ben, None, None, listen=False) as ben_voice, \
            VoiceChannel(ana, ArraySource(noise, realtime=True), None) as ana_voice:

        def until(predicate, timeout: float = 5.0) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not predicate():
                for n in (ana, ben):
                    n.heartbeat()
                    n.poll(0.01)
            return predicate()

        assert until(lambda: ana_voice.attached and ben_voice.attached)
        old_id = ana.id
        ana.move_to(second.endpoint, None, join_timeout=2.0)
        assert ana.hub == second.endpoint and ana.id != old_id and ben.id in ana.peers
        assert until(lambda: ana.id in ben.peers and ben_voice.counters.received > 10)
        assert until(lambda: not first.members)  # the goodbye reached the first hub


def test_silence_counts_from_an_unanswered_question_so_our_own_stall_is_no_dead_hub():
    with Hub(free_tcp_endpoint(), seats=3) as hub, Node(hub.endpoint, "s", "ana", decode=False) as ana:
        ana.time_every = 0.05
        loudest = 0.0
        for _ in range(20):
            ana.heartbeat()
            ana.poll(0.02)
            loudest = max(loudest, ana.silent_for())
        assert loudest < 0.3, "a live hub answers every time request"
        time.sleep(1.2)  # we ask nothing: the hub owes us nothing
        ana.poll(0)
        assert ana.silent_for() == 0.0
        hub.stop()
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            ana.heartbeat()
            ana.poll(0.02)
        assert ana.silent_for() > 0.9
