"""``holoport render`` (a meeting to PNG frames and an MP4) and ``holoport view`` (the same
in a desktop window), from recordings or from a live meeting.

Inputs, the same for both:

- ``--recording FILE`` (repeatable): Holoport recordings, the first at seat 0, the next at
  seat 1, and so on, each looping when shorter than the video. ``render`` plays them as
  fast as it can, with their timestamps mapped onto video time (frame k shows what each
  recording showed k/fps seconds after its first frame); ``view`` plays them in real time.
- ``--hub ENDPOINT --room NAME``: a live meeting, joined as a receive-only participant (it
  takes a seat but never sends). ``render`` keeps video time equal to wall time: when
  rendering falls behind, the last image is repeated rather than the video running slow.

The view: ``--seat N`` (what the participant at seat N sees; their own cloud is not drawn)
or ``--orbit`` (a camera circling the table ``--turns`` times; in ``view`` the camera turns
by itself until the user drags). Without either: the first empty seat for recordings, our
own seat in a live meeting.

Sound: ``render`` of recordings made with ``holoport record --mic`` puts the people's voices
in the MP4 (stereo AAC) and in ``render.wav`` beside it. Each voice comes from where its
person sits relative to the camera, re-aimed every 20 ms block as the camera moves
(``render.spatial``), and plays at video time ``t`` what its recording held ``t`` seconds
after its first frame, looping with the frames: the same mapping as the pictures, so lips
and voice stay together. ``view`` plays them on the speakers (``--speaker``, ``--mute``),
aimed from the window's camera as the user moves it, each block after its last sample is
due (20 ms, plus the device's buffer: well inside lip sync's 125 ms for late sound). The
person at the camera's own seat is neither drawn nor heard.

Exit codes: 0 done, 1 bad input (the message says which), 2 no display (``view``),
3 no hub or refused by it (as ``holoport join``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from capture.audio import BLOCK, SAMPLE_RATE
from capture.recording import RecordingAudioSource, RecordingError
from render import Camera, PlacedCloud, Renderer, Room
from render.video import PNG_PATTERN, VideoOutput, orbit_path, seat_path
from render.window import DesktopWindow, NoDisplayError, no_display

if TYPE_CHECKING:
    from holoport.node import Node, RemoteFrame
    from holoport.point_sources import RecordingPoints

log = logging.getLogger(__name__)

DEFAULT_HUB = "tcp://127.0.0.1:5555"
LIVE_SECONDS = 10.0  # a live render's length when neither --seconds nor --frames is given
ORBIT_PERIOD = 20.0  # seconds per turn of `view --orbit`'s automatic camera
WAV_NAME = "render.wav"


# -- where the people come from ----------------------------------------------------------

@dataclass
class Person:
    name: str
    seat: int
    positions: np.ndarray
    colors: np.ndarray


class RecordedScene:
    """Recordings at seats 0, 1, ...; ``people(t)``: what each shows ``t`` seconds in."""

    def __init__(self, paths: list[str], seats: int | None = None) -> None:
        from holoport.point_sources import RecordingPoints

        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"--recording {p}: no such file (make one with `holoport record`)")
        self.paths = list(paths)
        seats = seats if seats is not None else max(3, len(paths) + 1)
        if not len(paths) <= seats <= 16:
            raise ValueError(f"--seats {seats}: {len(paths)} recordings need {len(paths)}..16 seats")
        self.seats = seats
        self.sources = []
        try:
            for p in paths:
                self.sources.append(RecordingPoints(p, realtime=False, loop=True))
        except BaseException:
            self.close()
            raise
        self.names = [Path(p).stem for p in paths]
        self._times = []
        self._spans = []
        for source in self.sources:
            t = np.asarray(source.player.recording.timestamps, np.float64) - source.player.recording.timestamps[0]
            self._times.append(t)
            self._spans.append(float(t[-1] + (np.median(np.diff(t)) if len(t) > 1 else 0.0)))
        self.duration = max(self._spans)  # the longest recording, one frame period past its last frame
        self._cache: dict[int, tuple[int, tuple[np.ndarray, np.ndarray]]] = {}

    def people(self, t: float) -> list[Person]:
        out = []
        for i, source in enumerate(self.sources):
            span = self._spans[i]
            local = t % span if span > 0 else 0.0
            index = max(0, int(np.searchsorted(self._times[i], local, "right")) - 1)
            cached = self._cache.get(i)
            if cached is None or cached[0] != index:  # a frame shown again is decoded once
                cloud = _frame_at(source, index)
                if cloud is not None or cached is None:  # a damaged frame: the last good one stays up
                    cached = self._cache[i] = (index, cloud if cloud is not None else _NOBODY)
            out.append(Person(self.names[i], i, *cached[1]))
        return out

    def voices(self, hide_seat: int | None = None, realtime: bool = False,
               start: float = 0.0) -> dict[int, RecordingAudioSource]:
        """Per seat, the sound of the recordings that have some (``holoport record --mic``),
        looping like the pictures: block ``k`` is what the recording held ``k * 20 ms`` after
        its first frame, i.e. at scene time ``k * 20 ms``, stamped ``start + k * 20 ms``
        (``realtime``: returned once due, for speakers; else as fast as read, for files)."""
        out = {}
        for seat, (path, source) in enumerate(zip(self.paths, self.sources, strict=True)):
            if seat != hide_seat and source.player.recording.audio_count:
                try:
                    out[seat] = RecordingAudioSource(path, realtime=realtime, loop=True, start=start)
                except RecordingError as exc:  # every audio record damaged: the picture still plays
                    log.warning("%s: no sound: %s", path, exc)
        return out

    def close(self) -> None:
        for source in self.sources:
            source.close()


def voice_position(room: Room, seat: int) -> np.ndarray:
    """Where the voice of the person at ``seat`` comes from: above their place, at mouth
    height (``render.spatial.MOUTH_HEIGHT``, as the live room places voices)."""
    from render.spatial import MOUTH_HEIGHT

    return room.seat_position(seat) + np.array([0.0, MOUTH_HEIGHT, 0.0])


def spatial_audio(voices: dict[int, RecordingAudioSource], room: Room, cameras: list[Camera], fps: float,
                  frames: int) -> np.ndarray:
    """The voices mixed to stereo for ``frames`` video frames (float32 (n, 2), n = frames /
    fps at 48 kHz): each 20 ms block of each voice is panned and attenuated from its seat as
    seen by the camera of the frame that block plays under (its middle), one Spatializer per
    voice so that its state carries from block to block."""
    total = round(frames / fps * SAMPLE_RATE)
    mixer = _VoiceMixer(voices, room)
    blocks = []
    for b in range(-(-total // BLOCK)):
        block = mixer.next(cameras[min(frames - 1, int((b + 0.5) * BLOCK / SAMPLE_RATE * fps))])
        blocks.append(block if block is not None else np.zeros((BLOCK, 2), np.float32))
    return np.concatenate(blocks)[:total] if blocks else np.zeros((0, 2), np.float32)


class _VoiceMixer:
    """The next 20 ms of every voice, each spatialised from its seat for a camera, mixed."""

    def __init__(self, voices: dict[int, RecordingAudioSource], room: Room) -> None:
        from render.spatial import Spatializer

        self.voices, self.room = voices, room
        self.spatializers = {seat: Spatializer(sample_rate=SAMPLE_RATE) for seat in voices}

    def next(self, camera: Camera) -> np.ndarray | None:
        """Stereo (BLOCK, 2); None once every voice has ended."""
        from render.spatial import azimuth, camera_pose, mix

        pos, forward, up = camera_pose(camera)
        parts = []
        for seat, voice in self.voices.items():
            block = voice.read()
            if block is not None:
                angle, distance = azimuth(pos, forward, up, voice_position(self.room, seat))
                parts.append(self.spatializers[seat].process(block.samples, angle, distance))
        return mix(parts) if parts else None


class VoicePlayer:
    """Recordings' voices to a sink (speakers) while a window shows them: a thread that mixes
    each block from the camera the window has when the block is due, so a voice turns as
    the user drags the view. Realtime voices pace it; ``run`` is the loop itself."""

    def __init__(self, voices: dict[int, RecordingAudioSource], room: Room, camera: Callable[[], Camera],
                 sink) -> None:
        self.mixer, self.camera, self.sink = _VoiceMixer(voices, room), camera, sink
        self.blocks = 0  # blocks played
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name="voices", daemon=True)

    def run(self, blocks: int | None = None) -> None:
        while not self._stop.is_set() and (blocks is None or self.blocks < blocks):
            stereo = self.mixer.next(self.camera())
            if stereo is None:
                return
            self.sink.write(stereo)
            self.blocks += 1

    def _guarded(self) -> None:
        try:
            self.run()
        except Exception as exc:  # a speaker unplugged: the pictures go on, silent
            self.error = exc
            log.warning("the voices stopped: %s", exc)

    def start(self) -> VoicePlayer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


_NOBODY = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))


def _frame_at(source: RecordingPoints, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Frame ``index`` of a recording as points, or None when it is damaged (reported)."""
    try:
        entry = source.player.recording.entry(index)
    except RecordingError as exc:
        source.player.recording.report(index, str(exc))
        return None
    return source.decode(entry)


class LiveScene:
    """The people of a live room, as a receive-only node last heard them."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.latest: dict[int, RemoteFrame] = {}  # per sender id

    @property
    def seats(self) -> int:
        return self.node.seats

    def poll(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for frames; True when something new arrived."""
        self.node.heartbeat()
        frames = self.node.poll(timeout)
        for f in frames:
            if f.stream == 0:  # each participant's hologram; further views are not drawn yet
                self.latest[f.sender] = f
        for gone in set(self.latest) - set(self.node.peers):  # left the room: stop drawing
            del self.latest[gone]
        return bool(frames)

    def people(self, _t: float = 0.0) -> list[Person]:
        return [Person(f.name, f.seat, f.positions, f.colors) for _, f in sorted(self.latest.items())]


def placed(room: Room, people: list[Person], hide_seat: int | None = None) -> list[PlacedCloud]:
    """People as clouds at their seats; the one at ``hide_seat`` (the viewer) left out."""
    return [PlacedCloud(p.positions, p.colors, room.seat_pose(p.seat)) for p in people
            if p.seat != hide_seat and 0 <= p.seat < room.seats]


# -- arguments ---------------------------------------------------------------------------

def _size(text: str) -> int:
    value = int(text)
    if not 16 <= value <= 7680:
        raise argparse.ArgumentTypeError(f"{value} pixels is not a sensible image side (16..7680)")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_inputs(p: argparse.ArgumentParser, name: str) -> None:
    src = p.add_argument_group("what to show (one of)")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument("--recording", action="append", metavar="FILE",
                     help="a Holoport recording (holoport record); repeat for more people, each at the next "
                     "seat (0, 1, ...)")
    one.add_argument("--hub", metavar="ENDPOINT",
                     help=f"a live meeting: join the hub as a receive-only participant (e.g. {DEFAULT_HUB})")
    src.add_argument("--room", default="main", help="with --hub: the room (default main)")
    src.add_argument("--name", default=name, help=f"with --hub: our display name (default {name})")
    src.add_argument("--key", metavar="SECRET", help="with --hub: our secret key file, to encrypt with CURVE")
    src.add_argument("--hub-key", metavar="PUBLIC", help="with --hub: the hub's public key file, with --key")
    src.add_argument("--token", help="with --hub: the room's admission token, if it has one")
    src.add_argument("--insecure", action="store_true",
                     help="with --hub: allow an unencrypted connection to a hub on another machine")
    src.add_argument("--seats", type=int, default=None,
                     help="with --recording: seats around the table (default: recordings + 1, at least 3); "
                     "a live room's come from its hub")
    cam = p.add_argument_group("camera")
    view = cam.add_mutually_exclusive_group()
    view.add_argument("--seat", type=int, default=None, metavar="N",
                      help="see the room as the participant at seat N does, who is not drawn (default: the "
                      "first empty seat with recordings, or an orbit when all are taken; our own seat live)")
    view.add_argument("--orbit", action="store_true",
                      help="a camera circling the table (view: turning by itself until you drag)")
    cam.add_argument("--width", type=_size, default=1280, help="image width in pixels (default 1280)")
    cam.add_argument("--height", type=_size, default=720, help="image height in pixels (default 720)")
    p.add_argument("--quiet", action="store_true", help="log warnings only")


def add_render_arguments(p: argparse.ArgumentParser) -> None:
    """``holoport render OUT_DIR ...``."""
    p.add_argument("out", metavar="OUT_DIR", help="folder for the frames (frame_000000.png, ...) and video.mp4")
    _add_inputs(p, "render")
    p.add_argument("--turns", type=float, default=1.0, help="with --orbit: turns over the video (default 1)")
    p.add_argument("--fps", type=_positive, default=30.0, help="video frames per second (default 30)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--frames", type=int, default=None,
                        help="frames to write (default: the longest recording's length; live: "
                        f"{LIVE_SECONDS:.0f} s)")
    length.add_argument("--seconds", type=_positive, default=None, help="video length in seconds instead")
    p.add_argument("--png", action=argparse.BooleanOptionalAction, default=True,
                   help="write numbered PNG frames (default yes)")
    p.add_argument("--mp4", action=argparse.BooleanOptionalAction, default=True,
                   help="write an H.264 MP4, video.mp4 (default yes)")


RENDER_DESCRIPTION = ("Render recordings or a live meeting to numbered PNG frames and an H.264 MP4 (yuv420p), "
                      "from a seat or an orbiting camera. Recordings play as fast as possible, their "
                      "timestamps mapped onto video time; a live meeting is filmed in real time.")
VIEW_DESCRIPTION = ("Show recordings or a live meeting in a desktop window that updates live. Without a display "
                    "it says so and exits with code 2.")
VIEW_CONTROLS = ("in the window: drag to orbit, wheel or +/- to zoom, arrows to turn, r to reset the view, "
                 "Escape or q (or the close button) to quit")


def add_view_arguments(p: argparse.ArgumentParser) -> None:
    """``holoport view ...``."""
    p.epilog = VIEW_CONTROLS
    _add_inputs(p, "viewer")
    p.add_argument("--fps", type=_positive, default=30.0, help="most frames drawn per second (default 30)")
    p.add_argument("--seconds", type=float, default=0.0, help="close after this long; 0 = when the window closes")
    sound = p.add_mutually_exclusive_group()
    sound.add_argument("--speaker", metavar="DEVICE", default=None,
                       help="with --recording: play the people's voices (recorded with --mic) on this output "
                       "device (name or number; default: the system's); without one, pictures only")
    sound.add_argument("--mute", action="store_true", help="with --recording: pictures only")


# -- shared machinery --------------------------------------------------------------------

class _Inputs:
    """The scene (recordings or a live node) and the room it is in, opened and closed together."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.node = None
        if args.recording:
            if args.seats is not None and not 2 <= args.seats <= 16:
                raise ValueError(f"--seats {args.seats}: a room has 2..16 seats")
            self.scene = RecordedScene(args.recording, args.seats)
            self.live = False
            self.default_seat = len(args.recording) if len(args.recording) < self.scene.seats else None
        else:
            from holoport.node import Node
            from holoport.security import node_security

            if args.seats is not None:
                raise ValueError("--seats goes with --recording: a live room's seats come from its hub")
            self.node = Node(args.hub, args.room, args.name, insecure=args.insecure,
                             security=node_security(args.key, args.hub_key), token=args.token).start()
            self.scene = LiveScene(self.node)
            self.live = True
            self.default_seat = self.node.seat
        self.room = Room(self.scene.seats)
        seat = args.seat if args.seat is not None else (None if args.orbit else self.default_seat)
        if seat is not None and not 0 <= seat < self.room.seats:
            self.close()
            raise ValueError(f"--seat {seat}: the room has seats 0..{self.room.seats - 1}")
        self.seat = seat  # None: orbit

    def describe(self) -> str:
        return f"from seat {self.seat}" if self.seat is not None else "orbiting the table"

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()
            self.node = None
        if not self.live:
            self.scene.close()


@contextmanager
def _stoppable() -> Iterator[threading.Event]:
    """An event that SIGINT / SIGTERM set (where we run on the main thread), so that the
    loop ends its output cleanly instead of dying with a half-written video."""
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _guarded(command: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Bad input and unreachable hubs as one line on stderr and an exit code, never a traceback."""
    from holoport.node import JoinError

    try:
        return body(args)
    except NoDisplayError as exc:
        print(f"holoport {command}: {exc}", file=sys.stderr)
        return 2
    except JoinError as exc:
        print(f"holoport {command}: {exc}", file=sys.stderr)
        return 3
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"holoport {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the loop's own handler was in place (joining, opening)
        print(f"holoport {command}: interrupted", file=sys.stderr)
        return 130


# -- holoport render ---------------------------------------------------------------------

def run_render(args: argparse.Namespace) -> int:
    return _guarded("render", _render, args)


def _frame_count(args: argparse.Namespace, default_seconds: float) -> int:
    if args.frames is not None:
        if args.frames < 1:
            raise ValueError(f"--frames {args.frames}: at least 1")
        return args.frames
    return max(1, round((args.seconds or default_seconds) * args.fps))


def _render(args: argparse.Namespace) -> int:
    out = VideoOutput(args.out, args.fps, png=args.png, mp4=args.mp4)  # checks what to write first
    inputs = _Inputs(args)
    voices: dict[int, RecordingAudioSource] = {}
    sound = None
    try:
        if not inputs.live:
            voices = inputs.scene.voices(inputs.seat)
            if voices:
                out = VideoOutput(args.out, args.fps, png=args.png, mp4=args.mp4, audio_rate=SAMPLE_RATE)
        default = LIVE_SECONDS if inputs.live else inputs.scene.duration
        frames = _frame_count(args, default)
        room = inputs.room
        if inputs.seat is None:
            cameras = orbit_path(room, frames, args.width, args.height, args.turns)
        else:
            cameras = seat_path(room, inputs.seat, frames, args.width, args.height)
        renderer = Renderer()
        shown: list[list[int]] = []
        people_seen: dict[int, str] = {}
        started = time.monotonic()
        with _stoppable() as stop, out:
            clock = _LiveClock(args.fps, stop) if inputs.live else None
            for k, camera in enumerate(cameras):
                if stop.is_set():
                    break
                if clock is not None:
                    if k < out.frames:  # already written as a repeat of an earlier image
                        continue
                    clock.wait_for(k, inputs.scene)
                people = inputs.scene.people(k / args.fps)
                clouds = placed(room, people, inputs.seat)
                image = renderer.render(camera, room, clouds).image
                seats = sorted(p.seat for p in people if p.seat != inputs.seat)
                people_seen.update({p.seat: p.name for p in people if p.seat != inputs.seat})
                repeats = clock.repeats(k, frames) if clock is not None else 1
                for _ in range(repeats):
                    out.write(image)
                    shown.append(seats)
            if voices and out.frames:
                sound = spatial_audio(voices, room, cameras, args.fps, out.frames)
                out.write_audio(sound)
        elapsed = time.monotonic() - started
    finally:
        for voice in voices.values():
            voice.close()
        inputs.close()
    summary = {
        "frames": out.frames, "fps": args.fps, "width": args.width, "height": args.height,
        "seats": room.seats, "seat": inputs.seat, "orbit_turns": args.turns if inputs.seat is None else None,
        "inputs": args.recording or [f"{args.hub} room {args.room}"],
        "people": [{"seat": s, "name": n} for s, n in sorted(people_seen.items())],
        "seats_shown": shown,
        "png": PNG_PATTERN if args.png and out.frames else None,
        "mp4": out.mp4_path.name if args.mp4 and out.frames else None,
        "audio": {"wav": WAV_NAME, "voices": sorted(voices), "seconds": len(sound) / SAMPLE_RATE,
                  "in_mp4": bool(args.mp4)} if sound is not None else None,
        "seconds": elapsed, "frames_per_second": out.frames / elapsed if elapsed > 0 else None,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if sound is not None:
        from render.audio_out import write_wav

        write_wav(Path(args.out, WAV_NAME), sound)
    Path(args.out, "render.json").write_text(json.dumps(summary))
    if not args.quiet:
        what = ", ".join(w for w in (f"{PNG_PATTERN.format(0)}..." if args.png else "",
                                     out.mp4_path.name if args.mp4 else "",
                                     f"{WAV_NAME} ({len(voices)} voice{'s' * (len(voices) != 1)})"
                                     if sound is not None else "") if w)
        print(f"wrote {out.frames} frames, {args.width}x{args.height} at {args.fps:g} fps, {inputs.describe()}, "
              f"to {args.out} ({what}) in {elapsed:.1f} s ({summary['frames_per_second'] or 0:.1f} frames/s)")
    return 0


class _LiveClock:
    """Keeps a live video's time equal to wall time: frame k is due k/fps after the start;
    waits (polling the meeting) until it is, and repeats an image over the frames whose
    time passed while it was being made."""

    def __init__(self, fps: float, stop: threading.Event) -> None:
        self.fps, self.stop = fps, stop
        self.start = time.monotonic()

    def wait_for(self, k: int, scene: LiveScene) -> None:
        due = self.start + k / self.fps
        while not self.stop.is_set() and (left := due - time.monotonic()) > 0:
            scene.poll(min(left, 0.1))
        scene.poll(0.0)  # whatever arrived meanwhile: the freshest frames

    def repeats(self, k: int, frames: int) -> int:
        now_frame = int((time.monotonic() - self.start) * self.fps)
        return max(1, min(now_frame, frames - 1) - k + 1)


# -- holoport view -----------------------------------------------------------------------

def run_view(args: argparse.Namespace) -> int:
    return _guarded("view", _view, args)


def open_window(title: str, camera: Camera | None = None, width: int = 1280, height: int = 720) -> DesktopWindow:
    """A started window, looking like ``camera`` (a seat's view) until the user moves it.
    For ``holoport join --view``: each time the participant renders, ``window.update(room,
    clouds)`` (it renders from the window's camera), and the loop ends once ``window.closed``.
    Raises ``NoDisplayError`` (message: what to do instead) where no window can open."""
    window = DesktopWindow(title, width, height)
    if camera is not None:
        window.look_like(camera)
    return window.start()


def _view(args: argparse.Namespace) -> int:
    ok, reason = DesktopWindow.available()  # before joining anything: no display, no meeting
    if not ok:
        raise no_display(reason)
    inputs = _Inputs(args)
    try:
        room = inputs.room
        start_camera = (room.seat_camera(inputs.seat, args.width, args.height) if inputs.seat is not None
                        else room.orbit_camera(0.0, args.width, args.height))
        title = f"Holoport - {args.room if inputs.live else ', '.join(inputs.scene.names)}"
        window = open_window(title, start_camera, args.width, args.height)
        period = 1.0 / args.fps
        started = last = time.monotonic()
        wall = time.time()  # ``started`` on the wall clock the voices are stamped on: their scene time 0
        with _stoppable() as stop, window, _speakers(args, inputs, window, wall) or contextlib.nullcontext():
            while not (window.closed or stop.is_set()):
                now = time.monotonic()
                if args.seconds and now - started >= args.seconds:
                    break
                if args.orbit and window.interactions == 0:  # turns by itself until the user drags
                    window.turn(2 * math.pi * (now - last) / ORBIT_PERIOD)
                last = now
                window.update(room, placed(room, inputs.scene.people(now - started), inputs.seat))
                left = period - (time.monotonic() - now)
                if inputs.live:
                    inputs.scene.poll(max(0.0, left))
                elif left > 0:
                    stop.wait(left)
        shown = window.frames_shown
    finally:
        inputs.close()
    if not args.quiet:
        print(f"showed {shown} frames in {time.monotonic() - started:.1f} s")
    return 0


@contextmanager
def _playing(player: VoicePlayer, sink) -> Iterator[VoicePlayer]:
    try:
        yield player.start()
    finally:
        player.stop()
        sink.close()
        for voice in player.mixer.voices.values():
            voice.close()


def _speakers(args: argparse.Namespace, inputs: _Inputs, window: DesktopWindow, start: float):
    """The recordings' voices playing on the speaker (a context manager), or None: no voices,
    ``--mute``, or no speaker (said once, and the pictures go on)."""
    from capture.audio import AudioDeviceError
    from render.audio_out import open_speaker

    if args.mute or inputs.live:
        return None
    voices = inputs.scene.voices(inputs.seat, realtime=True, start=start)
    if not voices:
        return None
    try:
        sink = open_speaker(args.speaker)
    except AudioDeviceError as exc:
        print(f"holoport view: no speaker, showing without sound: {exc}", file=sys.stderr)
        for voice in voices.values():
            voice.close()
        return None
    return _playing(VoicePlayer(voices, inputs.room, window.camera, sink), sink)


# -- a runner, for use before `holoport` has these commands --------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m holoport.viewing render|view ...``: the same as ``holoport render|view``."""
    parser = argparse.ArgumentParser(prog="holoport")
    sub = parser.add_subparsers(dest="command", required=True)
    add_render_arguments(sub.add_parser("render", help="a meeting to PNG frames and an MP4",
                                        description=RENDER_DESCRIPTION))
    add_view_arguments(sub.add_parser("view", help="a meeting in a desktop window", description=VIEW_DESCRIPTION))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    return run_render(args) if args.command == "render" else run_view(args)


if __name__ == "__main__":
    sys.exit(main())
