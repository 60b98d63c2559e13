"""A desktop window that shows the splat renderer's image and steers its camera.

Why Tk and not Open3D's visualizer: the window shows exactly what ``Renderer`` draws (the
same image a video or a participant's view gets), needs no OpenGL at all, so it works the
same on a desktop, over SSH with X forwarding and under Xvfb with no Mesa drivers, and Tk
ships with Python (Debian: ``python3-tk``). Showing a 1280x720 frame costs about 5 ms.

Tk runs on a thread of its own, which alone touches it; the caller's render loop asks
``camera()`` for the view the user has chosen (drag to orbit, wheel to zoom), renders, and
hands the image to ``show()`` (or does both with ``update()``); the newest image wins.
``closed`` turns true when the user closes the window (close button, Escape or q).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from render.camera import Camera
from render.renderer import PlacedCloud, Renderer, RenderResult
from render.room import Room

ADVICE = "run on a desktop, use xvfb-run, or use `holoport render` / the browser viewer"
_PROBE = "import tkinter; tkinter.Tk().destroy()"
_OVERVIEW = (math.atan2(1.6, 3.6), math.hypot(1.6, 3.6))  # Room.orbit_camera's elevation, distance
_probed: dict[tuple[str | None, str | None], tuple[bool, str]] = {}


class NoDisplayError(RuntimeError):
    """No display to open a window on; the message says what to do instead."""


def no_display(reason: str) -> NoDisplayError:
    return NoDisplayError(f"no display: {ADVICE} ({reason})")


@dataclass(frozen=True)
class Orbit:
    """The window's camera: it circles ``target`` at ``distance``, ``azimuth`` radians
    around the vertical (0: on the +z side, behind seat 0) and ``elevation`` above it."""

    target: tuple[float, float, float] = (0.0, 0.8, 0.0)
    azimuth: float = 0.0
    elevation: float = _OVERVIEW[0]
    distance: float = _OVERVIEW[1]
    hfov_deg: float = 70.0

    @property
    def eye(self) -> np.ndarray:
        c = math.cos(self.elevation)
        offset = (c * math.sin(self.azimuth), math.sin(self.elevation), c * math.cos(self.azimuth))
        return np.asarray(self.target) + self.distance * np.asarray(offset)


class DesktopWindow:
    """``with DesktopWindow("Holoport", 1280, 720) as w: while not w.closed: w.update(room, clouds)``."""

    RADIANS_PER_PIXEL = 0.01  # drag
    ZOOM_PER_STEP = 0.9  # distance factor per wheel notch towards the target
    DISTANCE_RANGE = (0.3, 30.0)
    MAX_ELEVATION = math.radians(85.0)  # look_at needs the view off the vertical
    START_TIMEOUT = 15.0

    def __init__(self, title: str = "Holoport", width: int = 1280, height: int = 720,
                 renderer: Renderer | None = None) -> None:
        if not (16 <= width <= 7680 and 16 <= height <= 4320):
            raise ValueError(f"{width}x{height} is not a sensible window size")
        ok, reason = self.available()
        if not ok:
            raise no_display(reason)
        self.title, self.width, self.height = title, width, height
        self.renderer = renderer or Renderer()
        self.frames_shown = 0  # images the window has put on screen
        self.interactions = 0  # drags, wheel notches and keys the user gave
        self._lock = threading.Lock()
        self._orbit = self._home = Orbit()
        self._camera: Camera | None = None
        self._pending: tuple[int, int, bytes] | None = None
        self._box: tuple[int, int, int, int] | None = None
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._error: str | None = None
        self._thread: threading.Thread | None = None

    # -- display ---------------------------------------------------------------------------
    @staticmethod
    def available() -> tuple[bool, str]:
        """(True, "display :0") where a window can open, else (False, why not). The toolkit is
        tried in a subprocess (once per display), so a broken display can't take us down."""
        display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
        if sys.platform not in ("win32", "darwin") and not display:
            if wayland:
                return False, f"WAYLAND_DISPLAY={wayland} is set but DISPLAY is not: Tk needs XWayland"
            return False, "neither DISPLAY nor WAYLAND_DISPLAY is set"
        key = (display, wayland)
        if key not in _probed:
            _probed[key] = _probe(display)
        return _probed[key]

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> DesktopWindow:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="desktop-window", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.START_TIMEOUT):
            self._stop.set()
            raise no_display(f"the display did not answer within {self.START_TIMEOUT:.0f} s")
        if self._error is not None:
            raise no_display(self._error)
        return self

    def stop(self) -> None:
        """Close the window (from any thread) and wait for its thread to end."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    @property
    def closed(self) -> bool:
        """True once the window is gone: closed by the user, or stopped."""
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    def __enter__(self) -> DesktopWindow:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- camera ----------------------------------------------------------------------------
    def camera(self) -> Camera:
        """The view the user has chosen, at the window's size. The same object until the view
        changes, so the renderer keeps its drawn room between frames."""
        with self._lock:
            if self._camera is None:
                o = self._orbit
                self._camera = Camera.look_at(o.eye, o.target, self.width, self.height, o.hfov_deg)
            return self._camera

    @property
    def orbit_state(self) -> Orbit:
        return self._orbit

    def look_like(self, camera: Camera) -> None:
        """Start from ``camera``'s view (a seat's, an orbit's): the orbit pivots where its line
        of sight passes the room's vertical axis through the table. Also what ``reset`` returns to."""
        eye = camera.position
        forward = camera.world_to_camera[2, :3]
        flat = math.hypot(forward[0], forward[2])
        reach = math.hypot(eye[0], eye[2]) / flat if flat > 1e-6 else 2.0
        target = eye + forward * reach
        offset = eye - target
        distance = float(np.linalg.norm(offset))
        hfov = math.degrees(2 * math.atan(camera.width / 2 / camera.fx))
        home = Orbit(tuple(float(v) for v in target), math.atan2(offset[0], offset[2]),
                     math.asin(max(-1.0, min(1.0, offset[1] / distance))), distance, hfov)
        with self._lock:
            self._home = self._orbit = self._clamped(home)
            self._camera = None

    def orbit(self, dx: float, dy: float, user: bool = True) -> None:
        """A drag of (dx, dy) pixels: right turns the room with the pointer, down raises the camera."""
        self._move(azimuth=-dx * self.RADIANS_PER_PIXEL, elevation=dy * self.RADIANS_PER_PIXEL, user=user)

    def turn(self, radians: float) -> None:
        """Turn the camera around the room by itself (an automatic orbit), not as the user."""
        self._move(azimuth=radians, user=False)

    def zoom(self, steps: float) -> None:
        """Wheel notches: positive moves towards the target."""
        self._move(scale=self.ZOOM_PER_STEP ** steps)

    def reset(self, user: bool = False) -> None:
        """Back to the starting view (key r)."""
        with self._lock:
            self._orbit, self._camera = self._home, None
            self.interactions += int(user)

    def _move(self, azimuth: float = 0.0, elevation: float = 0.0, scale: float = 1.0, user: bool = True) -> None:
        with self._lock:
            o = self._orbit
            self._orbit = self._clamped(replace(o, azimuth=(o.azimuth + azimuth) % (2 * math.pi),
                                                elevation=o.elevation + elevation, distance=o.distance * scale))
            self._camera = None
            self.interactions += int(user)

    def _clamped(self, o: Orbit) -> Orbit:
        lo, hi = self.DISTANCE_RANGE
        return replace(o, elevation=max(-self.MAX_ELEVATION, min(self.MAX_ELEVATION, o.elevation)),
                       distance=max(lo, min(hi, o.distance)))

    # -- images ----------------------------------------------------------------------------
    def show(self, image: np.ndarray) -> None:
        """Put an RGB image (H, W, 3) uint8 on screen at the window's next tick."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"images are (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        ppm = b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(image).tobytes()
        with self._lock:
            self._pending = (w, h, ppm)

    def update(self, room: Room | None, clouds: Sequence[PlacedCloud]) -> RenderResult:
        """Render ``clouds`` in ``room`` from the user's view and show it (a render loop's one call)."""
        result = self.renderer.render(self.camera(), room, clouds)
        self.show(result.image)
        return result

    def screen_box(self) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) of the image on the screen, once shown: for screenshots."""
        return self._box

    # -- the Tk thread ---------------------------------------------------------------------
    def _run(self) -> None:
        import tkinter as tk

        try:
            root = tk.Tk(className="holoport")
        except tk.TclError as exc:
            self._error = str(exc)
            self._closed.set()
            self._ready.set()
            return
        state: dict = {"size": (self.width, self.height)}
        try:
            root.title(self.title)
            root.resizable(False, False)
            root.configure(background="black")
            black = b"P6 %d %d 255\n" % (self.width, self.height) + bytes(self.width * self.height * 3)
            state["photo"] = tk.PhotoImage(master=root, data=black, format="PPM")
            label = state["label"] = tk.Label(root, image=state["photo"], borderwidth=0, highlightthickness=0,
                                              cursor="fleur")
            label.pack()
            self._bind(root, label)
            root.protocol("WM_DELETE_WINDOW", self._stop.set)
            root.after(0, self._tick, root, label, state)
            self._ready.set()
            root.mainloop()
        except tk.TclError as exc:  # the display went away under us
            self._error = str(exc)
        finally:
            self._closed.set()
            self._ready.set()
            with contextlib.suppress(tk.TclError):
                root.destroy()
            # Tcl objects must die on the thread that made them, or Tcl aborts the process
            state.clear()
            del root
            gc.collect()

    def _tick(self, root, label, state: dict) -> None:
        import tkinter as tk

        if self._stop.is_set():
            root.quit()
            return
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            w, h, ppm = pending
            if state["size"] != (w, h):  # a photo image does not shrink: make a new one
                state["photo"] = tk.PhotoImage(master=root, width=w, height=h)
                state["size"] = (w, h)
                label.configure(image=state["photo"])
            state["photo"].configure(data=ppm, format="PPM")
            root.update_idletasks()
            self.frames_shown += 1
            self._box = (label.winfo_rootx(), label.winfo_rooty(), w, h)
        root.after(8, self._tick, root, label, state)

    def _bind(self, root, label) -> None:
        drag = {"at": None}

        def press(event) -> None:
            drag["at"] = (event.x, event.y)

        def motion(event) -> None:
            if drag["at"] is not None:
                self.orbit(event.x - drag["at"][0], event.y - drag["at"][1])
            drag["at"] = (event.x, event.y)

        label.bind("<ButtonPress-1>", press)
        label.bind("<B1-Motion>", motion)
        label.bind("<ButtonRelease-1>", lambda _e: drag.update(at=None))
        root.bind("<Button-4>", lambda _e: self.zoom(1))  # X11 wheel
        root.bind("<Button-5>", lambda _e: self.zoom(-1))
        root.bind("<MouseWheel>", lambda e: self.zoom(1 if e.delta > 0 else -1))  # Windows, macOS
        for key in ("<Escape>", "<KeyPress-q>"):
            root.bind(key, lambda _e: self._stop.set())
        for key in ("<KeyPress-plus>", "<KeyPress-equal>", "<KP_Add>"):
            root.bind(key, lambda _e: self.zoom(1))
        for key in ("<KeyPress-minus>", "<KP_Subtract>"):
            root.bind(key, lambda _e: self.zoom(-1))
        for key, (dx, dy) in {"<Left>": (-20, 0), "<Right>": (20, 0), "<Up>": (0, -20), "<Down>": (0, 20)}.items():
            root.bind(key, lambda _e, dx=dx, dy=dy: self.orbit(dx, dy))
        root.bind("<KeyPress-r>", lambda _e: self.reset(user=True))


def _probe(display: str | None) -> tuple[bool, str]:
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False, f"display {display} did not answer within 15 s"
    if r.returncode == 0:
        return True, f"display {display}"
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit code {r.returncode}"
    if "tkinter" in last or "libtk" in last or "libtcl" in last:
        return False, f"Python's Tk support is missing: {last} (Debian: apt-get install python3-tk)"
    return False, f"cannot open display {display}: {last}"
