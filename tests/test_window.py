"""The desktop window: a clear exit without a display; under Xvfb a real window that shows
frames, orbits and zooms, and closes cleanly."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from holoport.point_sources import open_points
from holoport.viewing import open_window
from render import PlacedCloud, Room
from render.window import DesktopWindow, NoDisplayError
from tests.conftest import ROOT, holoport_cmd

W, H = 320, 180


def _env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update({k: v for k, v in changes.items() if v is not None})
    return {**env, "PYTHONUNBUFFERED": "1"}


# -- no display ---------------------------------------------------------------------------

def test_view_without_a_display_exits_2_and_says_what_to_do(tmp_path):
    done = subprocess.run(holoport_cmd("view", "--recording", str(tmp_path / "any.hprec")), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no display" in done.stderr and "xvfb-run" in done.stderr and "holoport render" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_window_without_a_display_is_refused_with_the_reason(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    ok, reason = DesktopWindow.available()
    assert not ok and "DISPLAY" in reason
    with pytest.raises(NoDisplayError, match="no display: run on a desktop, use xvfb-run"):
        DesktopWindow("nothing", W, H)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert "XWayland" in DesktopWindow.available()[1]
    monkeypatch.setenv("DISPLAY", ":4321")  # no X server there: the probe fails, we don't
    ok, reason = DesktopWindow.available()
    assert not ok and ":4321" in reason


# -- under Xvfb -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def xdisplay():
    """A private X server (Xvfb, black root window) for this module's windows."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb)")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-br",
                               "-nolisten", "tcp"], pass_fds=(write,), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(10)


def grab(display: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """What the X server shows in ``box`` (x, y, w, h): the window's pixels, not our copy."""
    from PIL import ImageGrab, features

    if not features.check("xcb"):
        pytest.skip("Pillow was built without XCB: cannot read the screen back")
    x, y, w, h = box
    return np.asarray(ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=display))[..., :3]


def xdotool(display: str, *args: str) -> None:
    subprocess.run(["xdotool", *args], env=_env(DISPLAY=display), check=True, timeout=10)


def _wait(condition, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_window_shows_frames_and_the_user_orbits_and_zooms(xdisplay, monkeypatch):
    monkeypatch.setenv("DISPLAY", xdisplay)
    assert DesktopWindow.available()[0]
    room = Room(3)
    source = open_points("synthetic")
    person = [PlacedCloud(*source.read(), room.seat_pose(0))]
    source.close()
    with open_window("Holoport test", room.seat_camera(1, W, H), W, H) as window:  # as `join --view` opens it
        start = window.camera()
        assert window.camera() is start  # unchanged view, same camera: the room is drawn once
        np.testing.assert_allclose(start.position, room.seat_camera(1, W, H).position, atol=1e-9)
        np.testing.assert_allclose(start.world_to_camera, room.seat_camera(1, W, H).world_to_camera, atol=1e-9)

        shown = window.update(room, person)
        assert shown.coverage(0) > 1000
        _wait(lambda: window.frames_shown >= 1 and window.screen_box() is not None, what="the first frame")
        _wait(lambda: np.array_equal(grab(xdisplay, window.screen_box()), shown.image), 5, "the frame on screen")

        target = np.asarray(window.orbit_state.target)
        distance = np.linalg.norm(start.position - target)
        window.orbit(60, 0)  # a drag to the right: around the table at the same distance and height
        moved = window.camera()
        assert moved is not start and np.linalg.norm(moved.position - start.position) > 0.5
        assert np.linalg.norm(moved.position - target) == pytest.approx(distance)
        assert moved.position[1] == pytest.approx(start.position[1])
        window.zoom(2)  # two notches in
        assert np.linalg.norm(window.camera().position - target) == pytest.approx(distance * 0.81)
        window.orbit(0, -10_000)  # dragged far up: the camera stops short of straight below
        assert window.orbit_state.elevation == pytest.approx(-math.radians(85))
        window.reset()
        np.testing.assert_allclose(window.camera().position, start.position, atol=1e-9)
        before = window.interactions

        again = window.update(room, person)  # the view moved back: the same picture again
        _wait(lambda: np.array_equal(grab(xdisplay, window.screen_box()), again.image), 5, "the new frame")

        if shutil.which("xdotool") is None:
            pytest.skip("xdotool is not installed: pointer and keys not tried (the rest passed)")
        x, y, _, _ = window.screen_box()
        xdotool(xdisplay, "mousemove", str(x + 100), str(y + 90), "mousedown", "1", "mousemove", str(x + 160),
                str(y + 90), "mouseup", "1")
        _wait(lambda: window.interactions > before, 5, "the drag")
        dragged = window.camera()
        assert np.linalg.norm(dragged.position - start.position) > 0.3
        xdotool(xdisplay, "click", "4", "click", "4")  # the wheel, away from the user: closer
        _wait(lambda: np.linalg.norm(window.camera().position - target) < distance * 0.85, 5, "the wheel")
        xdotool(xdisplay, "key", "Escape")
        assert window.wait_closed(5), "Escape did not close the window"
    assert window.closed



@pytest.mark.parametrize("close", ["escape", "ctrl-c"])
def test_holoport_view_shows_a_recording_and_closes_cleanly(xdisplay, recording, close):
    if close == "escape" and shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed: no key to press")
    view = subprocess.Popen(holoport_cmd("view", "--recording", str(recording), "--width", str(W), "--height", str(H)),
                            cwd=ROOT, env=_env(DISPLAY=xdisplay), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    screen = (0, 0, 1024, 768)  # no window manager: the window sits in the corner, on a black root

    def lit() -> int:
        return int(np.any(grab(xdisplay, screen) > 0, axis=2).sum())

    try:
        _wait(lambda: lit() > 0.9 * W * H, 30, "the window")
        first = grab(xdisplay, screen)
        _wait(lambda: not np.array_equal(grab(xdisplay, screen), first), 10, "the recording to move")
        assert lit() < 1.1 * W * H  # one window, of the size asked for
        if close == "escape":
            xdotool(xdisplay, "mousemove", "50", "50", "key", "Escape")  # focus follows the pointer here
        else:
            view.send_signal(signal.SIGINT)
        output, _ = view.communicate(timeout=15)
    finally:
        if view.poll() is None:
            view.kill()
            view.communicate()
    assert view.returncode == 0, output
    assert "showed" in output and "Traceback" not in output
    _wait(lambda: lit() == 0, 5, "the window to go")


def test_view_with_a_display_still_reports_bad_input(xdisplay, tmp_path):
    done = subprocess.run(holoport_cmd("view", "--recording", str(tmp_path / "gone.hprec")), cwd=ROOT,
                          env=_env(DISPLAY=xdisplay), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no such file" in done.stderr and "Traceback" not in done.stderr


def test_join_view_without_a_display_says_so_before_joining():
    import os
    import subprocess

    from tests.conftest import ROOT, holoport_cmd

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    run = subprocess.run(holoport_cmd("join", "--view", "--hub", "tcp://127.0.0.1:9", "--duration", "1"),
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "no display" in run.stderr and "Traceback" not in run.stderr
