"""CURVE between node and hub over real sockets: allowed keys join, others are told why."""

import logging
import time

import numpy as np
import pytest

from holoport.endpoints import free_tcp_endpoint
from holoport.hub import Hub
from holoport.node import JoinError, Node
from holoport.security import HubSecurity, KeyPair, NodeSecurity, create_keys, load_public


@pytest.fixture
def keys(tmp_path):
    """A hub, two allowed participants and a stranger, each with a key pair."""
    allow = tmp_path / "allow"
    allow.mkdir()
    made = {name: create_keys(tmp_path / "keys", name) for name in ("hub", "ana", "ben", "eve")}
    for name in ("ana", "ben"):  # the hub's operator copies their public keys in
        (allow / made[name][0].name).write_bytes(made[name][0].read_bytes())
    return allow, made


@pytest.fixture
def secure_hub(keys):
    allow, made = keys
    security = HubSecurity(KeyPair.load(made["hub"][1]), allow)
    with Hub(free_tcp_endpoint(), seats=3, security=security) as hub:
        yield hub


def _node_security(made, name):
    return NodeSecurity(KeyPair.load(made[name][1]), load_public(made["hub"][0]))


def test_allowed_participants_exchange_frames_encrypted(secure_hub, keys):
    _, made = keys
    with Node(secure_hub.endpoint, "r", "ana", security=_node_security(made, "ana")) as a, \
            Node(secure_hub.endpoint, "r", "ben", security=_node_security(made, "ben")) as b:
        pos = np.random.default_rng(0).uniform(0, 1, (500, 3)).astype(np.float32)
        a.send((pos, np.zeros((500, 3), np.uint8)))
        got = []
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            got = b.poll(0.1)
        assert len(got) == 1 and len(got[0].positions) == 500


def test_a_key_not_on_the_allow_list_is_refused_clearly_and_logged(secure_hub, keys, caplog):
    _, made = keys
    started = time.monotonic()
    with caplog.at_level(logging.INFO), pytest.raises(JoinError, match="refused our key"):
        Node(secure_hub.endpoint, "r", "eve", security=_node_security(made, "eve"),
             join_timeout=10).start()
    assert time.monotonic() - started < 3  # told, not left waiting for the timeout
    eve = load_public(made["eve"][0]).decode()
    assert any("refused" in r.getMessage() and eve in r.getMessage() for r in caplog.records)
    assert secure_hub.security.refused >= 1 and secure_hub.members == {}


def test_a_key_added_while_the_hub_runs_is_admitted(secure_hub, keys):
    allow, made = keys
    (allow / "eve.key").write_bytes(made["eve"][0].read_bytes())
    with Node(secure_hub.endpoint, "r", "eve", security=_node_security(made, "eve")) as eve:
        assert eve.seat == 0


def test_a_participant_without_keys_is_told_the_hub_requires_encryption(secure_hub):
    with pytest.raises(JoinError, match="requires encryption"):
        Node(secure_hub.endpoint, "r", "plain", join_timeout=10).start()
    assert secure_hub.members == {}


def test_a_wrong_hub_key_fails_the_handshake_clearly(secure_hub, keys):
    _, made = keys
    wrong = NodeSecurity(KeyPair.load(made["ana"][1]), load_public(made["eve"][0]))
    with pytest.raises(JoinError, match="handshake"):
        Node(secure_hub.endpoint, "r", "ana", security=wrong, join_timeout=10).start()


def test_off_machine_endpoints_need_keys_or_insecure(keys):
    _, made = keys
    with pytest.raises(ValueError, match="holoport keys"):
        Node("tcp://192.0.2.1:5555")
    Node("tcp://192.0.2.1:5555", security=_node_security(made, "ana"))  # accepted: encrypted


def test_key_files_are_checked(tmp_path, keys):
    _, made = keys
    with pytest.raises(ValueError, match="no secret key"):
        KeyPair.load(made["ana"][0])  # the public half
    with pytest.raises(FileNotFoundError, match="holoport keys"):
        load_public(tmp_path / "missing.key")
    with pytest.raises(FileExistsError):
        create_keys(made["ana"][0].parent, "ana")
    assert (made["ana"][1].stat().st_mode & 0o777) == 0o600
