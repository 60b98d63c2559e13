"""The meeting in a web browser or a headset: a small WebGL2 page fed by a WebSocket.

``BrowserViewer`` serves ``render/web/index.html`` + ``viewer.js`` (HTTP GET ``/``) and a
point stream (WebSocket ``/stream``) on one port, from one asyncio thread. The node calls
``publish(clouds)`` from its own loop with the decoded clouds already in room coordinates;
every page connected gets the newest frame only: the server sends a client its next frame
after the page acknowledges the previous one (or after ``ack_timeout`` with the socket
drained), and a frame published meanwhile replaces the one waiting, so a slow browser
draws fewer, fresher frames and never a backlog.

Reaching it from a headset: the server binds 127.0.0.1 by default. To serve a Quest or
a phone on the LAN, pass ``host="0.0.0.0"`` and open ``http://HOST:PORT``: the page shows
the room on any browser. WebXR's "Enter VR" needs a secure context, i.e. ``http://localhost``
or HTTPS; this module does not do TLS. For a Quest the usual ways are ``adb reverse
tcp:PORT tcp:PORT`` over USB (the headset then opens ``http://localhost:PORT``) or an
HTTPS tunnel / reverse proxy in front of the port.

Wire format of a frame (one binary WebSocket message, little-endian)::

    0   4s   magic b"HPF1"
    4   u32  frame number (1, 2, ...)
    8   u32  N, total points
    12  u16  K, clouds (participants)
    14  u16  reserved (0)
    16  f64  publish time, Unix seconds
    24  u32 * K  points per cloud (their sum is N), then zero padding to a multiple of 4
    H   i16 * 3N positions in millimetres, room coordinates (x, y, z per point)
    H+6N  u8 * 3N  colours (r, g, b per point)

9 bytes a point; positions saturate at +-32.767 m. The page reads both arrays as typed
views of the message, with no per-point decoding. Control messages are JSON text: server ->
page ``room`` (once on connect and on ``set_room``), ``snapshot``, ``peer_left`` and
``voice_levels``; page -> server ``hello``, ``ack``, ``stats``, ``voice_levels`` and
``error``. A snapshot comes back as a binary message: u32 request id, then the canvas PNG.
Anything else a page sends is counted as malformed and ignored.

Voice (``push_audio``): each 20 ms block of a peer's voice is its own binary message::

    0   4s   magic b"HPA1"
    4   u32  peer id
    8   u32  the peer's block number (1, 2, ...; a gap is a block lost on the way)
    12  u16  n, samples
    14  u8   flags: bit 0 speaking
    15  u8   reserved (0)
    16  f32 * 3  the speaker's mouth in room coordinates, metres
    28  f64  t_play: Unix seconds when it should be heard (NaN: as soon as smoothly possible)
    36  f64  t_push: Unix seconds when push_audio was called (the page's transit measure)
    44  i16 * n  PCM, 48 kHz mono

Unlike frames, audio is never replaced by newer audio: a page's blocks queue in order and
go out before any frame, whether or not the page has acknowledged its last frame. The
queue is bounded (``audio_queue_s`` of each peer's voice per page; the oldest block beyond
that is dropped and counted), so a stalled page costs memory for half a second of voice,
not for the meeting. On the one TCP stream a block can still wait behind the bytes of the
one frame already written to the socket (at most one frame is in flight per page); the
page measures that as its audio transit time. The page plays each voice through a WebAudio
``PannerNode`` (HRTF) at the speaker's mouth, with the listener at its camera or headset
pose (``render/web/voice.js``).

How the page draws: on a GPU (and always in VR) the typed views go to ``bufferSubData``
into reused buffers (``gl.SHORT`` and normalised ``gl.UNSIGNED_BYTE`` attributes) and one
``gl.POINTS`` call draws them, each point's size from its distance. Where WebGL itself is
software (SwiftShader, llvmpipe: every GL point costs about a microsecond of set-up, so
200k points drew 2-4 fps here) the page splats the points with a z-buffer in JavaScript
and composites colour and depth with one full-screen pass, so the GL-drawn room still
occludes correctly (15-25 fps at 200k here). It draws only when a frame or a camera move
arrives. Page options: ``?draw=points|splat``, ``?size=WxH`` (fixed canvas resolution),
``?yaw=&pitch=`` (degrees) ``&dist=`` (metres) for the first view, ``?seat=N`` to stand at
seat N in VR (by default between seats 0 and 1, behind the circle), ``?mic=1`` to open the
microphone at once (as its Mic button does: echo-cancelled capture, shown on a meter, not
yet sent anywhere). Browsers start sound only after a user gesture: until then the page
shows "Enable sound", and voice that arrives meanwhile is dropped, not saved up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from capture.audio import SAMPLE_RATE
from render.room import Room

WEB_DIR = Path(__file__).resolve().parent / "web"
MAGIC = b"HPF1"
_HEADER = struct.Struct("<4sIIHHd")
_PNG = b"\x89PNG\r\n\x1a\n"
AUDIO_MAGIC = b"HPA1"
_AUDIO_HEADER = struct.Struct("<4sIIHBx3fdd")
MAX_AUDIO_SAMPLES = SAMPLE_RATE // 5  # 200 ms: ten 20 ms blocks at most in one message
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/index.html": ("index.html", "text/html; charset=utf-8"),
           "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
           "/voice.js": ("voice.js", "text/javascript; charset=utf-8")}
_STAT_KEYS = ("frames", "draws", "points", "fps", "received", "replaced", "t", "width", "height", "draw_ms")

Cloud = tuple[np.ndarray, np.ndarray]


def encode_frame(clouds: Sequence[Cloud], seq: int, stamp: float | None = None) -> bytes:
    """Clouds in room coordinates -> one stream message (see the module docstring)."""
    counts, parts = [], []
    for positions, colors in clouds:
        p = np.asarray(positions)
        c = np.asarray(colors)
        if p.ndim != 2 or p.shape[1] != 3 or c.shape != p.shape:
            raise ValueError(f"a cloud is positions (N, 3) and colors (N, 3), got {p.shape} and {c.shape}")
        if c.dtype != np.uint8:
            raise ValueError(f"colors must be uint8, got {c.dtype}")
        if not np.isfinite(p).all():  # rare: drop the points, don't send garbage
            finite = np.isfinite(p).all(axis=1)
            p, c = p[finite], c[finite]
        counts.append(len(p))
        parts.append((p, c))
    n, k = sum(counts), len(counts)
    if k > 0xFFFF:
        raise ValueError(f"at most 65535 clouds per frame, got {k}")
    head = _HEADER.size + 4 * k
    head += -head % 4
    out = bytearray(head + 9 * n)
    _HEADER.pack_into(out, 0, MAGIC, seq, n, k, 0, time.time() if stamp is None else stamp)
    struct.pack_into(f"<{k}I", out, _HEADER.size, *counts)
    buf = np.frombuffer(out, dtype=np.uint8)
    pos = buf[head:head + 6 * n].view(np.int16).reshape(n, 3)
    col = buf[head + 6 * n:].reshape(n, 3)
    start = 0
    for (p, c), count in zip(parts, counts, strict=True):
        mm = np.multiply(p, 1000.0, dtype=np.float32)
        np.rint(mm, out=mm)
        np.clip(mm, -32767, 32767, out=mm)
        pos[start:start + count] = mm
        col[start:start + count] = c
        start += count
    return bytes(out)


def decode_frame(data: bytes) -> tuple[int, list[Cloud]]:
    """The inverse of ``encode_frame`` (for tests and tools): frame number and clouds."""
    magic, seq, n, k, _, _ = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError("not a Holoport browser frame")
    counts = struct.unpack_from(f"<{k}I", data, _HEADER.size)
    head = _HEADER.size + 4 * k
    head += -head % 4
    if sum(counts) != n or len(data) != head + 9 * n:
        raise ValueError("frame length does not match its point counts")
    pos = np.frombuffer(data, dtype=np.int16, count=3 * n, offset=head).reshape(n, 3)
    col = np.frombuffer(data, dtype=np.uint8, count=3 * n, offset=head + 6 * n).reshape(n, 3)
    clouds, start = [], 0
    for count in counts:
        clouds.append((pos[start:start + count].astype(np.float32) / 1000.0, col[start:start + count].copy()))
        start += count
    return seq, clouds


@dataclass(frozen=True)
class AudioMessage:
    """One decoded voice message (what the page reads; for tests and tools)."""

    peer: int
    seq: int
    samples: np.ndarray  # float32 mono, 48 kHz
    position: tuple[float, float, float]
    speaking: bool
    t_play: float | None
    t_push: float


def encode_audio(peer: int, seq: int, samples: np.ndarray, position: Sequence[float], speaking: bool,
                 t_play: float | None = None, t_push: float | None = None) -> bytes:
    """One block of a peer's voice -> one stream message (int16 PCM; see the module docstring)."""
    if not 0 <= peer <= 0xFFFFFFFF or not 0 < seq <= 0xFFFFFFFF:
        raise ValueError(f"peer and block numbers are u32 (and seq > 0), got {peer} and {seq}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or not 0 < x.size <= MAX_AUDIO_SAMPLES:
        raise ValueError(f"samples must be mono, 1..{MAX_AUDIO_SAMPLES} long, got shape {x.shape}")
    pos = np.asarray(position, dtype=np.float64).reshape(-1)
    if pos.shape != (3,) or not np.isfinite(pos).all():
        raise ValueError(f"position must be 3 finite numbers (metres), got {position!r}")
    if t_play is not None and not math.isfinite(t_play):
        raise ValueError(f"t_play must be finite or None, got {t_play}")
    pcm = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    pcm = np.rint(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
    head = _AUDIO_HEADER.pack(AUDIO_MAGIC, peer, seq, x.size, 1 if speaking else 0, *pos.tolist(),
                              math.nan if t_play is None else t_play, time.time() if t_push is None else t_push)
    return head + pcm.tobytes()


def decode_audio(data: bytes) -> AudioMessage:
    """The inverse of ``encode_audio``; a ValueError for anything that is not one."""
    if len(data) < _AUDIO_HEADER.size:
        raise ValueError("audio message shorter than its header")
    magic, peer, seq, n, flags, x, y, z, t_play, t_push = _AUDIO_HEADER.unpack_from(data, 0)
    if magic != AUDIO_MAGIC:
        raise ValueError("not a Holoport audio message")
    if not 0 < n <= MAX_AUDIO_SAMPLES or len(data) != _AUDIO_HEADER.size + 2 * n:
        raise ValueError("audio message length does not match its sample count")
    if not all(math.isfinite(v) for v in (x, y, z, t_push)) or seq == 0 or flags & ~1:
        raise ValueError("audio message header out of range")
    pcm = np.frombuffer(data, dtype="<i2", count=n, offset=_AUDIO_HEADER.size)
    return AudioMessage(peer, seq, pcm.astype(np.float32) / 32767.0, (x, y, z), bool(flags & 1),
                        t_play if math.isfinite(t_play) else None, t_push)


def _plain(value: Any, depth: int = 0) -> Any:
    """A page's nested stats report, checked: small dicts and lists of finite numbers, bools
    and short strings (a page is untrusted; its report must not grow the server's memory)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("stats must be finite numbers")
        return value
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError("stats strings are short")
        return value
    if depth >= 4:
        raise ValueError("stats nest at most 4 deep")
    if isinstance(value, list):
        if len(value) > 64:
            raise ValueError("stats lists hold at most 64 items")
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if len(value) > 64 or not all(isinstance(k, str) and len(k) <= 32 for k in value):
            raise ValueError("stats objects hold at most 64 short keys")
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    raise ValueError(f"stats hold no {type(value).__name__}")


def _peer_levels(peers: Any) -> dict[int, tuple[float, float]]:
    """A page's ``voice_levels`` answer, checked: {"peer id": [left RMS, right RMS]}."""
    if not isinstance(peers, dict) or len(peers) > 256:
        raise ValueError("voice levels must be an object of at most 256 peers")
    levels = {}
    for key, value in peers.items():
        if not (isinstance(key, str) and key.isdigit() and len(key) <= 10):
            raise ValueError("voice levels are keyed by peer id")
        if not (isinstance(value, list) and len(value) == 2 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise ValueError("a peer's voice levels are [left, right]")
        levels[int(key)] = (float(value[0]), float(value[1]))
    return levels


def _percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of recent waits, in milliseconds (zeros before any)."""
    if not seconds:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    p50, p95, top = np.percentile(np.asarray(seconds) * 1e3, [50, 95, 100])
    return {"p50": float(p50), "p95": float(p95), "max": float(top)}


def room_message(room: Room | None, point_size: float) -> dict[str, Any]:
    """What the page needs to draw the room: the same numbers every participant builds it from."""
    desc = None
    if room is not None:
        desc = {"seats": room.seats, "table_radius": room.table_radius, "table_height": room.table_height,
                "seat_distance": room.seat_distance,
                "seat_poses": [room.seat_pose(i).ravel().tolist() for i in range(room.seats)]}
    return {"type": "room", "room": desc, "point_size": point_size, "units": "mm"}


@dataclass
class _Frame:
    seq: int
    data: bytes
    points: int


@dataclass
class _Client:
    id: int
    ws: ServerConnection
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent_seq: int = 0
    awaiting: int | None = None  # frame number sent and not yet acknowledged
    sent_at: float = 0.0
    frames_sent: int = 0
    acked: int = 0
    replaced: int = 0  # frames published while this client was busy, never sent to it
    ack_timeouts: int = 0
    hello: dict[str, Any] = field(default_factory=dict)
    page: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # voice: (peer, message, samples, when queued) in push order; sent before any frame, never replaced
    audio: deque[tuple[int, bytes | str, int, float]] = field(default_factory=deque)
    audio_queued: dict[int, int] = field(default_factory=dict)  # peer -> samples waiting
    audio_sent: int = 0
    audio_dropped: int = 0  # blocks dropped, oldest first, beyond audio_queue_s of a peer
    audio_waits: deque[float] = field(default_factory=lambda: deque(maxlen=250))  # s from queued to sent


class BrowserViewer:
    """Serves the viewer page and streams the newest room frame to every browser connected.

    ``publish`` may be called from any thread; the server itself runs on its own asyncio
    thread between ``start()`` and ``stop()`` (or a ``with`` block).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, room: Room | None = None,
                 point_size: float = 0.006, ack_timeout: float = 2.0, audio_queue_s: float = 0.5) -> None:
        if point_size <= 0:
            raise ValueError(f"point_size must be positive, got {point_size}")
        if audio_queue_s <= 0:
            raise ValueError(f"audio_queue_s must be positive, got {audio_queue_s}")
        self.host, self.room, self.point_size, self.ack_timeout = host, room, point_size, ack_timeout
        self.audio_queue_s = audio_queue_s
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._clients: dict[int, _Client] = {}
        self._next_client = 1
        self._latest: _Frame | None = None
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._changed = threading.Condition()
        self._snapshots: dict[int, asyncio.Future[bytes]] = {}
        self._next_snapshot = 1
        self._background: set[asyncio.Future] = set()
        self._audio_seq: dict[int, int] = {}
        self._levels: dict[int, asyncio.Future[dict[int, tuple[float, float]]]] = {}
        self.malformed = 0
        self.frames_published = 0
        self.frames_sent = 0
        self.connections = 0
        self.audio_pushed = 0
        self.audio_sent = 0
        self.audio_dropped = 0

    # ---- life cycle -------------------------------------------------------------------------
    def start(self) -> BrowserViewer:
        if self._thread is not None:
            raise RuntimeError("BrowserViewer already started")
        ready: list[BaseException | None] = []
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to start()'s caller
                ready.append(exc)
                started.set()
                loop.close()
                return
            ready.append(None)
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        self._thread = threading.Thread(target=run, name="holoport-browser", daemon=True)
        self._thread.start()
        started.wait()
        if ready[0] is not None:
            self._thread.join()
            self._thread = None
            raise ready[0]
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket; the port is free on return."""
        if self._thread is None:
            return
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> BrowserViewer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}/"

    # ---- the node's side ----------------------------------------------------------------------
    def publish(self, clouds: Sequence[Cloud]) -> int:
        """Make ``clouds`` (one per participant, room coordinates) the newest frame; its number.

        Encoding happens here, in the caller's thread, once for every client.
        """
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        data = encode_frame(clouds, seq)
        frame = _Frame(seq, data, sum(len(p) for p, _ in clouds))
        loop = self._loop
        if loop is None:
            raise RuntimeError("BrowserViewer is not running")
        with contextlib.suppress(RuntimeError):  # stopping meanwhile: the frame has nowhere to go
            loop.call_soon_threadsafe(self._set_latest, frame)
        return seq

    def push_audio(self, peer: int, samples: np.ndarray, position: Sequence[float], speaking: bool,
                   t_play: float | None = None) -> int:
        """Queue one block of ``peer``'s voice (float32 mono 48 kHz, usually 960 samples) for
        every page, to be heard from ``position`` (the speaker's mouth, room metres); the
        block's number. ``t_play``: Unix time it should be heard (the page never plays it
        earlier; None: as soon as it can play smoothly). Thread-safe; encoded here, once.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("BrowserViewer is not running")
        with self._seq_lock:
            seq = self._audio_seq.get(peer, 0) + 1
            data = encode_audio(peer, seq, samples, position, speaking, t_play)
            self._audio_seq[peer] = seq
        n = (len(data) - _AUDIO_HEADER.size) // 2
        with contextlib.suppress(RuntimeError):  # stopping meanwhile
            loop.call_soon_threadsafe(self._queue_audio, peer, data, n)
        return seq

    def remove_peer(self, peer: int) -> None:
        """``peer`` left: pages drop its queued voice, stop what is playing and its panner."""
        with self._seq_lock:
            self._audio_seq.pop(peer, None)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._peer_left, peer)

    def voice_levels(self, client: int | None = None, timeout: float = 10.0,
                     seconds: float = 1.0) -> dict[int, tuple[float, float]]:
        """Left and right RMS of each peer's last ``seconds`` of voice as a page hears it.

        The page renders what it received through an ``OfflineAudioContext`` with the same
        HRTF panner at the peer's position and its current listener pose: the spatial check
        for tests and diagnostics (a voice to the listener's left is louder on the left).
        """
        if self._loop is None or self._thread is None:
            raise RuntimeError("BrowserViewer is not running")
        fut = asyncio.run_coroutine_threadsafe(self._voice_levels(client, timeout, seconds), self._loop)
        return fut.result(timeout + 1.0)

    def set_room(self, room: Room | None) -> None:
        """Change the room (e.g. once the hub's welcome says how many seats); pages redraw it."""
        self.room = room
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._broadcast_room)

    def wait_clients(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``count`` pages are connected."""
        return self._wait(lambda: len(self._clients) >= count, timeout)

    def wait_taken(self, seq: int, timeout: float = 10.0) -> bool:
        """Block until every connected page has been sent frame ``seq`` (or a newer one).

        A producer that publishes its next frame then keeps exactly one frame ready per
        page without burning the CPU on frames nobody will see.
        """
        return self._wait(lambda: all(c.sent_seq >= seq for c in list(self._clients.values())), timeout)

    def wait_drawn(self, seq: int, timeout: float = 10.0) -> bool:
        """Block until every connected page has acknowledged (drawn) frame ``seq`` or newer."""
        return self._wait(lambda: bool(self._clients) and all(c.acked >= seq for c in list(self._clients.values())),
                          timeout)

    def wait_page_stats(self, predicate, timeout: float = 10.0) -> bool:
        """Block until some page's latest stats report satisfies ``predicate(dict)``."""
        return self._wait(lambda: any(c.page and predicate(c.page) for c in list(self._clients.values())), timeout)

    def clients(self) -> list[dict[str, Any]]:
        """Per page: what it said on connect, its latest stats report, server-side counters."""
        return [{"id": c.id, "hello": dict(c.hello), "page": dict(c.page), "frames_sent": c.frames_sent,
                 "acked": c.acked, "replaced": c.replaced, "ack_timeouts": c.ack_timeouts,
                 "errors": list(c.errors), "audio_sent": c.audio_sent, "audio_dropped": c.audio_dropped,
                 "audio_queued": sum(c.audio_queued.values()), "audio_wait_ms": _percentiles(c.audio_waits)}
                for c in list(self._clients.values())]

    def stats(self) -> dict[str, Any]:
        return {"clients": len(self._clients), "connections": self.connections,
                "frames_published": self.frames_published, "frames_sent": self.frames_sent,
                "malformed": self.malformed, "audio_pushed": self.audio_pushed, "audio_sent": self.audio_sent,
                "audio_dropped": self.audio_dropped}

    def snapshot(self, timeout: float = 10.0, client: int | None = None) -> bytes:
        """The PNG of a page's canvas as it draws the newest frame (the first page by default)."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("BrowserViewer is not running")
        fut = asyncio.run_coroutine_threadsafe(self._snapshot(client, timeout), self._loop)
        return fut.result(timeout + 1.0)

    # ---- the asyncio side ---------------------------------------------------------------------
    async def _open(self) -> Server:
        server = await serve(self._handle, self.host, self._port, process_request=self._http,
                             compression=None, max_size=32 * 2**20, max_queue=64, ping_interval=20,
                             ping_timeout=60, write_limit=2**20, server_header="holoport")
        self._port = server.sockets[0].getsockname()[1]
        return server

    async def _close(self) -> None:
        for fut in [*self._snapshots.values(), *self._levels.values()]:
            if not fut.done():
                fut.set_exception(ConnectionError("viewer stopped"))
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        """Static files for plain GETs; only ``/stream`` goes on to the WebSocket handshake."""
        path = request.path.split("?", 1)[0]
        if path == "/stream":
            return None
        entry = _STATIC.get(path)
        if entry is None:
            return connection.respond(404, "not found\n")
        body = (WEB_DIR / entry[0]).read_bytes()
        headers = Headers([("Content-Type", entry[1]), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                           ("Connection", "close")])
        return Response(200, "OK", headers, body)

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(self._next_client, ws)
        self._next_client += 1
        self.connections += 1
        try:
            await ws.send(json.dumps(room_message(self.room, self.point_size)))
        except ConnectionClosed:
            return
        self._clients[client.id] = client
        self._notify()
        sender = asyncio.create_task(self._send_loop(client))
        try:
            async for message in ws:
                try:
                    self._on_message(client, message)
                except Exception:  # a page's bad message is its own problem, never the server's
                    self.malformed += 1
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._clients.pop(client.id, None)
            self._notify()

    async def _send_loop(self, client: _Client) -> None:
        """Send all queued voice first, then the newest frame whenever the page is free for
        it (skipping everything older)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                client.wake.clear()
                while client.audio:
                    peer, message, n, queued = client.audio.popleft()
                    if n:
                        client.audio_queued[peer] -= n
                    client.audio_waits.append(loop.time() - queued)
                    await client.ws.send(message)
                    client.audio_sent += 1
                    self.audio_sent += 1
                frame = self._latest
                if frame is not None and frame.seq > client.sent_seq and client.awaiting is None:
                    if client.sent_seq:
                        client.replaced += frame.seq - client.sent_seq - 1
                    client.awaiting, client.sent_seq, client.sent_at = frame.seq, frame.seq, loop.time()
                    await client.ws.send(frame.data)
                    client.frames_sent += 1
                    self.frames_sent += 1
                    self._notify()
                    continue
                timeout = None
                if client.awaiting is not None:
                    timeout = max(0.0, client.sent_at + self.ack_timeout - loop.time())
                try:
                    await asyncio.wait_for(client.wake.wait(), timeout)
                except asyncio.TimeoutError:
                    # A page that never acknowledges still gets frames, one per ack_timeout.
                    client.awaiting = None
                    client.ack_timeouts += 1
        except ConnectionClosed:
            return

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        if isinstance(message, bytes | bytearray | memoryview):
            data = bytes(message)
            if len(data) < 12 or data[4:12] != _PNG:
                raise ValueError("binary message that is not a snapshot")
            (request,) = struct.unpack_from("<I", data, 0)
            fut = self._snapshots.pop(request, None)
            if fut is None:
                raise ValueError("snapshot nobody asked for")
            if not fut.done():
                fut.set_result(data[4:])
            return
        msg = json.loads(message)
        if not isinstance(msg, dict):
            raise ValueError("not a JSON object")
        kind = msg.get("type")
        if kind == "ack":
            seq = msg["seq"]
            if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= client.sent_seq:
                raise ValueError("ack of a frame never sent")
            client.acked = max(client.acked, seq)
            if client.awaiting is not None and seq >= client.awaiting:
                client.awaiting = None
                client.wake.set()
        elif kind == "stats":
            page = {k: msg[k] for k in _STAT_KEYS if k in msg}
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                       for v in page.values()):
                raise ValueError("stats must be numbers")
            if "audio" in msg:
                if not isinstance(msg["audio"], dict):
                    raise ValueError("audio stats must be an object")
                page["audio"] = _plain(msg["audio"])
            client.page = page
        elif kind == "voice_levels":
            fut = self._levels.pop(msg.get("id"), None) if isinstance(msg.get("id"), int) else None
            if fut is None:
                raise ValueError("voice levels nobody asked for")
            try:
                levels = _peer_levels(msg.get("peers"))
            except ValueError as exc:
                if not fut.done():
                    fut.set_exception(exc)
                raise
            if not fut.done():
                fut.set_result(levels)
        elif kind == "hello":
            client.hello = {k: v for k, v in msg.items() if k != "type" and isinstance(v, str | int | float | bool)}
        elif kind == "error":
            client.errors = [*client.errors[-19:], str(msg.get("message", ""))[:500]]
        else:
            raise ValueError(f"unknown message type {kind!r}")
        self._notify()

    def _set_latest(self, frame: _Frame) -> None:
        if self._latest is None or frame.seq > self._latest.seq:
            self._latest = frame
            self.frames_published += 1
            for c in self._clients.values():
                c.wake.set()

    def _queue_audio(self, peer: int, data: bytes, n: int) -> None:
        self.audio_pushed += 1
        limit = max(n, int(self.audio_queue_s * SAMPLE_RATE))
        now = asyncio.get_running_loop().time()
        for c in self._clients.values():
            c.audio.append((peer, data, n, now))
            queued = c.audio_queued[peer] = c.audio_queued.get(peer, 0) + n
            while queued > limit:  # a stalled page: drop this peer's oldest block, never the newest
                i = next(i for i, item in enumerate(c.audio) if item[0] == peer and item[2])
                queued -= c.audio[i][2]
                del c.audio[i]
                c.audio_dropped += 1
                self.audio_dropped += 1
            c.audio_queued[peer] = queued
            c.wake.set()

    def _peer_left(self, peer: int) -> None:
        text = json.dumps({"type": "peer_left", "peer": peer})
        for c in self._clients.values():
            if c.audio_queued.pop(peer, 0):
                c.audio = deque(item for item in c.audio if item[0] != peer)
            c.audio.append((peer, text, 0, asyncio.get_running_loop().time()))
            c.wake.set()

    def _broadcast_room(self) -> None:
        text = json.dumps(room_message(self.room, self.point_size))
        for c in list(self._clients.values()):
            task = asyncio.ensure_future(self._send_quietly(c.ws, text))
            self._background.add(task)  # keep a reference until it is done
            task.add_done_callback(self._background.discard)

    @staticmethod
    async def _send_quietly(ws: ServerConnection, message: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(message)

    async def _snapshot(self, client_id: int | None, timeout: float) -> bytes:
        if client_id is None:
            if not self._clients:
                raise ConnectionError("no page is connected")
            client_id = min(self._clients)
        client = self._clients.get(client_id)
        if client is None:
            raise ConnectionError(f"page {client_id} is not connected")
        request = self._next_snapshot
        self._next_snapshot += 1
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._snapshots[request] = fut
        try:
            await client.ws.send(json.dumps({"type": "snapshot", "id": request}))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._snapshots.pop(request, None)

    async def _voice_levels(self, client_id: int | None, timeout: float,
                            seconds: float) -> dict[int, tuple[float, float]]:
        if client_id is None:
            pages = [c.id for c in self._clients.values() if c.hello.get("ua")] or list(self._clients)
            if not pages:
                raise ConnectionError("no page is connected")
            client_id = min(pages)
        client = self._clients.get(client_id)
        if client is None:
            raise ConnectionError(f"page {client_id} is not connected")
        request = self._next_snapshot
        self._next_snapshot += 1
        fut: asyncio.Future[dict[int, tuple[float, float]]] = asyncio.get_running_loop().create_future()
        self._levels[request] = fut
        try:
            await client.ws.send(json.dumps({"type": "voice_levels", "id": request, "seconds": seconds}))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._levels.pop(request, None)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _wait(self, predicate, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)
