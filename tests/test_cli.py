"""The `holoport` command as a user meets it: help, errors that say what to do, the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from holoport.endpoints import free_tcp_endpoint
from tests.conftest import ROOT, holoport_cmd, spawn


def run(*args, timeout=60):
    return subprocess.run(holoport_cmd(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _commands() -> list[list[str]]:
    """Every subcommand and every benchmark, from the parser itself (a new one is covered)."""
    import argparse

    from holoport.cli import build_parser

    def subs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return actions[0].choices if actions else {}

    found = [[]]
    for name, sub in subs(build_parser()).items():
        found.append([name])
        found.extend([name, inner] for inner in subs(sub))
    return found


def test_every_subcommand_has_help(capsys):
    from holoport.cli import main

    commands = _commands()
    assert len(commands) >= 19 and ["bench", "link"] in commands and ["record"] in commands
    for sub in commands:
        with pytest.raises(SystemExit) as done:
            main([*sub, "--help"])
        assert done.value.code == 0, sub
        text = capsys.readouterr().out
        assert text.startswith(f"usage: holoport {' '.join(sub)}".rstrip()), (sub, text[:200])
        assert "options:" in text, sub


@pytest.mark.parametrize("argv, says", [
    (["play", "/no/such.hprec"], "no such file or folder: /no/such.hprec; make a recording with `holoport record"),
    (["calibrate", "rig.json", "--board", "/no/board.json", "--camera", "a", "a.png", "a.yml"],
     "no such file or folder: /no/board.json; check the paths of --board"),
    (["bench", "link", "--traces", "/no/traces"], "--traces /no/traces: no such folder"),
    (["bench", "render", "--data", "/no/frames"], "pass --data FILE_OR_DIR or set HOLOPORT_DATA"),
    (["bench", "live", "--source", "/no/rec.hprec"], "a recording (make one with holoport record)"),
])
def test_a_missing_file_is_named_with_what_to_do(argv, says, capsys):
    from holoport.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # benchmarks stop with their message (exit status 1)
        code, message = (1 if isinstance(exc.code, str) else exc.code), str(exc.code)
    else:
        message = capsys.readouterr().err
    assert code == 1 and says in message, message
    assert "Traceback" not in message and "[Errno" not in message


def test_stats_without_a_hub_says_how_to_start_one(capsys):
    from holoport.cli import main

    endpoint = free_tcp_endpoint()
    assert main(["stats", "--hub", endpoint]) == 3
    assert f"`holoport hub --bind {endpoint}`" in capsys.readouterr().err


def test_the_console_command_is_installed():
    script = Path(sys.executable).parent / "holoport"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable} (not installed with pip)")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: holoport" in result.stdout


def test_the_demo_runs_about_ten_seconds_by_default():
    from holoport.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.duration, args.participants) == (10, 3)


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
    for column in ("sent", "received (per sender)", "fps sent", "points/frame", "Mbit/s up / down", "capture",
                   "encode", "network", "decode", "render", "end to end", "p50", "p95"):
        assert column in result.stdout, column


def _demo(tmp_path: Path, monkeypatch) -> tuple[subprocess.Popen, str]:
    """`holoport demo` in a session of its own, as a terminal starts it; its children carry
    a tag in their environment, so that any left running can be found."""
    tag = f"demo-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("HOLOPORT_TEST_TAG", tag)
    return spawn("demo", "--duration", "120", "--fps", "10", "--out", str(tmp_path), start_new_session=True), tag


def _tagged(tag: str) -> list[int]:
    """Processes still running with ``tag`` in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"HOLOPORT_TEST_TAG={tag}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return found


def _signal(demo: subprocess.Popen, tag: str, sig: int = signal.SIGINT) -> str:
    """Ctrl-C as a terminal sends it (SIGINT to the demo's process group), or ``sig``.
    Returns the output, after checking that no traceback was printed and that no process
    of the demo was left running."""
    os.killpg(demo.pid, sig)
    out, _ = demo.communicate(timeout=90)
    assert "Traceback" not in out, out
    assert _tagged(tag) == [], "processes of the demo are still running"
    return out


def _wait_for_the_meeting(demo: subprocess.Popen) -> None:
    """Until the three participants have joined and frames flow through the hub."""
    from holoport.hubstats import query_stats

    for line in demo.stdout:
        if line.startswith("Holoport demo:"):
            endpoint = line.split("hub on ", 1)[1].split(",", 1)[0]
            break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = query_stats(endpoint)
        if len(stats["rooms"].get("demo", [])) == 3 and stats["forwarded"] >= 30:
            return
        time.sleep(0.3)
    raise AssertionError(f"the meeting never got going: {stats}")


def test_ctrl_c_ends_the_demo_cleanly(tmp_path, monkeypatch):
    demo, tag = _demo(tmp_path, monkeypatch)
    _wait_for_the_meeting(demo)
    assert demo.poll() is None, "the demo ended before it was interrupted"
    out = _signal(demo, tag)
    assert demo.returncode == 0, out
    assert "Interrupted" in out
    assert len(list(tmp_path.glob("seat*.json"))) == 3
    assert (tmp_path / "meeting.png").exists()


@pytest.mark.parametrize("moment, sig", [("loading", signal.SIGINT), ("participants starting", signal.SIGINT),
                                         ("participants starting", signal.SIGTERM)])
def test_ctrl_c_while_the_demo_starts_ends_it_quietly(tmp_path, monkeypatch, moment, sig):
    demo, tag = _demo(tmp_path, monkeypatch)
    if moment == "loading":
        time.sleep(0.5)
    else:
        for line in demo.stdout:
            if line.startswith("Holoport demo:"):
                break
        time.sleep(0.3)
    assert demo.poll() is None, "the demo ended before it was interrupted"
    out = _signal(demo, tag, sig)
    assert demo.returncode in (0, 130), out
    assert "nterrupted" in out, out


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
