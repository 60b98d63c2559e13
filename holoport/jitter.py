"""The receiver's voice jitter buffer, NetEQ-style, and the lip-sync floor it is held to.

Voice packets cross the network with varying delay. Playing each the moment it arrives
would stutter; waiting a fixed long time would make conversation hard (ITU-T G.114: keep
mouth-to-ear under 150 ms). So, as WebRTC's NetEQ does, the buffer plays every frame a
playout delay ``D`` after its capture and keeps ``D`` just long enough: its target is the
95th percentile of recent transit times (arrival minus capture: the path's base delay plus
its jitter above the recent minimum) over a forgetting window of a few seconds, delay
peaks left out (``PEAK_S``: an outage's backlog is concealed, not waited for), plus one
frame of margin, held between a lip-sync floor (:func:`lip_sync_floor`) and ``max_delay``.

Playout runs on a fixed schedule: every ``pull`` plays the next 20 ms slot of capture time
whatever has arrived, so a packet that misses its slot is late and dropped, and ``D`` moves
only by whole frames, on purpose: there is no time stretching (it would cost a resampler
and change pitch), so the buffer catches up by dropping a frame and grows by inserting one,
each where it is least audible: dropped frames are silent ones (a DTX gap, a frame the
sender's VAD called non-speech, or one of very low energy); inserted frames go into silence,
a speech onset, or a gap that concealment fills anyway. Only when the delay stays wrong for
long without such a moment does it drop or insert during speech.

A missing frame is rebuilt from the next packet's in-band FEC when that packet is here, and
concealed (PLC) otherwise, for at most ~100 ms before fading to silence. Discontinuous
transmission (senders skip silent frames: consecutive sequence numbers whose capture times
jump by more than a frame) plays as silence and is not loss.

Sequence numbers are plain increasing integers (unwrap a 16-bit RTP counter before
``insert``); capture times are already on the receiver's clock (the hub's clock offsets).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

QUANTILE = 0.95  # of recent transit times: the share of packets that arrive in time
WINDOW_S = 3.0  # forgetting window of transit times
PLC_S = 0.1  # longest concealment before silence: beyond it PLC only buzzes
QUIET_RMS = 10 ** (-50 / 20)  # -50 dBFS: a frame this quiet can be dropped unheard
DROP_HOLD_S = 0.5  # the delay must exceed the target this long before catching up
DROP_PATIENCE_S = 3.0  # ... and this long with no silent frame before dropping speech
FAR_BEHIND_S = 0.3  # ... unless the delay is this far above the target (a stall's backlog): then at once
GROW_PATIENCE_S = 0.25  # too short this long with no quiet moment: insert during speech
PEAK_S = 0.15  # a transit this far above the window's median is a delay peak (not waited for)
EXTRA_PACKETS = 8  # held beyond max_delay's worth (reordering, a burst)
MAX_PAYLOAD = 65_536  # bytes: far above any voice frame


class FrameDecoder(Protocol):
    """What the buffer needs of a voice decoder (``codec.opus.VoiceDecoder`` is one): each
    call returns exactly one frame, float32 mono, and raises ValueError on a bad payload.
    A decoder may also have ``silence()`` (a frame for a DTX gap); without it gaps play zeros."""

    def decode(self, payload: bytes) -> np.ndarray: ...

    def conceal(self) -> np.ndarray: ...

    def recover(self, next_payload: bytes) -> np.ndarray: ...


@dataclass
class JitterStats:
    """Counters since the buffer was made. ``lost``: sequence numbers that had not arrived
    when their slot played (one arriving after that counts as ``late`` too). ``concealed``:
    frames played for missing packets by PLC (past ~100 ms of it, faded to silence);
    ``dtx_frames``: slots played as silence with no packet due: a DTX gap, or a talk spurt's
    missing tail past 100 ms of concealment while no later packet has come to tell the two
    apart."""

    received: int = 0
    played: int = 0
    late: int = 0
    duplicate: int = 0
    lost: int = 0
    fec_recovered: int = 0
    concealed: int = 0
    dtx_frames: int = 0
    dropped_for_catchup: int = 0
    inserted_for_growth: int = 0
    bad: int = 0
    resets: int = 0


@dataclass
class _Packet:
    seq: int
    capture_t: float
    payload: bytes
    speech: bool


def lip_sync_floor(video_delay: float, audio_early_limit: float = 0.045, margin: float = 0.015) -> float:
    """The smallest audio playout delay that keeps a voice no more than ``audio_early_limit``
    ahead of its speaker's hologram, rendered ``video_delay`` seconds after capture.

    Sign convention: skew = audio playout time - video display time of the same capture
    instant; negative means the voice leads its lips. ITU-R BT.1359 finds skew noticeable
    outside -45 ms .. +125 ms, so in sync means ``-0.045 <= skew <= 0.125``. A late voice is
    tolerated far better than an early one, and delaying the hologram to wait for audio would
    delay every frame, so audio waits for video and never the other way round: its delay is
    held at least ``video_delay - audio_early_limit + margin`` (never below 0).
    """
    values = (video_delay, audio_early_limit, margin)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"lip_sync_floor needs finite values, got {values}")
    return max(0.0, video_delay - audio_early_limit + margin)


class JitterBuffer:
    """Voice packets in (any order, any time), one frame out per ``pull``. Thread-safe: the
    network thread inserts while the audio thread pulls.

    ``delay`` (s): the current playout delay, capture to playout, as the last ``pull`` left it;
    ``target`` (s): where it is steered; ``speaking``: the last packet played carried speech.
    """

    def __init__(self, decoder: FrameDecoder, frame_samples: int = 960, sample_rate: int = 48_000,
                 min_delay: float = 0.0, max_delay: float = 1.0, *, quantile: float = QUANTILE,
                 window: float = WINDOW_S) -> None:
        if frame_samples <= 0 or sample_rate <= 0:
            raise ValueError(f"frame_samples and sample_rate must be positive, got {frame_samples}, {sample_rate}")
        self._frame_s = frame_samples / sample_rate
        if not (math.isfinite(max_delay) and self._frame_s <= max_delay <= 10.0):
            raise ValueError(f"max_delay must be one frame .. 10 s, got {max_delay}")
        if not 0.5 <= quantile < 1.0 or not window > 0:
            raise ValueError(f"quantile must be in 0.5..1 and window positive, got {quantile}, {window}")
        self.decoder = decoder
        self.frame_samples = frame_samples
        self.sample_rate = sample_rate
        self.max_delay = float(max_delay)
        self.quantile = quantile
        self.window = float(window)
        self.min_delay = 0.0
        self.set_min_delay(min_delay)
        self.stats = JitterStats()
        self._limit = math.ceil(self.max_delay / self._frame_s) + EXTRA_PACKETS  # packets held at most
        self._plc_frames = max(1, round(PLC_S / self._frame_s))
        self._fade = np.linspace(1.0, 0.0, frame_samples, dtype=np.float32)
        self._silent = np.zeros(frame_samples, np.float32)
        self._lock = threading.Lock()
        self._transit: deque[tuple[float, float]] = deque(maxlen=4 * math.ceil(self.window / self._frame_s) + 64)
        self._median: float | None = None  # of the window's transit times
        self._target = max(self.min_delay, self._frame_s)
        self._jitter = 0.0
        self._delay = 0.0
        self._ever_started = False
        self._short_since: float | None = None
        self._over_since: float | None = None
        self._clear()

    # --- the outside's view ----------------------------------------------------------------

    @property
    def frame(self) -> float:
        """One frame, in seconds."""
        return self._frame_s

    @property
    def delay(self) -> float:
        return self._delay if self._started else self._target

    @property
    def target(self) -> float:
        return self._target

    @property
    def jitter(self) -> float:
        """The transit times' quantile above their recent minimum (s)."""
        return self._jitter

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def buffered(self) -> int:
        """Packets waiting for their slot."""
        return len(self._buf)

    def playout_time(self, capture_t: float) -> float:
        """When a sample captured at ``capture_t`` plays out, on the receiver's clock (before
        the sound device's own latency): what A/V skew is measured against."""
        return capture_t + self.delay

    def set_min_delay(self, seconds: float) -> None:
        """The floor under the target (the lip-sync floor); clamped to ``max_delay``."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"min_delay must be a non-negative number of seconds, got {seconds}")
        self.min_delay = min(float(seconds), self.max_delay)

    def reset(self) -> None:
        """Forget the stream (the sender restarted, or left): the next packet starts anew.
        The path's transit history is kept."""
        with self._lock:
            self._clear()

    # --- packets in --------------------------------------------------------------------------

    def insert(self, seq: int, capture_t: float, payload: bytes, arrival: float, speech: bool = True) -> None:
        """One received packet. Never raises for what the network sent: bad, late and
        duplicate packets are counted and dropped."""
        with self._lock:
            s = self.stats
            s.received += 1
            try:
                seq, capture_t, arrival = int(seq), float(capture_t), float(arrival)
                if len(payload) > MAX_PAYLOAD:
                    raise ValueError("payload too large")
                data = bytes(payload)
            except (TypeError, ValueError, OverflowError):
                s.bad += 1
                return
            if not (math.isfinite(capture_t) and math.isfinite(arrival)):
                s.bad += 1
                return
            if arrival - capture_t < -self.max_delay:  # captured "after" it arrived: not on this clock
                s.bad += 1
                return
            half = self._frame_s / 2
            if self._started:
                far = seq - self._next_seq >= self._limit or (
                    self._next_seq - seq >= self._limit and capture_t > self._next_t)
            else:
                ref = self._ref_seq if self._ref_seq is not None else seq
                far = seq - ref >= self._limit or (ref - seq >= self._limit and capture_t > self._ref_t)
            if far:  # a jump no reordering explains: the sender restarted, or an outage
                self._clear()
                s.resets += 1
            if seq in self._buf or seq in self._seen_set:
                s.duplicate += 1
                return
            self._transit.append((arrival, arrival - capture_t))
            while self._transit and self._transit[0][0] < arrival - self.window and len(self._transit) > 8:
                self._transit.popleft()
            self._remember(seq)
            if self._started:
                late = seq < self._next_seq or capture_t < self._next_t - half
            else:
                late = self._ref_seq is not None and self._ref_seq - seq >= self._limit
            if late:
                s.late += 1
                return
            if not self._started and (self._ref_seq is None or seq > self._ref_seq):
                self._ref_seq, self._ref_t = seq, capture_t  # the newest seen, before playout
            self._buf[seq] = _Packet(seq, capture_t, data, bool(speech))
            if len(self._buf) > self._limit:  # before playout starts, the oldest goes
                del self._buf[min(self._buf)]
                s.dropped_for_catchup += 1

    # --- frames out --------------------------------------------------------------------------

    def pull(self, now: float) -> np.ndarray | None:
        """The frame that starts playing at ``now`` (float32, ``frame_samples``), or None
        before playout has started. Call once per frame of playout, each ``now`` a frame
        after the last (a sink that takes two frames at once pulls at ``now`` and
        ``now + frame``): the delay is measured from these times."""
        if not math.isfinite(now):
            raise ValueError(f"pull needs a finite time, got {now}")
        with self._lock:
            self._update_target()
            if not self._started and not self._start(now):
                return self._silent.copy() if self._ever_started else None
            frame = self._frame_s
            self._cap(now)
            e = now - self._next_t - self._target
            self._short_since = (self._short_since if self._short_since is not None else now) if e < 0 else None
            self._over_since = (self._over_since if self._over_since is not None else now) if e > frame else None
            kind = self._peek()
            out: np.ndarray | None = None
            if self._short_since is not None and (kind != "speech" or not self._speaking
                                                  or now - self._short_since >= GROW_PATIENCE_S):
                out = self._gap_frame(conceal=self._speaking and kind in ("speech", "loss", "underrun"))
                self.stats.inserted_for_growth += 1
            elif self._over_since is not None and now - self._over_since >= DROP_HOLD_S:
                # far too late (a burst after a stall): catching up matters more than a glitch
                forced = now - self._over_since >= DROP_PATIENCE_S or e > FAR_BEHIND_S
                if kind == "silence" or (kind == "underrun" and not self._speaking):
                    self._next_t += frame  # skip a silent slot
                    self.stats.dropped_for_catchup += 1
                elif kind in ("speech", "quiet"):
                    out, quiet, source = self._take()
                    if quiet or forced:
                        self.stats.dropped_for_catchup += 1
                        out = None
                    else:
                        self.stats.played += source == "packet"
            if out is None:
                out, _, source = self._take()
                self.stats.played += source == "packet"
            self._delay = now + frame - self._next_t  # the next slot plays one frame from now
            return out

    # --- inside ------------------------------------------------------------------------------

    def _clear(self) -> None:
        self._buf: dict[int, _Packet] = {}
        self._seen: deque[int] = deque(maxlen=2 * self._limit)  # recent seqs: duplicates vs late
        self._seen_set: set[int] = set()
        self._started = False
        self._ref_seq: int | None = None
        self._ref_t = 0.0
        self._next_seq = 0
        self._next_t = 0.0
        self._speaking = False
        self._gap_run = 0  # consecutive frames without a decoded packet
        self._short_since = self._over_since = None

    def _remember(self, seq: int) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(seq)
        self._seen_set.add(seq)

    def _update_target(self) -> None:
        if self._transit:
            transit = np.fromiter((x for _, x in self._transit), np.float64, len(self._transit))
            self._median = float(np.median(transit))
            # Delay peaks (packets far later than the path's median, as when a dead second of a
            # 5G link releases its backlog at once) do not move the target: their packets are
            # late and concealed, where waiting for them would add that second to everything
            # said after. In scratch runs on the tuning traces (docs/voice.md), counting
            # peaks that recur within 10 s (as NetEQ's peak detector does) cost 150-220 ms
            # at p95 on two of six tuning runs and won nothing on the others.
            normal = transit[transit <= self._median + PEAK_S]
            high = float(np.quantile(normal, self.quantile))
            self._jitter = high - float(transit.min())
            raw = high + self._frame_s  # min + jitter quantile + one frame of margin
        else:
            raw = self._frame_s
        self._target = min(max(raw, self.min_delay), self.max_delay)

    def _start(self, now: float) -> bool:
        """Begin playout with the newest packet already due, so D starts within a frame of
        the target; older ones (a receiver that started pulling late) are dropped."""
        due = [p for p in self._buf.values() if now >= p.capture_t + self._target]
        if not due:
            return False
        first = max(due, key=lambda p: p.capture_t)
        for seq in [s for s in self._buf if s < first.seq]:
            del self._buf[seq]
            self.stats.dropped_for_catchup += 1
        self._started = self._ever_started = True
        self._next_seq, self._next_t = first.seq, first.capture_t
        return True

    def _cap(self, now: float) -> None:
        """Never above max_delay (give or take the frame the delay moves by): drop whatever
        is due, speech or not."""
        for _ in range(2 * self._limit):
            if now - self._next_t < self.max_delay + self._frame_s:
                return
            before = self._next_t
            self._take()
            self._next_t = max(self._next_t, before + self._frame_s)
            self.stats.dropped_for_catchup += 1
        # still behind (playout stalled for long): jump to the target, dropping what it passes
        self._next_t = now - self._target
        for seq in sorted(self._buf):
            if self._buf[seq].capture_t < self._next_t - self._frame_s / 2:
                del self._buf[seq]
                self._next_seq = seq + 1
                self.stats.dropped_for_catchup += 1

    def _slots(self, p: _Packet) -> int:
        """Slots from the cursor to ``p``'s: 0 means it plays now."""
        return round((p.capture_t - self._next_t) / self._frame_s)

    def _peek(self) -> str:
        """What the next slot holds: "speech" or "quiet" (a packet), "silence" (DTX),
        "loss" (a packet that will not come: later ones are here) or "underrun" (nothing)."""
        p = self._buf.get(self._next_seq)
        if p is None:
            if not self._buf:
                return "underrun"
            p = self._buf[min(self._buf)]
            missing, k = p.seq - self._next_seq, self._slots(p)
            if k > 0:
                return "loss" if k <= missing or self._speaking else "silence"
        elif self._slots(p) > 0:
            return "silence"
        return "speech" if p.speech else "quiet"

    def _take(self) -> tuple[np.ndarray, bool, str]:
        """Play the next slot: (frame, quiet, source) with source "packet", "fec", "plc" or
        "silence". Advances the cursor one slot."""
        s, frame = self.stats, self._frame_s
        p = self._buf.get(self._next_seq)
        if p is None and self._buf:
            p = self._buf[min(self._buf)]
            missing, k = p.seq - self._next_seq, self._slots(p)
            if k <= 0:  # the missing packets' slots have passed: they are lost
                s.lost += sum(q not in self._seen_set for q in range(self._next_seq, p.seq))
                self._next_seq = p.seq
            elif k <= missing or self._speaking:
                # this slot's packet is lost: the last ``k`` missing ones sit right before p
                # (in silence); speaking, losses come first (a talk spurt's tail)
                lost_seq = p.seq - k if k <= missing else self._next_seq
                s.lost += sum(q not in self._seen_set for q in range(self._next_seq, lost_seq + 1))
                self._next_seq = lost_seq + 1
                self._next_t += frame
                return self._lost_frame(), False, "plc"
            else:
                p = None
        elif p is None:  # nothing here: a talk spurt's packet is late or lost, or it is silence
            self._next_t += frame
            if self._speaking:
                s.concealed += 1
                return self._gap_frame(conceal=True), False, "plc"
            s.dtx_frames += 1
            return self._gap_frame(conceal=False), True, "silence"
        if p is None or self._slots(p) > 0:  # a DTX gap before the next packet
            self._next_t += frame
            self._speaking = False
            s.dtx_frames += 1
            return self._gap_frame(conceal=False), True, "silence"
        del self._buf[p.seq]
        self._next_seq, self._next_t = p.seq + 1, p.capture_t + frame
        try:
            out = self._checked(self.decoder.decode(p.payload))
        except ValueError:
            s.bad += 1
            return self._lost_frame(), False, "plc"
        self._speaking, self._gap_run = p.speech, 0
        quiet = not p.speech or float(np.sqrt(np.mean(np.square(out, dtype=np.float64)))) < QUIET_RMS
        return out, quiet, "packet"

    def _lost_frame(self) -> np.ndarray:
        """The frame for a lost slot (cursor already past it): from the next packet's FEC when
        that packet follows right after, else concealment."""
        p = self._buf.get(self._next_seq)
        if p is not None and self._slots(p) == 0:
            try:
                out = self._checked(self.decoder.recover(p.payload))
            except ValueError:
                pass  # the next packet is bad too; its own turn counts it
            else:
                self.stats.fec_recovered += 1
                self._gap_run = 0
                return out
        self.stats.concealed += 1
        return self._gap_frame(conceal=True)

    def _gap_frame(self, conceal: bool) -> np.ndarray:
        """A frame with no packet: PLC (``conceal``) or the decoder's DTX silence, faded to
        zeros over the last of ``PLC_S``; zeros after it."""
        run, self._gap_run = self._gap_run, self._gap_run + 1
        if run >= self._plc_frames:
            self._speaking = False
            return self._silent.copy()
        make = self.decoder.conceal if conceal else getattr(self.decoder, "silence", None)
        if make is None:
            return self._silent.copy()
        try:
            out = self._checked(make())
        except ValueError:
            return self._silent.copy()
        if run == self._plc_frames - 1:
            self._speaking = False  # given up on this talk spurt: what follows is silence
            out = out * self._fade
        return out

    def _checked(self, frame: np.ndarray) -> np.ndarray:
        out = np.asarray(frame, dtype=np.float32)
        if out.shape != (self.frame_samples,):
            raise ValueError(f"the decoder gave shape {out.shape}, not one frame of {self.frame_samples}")
        return out
