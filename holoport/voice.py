"""Voice: what a participant says, to the room, and the room's voices, to its ears.

A :class:`VoiceChannel` runs beside a :class:`~holoport.node.Node` on a connection of its
own to the hub (a second DEALER: its own TCP flow, so a voice packet never waits behind a
hologram frame in one byte stream; the hub forwards voice at once, in order, never held
for credit nor replaced). It attaches to the node's membership with the welcome's secret
``vkey`` and carries two threads:

- **capture**: the microphone (any ``capture.audio.AudioSource``) in 20 ms blocks, each
  encoded (Opus, ``codec.opus``); what discontinuous transmission leaves out is not sent.
  Each packet carries its first sample's capture time on our clock and our clock's offset
  to the hub's: the clock hologram frames are stamped on, so a receiver can line them up.
- **playout**: every 20 ms of wall time, one block from each speaker's jitter buffer
  (``holoport.jitter``: adaptive delay, FEC, concealment), placed at the speaker's seat
  relative to our own head (``render.spatial``), mixed, and written to the sink (speakers,
  or a WAV file whose sample ``k`` plays at ``playout_start + k / 48000``). A speaker's
  playout delay never drops below the lip-sync floor from its hologram's display delay
  (:meth:`set_video_delay`): audio waits for the picture, never the picture for audio.

The node's own thread never touches the voice socket; the voice threads read the node's
roster, seat and clock offset (plain attribute reads), and its hub: when a node fails over
to another hub of a cluster (docs/cluster.md), the voice connection follows it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

import msgpack
import numpy as np
import zmq

from capture.audio import BLOCK, BLOCK_MS, SAMPLE_RATE, AudioSource
from codec import registry
from holoport import wire
from holoport.jitter import JitterBuffer, lip_sync_floor
from holoport.wire import MessageType
from render.audio_out import AudioSink, NullSink
from render.room import Room
from render.spatial import Spatializer, mix, seat_azimuth

log = logging.getLogger("holoport.voice")

BLOCK_S = BLOCK / SAMPLE_RATE
MOUTH_HEIGHT = 1.55  # m above the floor: where a seated speaker's voice comes from
ATTACH_EVERY = 0.5  # s between attach attempts until the hub confirms
REATTACH_EVERY = 5.0  # s between attaches once attached (the hub may have dropped us)
SLEW_PER_PACKET = 0.0005  # s a speaker's clock shift may move per packet (25 ms a second)
MAX_DRAIN = 64  # messages taken per turn of the serving thread: playout must not wait for a flood
MAX_SKEW_SAMPLES = 100_000  # A/V skew samples kept (an hour of three peers at 10 fps)
SEND_HWM = 50  # voice packets queued for the hub at most (1 s): older speech is worthless


@dataclass
class VoiceCounters:
    sent: int = 0
    sent_bytes: int = 0
    not_sent_dtx: int = 0  # blocks discontinuous transmission left out (silence)
    send_full: int = 0  # packets dropped: the connection to the hub was not taking them
    not_attached: int = 0  # packets spoken before the hub confirmed our voice connection
    received: int = 0
    received_bytes: int = 0
    malformed: int = 0  # wire-level garbage
    unknown_sender: int = 0  # voice from nobody in our roster: never played
    bad_packets: int = 0  # packets no audio decoder takes (another codec's, garbage)
    attached: int = 0
    blocks_played: int = 0
    late_blocks: int = 0  # playout blocks produced after their time (the thread was starved)
    play_errors: int = 0  # playout failures (the sink), after which nothing is played


BlockListener = Callable[[int, np.ndarray, np.ndarray, bool, float], None]
"""(peer id, mono block, speaker's mouth in room coordinates, speaking, playout time)."""


class VoiceChannel:
    def __init__(self, node, source: AudioSource | None, sink: AudioSink | None, codec=None,
                 stream: int = 0, listen: bool = True) -> None:
        """``listen=False``: count what arrives, never decode or play it (load tests)."""
        if codec is None:
            from codec.opus import OpusCodec

            codec = OpusCodec()
        if getattr(codec, "kind", None) != "audio":
            raise ValueError(f"voice needs an audio codec, not {getattr(codec, 'name', codec)!r}")
        if getattr(codec, "frame_ms", BLOCK_MS) != BLOCK_MS:  # sources, jitter buffers and playout run in 20 ms
            raise ValueError(f"voice runs in {BLOCK_MS} ms blocks; the codec has {codec.frame_ms} ms frames")
        self.node = node
        self.source = source
        self.sink = sink
        self.codec = codec
        self.stream = stream
        self.listen = listen
        self.muted = False
        self.counters = VoiceCounters()
        self.listeners: list[BlockListener] = []
        self.playout_start: float | None = None  # wall time of the sink's first sample
        self.attached = False
        self._buffers: dict[int, JitterBuffer] = {}
        self._spatial: dict[int, Spatializer] = {}
        self._video_delay: dict[int, float] = {}
        self._shift: dict[int, float] = {}  # per speaker: their clock to ours, slewed
        self._speaking: dict[int, float] = {}  # peer -> when its last speech block played
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ctx = zmq.Context.instance()
        self._inproc = f"inproc://holoport-voice-{id(self)}"
        self._lock = threading.Lock()  # the buffers: read by others (playout_time, stats)
        self._hub: tuple = (None, None)  # the (endpoint, security) our socket is connected with

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> VoiceChannel:
        pull = self._ctx.socket(zmq.PAIR)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(self._inproc)
        self._sock, self._pull = self._connect(), pull
        self._threads = [threading.Thread(target=self._serve, name="holoport-voice", daemon=True)]
        if self.source is not None:
            self._threads.append(threading.Thread(target=self._capture, name="holoport-mic", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def _connect(self) -> zmq.Socket:
        """A connection to the node's hub (again when the node moved to another hub)."""
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        sock.setsockopt(zmq.SNDBUF, 32 * 1024)  # a small kernel queue: stale speech is worthless
        self._hub = (self.node.hub, self.node.security)
        if self.node.security is not None:
            self.node.security.apply(sock)
        sock.connect(self.node.hub)
        return sock

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=3)
        self._threads = []
        if self.source is not None:
            self.source.close()
        if self.sink is not None:
            self.sink.close()

    def __enter__(self) -> VoiceChannel:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the rest of the participant asks -----------------------------------------------
    def set_video_delay(self, peer: int, seconds: float) -> None:
        """The capture-to-display delay of ``peer``'s hologram here: its voice waits for it."""
        self._video_delay[peer] = seconds

    def playout_time(self, peer: int, capture_t: float) -> float | None:
        """When a sound ``peer`` made at ``capture_t`` (our clock) plays here."""
        with self._lock:
            jb = self._buffers.get(peer)
            return None if jb is None else jb.playout_time(capture_t)

    def speaking(self, within: float = 0.3) -> set[int]:
        """Peers whose voice carried speech in the last ``within`` seconds of playout."""
        now = time.time()
        return {p for p, t in list(self._speaking.items()) if now - t <= within}

    def stats(self) -> dict:
        with self._lock:
            peers = {str(p): {**asdict(jb.stats), "delay_ms": jb.delay * 1e3, "target_ms": jb.target * 1e3}
                     for p, jb in self._buffers.items()}
        return {**asdict(self.counters), "attached": self.attached, "playout_start": self.playout_start,
                "peers": peers}

    # -- capture: microphone -> encoder -> the serving thread -------------------------------
    def _capture(self) -> None:
        push = self._ctx.socket(zmq.PAIR)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self._inproc)
        encoder = self.codec.encoder()
        seq = 0
        try:
            for block in self.source:
                if self._stop.is_set():
                    break
                if self.muted:
                    continue
                packet = encoder.encode(block.samples)
                if packet is None:
                    self.counters.not_sent_dtx += 1
                    continue
                meta = msgpack.packb([seq, block.t, bool(packet.speech)])
                push.send_multipart([meta, packet.payload])
                seq += 1
        except Exception:
            log.exception("the microphone stopped")
        finally:
            push.close(0)

    # -- the serving thread: send, receive, attach, play out ----------------------------------
    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        attach_sent, attached_with = 0.0, None
        self.playout_start = next_play = time.time()
        try:
            while not self._stop.is_set():
                if (self.node.hub, self.node.security) != self._hub:  # the node failed over to another hub
                    poller.unregister(self._sock)
                    self._sock.close(0)
                    self._sock = self._connect()
                    poller.register(self._sock, zmq.POLLIN)
                    self.attached, attached_with, attach_sent = False, None, 0.0
                vkey = self.node.vkey
                since = time.monotonic() - attach_sent
                # attach when the membership is new (a re-join), and again now and then: the hub
                # forgets a voice connection it found gone, and answers each attach
                if vkey != attached_with:
                    self.attached = False
                if vkey is not None and ((not self.attached and since >= ATTACH_EVERY) or since >= REATTACH_EVERY):
                    attach_sent = time.monotonic()
                    self._send(wire.header(MessageType.ATTACH, id=self.node.id, vkey=vkey))
                wait = max(0.0, next_play - time.time()) if self.listen else 0.05
                ready = dict(poller.poll(int(wait * 1000) + 1))
                if self._pull in ready:
                    self._send_packets()
                if self._sock in ready and self._receive():
                    attached_with = vkey
                while self.listen and (now := time.time()) >= next_play:
                    if now - next_play > BLOCK_S:
                        self.counters.late_blocks += 1
                    try:
                        self._play(next_play)
                    except Exception:  # a sink that failed (disk full, device unplugged): go on without it
                        log.exception("voice playout failed: the room's voices are no longer played here")
                        self.counters.play_errors += 1
                        self.sink = NullSink()
                    next_play += BLOCK_S
        except Exception:
            log.exception("voice stopped")
        finally:
            self._sock.close(0)
            self._pull.close(0)

    def _send(self, head: dict, payloads: list | tuple = ()) -> bool:
        try:
            self._sock.send_multipart(wire.encode(head, payloads), zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _send_packets(self) -> None:
        while True:
            try:
                meta, payload = self._pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            seq, t, speech = msgpack.unpackb(meta)
            if not self.attached:  # the hub would not know whose voice this is
                self.counters.not_attached += 1
                continue
            head = wire.header(MessageType.AUDIO, room=self.node.room, seq=seq, t=t, vad=speech,
                               stream=self.stream)
            if self.node.offset is not None:
                head["off"] = self.node.offset
            if self._send(head, [payload]):
                self.counters.sent += 1
                self.counters.sent_bytes += len(payload)
            else:
                self.counters.send_full += 1

    def _receive(self) -> bool:
        """Take everything waiting; True when the hub confirmed our attachment."""
        confirmed = False
        for _ in range(MAX_DRAIN):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return confirmed
            arrived = time.time()
            try:
                msg = wire.decode(frames)
            except wire.WireError:
                self.counters.malformed += 1
                continue
            h = msg.header
            if msg.type == MessageType.REJOIN:  # the hub does not know this connection (any more)
                self.attached = False
                continue
            if msg.type == MessageType.ATTACH:
                if h.get("id") == self.node.id:
                    confirmed = self.attached = True
                    self.counters.attached += 1
                continue
            if msg.type != MessageType.AUDIO or len(msg.payloads) != 1 or not wire.need(h, "src", "seq", "t"):
                self.counters.malformed += 1
                continue
            src = h["src"]
            if src not in self.node.peers:
                self.counters.unknown_sender += 1
                continue
            payload = msg.payloads[0].bytes
            self.counters.received += 1
            self.counters.received_bytes += len(payload)
            if not self.listen:
                continue
            # the sender's capture clock -> the hub's -> ours (as ClockSync does for frames),
            # slewed rather than stepped: a clock estimate that moves by 10 ms between two
            # packets would make the next ones look late, or leave a gap
            mine = self.node.offset
            shift = h.get("off", 0.0) - mine if mine is not None else 0.0
            before = self._shift.get(src)
            if before is not None:
                shift = before + max(-SLEW_PER_PACKET, min(SLEW_PER_PACKET, shift - before))
            self._shift[src] = shift
            t = h["t"] + shift
            jb = self._buffers.get(src)
            if jb is None:
                try:
                    decoder = registry.decoder_for(payload)
                except Exception:  # another codec's bytes, or none: nothing to play
                    self.counters.bad_packets += 1
                    continue
                if not _is_audio_decoder(decoder):
                    self.counters.bad_packets += 1
                    continue
                with self._lock:
                    jb = self._buffers[src] = JitterBuffer(decoder)
                    self._spatial[src] = Spatializer(SAMPLE_RATE)
            jb.insert(h["seq"], t, payload, arrived, speech=h.get("vad", True))
        return confirmed

    def _play(self, t_play: float) -> None:
        """One 20 ms block of the room's voices, for the sink and the listeners."""
        node = self.node
        peers = dict(node.peers)
        with self._lock:
            for gone in [p for p in self._buffers if p not in peers]:  # left: their voice stops now
                del self._buffers[gone]
                self._shift.pop(gone, None)
                self._spatial.pop(gone, None)
                self._speaking.pop(gone, None)
            buffers = list(self._buffers.items())
        blocks = []
        for peer, jb in buffers:
            if (video := self._video_delay.get(peer)) is not None:
                jb.set_min_delay(lip_sync_floor(video))
            mono = jb.pull(t_play)
            if mono is None:
                continue
            seat = peers[peer].seat
            speaking = jb.speaking and float(np.abs(mono).max(initial=0.0)) > 1e-3
            if speaking:
                self._speaking[peer] = time.time()
            azimuth, distance, mouth = _placement(node.seats, node.seat, seat)
            blocks.append(self._spatial[peer].process(mono, azimuth, distance))
            for listener in self.listeners:
                try:
                    listener(peer, mono, mouth, speaking, t_play)
                except Exception:
                    log.exception("a voice listener failed")
        self.counters.blocks_played += 1
        if self.sink is not None:
            self.sink.write(mix(blocks) if blocks else np.zeros((BLOCK, 2), np.float32))


def lip_sync_reference(video_delays: np.ndarray, early: float = 0.045, late: float = 0.125) -> float:
    """The video delay to hold a speaker's voice to, from their recent frames' delays (s).

    A frame shown ``v`` after capture is in sync with audio played ``d`` after capture when
    ``v - early <= d <= v + late`` (ITU-R BT.1359). The floor the jitter buffer gets is
    ``lip_sync_floor(ref)``, a little above ``ref - early``; so ``ref`` is chosen among the
    frames' own delays as the one that puts the most frames within the window, the smallest
    of equals (a short audio delay is better for conversation). Following the slowest frame
    instead would put every faster frame out of the window on a jittery path."""
    v = np.sort(np.asarray(video_delays, np.float64))
    if not v.size:
        raise ValueError("no video delays")
    d = v - early + 0.015  # the audio delay each candidate gives (lip_sync_floor's margin)
    covered = np.searchsorted(v, d + early, side="right") - np.searchsorted(v, d - late, side="left")
    return float(v[int(np.argmax(covered))])


class LipSync:
    """Each hologram frame shown tells the voice how late its speaker's picture is here,
    and is one A/V skew sample: when its capture instant is heard minus when it is seen
    (ITU-R BT.1359: in sync from -45 ms, audio early, to +125 ms, audio late). The voice is
    held to the delay that keeps most of the speaker's recent frames in sync
    (:func:`lip_sync_reference`, over ``WINDOW_S``)."""

    WINDOW_S = 3.0

    def __init__(self, voice) -> None:
        self.voice = voice
        self.skew_ms: deque[float] = deque(maxlen=MAX_SKEW_SAMPLES)  # the meeting's latest frames
        self._recent: dict[int, deque] = {}  # peer -> (shown at, capture-to-display delay)

    def shown(self, peer: int, capture: float, displayed: float) -> None:
        recent = self._recent.setdefault(peer, deque(maxlen=256))
        recent.append((displayed, displayed - capture))
        while recent and recent[0][0] < displayed - self.WINDOW_S:
            recent.popleft()
        self.voice.set_video_delay(peer, lip_sync_reference(np.fromiter((v for _, v in recent), np.float64)))
        heard = self.voice.playout_time(peer, capture)
        if heard is not None:
            self.skew_ms.append((heard - displayed) * 1e3)

    def summary(self) -> dict:
        skew = np.asarray(self.skew_ms)
        if not skew.size:
            return {"av_skew_p50_ms": None, "av_skew_p95_ms": None, "in_sync_share": None, "av_skew_frames": 0}
        return {"av_skew_p50_ms": float(np.percentile(skew, 50)), "av_skew_p95_ms": float(np.percentile(skew, 95)),
                "in_sync_share": float(np.mean((skew >= -45) & (skew <= 125))), "av_skew_frames": int(skew.size)}


@functools.lru_cache(maxsize=256)
def _placement(seats: int | None, listener: int | None, speaker: int) -> tuple[float, float, np.ndarray]:
    """Where ``speaker``'s voice comes from for ``listener`` (azimuth, distance, mouth in
    the room): fixed for a room, so worked out once, not every 20 ms block."""
    if seats and listener is not None and 0 <= speaker < seats and 0 <= listener < seats and speaker != listener:
        room = Room(seats)
        azimuth, distance = seat_azimuth(room, listener, speaker)
        return azimuth, distance, room.seat_position(speaker) + np.array([0.0, MOUTH_HEIGHT, 0.0])
    return 0.0, 1.0, np.array([0.0, MOUTH_HEIGHT, 0.0])


def _is_audio_decoder(decoder) -> bool:
    return all(callable(getattr(decoder, m, None)) for m in ("decode", "conceal", "recover"))
