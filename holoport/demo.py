"""``holoport demo``: a hub and N participants, each in its own process, on loopback.

Everything is real except the people: each participant films a synthetic person with a
synthetic RGB-D camera, cuts them out, encodes, sends through the hub, receives and
decodes everyone else and renders the room from its seat. At the end each participant
has written its view and animation; the demo prints one table per participant and a
montage of all the seats.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from holoport.console import wide_console
from holoport.endpoints import free_tcp_endpoint
from holoport.stats import STAGES, WHAT

NAMES = ["ana", "ben", "chiara", "dev", "emeka", "fatima", "goro", "hana"]
LABELS = {"capture": "capture", "encode": "encode", "send": "send", "network": "network (hub)",
          "decode": "decode", "wait": "wait for render", "render": "render", "end_to_end": "end to end"}


def run_demo(participants: int = 3, duration: float = 10.0, fps: float = 15.0,
             out: str = "holoport-demo", view_size: tuple[int, int] = (640, 360),
             console: Console | None = None, codec: str = "baseline",
             codec_options: dict | None = None) -> tuple[list[dict], bool]:
    """Run the meeting; the participants' reports, and whether Ctrl-C ended it early (then
    a participant still joining leaves no report, and that is no failure)."""
    if not 2 <= participants <= len(NAMES):
        raise ValueError(f"the demo runs 2..{len(NAMES)} participants, got {participants}")
    console = console or wide_console()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("seat*"):
        old.unlink()
    with console.status("Loading kernels (the first run on a machine compiles them, for a minute or so; "
                        "later runs load them from numba's cache)..."):
        from codec import for_meeting
        from holoport.warmup import warm_up

        warm_up([for_meeting(codec, **(codec_options or {}))], cameras=False)
    endpoint = free_tcp_endpoint()
    py = [sys.executable, "-m", "holoport"]
    # several participants share this machine's cores: parallel kernels in each would only
    # wait on each other, so each participant renders and captures on one thread
    single_threaded = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    children: list[subprocess.Popen] = []  # the hub first, then the participants
    interrupted = False
    # Each child runs in a session of its own, so a terminal's Ctrl-C (or hang-up) reaches
    # only this process, which then tells the children itself: SIGTERM, which the hub and
    # the participants take as "finish now" (a child still loading just ends).
    with _signals_interrupt():
        try:
            children.append(_start([*py, "hub", "--bind", endpoint, "--seats", str(participants), "--quiet"]))
            time.sleep(0.3)
            if children[0].poll() is not None:
                raise RuntimeError(f"the hub exited at start (code {children[0].returncode}); "
                                   "see its message above")
            for i in range(participants):
                children.append(_start([
                    *py, "join", "--hub", endpoint, "--room", "demo", "--name", NAMES[i],
                    "--body", str(i), "--fps", str(fps), "--duration", str(duration),
                    "--out", str(out_dir), "--view-size", f"{view_size[0]}x{view_size[1]}", "--quiet",
                    "--codec", codec, *(f"--codec-option={k}={v}" for k, v in (codec_options or {}).items()),
                    "--mic", "speech", "--speaker", "file",
                ], env=single_threaded))
            console.print(f"[bold]Holoport demo[/]: hub on {endpoint}, {participants} participants, "
                          f"{duration:g} s at {fps:g} fps, {codec} codec. Ctrl-C ends it early.")
            _wait(children[1:], duration, console)
        except KeyboardInterrupt:
            interrupted = True
            console.print("Interrupted: each participant is writing its view and animation "
                          "(Ctrl-C again to stop at once)...")
            if not _stop(children[1:], timeout=None):
                console.print("[red]Stopped at once: the participants' views may be missing or cut short.[/]")
        finally:
            _stop(children, timeout=5)
    reports = []
    for path in sorted(out_dir.glob("seat*.json")):
        reports.append(json.loads(path.read_text()))
    if not reports:
        if interrupted:  # nobody had anything to write
            raise KeyboardInterrupt
        raise RuntimeError("no participant finished; see the messages above")
    _print_tables(reports, console)
    montage = _montage(out_dir, reports)
    console.print(f"Wrote each seat's view (seatN.png), animation (seatN.gif), the room's voices as heard "
                  f"from that seat (seatN.wav) and statistics (seatN.json) to {out_dir}/"
                  + (f", and all seats in {montage}" if montage else ""))
    if len(reports) < participants:
        console.print(f"{participants - len(reports)} participant(s) left no report"
                      + (" (interrupted before they had joined)." if interrupted else "."))
    return reports, interrupted


def _start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, start_new_session=True)


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP (a closed terminal) end the demo as Ctrl-C does, so that the
    children, in sessions of their own, are stopped rather than left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.default_int_handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop(procs: list[subprocess.Popen], timeout: float | None) -> bool:
    """SIGTERM to those still running, then wait (``timeout`` None: as long as they take);
    whoever is still running after it, or after another Ctrl-C, is killed. True when all
    ended by themselves."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(None if deadline is None else max(0.1, deadline - time.monotonic()))
        return True
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        return False


def _wait(procs: list[subprocess.Popen], duration: float, console: Console) -> None:
    with Progress(TextColumn("meeting"), BarColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("meeting", total=duration)
        start = time.monotonic()
        while any(p.poll() is None for p in procs):
            bar.update(task, completed=min(duration, time.monotonic() - start))
            time.sleep(0.2)
    failed = [p.args for p in procs if p.returncode != 0]
    if failed:
        console.print(f"[red]{len(failed)} participant(s) exited with an error[/]")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _print_tables(reports: list[dict], console: Console) -> None:
    for r in reports:
        table = Table(title=f"{r['name']} (seat {r['seat']})", title_justify="left")
        table.add_column("sent", justify="right")
        table.add_column("received (per sender)", justify="right")
        table.add_column("fps sent / rendered", justify="right")
        table.add_column("points/frame", justify="right")
        table.add_column("Mbit/s up / down", justify="right")
        per = ", ".join(f"{k}: {v}" for k, v in sorted(r["received_by_sender"].items()))
        table.add_row(str(r["frames_sent"]), f"{r['frames_received']} ({per})",
                      f"{r['fps_sent']:.1f} / {r['fps_rendered']:.1f}",
                      f"{r['points_per_frame']:,.0f}",
                      f"{r['mbps_sent']:.1f} / {r['mbps_received']:.1f}")
        console.print(table)
        lat = Table(title=f"latency ms of the {r.get('frames_shown', 0)} remote frames shown, one sample "
                          "per stage per frame (from the remote camera to our first image of it)",
                    title_justify="left", show_edge=False)
        lat.add_column("")
        for stage in STAGES:
            lat.add_column(LABELS[stage], justify="right")
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            lat.add_row(q[:3], *(_fmt(r["latency"][s].get(q)) for s in STAGES))
        console.print(lat)
        if r.get("voice"):  # a voice process that never answered leaves "-" cells
            console.print(_voice_table(r["voice"], r["seconds"]))
    console.print("Latency stages, which add up to end to end frame by frame: "
                  + "; ".join(f"{LABELS[s]}: {WHAT[s]}" for s in STAGES if s != "end_to_end") + ".")


def _voice_table(v: dict, seconds: float) -> Table:
    where = f", in {v['audio']}" if v.get("audio") else ""
    table = Table(title=f"voice (Opus, each voice from its seat{where})",
                  title_justify="left", show_edge=False)
    for col in ("packets sent", "kbit/s up", "packets heard", "lost / concealed", "jitter delay ms",
                "A/V skew p50 / p95 ms", "in sync"):
        table.add_column(col, justify="right")
    peers = v.get("peers", {}).values()
    lost = sum(p.get("lost", 0) for p in peers)
    concealed = sum(p.get("concealed", 0) for p in peers)
    delays = [p["delay_ms"] for p in peers if p.get("delay_ms") is not None]
    table.add_row(str(v.get("sent", "-")),
                  f"{v['sent_bytes'] * 8 / seconds / 1e3:.1f}" if seconds and "sent_bytes" in v else "-",
                  str(v.get("received", "-")), f"{lost} / {concealed}",
                  _fmt(float(np.mean(delays)) if delays else None),
                  f"{_fmt(v.get('av_skew_p50_ms'))} / {_fmt(v.get('av_skew_p95_ms'))}",
                  "-" if v.get("in_sync_share") is None else f"{v['in_sync_share']:.0%}")
    return table


def _montage(out_dir: Path, reports: list[dict]) -> Path | None:
    images = [iio.imread(out_dir / r["view"]["image"]) for r in reports if "view" in r]
    if not images:
        return None
    path = out_dir / "meeting.png"
    iio.imwrite(path, np.concatenate(images, axis=1))
    return path
