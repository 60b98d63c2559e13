"""Voice in a process of its own, beside a participant's main loop.

A participant's main thread captures, encodes, decodes and renders, much of it in Python
holding the interpreter lock for milliseconds at a time; on a loaded machine a voice
thread beside it woke up to 200 ms late, a third of its 20 ms blocks (measured in the
three-person demo on two cores), and its jitter buffer grew to a second to cover for it.
So, as browsers run audio apart from rendering, the participant runs its
:class:`~holoport.voice.VoiceChannel` in a child process with its own interpreter: the
child has its own connection to the hub, the microphone and the speaker; the parent
tells it what it learns of the membership (hub, id, voice key, roster, seat, clock offset) and
of each speaker's picture delay (lip sync), and hears back each speaker's playout delay,
who is speaking, the blocks it played (for the browser page) and, at the end, its
statistics. Messages go over a ``multiprocessing`` pipe; the child is spawned (never
forked: the parent holds ZeroMQ sockets and threads).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from holoport.session import Peer

log = logging.getLogger("holoport.voice")

SNAPSHOT_EVERY = 0.05  # s between the child's reports of delays and speakers
STOP_WAIT = 5.0  # s the parent waits for the child's statistics
BLOCK_QUEUE = 50  # played blocks waiting for the parent (1 s of one voice): beyond, dropped


@dataclass
class VoiceSpec:
    """What the child needs to build its side: where to connect, how, and its devices."""

    hub: str
    room: str
    key: str | None = None  # our secret key file (CURVE); the hub's public key comes with the membership
    mic: str | None = None  # capture.audio.open_microphone's spec
    speech: tuple[str, dict] | None = None  # synthetic speech instead of a microphone
    mute: bool = False
    speaker: str | None = None  # a device, or a .wav path ("{seat}" in it: our seat's number)
    mic_origin: tuple[float, float] | None = None  # a recording as the microphone: its frame player's
    #                                                (wall time, recording time), to play in step
    blocks: bool = False  # send each played block back (the browser page wants them)


@dataclass
class NodeView:
    """The parts of a node the voice channel reads, kept current by the parent."""

    hub: str
    room: str
    security: object = None
    id: int | None = None
    vkey: str | None = None
    peers: dict = field(default_factory=dict)
    seats: int | None = None
    seat: int | None = None
    offset: float | None = None


def node_state(node) -> tuple:
    """What the child mirrors of the node: its hub (which changes when the node fails over
    to another hub of a cluster) and that hub's public key first, then the membership."""
    return (node.hub, None if node.security is None else node.security.hub_public, node.id, node.vkey,
            tuple(sorted((p.id, p.name, p.seat) for p in node.peers.values())), node.seats, node.seat,
            None if node.offset is None else round(node.offset, 4))


class VoiceProcess:
    """The parent's handle: ``start()`` (early: the child takes seconds to import on a busy
    machine), then ``update(node)`` once joined and ``poll()`` from its loop;
    ``set_video_delay``/``playout_time``/``speaking`` as a VoiceChannel has them."""

    def __init__(self, spec: VoiceSpec) -> None:
        self.spec = spec
        self.listeners: list = []  # (peer, mono, mouth, speaking, t_play), called from poll()
        self._delays: dict[int, float] = {}
        self._speaking: set[int] = set()
        self._stats: dict = {}
        self._state = None
        self._sent_video: dict[int, float] = {}
        self._proc = None
        self._conn = None
        self._broken = False

    def start(self) -> VoiceProcess:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(self.spec, child), name="holoport-voice", daemon=True)
        self._proc.start()
        child.close()
        return self

    def update(self, node) -> None:
        """Tell the child what changed in the membership (cheap when nothing did)."""
        state = node_state(node)
        if state != self._state:
            self._state = state
            self._send(("node", state))

    def set_video_delay(self, peer: int, seconds: float) -> None:
        if abs(self._sent_video.get(peer, -1.0) - seconds) >= 0.005:
            self._sent_video[peer] = seconds
            self._send(("video", peer, seconds))

    def playout_time(self, peer: int, capture_t: float) -> float | None:
        delay = self._delays.get(peer)
        return None if delay is None else capture_t + delay

    def speaking(self) -> set[int]:
        return set(self._speaking)

    def poll(self) -> None:
        """Take what the child reported."""
        try:
            while self._conn is not None and self._conn.poll():
                self._take(self._conn.recv())
        except (EOFError, OSError):
            self._conn = None

    def stats(self) -> dict:
        return self._stats

    @property
    def stopped(self) -> bool:
        return self._proc is None

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):  # gone already (Ctrl-C): its stats may be in the pipe
            if self._conn is not None:
                self._conn.send(("stop",))
        deadline = time.monotonic() + (STOP_WAIT if self._state is not None else 0.5)
        try:
            while self._conn is not None and time.monotonic() < deadline and not self._stats:
                if self._conn.poll(0.1):
                    self._take(self._conn.recv())
        except (EOFError, OSError):
            pass
        self._proc.join(timeout=2)
        if self._proc.is_alive():
            self._proc.kill()
        self._proc = None

    def _take(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "snap":
            self._delays, self._speaking = msg[1], set(msg[2])
        elif kind == "block":
            _, peer, mono, mouth, speaking, t = msg
            for listener in self.listeners:
                listener(peer, mono, np.asarray(mouth), speaking, t)
        elif kind == "stats":
            self._stats = msg[1]

    def _send(self, msg: tuple) -> None:
        if self._conn is None or self._broken:
            return
        try:
            self._conn.send(msg)
        except (BrokenPipeError, OSError):  # what it said before it went can still be read
            log.warning("the voice process is gone: the meeting goes on without voice")
            self._broken = True


def _child(spec: VoiceSpec, conn) -> None:
    """The voice process: build the devices, run the channel, report, stop when told."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    # this process is the voice's alone: hand the interpreter between its threads (capture,
    # network and playout, each needing it for a moment every 20 ms) sooner than every 5 ms
    sys.setswitchinterval(0.0005)
    import holoport.voice  # noqa: F401  (the slow imports, while the parent joins)
    from holoport.security import KeyPair, NodeSecurity

    keys = KeyPair.load(spec.key) if spec.key else None
    node = NodeView(spec.hub, spec.room)
    lock = threading.Lock()

    def send(msg: tuple) -> None:
        with lock:
            conn.send(msg)

    voice = None
    try:
        while True:
            if conn.poll(SNAPSHOT_EVERY):
                msg = conn.recv()
                if msg[0] == "stop":
                    break
                if msg[0] == "node":
                    hub, hub_public, node.id, node.vkey, peers, node.seats, node.seat, node.offset = msg[1]
                    node.security = None if hub_public is None or keys is None else NodeSecurity(keys, hub_public)
                    node.hub = hub  # last: the channel reconnects when it sees the hub change
                    node.peers = {i: Peer(i, name, seat) for i, name, seat in peers}
                    if voice is None and node.seat is not None:  # joined: our seat names the file
                        voice = _open(spec, node, send)
                elif msg[0] == "video" and voice is not None:
                    voice.set_video_delay(msg[1], msg[2])
            if voice is not None:
                with voice._lock:
                    delays = {p: jb.delay for p, jb in voice._buffers.items()}
                send(("snap", delays, sorted(voice.speaking())))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the parent is gone: stop
    finally:
        if voice is not None:
            voice.stop()
        with contextlib.suppress(BrokenPipeError, OSError):
            send(("stats", voice.stats() if voice is not None else {"started": False}))


def _open(spec: VoiceSpec, node: NodeView, send):
    """The microphone, the speaker and the channel, once we have a seat."""
    from capture.audio import AudioError, MicrophoneSource, SpeechSource, open_microphone
    from holoport.voice import VoiceChannel
    from render.audio_out import NullSink, SpeakerSink, WavSink, open_speaker

    source = sink = None
    if not spec.mute:
        try:
            if spec.speech:
                source = SpeechSource(spec.speech[0], **spec.speech[1])
            elif spec.mic_origin is not None:  # a recording's track, in step with its frames
                from capture.recording import RecordingAudioSource

                start, at = spec.mic_origin
                source = RecordingAudioSource(spec.mic, realtime=True, loop=True, start=start, at=at)
            else:
                source = open_microphone(spec.mic)
        except ValueError as exc:  # an AudioError, or a recording without a usable track
            print(f"holoport: joining without a microphone: {exc}", flush=True)
    if spec.speaker is not None and spec.speaker.endswith(".wav"):
        sink = WavSink(spec.speaker.replace("{seat}", str(node.seat)))
    else:
        try:
            sink = open_speaker(spec.speaker)
        except AudioError as exc:
            print(f"holoport: joining without a speaker (the room's voices are not played): {exc}", flush=True)
            sink = NullSink()
    if isinstance(source, MicrophoneSource) and isinstance(sink, SpeakerSink):
        print("holoport: a live microphone and loudspeakers: the others will hear themselves (there is no "
              "echo cancellation on the desktop): use headphones, or the browser page (--web), whose "
              "microphone cancels echo", flush=True)
    voice = VoiceChannel(node, source, sink)
    if spec.blocks:  # for the browser page: through a bounded queue, so a stalled parent costs
        # dropped blocks, never a playout thread blocked on a full pipe
        blocks: queue.Queue = queue.Queue(maxsize=BLOCK_QUEUE)

        def forward() -> None:
            while (item := blocks.get()) is not None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    send(item)

        threading.Thread(target=forward, name="holoport-voice-blocks", daemon=True).start()
        voice.listeners.append(lambda peer, mono, mouth, speaking, t: _offer(
            blocks, ("block", peer, mono, mouth.tolist(), speaking, t)))
    return voice.start()


def _offer(q: queue.Queue, item: tuple) -> None:
    with contextlib.suppress(queue.Full):
        q.put_nowait(item)
