"""The participant's main loop: capture -> encode -> send; receive -> decode -> render.

This is what ``holoport join`` and each of the demo's participants run. It paces capture
at a set frame rate, renders the room from the participant's own seat whenever something
new arrived, and at the end writes its view (PNG), an animation (GIF) and its statistics
(JSON) into the output folder.

In a hub cluster (docs/cluster.md: ``cluster``, a Redis URL, or a ``hub`` that answers with
the cluster's hubs) it joins the best-ranked hub that admits it (``holoport.hub_choice``)
and, when that hub dies, the best of the others, capturing all along.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np

import codec
from codec import Cloud
from holoport.hub_choice import HubChooser
from holoport.node import JoinError, Node, RemoteFrame
from holoport.point_sources import open_points
from holoport.security import KeyPair, NodeSecurity, node_security
from holoport.stats import LatencyLog
from render import PlacedCloud, Renderer, Room
from render.markers import speaker_marker

MAX_DUMPS = 60
# A hub of a cluster is asked the time every TIME_EVERY s, which it always answers: when
# DEAD_AFTER s pass after a question with nothing at all from it, it is taken for dead and
# we fail over. A second is four questions missed, beyond any pause of a live hub seen in
# the tests (a loaded two-core machine), and leaves most of the 3 s (kill to frames
# flowing again) to ranking the others (<= 0.3 s) and joining one (a round trip). A socket
# monitor would see a SIGKILL's reset sooner, but not a hub behind a dead link, and one
# kept for the whole meeting can hang libzmq's I/O thread (libzmq #3575, holoport.session).
TIME_EVERY = 0.25
DEAD_AFTER = 1.0
FAILOVER_JOIN_TIMEOUT = 2.0  # s a hub ranked during a failover has to welcome us (one that did not
#                              answer the ranking's round trips: a second)
RANK_AGAIN_EVERY = 0.5  # s between rankings while no hub of the cluster admits us

log = logging.getLogger("holoport.participant")


@dataclass
class ParticipantOptions:
    hub: str = "tcp://127.0.0.1:5555"
    room: str = "main"
    name: str = ""
    source: str = "synthetic"  # or a recording, a Kinect .mkv, a sequence folder (holoport.point_sources)
    cameras: str | None = None  # cameras file (holoport calibrate): source is then NAME=SOURCE,...
    crop: str | None = None  # person / cut / none; None: the source's own (holoport.point_sources)
    body: int = 0  # which synthetic person to film
    fps: float = 15.0
    duration: float = 10.0  # seconds; 0 = until interrupted
    out: str | None = None  # folder for the view, animation and statistics
    view_size: tuple[int, int] = (640, 360)
    gif_fps: float = 10.0  # animation frames per second of meeting (real-time playback)
    gif_seconds: float = 20.0  # the animation keeps the meeting's last this-many seconds
    dump: int = 0  # save every n-th frame (by sequence number) sent and received, as npz
    insecure: bool = False
    key: str | None = None  # our secret key file: CURVE to the hub
    hub_key: str | None = None  # the hub's public key file
    token: str | None = None  # the room's admission token
    codec: str = "baseline"  # a name from codec.available()
    codec_options: dict = field(default_factory=dict)  # its configuration beyond Codec.for_meeting's
    rate: str = "fixed"  # "adaptive": a layered stream, as many parts as our uplink carries, and
    #                      each receiver gets what its downlink carries (octree codec);
    #                      "rungs": one level of detail and colour step for all receivers,
    #                      the lowest any of them can take (holoport.link.live)
    view: bool = False  # a desktop window with the room, orbit and zoom (render.window)
    web: int | None = None  # serve the browser / headset viewer on this port (render.browser)
    web_host: str = "127.0.0.1"  # 0.0.0.0 to let a headset on the LAN in
    voice: bool = True  # speak and listen (holoport.voice); False: the hologram alone
    mic: str | None = None  # DEVICE or FILE (capture.audio.open_microphone), "speech" (a synthetic
    #                         voice per body); None: the default device
    speaker: str | None = None  # DEVICE, a .wav path, "file" (seatN.wav in out); None: the default device
    mute: bool = False  # listen without sending our voice
    speech: tuple[str, dict] | None = None  # synthetic speech (text, espeak voice options) as the microphone
    cluster: str | None = None  # redis://HOST:PORT: choose among the cluster's hubs (hub is then not used)
    redis_password_file: str | None = None  # the cluster's Redis password (else HOLOPORT_REDIS_PASSWORD)
    pick_hub: bool = True  # False: stay on hub even when it is in a cluster (a link relay in front of it)


class Participant:
    def __init__(self, options: ParticipantOptions, hubs: HubChooser | None = None) -> None:
        """``hubs``: where to choose a hub from, when not from ``options`` (a given list)."""
        self.opt = options
        self.hubs = hubs  # the cluster's hubs once joined through one; None: one hub, as ever
        self.failovers: list[float] = []  # s from finding our hub dead to the new hub's welcome
        self.source = open_points(options.source, options.body, cameras=options.cameras, crop=options.crop)
        self.renderer = Renderer()
        self.latency = LatencyLog()
        self.stop_event = threading.Event()
        self.remote: dict[int, RemoteFrame] = {}
        self.frames_rendered = 0
        self.points_sent: list[int] = []
        self.animation: deque[np.ndarray] = deque(maxlen=max(1, int(options.gif_fps * options.gif_seconds)))
        self._next_animation_frame = 0.0
        self.sent_dump: list[dict] = []
        self.recv_dump: list[dict] = []
        self.last_view = None
        self.most_shown = 0
        self.rate = None  # LayeredRate when options.rate is adaptive, LiveRate for rungs
        self.layered = None  # the layered codec, with LayeredRate
        self._layers: dict[str, dict[int, int]] = {}  # sender -> seq -> parts its frame was shown with
        self.voice = None  # holoport.voice.VoiceChannel once joined, when options.voice
        self.lip_sync = None  # holoport.voice.LipSync, with the voice
        self.frame_index = 0
        self._shown: dict[int, int] = {}  # peer -> seq of its frame last drawn
        if options.rate not in ("fixed", "adaptive", "rungs"):
            raise ValueError(f"--rate is fixed, adaptive or rungs, not {options.rate!r}")
        self.codec = codec.for_meeting(options.codec, **options.codec_options)
        if options.rate in ("adaptive", "rungs"):
            from holoport.link.live import ladder_codec

            ladder_codec(self.codec)  # before joining: a codec without levels of detail is an error now
        self.window = self.browser = None
        if options.view:  # before joining: no display is an error the user sees at once
            from render.window import DesktopWindow

            self.window = DesktopWindow(f"Holoport: {options.name or 'me'}", *options.view_size)
        self._start_voice()  # last: nothing after it may fail and leave its process behind

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self._stop_voice()  # also when joining failed
            if self.hubs is not None:
                self.hubs.close()

    def _stop_voice(self) -> None:
        if self.voice is not None and not self.voice.stopped:
            self.voice.stop()

    def _run(self) -> dict:
        opt = self.opt
        node = self.node = self._join()
        try:
            if opt.rate != "fixed":
                self._start_rate(node)
            self._seated(node)
            try:
                self._open_viewers()
                period = 1.0 / opt.fps
                started = time.monotonic()
                next_tick = started
                next_log = started + 5.0
                while not self.stop_event.is_set():
                    now = time.monotonic()
                    if opt.duration and now - started >= opt.duration:
                        break
                    if now >= next_tick:
                        self._capture_and_send(node)
                        next_tick += period
                        if next_tick < now:  # fell behind: don't try to catch up with a burst
                            next_tick = now + period
                        node.heartbeat()
                        if now >= next_log:  # the node's statistics in the log, every 5 s
                            node.log_stats()
                            next_log = now + 5.0
                    if self.voice is not None:
                        self.voice.update(node)
                        self.voice.poll()
                    arrived = node.poll(timeout=max(0.0, next_tick - time.monotonic()))
                    if arrived:
                        self._receive(arrived)
                        self._render()
                    elif self.window is not None:  # nothing new, but the user may be orbiting
                        self._update_window(self._placed())
                    # after poll, which takes whatever the hub said while we were busy
                    if self.hubs is not None and node.silent_for() >= DEAD_AFTER \
                            and not self._fail_over(node, started + opt.duration if opt.duration else None):
                        break
                elapsed = time.monotonic() - started
            finally:
                self.source.close()
                self._stop_voice()
                self._close_viewers()
        finally:
            node.stop()
        return self._finish(elapsed)

    def _node(self, hub: str, security: NodeSecurity | None, join_timeout: float = 5.0) -> Node:
        opt = self.opt
        return Node(hub, opt.room, opt.name, encoder=self.codec, insecure=opt.insecure, security=security,
                    token=opt.token, join_timeout=join_timeout)

    def _join(self) -> Node:
        """Joined: to ``hub``, or in a cluster to the best-ranked hub that admits us."""
        opt = self.opt
        security = node_security(opt.key, opt.hub_key)
        if self.hubs is None and (opt.cluster or opt.pick_hub):
            keys = KeyPair.load(opt.key) if opt.key else None
            self.hubs = (HubChooser(opt.room, keys, opt.insecure, cluster=opt.cluster,
                                    password_file=opt.redis_password_file) if opt.cluster else
                         HubChooser(opt.room, keys, opt.insecure, hub=opt.hub, hub_security=security))
        ranking = self.hubs.first() if self.hubs is not None else []
        if not ranking:  # one hub, outside any cluster (or silent: joining it says why)
            self.hubs = None
            return self._node(opt.hub, security).start()
        refusals = []
        for c in ranking:
            try:  # a hub just measured answers at once; one that did not gets a second
                return self._node(c.endpoint, self.hubs.security(c), 5.0 if c.rtt is not None else 1.0).start()
            except JoinError as exc:
                refusals.append(f"hub {c.id} at {c.endpoint}: {exc}")
        raise JoinError("no hub of the cluster admitted us: " + "; ".join(refusals))

    def _fail_over(self, node: Node, until: float | None) -> bool:
        """Our hub fell silent: join the best of the cluster's other hubs. False when the
        meeting ended (or was stopped) before any admitted us."""
        detected, dead = time.monotonic(), node.hub
        log.warning("the hub at %s is silent for %.1f s: joining another hub of the cluster", dead,
                    node.silent_for())
        exclude: str | None = dead  # this round only: a hub restarted in place may take us back later
        while not self.stop_event.is_set() and (until is None or time.monotonic() < until):
            for c in self.hubs.again(exclude):
                try:
                    node.move_to(c.endpoint, self.hubs.security(c), FAILOVER_JOIN_TIMEOUT if c.rtt is not None else 1.0)
                except JoinError as exc:
                    log.warning("hub %s at %s: %s", c.id, c.endpoint, exc)
                    continue
                node.time_every = TIME_EVERY
                self.failovers.append(time.monotonic() - detected)
                log.warning("now on hub %s at %s, %.2f s after finding %s dead", c.id, c.endpoint,
                            self.failovers[-1], dead)
                self._seated(node)
                return True
            exclude = None
            self.stop_event.wait(RANK_AGAIN_EVERY)
        return False

    def _seated(self, node: Node) -> None:
        """The room as our (new) seat sees it; and, in a cluster, the hub's liveness watched."""
        self.room = Room(node.seats)
        w, h = self.opt.view_size
        self.view_camera = self.room.seat_camera(node.seat, w, h)
        if self.hubs is not None:
            node.time_every = TIME_EVERY

    def _open_viewers(self) -> None:
        if self.window is not None:
            self.window.look_like(self.view_camera)
            self.window.start()
        if self.opt.web is not None:
            from render.browser import BrowserViewer

            self.browser = BrowserViewer(self.opt.web_host, self.opt.web, self.room).start()
            print(f"holoport: open {self.browser.url} in a browser or headset to see the room", flush=True)

    def _start_voice(self) -> None:
        """Our microphone to the room, the room's voices to our speaker (or seatN.wav), in a
        process of its own (holoport.voice_process), started before we join so that its
        imports overlap ours; a participant without audio devices still joins, and is told
        why it is silent."""
        opt = self.opt
        if not opt.voice:
            return
        from holoport.voice import LipSync
        from holoport.voice_process import VoiceProcess, VoiceSpec

        speech = opt.speech
        if speech is None and opt.mic == "speech":  # the demo's voices: one per body, in turn
            from capture.audio import demo_voices

            text, voice = demo_voices(opt.body + 1)[opt.body]
            speech = (text, {**voice, "start": time.time() + 4.0 + 1.5 * opt.body})
        mic, origin = opt.mic, None
        if mic is None and speech is None and _has_audio(opt.source):  # a recording speaks with its own voice,
            mic = opt.source  # in step with its frames: its player started when it was opened, just now
            player = getattr(self.source, "player", None)
            origin = player.origin if player is not None else None
        speaker = opt.speaker
        if speaker == "file":
            if not opt.out:
                raise ValueError("--speaker file writes seatN.wav into --out: give --out")
            Path(opt.out).mkdir(parents=True, exist_ok=True)
            speaker = str(Path(opt.out) / "seat{seat}.wav")
        if mic is None and speech is None and speaker is None and opt.web is None:
            from capture.audio import default_devices

            no_mic, no_speaker = default_devices()
            if no_speaker is not None and (no_mic is not None or opt.mute):  # nothing to say or hear with
                print(f"holoport: joining without voice: {no_mic or 'muted'}; {no_speaker}", flush=True)
                return
        spec = VoiceSpec(opt.hub, opt.room, opt.key, mic=mic, speech=speech, mute=opt.mute,
                         speaker=speaker, blocks=opt.web is not None, mic_origin=origin)
        self.voice = VoiceProcess(spec).start()
        self.voice.listeners.append(self._voice_block)
        self.lip_sync = LipSync(self.voice)

    def _voice_block(self, peer: int, mono: np.ndarray, mouth: np.ndarray, speaking: bool, t: float) -> None:
        if self.browser is not None and peer in self.node.peers:
            self.browser.push_audio(peer, mono, mouth, speaking, t_play=t)

    def _lip_sync(self, shown: list[int], displayed: float) -> None:
        if self.lip_sync is None:
            return
        for s in shown:
            if (capture := self.remote[s].ts.get("capture")) is not None:
                self.lip_sync.shown(s, capture, displayed)

    def _close_viewers(self) -> None:
        for viewer in (self.window, self.browser):
            if viewer is not None:
                viewer.stop()

    def _start_rate(self, node: Node) -> None:
        """Layered: the hub's reports of our uplink steer how many parts we send. Rungs:
        measure the ladder on our first frame and let receivers' reports steer it."""
        from holoport.link.live import LayeredRate, LiveRate, RungEncoders, layered_codec, live_ladder

        if self.opt.rate == "adaptive":
            self.layered = layered_codec(self.codec)
            self.rate = LayeredRate(self.opt.fps)
            node.on_feedback = self.rate.on_feedback
            return

        positions, colors = self.source.read()
        ladder = live_ladder(positions, colors, self.codec)
        self.rate = LiveRate(ladder, self.opt.fps)
        self.encoders = RungEncoders(ladder, self.codec)
        node.on_feedback = self.rate.on_feedback

    def _capture_and_send(self, node: Node) -> None:
        t0 = time.time()
        positions, colors = self.source.read()
        t1 = time.time()
        if self.layered is not None:
            return self._send_layers(node, positions, colors, t0, t1)
        if self.rate is not None:
            rung = self.rate.choose(t0, t1, self.frame_index, False)
            self.frame_index += 1
            if rung is None:  # it would arrive too late: skip it
                return
            node.encoder = self.encoders.get(rung)
        head = node.send(Cloud(positions, colors), ts={"capture": t0, "captured": t1})
        if self.rate is not None and (sent := node.sent_frame(head["seq"])) is not None:
            self.rate.on_sent(head["seq"], *sent)
        # our capture and encode are counted by the receivers, per frame they show
        self.points_sent.append(len(positions))
        if self._dumps(head["seq"], self.sent_dump):
            self.sent_dump.append({"seq": head["seq"], "positions": positions, "colors": colors})

    def _send_layers(self, node: Node, positions: np.ndarray, colors: np.ndarray, t0: float, t1: float) -> None:
        frame = self.layered.encode_layers(positions, colors)
        t2 = time.time()
        count = self.rate.choose(t0, t2, [len(p) for p in frame.parts])
        if count == 0:  # even the base would arrive too late: skip it
            return
        heads = node.send_layers(frame.parts[:count], frame.points, {"capture": t0, "captured": t1, "encoded": t2})
        self.rate.on_sent(node, heads)
        self.points_sent.append(len(positions))
        if self._dumps(heads[0]["seq"], self.sent_dump):
            self.sent_dump.append({"seq": heads[0]["seq"], "positions": positions, "colors": colors})

    def _dumps(self, seq: int, kept: list) -> bool:
        """Sender and receivers pick the same frames by sequence number alone, so the saved
        clouds can be compared after the meeting; at most MAX_DUMPS are kept in memory."""
        return bool(self.opt.dump) and seq % self.opt.dump == 0 and len(kept) < MAX_DUMPS

    def _receive(self, frames: list[RemoteFrame]) -> None:
        for f in frames:
            if f.stream != 0:  # each participant's hologram; further views are not drawn yet
                continue
            upgrade = f.sender in self.remote and self.remote[f.sender].seq == f.seq  # more parts came
            if not upgrade:
                self.latency.frame_received(f.sender, f.name, f.seq, f.ts)  # stamped, waiting for a render
            self.remote[f.sender] = f
            if f.layers:
                seen = self._layers.setdefault(f.name, {})
                seen[f.seq] = f.layers
                if len(seen) > 4096:
                    seen.pop(next(iter(seen)))
            if self._dumps(f.seq, self.recv_dump):
                self.recv_dump.append({"sender": f.name, "seq": f.seq, "positions": f.positions,
                                       "colors": f.colors})

    def _placed(self) -> list[PlacedCloud]:
        for gone in set(self.remote) - set(self.node.peers):  # left the room: stop drawing (and hearing)
            del self.remote[gone]
            if self.browser is not None:
                self.browser.remove_peer(gone)
        return [PlacedCloud(self.remote[s].positions, self.remote[s].colors, self.room.seat_pose(self.remote[s].seat))
                for s in sorted(self.remote)]

    def _update_window(self, clouds: list[PlacedCloud]) -> None:
        if self.window.closed:
            self.stop_event.set()  # closing the window leaves the meeting
        else:
            self.window.update(self.room, clouds)

    def _render(self) -> None:
        clouds = self._placed()  # first: it forgets peers that left
        order = sorted(self.remote)
        fresh = [s for s in order if self._shown.get(s) != self.remote[s].seq]
        for s in fresh:
            self._shown[s] = self.remote[s].seq
        if self.voice is not None:  # a marker over whoever speaks
            clouds += [speaker_marker(self.room, self.remote[s].seat)
                       for s in self.voice.speaking() if s in self.remote]
        t0 = time.time()
        view = self.renderer.render(self.view_camera, self.room, clouds)
        t1 = time.time()
        self.latency.frames_rendered(order, t0, t1)  # one sample per frame, at its first image
        self._lip_sync(fresh, t1)
        if len(order) >= self.most_shown:  # keep the latest view with everyone in it, so
            self.most_shown = len(order)  # a peer leaving first doesn't empty the final image
            self.last_view = (view, [self.remote[s] for s in order])
        if self.window is not None:
            self._update_window(clouds)
        if self.browser is not None:  # the page wants room coordinates
            self.browser.publish([(c.positions @ c.pose[:3, :3].T.astype(np.float32)
                                   + c.pose[:3, 3].astype(np.float32), c.colors) for c in clouds])
        if t1 >= self._next_animation_frame:
            self.animation.append(view.image)
            self._next_animation_frame = max(self._next_animation_frame + 1 / self.opt.gif_fps, t1)
        self.frames_rendered += 1

    def _finish(self, elapsed: float) -> dict:
        c = self.node.counters
        report = {
            "name": self.node.name,
            "id": self.node.id,
            "seat": self.node.seat,
            "seats": self.node.seats,
            "seconds": elapsed,
            "frames_sent": c.sent,
            "frames_received": c.received,
            "received_by_sender": c.received_by_sender,
            "skipped_stale": c.skipped_stale,
            "decode_errors": c.decode_errors,
            "missing_reference": c.missing_reference,
            "fps_sent": c.sent / elapsed if elapsed else 0.0,
            "fps_rendered": self.frames_rendered / elapsed if elapsed else 0.0,
            "points_per_frame": float(np.mean(self.points_sent)) if self.points_sent else 0.0,
            "mbps_sent": c.sent_bytes * 8 / elapsed / 1e6 if elapsed else 0.0,
            "mbps_received": c.received_bytes * 8 / elapsed / 1e6 if elapsed else 0.0,
            "latency": self.latency.summary(),  # per stage, over the frames shown (stats.WHAT)
            "frames_shown": self.latency.shown,  # remote frames drawn; each gave one end_to_end sample
            "frames_redrawn": self.latency.redrawn,  # draws of a frame already shown (no samples)
            "frames_unshown": self.latency.unshown,  # decoded, but replaced or gone before a render
            "latency_per_frame": list(self.latency.frames),  # the latest frames shown: each one's stages, ms
            "rate": self.rate.summary() if self.rate is not None else None,
            "layers_by_sender": {name: float(np.mean(list(seen.values()))) for name, seen in self._layers.items()},
            "voice": self._voice_report(),
            "hub": self.node.hub,  # the last one, in a cluster
            "failovers": len(self.failovers),  # hubs that died under us, each replaced by another
            "failover_s": self.failovers,  # for each: s from finding the hub silent to the new hub's welcome
            "options": {k: v for k, v in asdict(self.opt).items() if k not in ("insecure", "key", "token")},
        }
        if self.opt.out:
            self._write_outputs(Path(self.opt.out), report)
        return report

    def _voice_report(self) -> dict | None:
        if self.voice is None:
            return None
        return {**self.voice.stats(), **self.lip_sync.summary(),
                "audio": f"seat{self.node.seat}.wav" if self.opt.speaker == "file" else None}

    def _write_outputs(self, out: Path, report: dict) -> None:
        out.mkdir(parents=True, exist_ok=True)
        stem = f"seat{self.node.seat}"
        if self.last_view is not None:
            view, shown = self.last_view
            iio.imwrite(out / f"{stem}.png", view.image)
            np.save(out / f"{stem}_ids.npy", view.ids)
            report["view"] = {
                "image": f"{stem}.png",
                "ids": f"{stem}_ids.npy",
                "clouds": [{"index": i, "name": f.name, "seat": f.seat, "seq": f.seq}
                           for i, f in enumerate(shown)],
            }
        if self.animation:
            report["animation"] = f"{stem}.gif"
        # the statistics first: the animation and the dumps take longest to write
        (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
        if self.animation:
            iio.imwrite(out / f"{stem}.gif", np.stack(self.animation),
                        duration=1000 / self.opt.gif_fps, loop=0)
        if self.opt.dump:
            _dump(out / f"{stem}_sent.npz", self.sent_dump)
            _dump(out / f"{stem}_received.npz", self.recv_dump)


def _dump(path: Path, records: list[dict]) -> None:
    arrays = {}
    for i, r in enumerate(records):
        for key, value in r.items():
            arrays[f"{i}_{key}"] = np.asarray(value)
    np.savez_compressed(path, **arrays)


def _has_audio(source: str) -> bool:
    """Whether ``source`` is a Holoport recording with an audio track."""
    from capture.recording import Recording, is_recording

    if not is_recording(source):
        return False
    try:
        with Recording(source) as rec:
            return rec.audio_count > 0
    except ValueError:
        return False


def run_participant(options: ParticipantOptions) -> dict:
    """Run until the duration ends or SIGINT/SIGTERM arrives; either way, finish cleanly."""
    participant = Participant(options)

    def _stop(signum, _frame):
        participant.stop_event.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return participant.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
