"""Voice: mouth-to-ear latency, A/V skew, quality (PESQ WB, STOI), loss and bit rate.

Every latency here is measured on the audio itself: the speech that went in is found in
what came out by cross-correlation, 200 ms window by window over every window with
speech (``mouth_to_ear``), so it counts the encoder's look-ahead, packetisation, the
links, the hub, the jitter buffer and any concealment, and trusts no time stamp. The
audio device's own buffers are not in it (there is no device: the output is a WAV file
whose sample k plays at a known wall time). Quality compares what came out, aligned on
the median lag, with what went in: PESQ wideband (ITU-T P.862.2, ``pesq``) and STOI.

Cases (records' ``case``):

- ``sim``: the codec, the jitter buffer and the link model (``holoport.link``) in
  simulated time: the speaker's uplink and the listener's downlink, each a profile with
  its own trace (real Lumos5G traces; tuning traces and validation traces, ``split``),
  plus ``loopback`` (no link) and ``loss5`` (5% of packets lost at random, as datagrams:
  what FEC and concealment are for).
- ``live``: real ZeroMQ through a real hub (in this process) between two nodes with their
  voice channels, a file played as the microphone in real time: on loopback, and through
  ``holoport.link.relay`` over a profile. With ``hologram`` the speaker also streams
  hologram frames over the same uplink; ``fair`` says whether the relay fair-queues the
  participant's connections (``LinkRelay(fair=True)``, as a phone's FQ-CoDel does) or
  keeps one FIFO for them. A/V skew comes from those frames: each frame's capture
  instant, heard (voice playout) minus seen (its arrival, decoded).
- ``hub8``: eight speakers talking at once in one room through the hub: the hub's own
  time per voice packet (arrival to forward), p50 and p99, as ``mouth_to_ear_*`` is not
  what that measures (records carry it in ``hub_p50_ms`` / ``hub_p99_ms``).

Records: case, link, hologram, fair, split, speech, mouth_to_ear_p50_ms, _p95_ms, _p99_ms,
av_skew_p50_ms, av_skew_p95_ms, in_sync_share, pesq_wb, stoi, loss_share,
concealed_share, kbps (Opus payload, what DTX sent), windows (latency samples),
hub_p50_ms, hub_p99_ms.

Run: holoport bench voice --json docs/bench/voice.json --markdown docs/bench/voice.md --plot docs/bench/voice.png
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, emit, script_main

COLUMNS = ["case", "link", "hologram", "fair", "split", "speech", "mouth_to_ear_p50_ms", "mouth_to_ear_p95_ms",
           "mouth_to_ear_p99_ms", "av_skew_p50_ms", "av_skew_p95_ms", "in_sync_share", "pesq_wb", "stoi",
           "loss_share", "concealed_share", "kbps", "hub_p99_ms"]
FS = 48_000
HEADER_BYTES = 70  # ZeroMQ framing and the msgpack header around one voice packet
TUNING_SPEAKER = "aew"  # CMU ARCTIC: speaker aew's clips tuned the jitter buffer; axb's and jfk validate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="the shared data folder (default: HOLOPORT_DATA or ../shared/data)")
    parser.add_argument("--profiles", nargs="+", default=["mmwave-walking", "mmwave-driving", "lte"],
                        help="link profiles for the simulated cases")
    parser.add_argument("--traces", type=int, default=4, help="trace pairs per profile (half tuning, half validation)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of speech per simulated run")
    parser.add_argument("--live-seconds", type=float, default=12.0, help="seconds of speech per live run")
    parser.add_argument("--live-profile", default="mmwave-walking", help="the profile the live relay runs")
    parser.add_argument("--thin-mbps", type=float, default=5.0, help="the constrained uplink of the hologram cases")
    parser.add_argument("--hologram-kb", type=float, default=25.0,
                        help="hologram frame size (kB, 30 fps): 25 kB saturates 5 Mbit/s")
    parser.add_argument("--no-live", action="store_true", help="the simulated cases only")
    parser.add_argument("--bitrate", type=int, default=24000, help="Opus bit rate")
    add_output_arguments(parser)


# -- speech -------------------------------------------------------------------------------
def speech(data: Path, which: str, seconds: float) -> np.ndarray:
    """``seconds`` of real speech at 48 kHz: one corpus speaker's clips (or jfk), with 0.5 s
    pauses between them, repeated as needed."""
    from capture.audio import load_audio

    folder = data / "audio"
    files = sorted(folder.glob(f"cmu_arctic_us_{which}_*.wav")) if which != "jfk" else [folder / "jfk.flac"]
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(f"no speech clips for {which!r} in {folder}")
    pause = np.zeros(FS // 2, np.float32)
    clips = [np.concatenate([load_audio(f), pause]) for f in files]
    one = np.concatenate(clips)
    reps = int(np.ceil(seconds * FS / len(one)))
    out = np.tile(one, reps)[: int(seconds * FS)]
    return (out * (0.5 / max(1e-6, float(np.abs(out).max())))).astype(np.float32)


# -- measuring on the audio itself ----------------------------------------------------------
def window_lags(source: np.ndarray, output: np.ndarray, offset: float, win: float = 0.2, hop: float = 0.1,
                max_lag: float = 1.5) -> np.ndarray:
    """Seconds from each speech window of ``source`` to where it plays in ``output``, whose
    sample 0 plays ``offset`` s after the source's sample 0. Windows without speech, or
    whose best match is weak (concealed, lost), give no sample."""
    from scipy.signal import correlate

    w, h, m = int(win * FS), int(hop * FS), int(max_lag * FS)
    shift = int(round(offset * FS))  # source index j plays at output index j - shift + lag
    level = np.sqrt(np.mean(source.astype(np.float64) ** 2)) if source.size else 0.0
    lags = []
    for a in range(0, len(source) - w, h):
        seg = source[a:a + w].astype(np.float64)
        if np.sqrt(np.mean(seg ** 2)) < 0.3 * level:
            continue
        lo = a - shift
        region = output[max(0, lo):max(0, lo + w + m)].astype(np.float64)
        if len(region) < w:
            continue
        c = correlate(region, seg, mode="valid", method="fft")
        power = np.concatenate([[0.0], np.cumsum(region ** 2)])
        energy = np.sqrt(np.maximum(power[w:] - power[:-w], 0.0) * float(seg @ seg)) + 1e-12
        score = c / energy
        k = int(np.argmax(score))
        if score[k] < 0.6:
            continue
        lags.append((max(0, lo) + k - lo) / FS)
    return np.asarray(lags)


def quality(source: np.ndarray, output: np.ndarray, lag: float, limit_s: float = 20.0) -> tuple[float, float]:
    """PESQ WB and STOI of ``output`` against ``source``, aligned on ``lag`` (16 kHz)."""
    from pystoi import stoi
    from scipy.signal import resample_poly

    try:
        from pesq import pesq
    except ImportError:  # it builds from source (pyproject's "quality" extra): no PESQ figure then
        pesq = None

    k = int(round(lag * FS))
    out = output[k:] if k >= 0 else np.concatenate([np.zeros(-k, np.float32), output])
    n = min(len(source), len(out), int(limit_s * FS))
    ref, deg = resample_poly(source[:n], 1, 3), resample_poly(out[:n], 1, 3)
    try:
        p = float(pesq(16000, ref, deg, "wb")) if pesq is not None else None
    except Exception:  # no utterance found (everything lost): the worst score
        p = 1.0
    return p, float(stoi(ref, deg, 16000, extended=False))


def summarise(source, output, offset, bits, seconds, jb_stats) -> dict:
    lags = window_lags(source, output, offset)
    rec = {"windows": int(lags.size)}
    if lags.size:
        p50, p95, p99 = np.percentile(lags * 1e3, [50, 95, 99])
        rec.update(mouth_to_ear_p50_ms=float(p50), mouth_to_ear_p95_ms=float(p95), mouth_to_ear_p99_ms=float(p99))
        rec["pesq_wb"], rec["stoi"] = quality(source, output, float(np.median(lags)) - offset)
    else:
        rec["pesq_wb"], rec["stoi"] = quality(source, output, 0.0)
    played = max(1, jb_stats.played)  # frames played from their own packet
    rec["loss_share"] = jb_stats.lost / max(1, jb_stats.received + jb_stats.lost)
    rec["concealed_share"] = (jb_stats.concealed + jb_stats.fec_recovered) / (
        played + jb_stats.concealed + jb_stats.fec_recovered)
    rec["kbps"] = bits / seconds / 1e3
    return rec


# -- simulated --------------------------------------------------------------------------------
@dataclass
class SimPacket:
    seq: int
    t: float  # capture time of the first sample
    payload: bytes
    speech: bool


def encode_all(source: np.ndarray, bitrate: int) -> list[SimPacket]:
    from codec.opus import OpusCodec

    enc = OpusCodec(bitrate=bitrate).encoder()
    out, seq = [], 0
    for i in range(len(source) // 960):
        p = enc.encode(source[i * 960:(i + 1) * 960])
        if p is not None:
            out.append(SimPacket(seq, i * 0.02, p.payload, bool(p.speech)))
            seq += 1
    return out


def simulate(source: np.ndarray, packets: list[SimPacket], links: list, loss: float = 0.0, seed: int = 0) -> dict:
    """Packets through ``links`` in series (each ``holoport.link.Link``), then the jitter
    buffer pulled every 20 ms of simulated time; the output timeline starts at 0."""
    from codec.opus import OpusCodec
    from holoport.jitter import JitterBuffer

    rng = np.random.default_rng(seed)
    arrivals = []
    for p in packets:
        t = p.t + 0.02  # the block is complete (encoding takes ~0.1 ms)
        for link in links:
            t = link.send(t, len(p.payload) + HEADER_BYTES).arrival
        if loss and rng.random() < loss:
            continue
        arrivals.append((t, p))
    arrivals.sort(key=lambda a: a[0])
    jb = JitterBuffer(OpusCodec.decoder())
    blocks, i = [], 0
    end = len(source) / FS + 1.5
    for k in range(int(end / 0.02)):
        now = k * 0.02
        while i < len(arrivals) and arrivals[i][0] <= now:
            t, p = arrivals[i]
            jb.insert(p.seq, p.t, p.payload, t, speech=p.speech)
            i += 1
        out = jb.pull(now)
        blocks.append(np.zeros(960, np.float32) if out is None else out)
    output = np.concatenate(blocks)
    bits = 8 * sum(len(p.payload) for p in packets)
    return summarise(source, output, 0.0, bits, len(source) / FS, jb.stats)


def sim_records(args, data: Path) -> list[dict]:
    from holoport.link import Trace, get_profile

    out = []
    material = {s: speech(data, s, args.seconds) for s in (TUNING_SPEAKER, "axb", "jfk")}
    encoded = {s: encode_all(x, args.bitrate) for s, x in material.items()}
    for s, x in material.items():
        split = "tuning" if s == TUNING_SPEAKER else "validation"
        out.append({"case": "sim", "link": "loopback", "hologram": False, "split": split, "speech": s,
                    **simulate(x, encoded[s], [])})
        out.append({"case": "sim", "link": "loss5", "hologram": False, "split": split, "speech": s,
                    **simulate(x, encoded[s], [], loss=0.05, seed=1)})
    for name in args.profiles:
        profile = get_profile(name)
        files = profile.trace_files(data / "network" / "lumos5g")
        if len(files) < 2:
            logging.getLogger(__name__).warning("profile %s: no traces in %s, skipped", name, data)
            continue
        pairs = [(files[(2 * i) % len(files)], files[(2 * i + 1) % len(files)]) for i in range(args.traces)]
        for i, (fa, fb) in enumerate(pairs):
            split = "tuning" if i < len(pairs) // 2 else "validation"
            s = TUNING_SPEAKER if split == "tuning" else ("axb" if i % 2 else "jfk")
            up, _ = profile.links(Trace.load(fa), seed=i)
            _, down = profile.links(Trace.load(fb), seed=100 + i)
            out.append({"case": "sim", "link": name, "hologram": False, "split": split, "speech": s,
                        "traces": f"{fa.name} / {fb.name}", **simulate(material[s], encoded[s], [up, down])})
    return out


# -- live -------------------------------------------------------------------------------------
def live_run(source: np.ndarray, seconds: float, relay_links=None, fair: bool = False,
             hologram_bytes: int = 0, lip_sync: bool = True) -> dict:
    """A real hub, a speaker node (a file as its microphone) and a listener node, each with
    its voice channel; the speaker behind a link relay when ``relay_links`` (uplink,
    downlink) is given, and streaming ``hologram_bytes`` frames at 30 fps when > 0."""

    with tempfile.TemporaryDirectory(prefix="holoport-voice-") as folder:
        return _live_run(Path(folder), source, seconds, relay_links, fair, hologram_bytes, lip_sync)


def _live_run(tmp: Path, source: np.ndarray, seconds: float, relay_links, fair: bool, hologram_bytes: int,
              lip_sync: bool) -> dict:
    from capture.audio import ArraySource
    from holoport.endpoints import free_tcp_endpoint
    from holoport.hub import Hub
    from holoport.node import Node
    from holoport.voice import LipSync, VoiceChannel
    from render.audio_out import WavSink, read_wav

    relay = None
    with Hub(free_tcp_endpoint(), seats=4) as hub, contextlib.ExitStack() as stack:
        endpoint = hub.endpoint
        if relay_links is not None:
            from holoport.link.relay import LinkRelay

            relay = stack.enter_context(LinkRelay("tcp://127.0.0.1:0", endpoint, *relay_links, fair=fair))
        listener = stack.enter_context(Node(endpoint, "voice", "listener", decode=False))
        speaker = stack.enter_context(Node(relay.endpoint if relay else endpoint, "voice", "speaker"))
        start = time.time() + 1.0  # both voice channels attached, the clocks synced
        voice_in = VoiceChannel(listener, None, WavSink(tmp / "heard.wav")).start()
        voice_out = VoiceChannel(speaker, ArraySource(source, realtime=True, start=start), None).start()
        sync = LipSync(voice_in) if lip_sync else None
        stop = threading.Event()

        def frames() -> None:  # the speaker's hologram: frames of hologram_bytes at 30 fps
            payload = np.random.default_rng(0).integers(0, 255, hologram_bytes, dtype=np.uint8).tobytes()
            nxt = time.time()
            while not stop.is_set():
                speaker.send_encoded(payload, 1000, {"capture": time.time()})
                speaker.heartbeat()
                speaker.poll(0)
                nxt += 1 / 30
                time.sleep(max(0.0, nxt - time.time()))

        sender = threading.Thread(target=frames, daemon=True)
        if hologram_bytes:
            sender.start()
        end = start + len(source) / FS + 1.5
        while time.time() < end:
            if not hologram_bytes:
                speaker.heartbeat()
                speaker.poll(0)
            listener.heartbeat()
            for f in listener.poll(0.01):
                if sync is not None and "capture" in f.ts:
                    sync.shown(f.sender, f.ts["capture"], f.ts.get("received", time.time()))
        stop.set()
        if hologram_bytes:
            sender.join(2)
        voice_out.stop()
        voice_in.stop()
        hub_stats = hub.snapshot()
    output, _ = read_wav(tmp / "heard.wav")
    output = output.mean(axis=1) if output.ndim == 2 else output
    stats = _merged(voice_in)
    rec = summarise(source, output, voice_in.playout_start - start, 8 * voice_out.counters.sent_bytes,
                    len(source) / FS, stats)
    if sync is not None:
        rec.update(sync.summary())
    p50, p99 = _hub_percentiles(hub_stats)
    rec.update(hub_p50_ms=p50, hub_p99_ms=p99)
    return rec


def _merged(voice) -> object:
    """The listener's one jitter buffer's counters (one speaker)."""
    from holoport.jitter import JitterStats

    bufs = list(voice._buffers.values())
    return bufs[0].stats if bufs else JitterStats()


def _hub_percentiles(snapshot: dict) -> tuple[float | None, float | None]:
    rows = [m for room in snapshot["rooms"].values() for m in room if m.get("voice_hub_p99_ms") is not None]
    if not rows:
        return None, None
    return (max(m["voice_hub_p50_ms"] for m in rows), max(m["voice_hub_p99_ms"] for m in rows))


def live_records(args, data: Path) -> list[dict]:
    from holoport.link import Link, LinkConfig, Trace, get_profile

    src = speech(data, "axb", args.live_seconds)
    base = {"case": "live", "split": "validation", "speech": "axb"}
    out = [{**base, "link": "loopback", "hologram": False, **live_run(src, args.live_seconds)},
           {**base, "link": "loopback", "hologram": True,
            **live_run(src, args.live_seconds, hologram_bytes=int(args.hologram_kb * 1000))}]
    profile = get_profile(args.live_profile)
    files = profile.trace_files(data / "network" / "lumos5g")
    if files:
        up, down = profile.links(Trace.load(files[-1]), seed=7)
        out.append({**base, "link": profile.name, "hologram": False, **live_run(src, args.live_seconds, (up, down))})
    thin = f"{args.thin_mbps:g}mbps-up"

    def constant(mbps: float) -> tuple:
        trace = Trace("constant", np.arange(600, dtype=np.float64), np.full(600, mbps * 1e6), 600.0)
        cfg = LinkConfig(delay_ms=5.0)
        return Link(trace, cfg, seed=1), Link(Trace("constant", np.arange(600, dtype=np.float64),
                                                     np.full(600, 1e9), 600.0), cfg, seed=2)

    out.append({**base, "link": thin, "hologram": False, "fair": False,
                **live_run(src, args.live_seconds, constant(args.thin_mbps), lip_sync=False)})
    for fair in (False, True):
        out.append({**base, "link": thin, "hologram": True, "fair": fair,
                    **live_run(src, args.live_seconds, constant(args.thin_mbps), fair=fair,
                               hologram_bytes=int(args.hologram_kb * 1000), lip_sync=False)})
    return out


def hub8_record(data: Path, seconds: float = 8.0) -> dict:
    """Eight speakers talking at once in one room, through a hub in its own process: the
    hub's own time per voice packet (arrival to forward; ``holoport stats``)."""
    import subprocess
    import sys

    from capture.audio import ArraySource
    from holoport.endpoints import free_tcp_endpoint
    from holoport.hubstats import query_stats
    from holoport.node import Node
    from holoport.voice import VoiceChannel

    endpoint = free_tcp_endpoint()
    hub = subprocess.Popen([sys.executable, "-m", "holoport", "hub", "--bind", endpoint, "--seats", "8", "--quiet"])
    try:
        with contextlib.ExitStack() as stack:
            time.sleep(1.0)
            nodes = [stack.enter_context(Node(endpoint, "eight", f"s{i}", decode=False)) for i in range(8)]
            talk = [speech(data, s, seconds + 2) for s in ("aew", "axb")]
            start = time.time() + 1.0
            voices = [VoiceChannel(n, ArraySource(talk[i % 2], realtime=True, start=start + 0.1 * i), None,
                                   listen=False).start() for i, n in enumerate(nodes)]
            end = start + seconds
            while time.time() < end:
                for n in nodes:
                    n.heartbeat()
                    n.poll(0)
                time.sleep(0.01)
            stats = query_stats(endpoint)
            sent = sum(v.counters.sent for v in voices)
            received = sum(v.counters.received for v in voices)
            for v in voices:
                v.stop()
    finally:
        hub.terminate()
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
    members = [m for room in stats["rooms"].values() for m in room if m.get("voice_hub_p99_ms") is not None]
    return {"case": "hub8", "link": "loopback", "hologram": False, "split": "-", "speech": "aew/axb x8",
            "hub_p50_ms": max(m["voice_hub_p50_ms"] for m in members) if members else None,
            "hub_p99_ms": max(m["voice_hub_p99_ms"] for m in members) if members else None,
            "voice_sent": sent, "voice_received": received, "voice_dropped": stats.get("voice_dropped")}


def run(args: argparse.Namespace) -> int:
    from holoport.data import data_root

    data = Path(args.data) if args.data else data_root()
    if not (data / "audio").exists():
        raise FileNotFoundError(f"no speech clips in {data / 'audio'}: pass --data or set HOLOPORT_DATA")
    from rich.progress import Progress

    records = []
    with Progress(transient=True) as bar:
        task = bar.add_task("voice: simulated links", total=None)
        records += sim_records(args, data)
        if not args.no_live:
            bar.update(task, description="voice: live through a real hub")
            records += live_records(args, data)
            bar.update(task, description="voice: eight speakers")
            records.append(hub8_record(data))
    emit(records, COLUMNS, "Voice: mouth to ear (measured on the audio), A/V skew, quality, loss", args,
         plot=plot)
    return 0


def plot(records, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r.get("mouth_to_ear_p95_ms") is not None]
    labels = [f"{r['case']}:{r['link']}{' +holo' if r.get('hologram') else ''}"
              f"{' fq' if r.get('fair') else ''} ({r['speech']})" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ax.barh(y, [r["mouth_to_ear_p95_ms"] for r in rows], color="tab:blue", label="p95")
    ax.barh(y, [r["mouth_to_ear_p50_ms"] for r in rows], color="tab:cyan", label="p50")
    ax.axvline(150, color="red", linestyle="--", label="G.114 150 ms")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("mouth to ear, ms (measured on the audio)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
