"""The voice jitter buffer: ordering, loss (FEC, PLC, silence), DTX, late and bad packets,
its target delay under jitter, catch-up in silence, the lip-sync floor, bounded memory;
against a fake decoder whose frames say exactly where they came from, and against Opus."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.signal import correlate, resample_poly

from holoport.jitter import QUIET_RMS, JitterBuffer, lip_sync_floor

F = 960  # samples per frame
T = 0.02  # one frame, s
T0 = 1000.0  # capture time of frame 0 (receiver's clock)
CONCEAL, RECOVER = 0.5, 0.75  # the fake decoder's marker levels


class FakeDecoder:
    """Payload = one frame of float32 samples; PLC and FEC frames are constant markers."""

    def __init__(self) -> None:
        self.decoded: list[float] = []  # every decoded frame's level, played or dropped

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) != 4 * F:
            raise ValueError(f"bad payload of {len(payload)} bytes")
        x = np.frombuffer(payload, np.float32).copy()
        self.decoded.append(float(x[0]))
        return x

    def conceal(self) -> np.ndarray:
        return np.full(F, CONCEAL, np.float32)

    def recover(self, next_payload: bytes) -> np.ndarray:
        if len(next_payload) != 4 * F:
            raise ValueError("bad payload")
        return np.full(F, RECOVER, np.float32)


def level(seq: int, speech: bool) -> float:
    """A frame's constant level, unique per seq: speech loud, non-speech below QUIET_RMS."""
    return float(np.float32((0.1 if speech else 1e-4) * (1 + seq / 65536)))


@dataclass
class Pkt:
    seq: int
    capture_t: float
    arrival: float
    speech: bool = True
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not self.payload:
            self.payload = np.full(F, level(self.seq, self.speech), np.float32).tobytes()


def stream(slots, transit=0.03, speech=None) -> list[Pkt]:
    """One packet per capture slot in ``slots`` (consecutive seqs), constant transit; by
    default all speech but the last three (the VAD's hangover before the sender stops)."""
    slots = list(slots)
    speech = speech or (lambda s: s < len(slots) - 3)
    return [Pkt(seq, T0 + k * T, T0 + k * T + transit, speech(seq)) for seq, k in enumerate(slots)]


def run(buf: JitterBuffer, packets: list[Pkt], seconds: float, phase: float = 0.007, on_pull=None):
    """Pull every 20 ms from T0 + phase, inserting each packet once its arrival has come.
    Returns [(now, frame, delay after the pull)]."""
    pending = sorted(packets, key=lambda p: p.arrival)
    out, i = [], 0
    for k in range(round(seconds / T)):
        now = T0 + phase + k * T
        while i < len(pending) and pending[i].arrival <= now:
            p = pending[i]
            buf.insert(p.seq, p.capture_t, p.payload, p.arrival, speech=p.speech)
            i += 1
        if on_pull is not None:
            on_pull(buf, now)
        out.append((now, buf.pull(now), buf.delay))
    return out


def ident(frame: np.ndarray | None, packets: list[Pkt]):
    """What a frame is: a seq, "plc", "fec", "zero", "fade" or None (before playout)."""
    if frame is None:
        return None
    table = {level(p.seq, p.speech): p.seq for p in packets}
    if np.all(frame == frame[0]):
        v = float(frame[0])
        if v in table:
            return table[v]
        return {CONCEAL: "plc", RECOVER: "fec", 0.0: "zero"}.get(v, "other")
    if np.all(np.diff(frame) <= 0) and frame[0] == CONCEAL and frame[-1] == 0:
        return "fade"
    return "other"


def played(out, packets) -> list:
    return [ident(f, packets) for _, f, _ in out if f is not None]


# --- order, loss, silence -------------------------------------------------------------------

def test_in_order_stream_plays_every_frame_at_the_target_delay():
    packets = stream(range(100))
    buf = JitterBuffer(FakeDecoder())
    out = run(buf, packets, 2.3)
    assert out[0][1] is None  # nothing before playout starts
    frames = played(out, packets)
    assert frames[:100] == list(range(100)) and set(frames[100:]) == {"zero"}
    assert buf.target == pytest.approx(0.03 + T)  # transit quantile + one frame
    start = next(i for i, (_, f, _) in enumerate(out) if f is not None)
    for _, _, delay in out[start:start + 100]:
        assert buf.target <= delay < buf.target + T
    # the frame of seq s started playing at playout_time(capture of s)
    for s in (0, 50, 99):
        now = out[start + s][0]
        assert buf.playout_time(packets[s].capture_t) == pytest.approx(now, abs=1e-9)
    s = buf.stats
    assert (s.received, s.played, s.lost, s.late, s.concealed, s.dropped_for_catchup, s.inserted_for_growth) == \
        (100, 100, 0, 0, 0, 0, 0)


def test_reordered_packets_play_in_order():
    packets = stream(range(60))
    for p in packets:  # each even packet arrives after the odd one behind it
        p.arrival += 0.03 if p.seq % 2 == 0 else 0.0
    assert sorted(packets, key=lambda p: p.arrival)[0].seq == 1
    buf = JitterBuffer(FakeDecoder())
    frames = played(run(buf, packets, 1.6), packets)
    assert frames[:60] == list(range(60))
    assert (buf.stats.late, buf.stats.lost, buf.stats.played) == (0, 0, 60)


def test_duplicates_are_ignored():
    packets = stream(range(30))
    buf = JitterBuffer(FakeDecoder())
    frames = played(run(buf, packets + [Pkt(p.seq, p.capture_t, p.arrival + 0.001) for p in packets], 0.9), packets)
    assert frames[:30] == list(range(30))
    assert (buf.stats.duplicate, buf.stats.played) == (30, 30)


def test_single_loss_is_rebuilt_from_the_next_packets_fec():
    packets = [p for p in stream(range(40)) if p.seq != 10]
    buf = JitterBuffer(FakeDecoder())
    frames = played(run(buf, packets, 1.0), packets)
    assert frames[:40] == [*range(10), "fec", *range(11, 40)]
    s = buf.stats
    assert (s.lost, s.fec_recovered, s.concealed, s.played) == (1, 1, 0, 39)


def test_burst_loss_is_concealed_for_100ms_then_silent():
    packets = [p for p in stream(range(40)) if not 10 <= p.seq < 20]
    buf = JitterBuffer(FakeDecoder())
    frames = played(run(buf, packets, 1.0), packets)
    # 4 frames of PLC, the 5th fading out, then silence; the last lost one comes from 20's FEC
    assert frames[:40] == [*range(10), *["plc"] * 4, "fade", *["zero"] * 4, "fec", *range(20, 40)]
    s = buf.stats
    assert (s.lost, s.fec_recovered, s.concealed, s.dtx_frames - (len(frames) - 40)) == (10, 1, 5, 4)


def test_dtx_gap_is_silence_not_loss():
    # seqs 0..29 in slots 0..29 (the last five are the VAD's non-speech hangover), then the
    # sender skips 25 silent slots: seq 30 is captured in slot 55
    slots = [*range(30), *range(55, 85)]
    packets = stream(slots, speech=lambda s: not (25 <= s < 30 or s >= 57))
    buf = JitterBuffer(FakeDecoder())
    delays = []
    out = run(buf, packets, 2.0, on_pull=lambda b, now: delays.append(b.delay))
    frames = played(out, packets)
    assert frames[:85] == [*range(30), *["zero"] * 25, *range(30, 60)]
    s = buf.stats
    assert (s.lost, s.concealed, s.dtx_frames - (len(frames) - 85), s.played) == (0, 0, 25, 60)
    start = next(i for i, (_, f, _) in enumerate(out) if f is not None)
    assert len({round(d, 9) for d in delays[start + 1:start + 85]}) == 1  # the delay held across the gap
    assert not buf.speaking


def test_late_packet_is_counted_and_dropped():
    packets = stream(range(40))
    packets[20].arrival += 0.3  # long after its slot
    buf = JitterBuffer(FakeDecoder())
    frames = played(run(buf, packets, 1.2), packets)
    assert frames[:40] == [*range(20), "fec", *range(21, 40)]
    assert 20 not in frames
    s = buf.stats
    assert (s.late, s.lost, s.fec_recovered, s.played) == (1, 1, 1, 39)


def test_bad_payload_is_counted_and_treated_as_loss():
    packets = stream(range(30))
    packets[10].payload = b"\x01" * 7  # the decoder refuses it
    buf = JitterBuffer(FakeDecoder())
    out = run(buf, packets, 0.9)
    frames = played(out, packets)
    assert frames[:30] == [*range(10), "fec", *range(11, 30)]
    for junk in (("x", T0, b"a", T0), (1, float("nan"), b"a", T0), (1, T0, "text", T0),
                          (1, T0, b"a" * 100_000, T0), (1, T0 + 60, b"a", T0)):  # captured after it arrived
        buf.insert(*junk)
    assert buf.stats.bad == 1 + 5
    assert buf.pull(out[-1][0] + T).shape == (F,)


# --- adaptation ----------------------------------------------------------------------------

def talk(seq: int) -> bool:
    """Talk spurts of 280 ms with 120 ms pauses (the VAD's non-speech frames)."""
    return seq % 20 < 14


def test_target_follows_jitter_and_catches_up_in_silence_only():
    rng = np.random.default_rng(16)
    n, calm = 1000, 500  # 20 s: jitter for the first 10, none after
    jitter = np.where(np.arange(n) < calm, rng.exponential(0.015, n), 0.0)
    packets = [Pkt(i, T0 + i * T, T0 + i * T + 0.03 + jitter[i], talk(i)) for i in range(n)]
    decoder = FakeDecoder()
    buf = JitterBuffer(decoder)
    seen = {}

    def probe(b, now):
        for mark in (9.5, 19.5):
            if abs(now - T0 - mark) < T / 2:
                recent = [p.arrival - p.capture_t for p in packets if now - b.window <= p.arrival <= now]
                seen[mark] = (b.target, b.delay, float(np.quantile(recent, 0.95)))

    out = run(buf, packets, 20.5, on_pull=probe)
    target, delay, q95 = seen[9.5]
    assert target == pytest.approx(q95 + T, abs=1e-3)  # the window's 95th percentile + a frame
    assert target == pytest.approx(0.03 + 0.015 * np.log(20) + T, abs=0.015)  # the jitter's true one
    assert target - T <= delay <= target + 2 * T  # the delay followed it up
    target, delay, _ = seen[19.5]
    assert target == pytest.approx(0.03 + T)  # jitter gone: target shrank
    assert target <= delay <= target + T + 1e-9  # and the delay caught up
    s = buf.stats
    assert s.inserted_for_growth >= 2 and s.dropped_for_catchup >= 2
    assert s.late < 0.06 * calm
    # catching up dropped only silent frames: no frame with speech energy was thrown away
    frames = played(out, packets)
    dropped = {v for v in decoder.decoded} - {level(f, talk(f)) for f in frames if isinstance(f, int)}
    assert dropped and all(v < QUIET_RMS for v in dropped)


def test_min_delay_floor_is_respected_and_released():
    packets = stream(range(400), speech=talk)
    decoder = FakeDecoder()
    buf = JitterBuffer(decoder, min_delay=0.12)
    log = []

    def steer(b, now):
        if abs(now - T0 - 2.0) < T / 2:
            b.set_min_delay(lip_sync_floor(0.28))  # a slower hologram: 0.25 s
        if abs(now - T0 - 5.0) < T / 2:
            b.set_min_delay(0.0)
        log.append((now - T0, b.target, b.delay))

    out = run(buf, packets, 8.0, on_pull=steer)
    start = next(i for i, (_, f, _) in enumerate(out) if f is not None)
    for t, target, delay in log[start + 1:]:
        if t < 2.0:
            assert target == pytest.approx(0.12) and 0.12 <= delay < 0.12 + T + 1e-9
        elif 3.0 <= t < 5.0:
            assert target == pytest.approx(0.25) and 0.25 <= delay < 0.25 + T + 1e-9
        elif t >= 7.0:
            assert target == pytest.approx(0.05) and delay < 0.05 + T + 1e-9
    frames = played(out, packets)
    dropped = set(decoder.decoded) - {level(f, talk(f)) for f in frames if isinstance(f, int)}
    assert buf.stats.dropped_for_catchup >= 5 and all(v < QUIET_RMS for v in dropped)
    assert buf.stats.lost == 0


def test_lip_sync_floor_keeps_audio_within_bt1359():
    assert lip_sync_floor(0.2) == pytest.approx(0.17)
    assert lip_sync_floor(0.01) == 0.0  # video faster than the early limit: no floor
    for video in (0.05, 0.1, 0.2, 0.4):
        skew = lip_sync_floor(video) - video  # audio playout - video display, same capture
        assert -0.045 <= skew <= 0.125 and skew < 0  # in the window, leading by < 45 ms
    with pytest.raises(ValueError):
        lip_sync_floor(float("nan"))


# --- untrusted input ------------------------------------------------------------------------

def test_memory_is_bounded_under_a_flood_of_seq_jumps():
    rng = np.random.default_rng(7)
    buf = JitterBuffer(FakeDecoder(), max_delay=0.2)
    limit = round(0.2 / T) + 8
    payload = np.zeros(F, np.float32).tobytes()
    now = T0
    for i in range(20_000):
        seq = int(rng.integers(-(1 << 40), 1 << 40)) if i % 3 else int(rng.integers(0, 1 << 12))
        buf.insert(seq, now - float(rng.uniform(-0.1, 5.0)), payload, now)
        assert buf.buffered <= limit
        if i % 10 == 0:
            now += T
            frame = buf.pull(now)
            assert frame is None or frame.shape == (F,)
    assert buf.stats.resets > 1000
    assert len(buf._seen) <= 2 * limit and len(buf._transit) <= buf._transit.maxlen
    # a real stream afterwards plays normally
    t1 = now + 1.0
    packets = [Pkt(10**6 + s, t1 + s * T, t1 + s * T + 0.03) for s in range(50)]
    out = []
    for k in range(80):
        t = t1 + 0.007 + k * T
        for p in packets:
            if t - T < p.arrival <= t:
                buf.insert(p.seq, p.capture_t, p.payload, p.arrival)
        out.append(ident(buf.pull(t), packets))
    assert [f for f in out if isinstance(f, int)] == [10**6 + s for s in range(50)]


# --- with the real codec --------------------------------------------------------------------

def test_opus_stream_through_the_buffer_plays_at_its_playout_time(data_dir):
    opus = pytest.importorskip("codec.opus", reason="codec.opus (the Opus codec) is not there")
    from render.audio_out import read_wav

    clip = data_dir / "audio" / "cmu_arctic_us_aew_a0001.wav"
    if not clip.is_file():
        pytest.skip(f"no speech clip {clip}")
    try:
        codec = opus.OpusCodec()
    except ValueError as e:
        pytest.skip(str(e))
    pcm, rate = read_wav(clip)
    x = resample_poly(np.concatenate([pcm, np.zeros(rate // 2, np.float32)]), 48_000 // rate, 1)
    x = x[: len(x) // F * F].astype(np.float32)
    enc, rng = codec.encoder(), np.random.default_rng(3)
    packets, seq = [], 0
    for k in range(len(x) // F):
        vp = enc.encode(x[k * F:(k + 1) * F])
        if vp is not None:  # None: DTX, nothing sent
            packets.append(Pkt(seq, T0 + k * T, T0 + k * T + 0.03 + rng.uniform(0, 0.02), vp.speech, vp.payload))
            seq += 1
    lost = {p.seq for p in packets[5:-5] if rng.random() < 0.05}
    buf = JitterBuffer(codec.decoder(), min_delay=0.08)  # above the jitter: one delay throughout
    out = run(buf, [p for p in packets if p.seq not in lost], len(x) / 48_000 + 0.3)
    s = buf.stats
    assert s.lost == len(lost) > 0 and s.fec_recovered >= 1 and s.bad == 0
    assert s.played == len(packets) - len(lost)
    # the audio itself: what plays at time `now` was captured at `now - delay`, plus the
    # codec's own lookahead (measured on a clean decode)
    plain, dec = opus.OpusCodec(dtx=False).encoder(), codec.decoder()
    clean = np.concatenate([dec.decode(plain.encode(x[k * F:(k + 1) * F]).payload) for k in range(50)])
    look = int(np.argmax(correlate(clean, x[:len(clean)], mode="full"))) - (len(clean) - 1)
    assert 0 <= look < 480  # Opus's lookahead: a few ms
    start = next(i for i, (_, f, _) in enumerate(out) if f is not None)
    y = np.concatenate([f for _, f, _ in out[start:]])
    delays = {round(d, 9) for _, _, d in out[start:]}
    first_capture = out[start][0] - out[start][2]  # the first frame played: capture = now - delay
    lag = int(np.argmax(correlate(y, x, mode="full"))) - (len(x) - 1)
    assert delays == {round(0.08 + 0.007, 9)}  # the floor, plus the pulls' phase
    assert abs(lag - (look - round((first_capture - T0) * 48_000))) <= 48  # within 1 ms
    assert np.sqrt(np.mean(y**2)) > 0.3 * np.sqrt(np.mean(x**2))
