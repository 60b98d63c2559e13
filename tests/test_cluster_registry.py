"""The hub cluster's directory (holoport/cluster.py) against a real redis-server."""

from __future__ import annotations

import logging
import math
import time

import msgpack
import pytest

from holoport.cluster import ClusterAgent, ClusterError, ClusterUnavailable, ClusterView, HubRecord, Registry
from tests.redis_server import RedisServer, free_port, redis_server_fixture, requires_redis  # noqa: F401


def record(hub_id: int, **kw) -> HubRecord:
    return HubRecord(id=hub_id, site=f"edge-{hub_id}", endpoint=f"tcp://10.0.0.{hub_id}:5555",
                     cascade=f"tcp://10.0.0.{hub_id}:5556", **kw)


def wait_for(predicate, timeout: float, step: float = 0.01) -> float:
    """Seconds until ``predicate()`` held; fails the test past ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def test_publish_and_read_back(redis_server):
    reg = Registry(redis_server.url)
    reg.check()
    a = record(2, key="k" * 40, seats=8, members=3, mbps=12.5, cpu=0.4, rooms={"lab": 2, "demo": 1}, started=1.7e9)
    b = record(1)
    reg.publish(a)
    reg.publish(b)
    assert reg.hubs() == [b, a]
    assert a.serves("lab") and not b.serves("lab")
    view = ClusterView(tuple(reg.hubs()), True, time.monotonic())
    assert view.serving("lab") == [a] and view.serving("lab", but=2) == [] and view.serving("nowhere") == []
    reg.withdraw(2)
    assert reg.hubs() == [b]
    reg.close()


def test_a_record_not_renewed_is_gone_after_its_lease(redis_server):
    reg = Registry(redis_server.url, lease_s=0.5)
    start = time.monotonic()
    reg.publish(record(1))
    assert [h.id for h in reg.hubs()] == [1]
    wait_for(lambda: reg.hubs() == [], timeout=1.5)
    assert 0.45 < time.monotonic() - start < 1.5


def test_hub_numbers_are_unique_and_survive_a_redis_restart(redis_server):
    reg = Registry(redis_server.url)
    ids = [reg.next_hub_id() for _ in range(3)]
    assert ids == sorted(set(ids))
    redis_server.restart()  # the counter is lost; hub 7 lives on and renews its record
    reg.publish(record(7))
    assert reg.next_hub_id() > 7
    redis_server.restart()
    with redis_server.client() as raw:  # live hubs that have not renewed since: their numbers are passed over
        raw.set("holoport:hub:1", record(1).to_bytes())
        raw.set("holoport:hub:2", record(2).to_bytes())
    assert reg.next_hub_id() == 3


@requires_redis
def test_password_from_file_or_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HOLOPORT_REDIS_PASSWORD", raising=False)
    secret = tmp_path / "redis.pw"
    secret.write_text("s3cret pass\n")
    with RedisServer(password="s3cret pass") as server:
        Registry.from_options(server.url, str(secret)).check()
        with pytest.raises(ClusterError, match="refused us.*--redis-password-file"):  # NOAUTH
            Registry.from_options(server.url).check()
        monkeypatch.setenv("HOLOPORT_REDIS_PASSWORD", "s3cret pass")
        Registry.from_options(server.url).check()
        monkeypatch.setenv("HOLOPORT_REDIS_PASSWORD", "wrong")
        Registry.from_options(server.url, str(secret)).check()  # the file wins
        with pytest.raises(ClusterError, match="refused us.*--redis-password-file") as refused:
            Registry.from_options(server.url).check()
        assert not isinstance(refused.value, ClusterUnavailable)
        assert "wrong" not in str(refused.value)
    with pytest.raises(FileNotFoundError, match="no Redis password file"):
        Registry.from_options("redis://127.0.0.1:1", str(tmp_path / "missing"))


@pytest.mark.parametrize("url", ["redis://:pw@127.0.0.1:6379", "redis://holo:pw@127.0.0.1:6379/0",
                                 "rediss://:pw@redis.example:6380", "redis://127.0.0.1:6379?password=pw"])
def test_a_password_in_the_url_is_refused(url):
    with pytest.raises(ValueError, match="--redis-password-file or HOLOPORT_REDIS_PASSWORD, never the command line"):
        Registry(url)


def test_a_url_that_is_not_redis_is_refused():
    with pytest.raises(ValueError, match="redis://HOST:PORT"):
        Registry("http://127.0.0.1:6379")


def test_no_redis_fails_fast_and_says_what_to_do():
    url = f"redis://127.0.0.1:{free_port()}"
    reg = Registry(url)
    start = time.monotonic()
    with pytest.raises(ClusterError, match=f"no Redis answered at {url}.*redis-server --port 6379.*--cluster"):
        reg.check()
    with pytest.raises(ClusterUnavailable):
        reg.publish(record(1))
    with pytest.raises(ClusterUnavailable):
        reg.hubs()
    assert time.monotonic() - start < 2.0


def test_malformed_records_are_skipped(redis_server):
    reg = Registry(redis_server.url)
    good = record(1, rooms={"lab": 1})
    reg.publish(good)
    body = msgpack.unpackb(good.to_bytes())
    bad = {
        99: b"garbage",
        98: msgpack.packb([1, 2, 3]),
        97: msgpack.packb({**body, "id": 97, "rooms": {"x" * 65: 1}}),
        96: msgpack.packb({**body, "id": 96, "members": -1}),
        95: msgpack.packb({**body, "id": 95, "cpu": math.nan}),
        94: msgpack.packb({**body, "id": 1}),  # a record under another hub's number
        93: msgpack.packb({**body, "id": 93, "seats": True}),
    }
    with redis_server.client() as raw:
        for n, value in bad.items():
            raw.set(f"holoport:hub:{n}", value)
        raw.set("holoport:hub:", good.to_bytes())
    assert reg.hubs() == [good]


@pytest.mark.parametrize("change", [
    {"id": 1 << 21}, {"id": -1}, {"id": "1"}, {"site": "s" * 257}, {"endpoint": None}, {"rooms": {"": 1}},
    {"rooms": {"lab": -2}}, {"rooms": ["lab"]}, {"mbps": math.inf}, {"started": "yesterday"}, {"key": 5},
])
def test_from_bytes_checks_every_field(change):
    body = {**msgpack.unpackb(record(1).to_bytes()), **change}
    with pytest.raises(ValueError):
        HubRecord.from_bytes(msgpack.packb(body))


def test_from_bytes_ignores_fields_it_does_not_know():
    body = {**msgpack.unpackb(record(1).to_bytes()), "region": "eu"}
    assert HubRecord.from_bytes(msgpack.packb(body)) == record(1)
    with pytest.raises(ValueError):
        HubRecord.from_bytes(msgpack.packb({"id": 1}))


def test_agent_keeps_its_record_alive_and_sees_the_others(redis_server):
    reg = Registry(redis_server.url, lease_s=0.5)
    other = Registry(redis_server.url, lease_s=30)
    other.publish(record(5, rooms={"lab": 2}))
    load = {"members": 2, "mbps": 3.5, "rooms": {"lab": 2}}
    with ClusterAgent(reg, record(reg.next_hub_id()), lambda: load, every=0.1) as agent:
        me = agent.record.id
        assert me == 6  # past the number hub 5 raised the counter to
        assert agent.view.ok and [h.id for h in agent.view.hubs] == [5, me]  # there when start() returns
        time.sleep(1.6)  # several leases
        hubs = {h.id: h for h in other.hubs()}
        assert hubs[me].members == 2 and hubs[me].mbps == 3.5 and hubs[me].rooms == {"lab": 2}
        assert hubs[me].started > 0 and hubs[me].cpu >= 0
        assert [h.id for h in agent.view.serving("lab", but=me)] == [5]
        assert agent.published >= 8 and agent.outages == 0
    assert [h.id for h in other.hubs()] == [5]  # withdrawn at once, not after the lease
    with redis_server.client() as raw:
        assert not raw.exists(f"holoport:hub:{me}")


def test_agent_stopped_without_withdrawing_leaves_the_lease_to_end(redis_server):
    reg = Registry(redis_server.url, lease_s=0.5)
    agent = ClusterAgent(reg, record(3), lambda: {}, every=0.1).start()
    agent.stop(withdraw=False)
    assert [h.id for h in reg.hubs()] == [3]
    wait_for(lambda: reg.hubs() == [], timeout=1.5)


def test_agent_rides_out_a_redis_outage(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="holoport.cluster")
    reg = Registry(redis_server.url, lease_s=0.5, timeout_s=0.2)
    other = Registry(redis_server.url, lease_s=30)
    other.publish(record(2, rooms={"lab": 1}))
    with ClusterAgent(reg, record(9), lambda: {"rooms": {"lab": 1}}, every=0.1) as agent:
        assert agent.view.ok and len(agent.view.hubs) == 2
        redis_server.kill()
        assert wait_for(lambda: not agent.view.ok, timeout=1.0) < 1.0
        time.sleep(0.5)  # several failed rounds: one warning, one outage
        assert agent._thread is not None and agent._thread.is_alive()
        assert [h.id for h in agent.view.serving("lab", but=9)] == [2]  # the last hubs are kept
        assert agent.outages == 1
        redis_server.restart()  # empty: the record comes back, and the counter is raised
        wait_for(lambda: agent.view.ok, timeout=2.0)
        assert 9 in [h.id for h in reg.hubs()]
        assert reg.next_hub_id() > 9
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"Redis at {redis_server.url} unreachable: meetings go on; new rooms across hubs wait for it"]
    assert sum("Redis is back: record published again" in r.getMessage() for r in caplog.records) == 1


def test_agent_survives_a_failing_load(redis_server, caplog):
    calls = []

    def load() -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise KeyError("the hub's load broke")
        return {"members": len(calls)}

    with ClusterAgent(Registry(redis_server.url), record(4), load, every=0.05) as agent:
        wait_for(lambda: agent.record.members >= 3, timeout=1.0)
    assert "round failed" in caplog.text


def test_publish_now_does_not_wait_for_the_next_round(redis_server):
    reg = Registry(redis_server.url)
    load = {"members": 0, "rooms": {}}
    with ClusterAgent(reg, record(1), lambda: load, every=5.0) as agent:
        time.sleep(0.1)  # the thread waits out its round
        load = {"members": 1, "rooms": {"new": 1}}
        agent.publish_now()
        assert wait_for(lambda: reg.hubs()[0].serves("new"), timeout=0.2) < 0.2
        assert wait_for(lambda: agent.view.serving("new"), timeout=0.2) < 0.2
