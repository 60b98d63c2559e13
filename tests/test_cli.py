"""The `holoport` command as a user meets it: help, errors that say what to do, the demo."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT, holoport_cmd, spawn


def run(*args, timeout=60):
    return subprocess.run(holoport_cmd(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("sub", [[], ["demo"], ["hub"], ["join"], ["keys"], ["stats"], ["bench"], ["bench", "codec"]])
def test_every_subcommand_has_help(sub):
    result = run(*sub, "--help")
    assert result.returncode == 0
    assert "usage: holoport" in result.stdout


def test_no_subcommand_prints_help_and_fails():
    result = run()
    assert result.returncode == 2 and "demo" in result.stdout


def test_joining_a_missing_hub_says_what_to_do():
    result = run("join", "--hub", "tcp://127.0.0.1:9", "--duration", "1")
    assert result.returncode == 3
    assert "no hub answered" in result.stderr and "holoport hub" in result.stderr


def test_an_open_bind_without_encryption_is_refused_with_advice():
    result = run("hub", "--bind", "tcp://0.0.0.0:5599")
    assert result.returncode == 1
    assert "--insecure" in result.stderr and "127.0.0.1" in result.stderr


def test_bad_sizes_are_explained():
    result = run("demo", "--view-size", "big")
    assert result.returncode == 2 and "WIDTHxHEIGHT" in result.stderr


def test_the_demo_writes_views_animations_and_a_table(tmp_path):
    result = run("demo", "--duration", "4", "--fps", "10", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for seat in range(3):
        assert (tmp_path / f"seat{seat}.png").stat().st_size > 10_000
        assert (tmp_path / f"seat{seat}.gif").exists()
        report = json.loads((tmp_path / f"seat{seat}.json").read_text())
        assert len(report["received_by_sender"]) == 2
    assert (tmp_path / "meeting.png").exists()
    for column in ("sent", "points/frame", "capture", "encode", "network", "decode", "render", "p95"):
        assert column in result.stdout


def test_ctrl_c_ends_the_demo_cleanly(tmp_path):
    demo = spawn("demo", "--duration", "120", "--fps", "10", "--out", str(tmp_path))
    for line in demo.stdout:  # wait until the participants have started...
        if line.startswith("Holoport demo:"):
            break
    time.sleep(4)  # ...and have met for a few seconds
    assert demo.poll() is None, "the demo ended before it was interrupted"
    demo.send_signal(signal.SIGINT)
    out, _ = demo.communicate(timeout=40)
    assert demo.returncode == 0, out
    assert "Interrupted" in out
    assert len(list(tmp_path.glob("seat*.json"))) == 3
    assert (tmp_path / "meeting.png").exists()


def test_an_encrypted_meeting_from_the_command_line(tmp_path):
    """`holoport keys`, a CURVE hub with an allow-list, two admitted participants and a
    stranger who is told that the hub refused their key (real processes)."""
    keys, allow = tmp_path / "keys", tmp_path / "allow"
    for name in ("hub", "ana", "ben", "eve"):
        result = run("keys", name, "--dir", str(keys))
        assert result.returncode == 0 and f"{name}.key_secret" in result.stdout
    assert run("keys", "ana", "--dir", str(keys)).returncode == 1  # never overwrites a key
    allow.mkdir()
    for name in ("ana", "ben"):
        (allow / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
    from holoport.endpoints import free_tcp_endpoint

    endpoint = free_tcp_endpoint()
    hub = spawn("hub", "--bind", endpoint, "--key", str(keys / "hub.key_secret"), "--allow", str(allow))
    time.sleep(0.5)
    secure = ["--hub", endpoint, "--hub-key", str(keys / "hub.key"), "--duration", "4", "--fps", "5"]
    procs = [spawn("join", *secure, "--name", n, "--key", str(keys / f"{n}.key_secret"), "--body", str(i),
                   "--out", str(tmp_path / "out")) for i, n in enumerate(("ana", "ben"))]
    stranger = run("join", *secure, "--name", "eve", "--key", str(keys / "eve.key_secret"))
    plain = run("join", "--hub", endpoint, "--duration", "1")
    outputs = [p.communicate(timeout=90)[0] for p in procs]
    hub.send_signal(signal.SIGINT)
    hub_out, _ = hub.communicate(timeout=10)
    assert stranger.returncode == 3 and "refused our key" in stranger.stderr
    assert plain.returncode == 3 and "requires encryption" in plain.stderr
    assert "refused a participant whose key is not on the allow-list" in hub_out
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out
    reports = [json.loads(f.read_text()) for f in (tmp_path / "out").glob("seat*.json")]
    assert sorted(r["name"] for r in reports) == ["ana", "ben"]
    assert all(sum(r["received_by_sender"].values()) >= 5 for r in reports)
    assert all("key" not in r["options"] for r in reports)  # secrets stay out of reports
