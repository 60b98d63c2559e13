"""Rate adaptation policies: what a sender sends next, from what its receiver reports.

Every policy answers one question per captured frame, ``choose(now, deadline, frame, key)``: the
ladder rung to encode it at, or None to skip it; ``deadline`` is when the frame must be
decoded at the receiver (capture + the glass-to-glass budget - render). Feedback arrives as ``on_feedback``
calls (frame sent at, arrived at, bytes; a real receiver reports these through the hub),
delayed by the way back, so a policy knows the link only as late as a real sender would.

- ``FixedPolicy``: one rung, every frame: the baseline.
- ``AdaptivePolicy``: a delay-gradient congestion controller in the style of WebRTC's
  Google Congestion Control (trendline of one-way delay variation, an adaptive overuse
  threshold, multiplicative increase, decrease to 85% of the delivered rate), capped by the
  delivered rate; it picks the best rung under its target and skips a frame when the data
  already in flight would make it arrive after its deadline.
- ``OraclePolicy``: knows the links' future capacity and outages (it asks the link models
  themselves) and picks the best rung that would arrive in time: the ceiling.

A layered sender uses the same two over its stream's prefixes (``LayeredStream.prefix_ladder``),
fed with the hub's arrival times; the hub's per-receiver choice of layers is
``holoport.link.select.LayerSelector``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from holoport.link.ladder import Ladder


@dataclass
class Sent:
    """A frame on its way, as far as the sender knows."""

    seq: int
    at: float
    nbytes: int


class Policy:
    """What to send next: ``choose`` per frame, told of every send and report."""

    name = "policy"

    def __init__(self, ladder: Ladder, fps: float) -> None:
        self.ladder = ladder
        self.fps = fps

    def choose(self, now: float, deadline: float, frame: int, key: bool) -> int | None:
        raise NotImplementedError

    def on_sent(self, seq: int, at: float, nbytes: int) -> None:
        """The frame left the sender at ``at``."""

    def on_feedback(self, now: float, seq: int, sent_at: float, arrived_at: float, nbytes: int) -> None:
        """The receiver got frame ``seq`` at ``arrived_at`` (reported at ``now``)."""


class FixedPolicy(Policy):
    name = "fixed"

    def __init__(self, ladder: Ladder, fps: float, rung: int) -> None:
        super().__init__(ladder, fps)
        if not 0 <= rung < len(ladder):
            raise ValueError(f"rung {rung} is not on the ladder (0..{len(ladder) - 1})")
        self.rung = rung

    def choose(self, now: float, deadline: float, frame: int, key: bool) -> int | None:
        return self.rung


class AdaptivePolicy(Policy):
    """Delay-gradient rate control plus deadline-aware skipping (see the module doc)."""

    name = "adaptive"

    def __init__(self, ladder: Ladder, fps: float, start_mbps: float = 1.0, window: int = 20,
                 threshold_ms: float = 12.5, increase: float = 2.0, probe_after: int = 3,
                 max_queue_ms: float = 60.0, recover: float = 4.0, forget_after: float = 2.0,
                 stall: float = 1.0) -> None:
        super().__init__(ladder, fps)
        # Per second while the delay is flat. GCC climbs 1.08x a second; our ladder spans
        # 85x in rungs up to 2x apart, at that pace a minute to climb. The choice of 2x and
        # of the 60 ms queue: docs/link.md, `python -m benchmarks.link_tuning`.
        self.increase = increase
        self.stall = stall  # how much of the oldest unreported frame's age a new frame waits
        self.recover = recover  # per second, back up to the rate held before the last cut
        self.max_queue_ms = max_queue_ms  # a standing queue beyond this is overuse
        self.probe_after = probe_after  # skipped frames in a row before the smallest goes anyway
        self._skipped = 0
        self.target_bps = start_mbps * 1e6
        # the rates (bit/s) the target may always grow to reach, past 1.5x the delivered rate:
        # the rungs' (a hub's LayerSelector sets its own)
        self.rates = [r.mbps(fps) * 1e6 for r in ladder.rungs]
        self._window = window
        self._threshold = threshold_ms  # adaptive, as GCC's gamma
        self._acc = 0.0  # accumulated delay variation (ms), smoothed
        self._smoothed = 0.0
        self._points: deque = deque(maxlen=window)
        self._last: tuple[float, float] | None = None  # (sent, arrived) of the previous report
        self._acked: deque = deque()  # (arrived, bytes) over the last second
        self._in_flight: dict[int, Sent] = {}
        self._delays: deque = deque()  # (arrived, one-way delay, bytes) over the last 10 s
        # over the last 30 s: the base delay and the way back are their smallest reports'
        # (a window forgets a clock that jumped)
        self._minima: deque = deque()  # (arrived, one-way delay, bytes), the smallest delay first
        self._backs: deque = deque()  # (arrived, report delay), the smallest first
        self._deltas = 0  # delay variations seen (GCC's gain grows with them, up to 60)
        self.forget_after = forget_after
        self._last_change = 0.0
        self._last_sent_reported = 0.0
        self._before_cut = 0.0
        self._last_update = None
        self.state = "increase"

    # what the receiver told us -------------------------------------------------------------
    def on_sent(self, seq: int, at: float, nbytes: int) -> None:
        self._in_flight[seq] = Sent(seq, at, nbytes)
        self._forget_old(at)

    def _forget_old(self, now: float) -> None:
        """Frames unreported for ``forget_after`` s were lost, or their receiver left:
        waiting for them would stall us for good."""
        for old in [s for s, f in self._in_flight.items() if f.at < now - self.forget_after]:
            del self._in_flight[old]

    def on_feedback(self, now: float, seq: int, sent_at: float, arrived_at: float, nbytes: int) -> None:
        for s in [s for s in self._in_flight if s <= seq]:  # in order: earlier ones are done
            del self._in_flight[s]
        self._delays.append((arrived_at, arrived_at - sent_at, nbytes))
        while self._delays[0][0] < arrived_at - 10.0:
            self._delays.popleft()
        # the window's minima, kept as monotone queues (the smallest first; of equal ones the
        # oldest): one lookup per frame instead of a scan of 30 s of reports
        delay, back = arrived_at - sent_at, now - arrived_at
        while self._minima and self._minima[-1][1] > delay:
            self._minima.pop()
        self._minima.append((arrived_at, delay, nbytes))
        while self._minima[0][0] < arrived_at - 30.0:
            self._minima.popleft()
        while self._backs and self._backs[-1][1] > back:
            self._backs.pop()
        self._backs.append((arrived_at, back))
        while self._backs[0][0] < arrived_at - 30.0:
            self._backs.popleft()
        self._deltas += 1
        self._acked.append((arrived_at, nbytes))
        while self._acked and self._acked[0][0] < arrived_at - 1.0:
            self._acked.popleft()
        if self._last is not None:
            variation = ((arrived_at - self._last[1]) - (sent_at - self._last[0])) * 1e3
            self._acc += variation
            self._smoothed = 0.9 * self._smoothed + 0.1 * self._acc
            self._points.append((arrived_at * 1e3, self._smoothed))
        self._last = (sent_at, arrived_at)
        self._last_sent_reported = sent_at
        self._update(now)

    @property
    def in_flight(self) -> int:
        """Frames sent and not yet reported (nor forgotten)."""
        return len(self._in_flight)

    def delivered_bps(self) -> float | None:
        if len(self._acked) < 2:
            return None
        span = self._acked[-1][0] - self._acked[0][0]
        if span <= 0:
            return None
        return sum(b for _, b in list(self._acked)[1:]) * 8 / span

    def _trend(self) -> float:
        """Least-squares slope of smoothed accumulated delay over arrival time (ms/ms)."""
        n = len(self._points)
        if n < self._window // 2:
            return 0.0
        mx = sum(x for x, _ in self._points) / n
        my = sum(y for _, y in self._points) / n
        sxx = sum((x - mx) ** 2 for x, _ in self._points)
        return sum((x - mx) * (y - my) for x, y in self._points) / sxx if sxx > 0 else 0.0

    def _update(self, now: float) -> None:
        dt = 0.0 if self._last_update is None else min(1.0, now - self._last_update)
        self._last_update = now
        modified = self._trend() * min(self._deltas, 60) * 4.0  # GCC's gain
        if abs(modified) <= self._threshold + 15:  # GCC's adaptive threshold (gamma)
            k = 0.01 if abs(modified) > self._threshold else 0.00018
            self._threshold = float(np.clip(self._threshold + k * dt * 1e3 * (abs(modified) - self._threshold),
                                            6.0, 600.0))
        delivered = self.delivered_bps()
        recent = sorted(self._delays[-k][1] for k in range(1, min(9, len(self._delays)) + 1))
        queued = recent[len(recent) // 2] - self._base_delay()[0] if recent else 0.0
        # overuse: the delay trend (GCC), or a standing queue that the trend misses when
        # skipping keeps the delay from growing steadily (median of the last 9 reports)
        if modified > self._threshold or queued * 1e3 > self.max_queue_ms:
            responded = self._last_sent_reported > self._last_change  # a frame sent since
            if delivered and (self.state != "decrease" or responded):  # the last cut came back
                if self.state != "decrease":
                    self._before_cut = self.target_bps
                self.target_bps = min(self.target_bps, 0.85 * delivered)  # still queued: cut
                self._last_change = now  # again (GCC: once per response time)
            self.state = "decrease"
        elif modified < -self._threshold:
            self.state = "hold"  # queues draining: wait
        else:
            self.state = "increase"
            # back toward the rate held before the last cut: fast (a dip is over); past it, probing
            pace = self.recover if self.target_bps < 0.85 * self._before_cut else self.increase
            grown = self.target_bps * pace ** dt
            if delivered:  # grow no further than 1.5x what was delivered (GCC), but always
                # far enough to reach the next rung up (ours are up to 2x apart); the cap
                # stops growth, it does not cut: skipped frames lower the delivered rate
                above = [r for r in self.rates if r > 1.2 * delivered]
                grown = min(grown, max(1.5 * delivered, 1.01 * min(above, default=0.0)))
            self.target_bps = max(self.target_bps, grown)
        self.target_bps = max(self.target_bps, 0.05e6)

    # the decision --------------------------------------------------------------------------------
    def predicted_delay(self, now: float, nbytes: int) -> float:
        """How long a frame of ``nbytes`` sent now would take to arrive.

        A reported frame arrived after everything sent before it, so old reports say
        nothing about the queue now: what can hold a new frame back is the base delay (the
        smallest one-way delay of the last 30 s, which includes sending that frame; after a
        long outage only late reports fill the window, and the probe below refreshes it),
        the extra transmission time when this frame is bigger than that one, and the
        frames still unreported: when the oldest of them has been travelling for longer
        than that, the link is congested or down and a new frame cannot arrive before it
        (that age times ``stall``: 1 by default; docs/link.md compares others).
        (Rates here are the larger of the target and the delivered rate: the delivered
        rate alone is only what we chose to send.)"""
        rate = max(self.delivered_bps() or 0.0, self.target_bps, 1e4)
        base, usual = self._base_delay()
        expected = base + max(0, nbytes - (usual or nbytes)) * 8 / rate
        if self._in_flight:
            oldest = min(s.at for s in self._in_flight.values())
            way_back = self._backs[0][1] if self._backs else 0.0
            expected = max(expected, self.stall * (now - oldest - way_back))
        return expected

    def _base_delay(self) -> tuple[float, int | None]:
        """The smallest one-way delay of the last 30 s and the size of that frame."""
        if not self._minima:
            return 0.0, None
        best = self._minima[0]
        return best[1], best[2]

    def choose(self, now: float, deadline: float, frame: int, key: bool) -> int | None:
        self._forget_old(now)
        rung = self.ladder.highest_within(self.target_bps / 1e6, self.fps)
        while rung >= 0:  # the best rung under the target that still arrives in time
            r = self.ladder.rungs[rung]
            nbytes = self.ladder.frame_bytes(rung, frame, key)
            if now + (r.encode_ms + r.decode_ms) / 1e3 + self.predicted_delay(now, nbytes) <= deadline:
                self._skipped = 0
                return rung
            rung -= 1
        self._skipped += 1
        if not self._in_flight and self._skipped >= self.probe_after:
            self._skipped = 0  # nothing of ours on the link, yet we would wait: our picture
            return 0  # of it is stale (it only changes with reports), so probe it cheaply
        return None


class OraclePolicy(Policy):
    """Asks the link models when a frame would arrive (their future capacity and outages
    exactly, their random delay at its 90th percentile, not their losses) and picks the
    best rung that is in time."""

    name = "oracle"

    def __init__(self, ladder: Ladder, fps: float, predict: Callable[[float, int, int], float]) -> None:
        super().__init__(ladder, fps)
        self._predict = predict  # (now, nbytes) -> arrival time at the receiver

    def choose(self, now: float, deadline: float, frame: int, key: bool) -> int | None:
        for rung in range(len(self.ladder) - 1, -1, -1):
            if self._predict(now, self.ladder.frame_bytes(rung, frame, key), rung) <= deadline:
                return rung
        return None
