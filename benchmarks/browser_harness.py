"""Driving the browser viewer from a headless Chromium: the render benchmark's harness and
the browser tests' page.

``render.browser`` is the viewer the product serves; this module starts a real Chromium on
its page (``HeadlessChromium``, software WebGL2 through SwiftShader) and measures what the
page draws (``measure_browser_fps``, people-shaped clouds swaying at every seat) and how its
voices arrive while it draws (``measure_browser_voice``).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from render.browser import BrowserViewer, Cloud
from render.room import Room

#: Flags that give headless Chromium WebGL2 through SwiftShader (ANGLE on SwiftShader Vulkan).
CHROMIUM_FLAGS = ("--headless=new", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  "--disable-backgrounding-occluded-windows", "--mute-audio", "--hide-scrollbars")
#: Extra flags for the page's voice: WebAudio starts without a click (as after the user's first
#: gesture), and getUserMedia gets Chromium's fake microphone without a permission prompt.
#: ``--mute-audio`` stays: the audio graph still runs on its clock, nothing reaches a speaker.
AUDIO_FLAGS = ("--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
               "--use-fake-device-for-media-stream")


# ---- headless Chromium ------------------------------------------------------------------------
def find_chromium(chromium: str | None = None) -> str | None:
    """The browser to drive: the argument, $HOLOPORT_CHROMIUM, or Chromium/Chrome on PATH."""
    names = [chromium] if chromium else [os.environ.get("HOLOPORT_CHROMIUM"), "chromium", "chromium-browser",
                                         "google-chrome", "google-chrome-stable", "chrome", "headless_shell"]
    for name in names:
        if name:
            path = shutil.which(name)
            if path:
                return path
    return None


class HeadlessChromium:
    """A headless Chromium showing one URL, in its own process group and throw-away profile."""

    def __init__(self, url: str, width: int = 1280, height: int = 720, chromium: str | None = None,
                 extra_flags: Sequence[str] = ()) -> None:
        binary = find_chromium(chromium)
        if binary is None:
            raise FileNotFoundError("no Chromium found (install Debian's 'chromium' or set HOLOPORT_CHROMIUM)")
        self.binary, self.url, self.width, self.height = binary, url, width, height
        self.extra_flags = list(extra_flags)
        self._profile: tempfile.TemporaryDirectory | None = None
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        flags = [*CHROMIUM_FLAGS, f"--window-size={self.width},{self.height}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        assert self._profile is not None
        return [self.binary, *flags, f"--user-data-dir={self._profile.name}", *self.extra_flags, self.url]

    def start(self) -> HeadlessChromium:
        self._profile = tempfile.TemporaryDirectory(prefix="holoport-chromium-", ignore_cleanup_errors=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)  # the group this object started, nothing else
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    def __enter__(self) -> HeadlessChromium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- the benchmark ----------------------------------------------------------------------------
def synthetic_people(points: int, room: Room, seed: int = 0) -> list[Cloud]:
    """People-shaped coloured clouds, one per seat, in their own frames (origin under their feet)."""
    rng = np.random.default_rng(seed)
    shirts = np.array([[200, 60, 50], [50, 110, 200], [60, 170, 80], [220, 170, 40], [150, 70, 170],
                       [40, 170, 170], [230, 120, 160], [120, 120, 120]], dtype=np.float32)
    people = []
    per = np.full(room.seats, points // room.seats)
    per[: points % room.seats] += 1
    for seat in range(room.seats):
        n = int(per[seat])
        # parts: (weight, centre, radii, colour); ellipsoid surfaces, legs as tall ellipsoids
        parts = [(0.10, (0.0, 1.62, 0.0), (0.10, 0.12, 0.11), (225, 180, 150)),
                 (0.38, (0.0, 1.22, 0.0), (0.20, 0.30, 0.12), tuple(shirts[seat % len(shirts)])),
                 (0.12, (-0.27, 1.20, 0.0), (0.05, 0.28, 0.05), tuple(shirts[seat % len(shirts)])),
                 (0.12, (0.27, 1.20, 0.0), (0.05, 0.28, 0.05), tuple(shirts[seat % len(shirts)])),
                 (0.14, (-0.10, 0.46, 0.0), (0.08, 0.46, 0.08), (50, 55, 70)),
                 (0.14, (0.10, 0.46, 0.0), (0.08, 0.46, 0.08), (50, 55, 70))]
        weights = np.array([p[0] for p in parts])
        which = rng.choice(len(parts), size=n, p=weights / weights.sum())
        d = rng.normal(size=(n, 3)).astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        centres = np.array([p[1] for p in parts], dtype=np.float32)[which]
        radii = np.array([p[2] for p in parts], dtype=np.float32)[which]
        pos = centres + d * radii
        shade = 0.75 + 0.25 * d[:, 2:3]  # lit from the front, so shapes read on a flat image
        col = np.array([p[3] for p in parts], dtype=np.float32)[which] * shade
        people.append((pos.astype(np.float32), np.clip(col, 0, 255).astype(np.uint8)))
    return people


def place(people: Sequence[Cloud], room: Room, t: float = 0.0) -> list[Cloud]:
    """Seat each person, swaying a little with time so that every frame is new data."""
    out = []
    for seat, (pos, col) in enumerate(people):
        yaw = 0.25 * math.sin(1.3 * t + seat)
        c, s = math.cos(yaw), math.sin(yaw)
        sway = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        pose = room.seat_pose(seat)
        rot = (pose[:3, :3] @ sway).astype(np.float32)
        out.append((pos @ rot.T + pose[:3, 3].astype(np.float32), col))
    return out


def measure_browser_fps(points: int, seconds: float, chromium: str | None = None, width: int = 1280,
                        height: int = 720, seats: int = 4, warmup: float = 2.0, draw: str = "auto") -> dict[str, Any]:
    """Frames per second a headless Chromium page draws of a ``points``-point room.

    A fresh frame (people swaying at every seat) is published as soon as the previous one
    has been handed to the page, so the page is never starved and never queued; the rate
    is the page's own count of frames drawn over ``seconds`` after ``warmup``. ``draw``:
    "auto" (the page picks: JavaScript splats on a software WebGL, gl.POINTS on a GPU),
    "points" or "splat".
    """
    room = Room(seats=seats)
    people = synthetic_people(points, room)
    start: dict[str, Any] | None = None
    first: float | None = None
    with BrowserViewer(room=room) as viewer, HeadlessChromium(viewer.url + f"?size={width}x{height}&draw={draw}",
                                                               width, height, chromium):
        if not viewer.wait_clients(1, timeout=60.0):
            raise RuntimeError("headless Chromium did not connect")
        t0 = time.monotonic()
        deadline = t0 + 60.0 + warmup + seconds
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError("the page did not report frames in time")
            seq = viewer.publish(place(people, room, now - t0))
            viewer.wait_taken(seq, timeout=5.0)
            pages = viewer.clients()
            if not pages:
                raise RuntimeError("the page went away")
            info, page = pages[0], pages[0]["page"]
            if first is None:
                if page.get("frames", 0) >= 1:
                    first = now
            elif start is None:
                if now - first >= warmup:
                    start = page
            elif page["t"] - start["t"] >= seconds * 1000:
                break
    frames = int(page["frames"] - start["frames"])
    elapsed = (page["t"] - start["t"]) / 1000.0
    return {"renderer": "browser", "points": int(page.get("points", points)), "fps": frames / elapsed,
            "frames": frames, "seconds": elapsed, "resolution": f"{int(page.get('width', width))}x"
            f"{int(page.get('height', height))}", "gl": info["hello"].get("gl", ""),
            "draw": info["hello"].get("draw", ""), "replaced": info["replaced"], "page_fps": page.get("fps"),
            "draw_ms": page.get("draw_ms")}


def measure_browser_voice(points: int, seconds: float, peers: int = 2, chromium: str | None = None,
                          width: int = 640, height: int = 360, draw: str = "auto",
                          warmup: float = 1.5) -> dict[str, Any]:
    """How voice reaches a headless Chromium page while it draws ``points``-point frames.

    ``peers`` voices (buzzy tones, one per seat) are pushed in real time for ``seconds``;
    meanwhile a fresh frame is published whenever the page has taken the last (none when
    ``points`` is 0). Transit is push_audio -> the page's message handler (both on this
    machine's clock): the server's queue, the socket, and the page's main thread, which
    also draws. Underruns are the page's: a block that came too late for its playout slot.
    The first ``warmup`` seconds (the page loading its HRTF set, the first frames) are
    streamed the same way and left out.
    """
    from capture.audio import BLOCK, SAMPLE_RATE

    room = Room(seats=max(2, peers))
    people = synthetic_people(points, room) if points else []
    t = np.arange(int((warmup + seconds) * SAMPLE_RATE)) / SAMPLE_RATE
    voices = {100 + i: (0.2 * np.sign(np.sin(2 * np.pi * (120 + 30 * i) * t)).astype(np.float32),
                        room.seat_position(i) + np.array([0.0, 1.55, 0.0])) for i in range(peers)}
    reports: list[dict[str, Any]] = []
    with BrowserViewer(room=room) as viewer, HeadlessChromium(
            viewer.url + f"?size={width}x{height}&draw={draw}", width, height, chromium, extra_flags=AUDIO_FLAGS):
        if not viewer.wait_clients(1, timeout=60.0) or not viewer.wait_page_stats(lambda p: "audio" in p, 60.0):
            raise RuntimeError("headless Chromium did not connect")
        before: dict[str, Any] | None = None
        frames = first_frame = 0
        start = time.monotonic()
        blocks = len(t) // BLOCK
        for i in range(blocks):
            for peer, (x, mouth) in voices.items():
                viewer.push_audio(peer, x[i * BLOCK:(i + 1) * BLOCK], mouth, True)
            due = start + (i + 1) * BLOCK / SAMPLE_RATE
            if before is None and due - start >= warmup:
                before, first_frame = viewer.clients()[0]["page"]["audio"], frames
            while time.monotonic() < due:
                page = viewer.clients()[0]["page"]
                # the page reports its last second of transits: count those after the warm-up
                if due - start >= warmup + 1.0 and page.get("t") != (reports[-1].get("t") if reports else None):
                    reports.append(page)
                if people and viewer.wait_taken(frames, timeout=0):
                    frames = viewer.publish(place(people, room, time.monotonic() - start))
                else:
                    time.sleep(min(0.002, max(0.0, due - time.monotonic())))
        last = max(voices)
        viewer.wait_page_stats(lambda p: p.get("audio", {}).get("peers", {}).get(str(last), {}).get("last_seq", 0)
                               >= blocks, timeout=10.0)
        client = viewer.clients()[0]
        after = client["page"]["audio"]
        reports.append(client["page"])
    transits = [r["audio"]["transit_ms"] for r in reports if r.get("audio", {}).get("transit_ms", {}).get("max")]
    assert before is not None
    received = sum(p["received"] for k, p in after["peers"].items() if int(k) in voices)
    return {"renderer": "browser", "points": points, "peers": peers, "seconds": seconds,
            "frames": frames - first_frame, "fps": float(client["page"].get("fps", 0.0)), "blocks": blocks * peers,
            "received": received,
            "transit_p50_ms": float(np.median([x["p50"] for x in transits])) if transits else None,
            "transit_p95_ms": max(x["p95"] for x in transits) if transits else None,
            "transit_max_ms": max(x["max"] for x in transits) if transits else None,
            "server_wait_ms": client["audio_wait_ms"], "underruns": after["underruns"] - before["underruns"],
            "lost": after["lost"] - before["lost"], "late": after["late"] - before["late"],
            "dropped": after["dropped"] - before["dropped"] + client["audio_dropped"],
            "ahead_max_s": max((r["audio"]["ahead"] for r in reports if "audio" in r), default=0.0),
            "gl": client["hello"].get("gl", ""), "draw": client["hello"].get("draw", "")}
