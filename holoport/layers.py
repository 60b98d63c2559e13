"""The hub's side of layered streams: per receiver, which parts of each sender's frames go
out, and what that receiver's arrival reports are worth.

A layered sender (``codec.layered``) sends every frame as a base part and enhancement
parts, each its own message (``wire``: ``layer``, ``base``). The hub sends every receiver
the base, under credit as any frame, and then each enhancement part, in order, only when
that receiver's downlink will carry it before the frame's deadline: the decision is the
receiver's own :class:`DownlinkEstimate`, fed by the arrival reports that receiver sends
anyway (``feedback``). A late part is dropped, never held: the frame
still shows at the parts that came.

Reports are untrusted. The hub keeps what it sent each receiver (``SentLog``: when, how
many bytes) and drops a report its own stamps contradict: a part it never sent that
receiver, another size, or an arrival before it left the hub or after the report itself
came in (beyond the clocks' ``CLOCK_SLACK_S``). So a receiver's reports steer only what
that receiver gets, and a forged "2.5 s late" cannot be told before 2.5 s have passed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

SENT_LOG = 2048  # parts per receiver whose send time and size the hub remembers
CLOCK_SLACK_S = 0.05  # how far a receiver's hub-clock stamps may stray (its clock sync's error)
DEADLINE_S = 0.15  # glass to glass, as holoport.link.sim.Pipeline's deadline
RENDER_S = 0.02  # of that, what the receiver needs after the last part arrives (decode, draw)


class DownlinkEstimate:
    """How fast one receiver's downlink drains, from the hub's sends and its reports.

    A delay-based rate in the style of WebRTC's GCC, per receiver: the smallest one-way
    delay of the last 10 s is the path's base; a report whose delay stands more than
    ``overuse_s`` above it means a queue is building, and the rate drops to 0.85 of what was
    delivered over the last second; while delays stay within ``calm_s`` of the base it grows
    by ``recover`` per second back to the rate it had before the cut (a dip is over; that
    level halves every 10 s), then
    by ``increase`` per second (never past twice the delivered rate, so it cannot run away
    while little is sent). Every part sent occupies a virtual queue at that rate; a part
    fits when the queue would have it there by the deadline."""

    def __init__(self, start_bps: float = 20e6, increase: float = 1.5, recover: float = 4.0,
                 overuse_s: float = 0.04, calm_s: float = 0.01) -> None:
        self.rate = start_bps
        self.increase = increase
        self.recover = recover
        self._before_cut = 0.0
        self.overuse_s = overuse_s
        self.calm_s = calm_s
        self._busy = 0.0  # when the virtual queue empties (hub clock)
        self._delays: deque = deque()  # (arrived, one-way delay) over the last 10 s
        self._acked: deque = deque()  # (arrived, bytes) over the last second
        self._last_cut = -1e9
        self._last_update: float | None = None

    def on_sent(self, sender: int, seq: int, layer: int, nbytes: int, at: float) -> None:
        self._busy = max(self._busy, at) + nbytes * 8 / self.rate

    def fits(self, now: float, nbytes: int, deadline: float) -> bool:
        return max(self._busy, now) + nbytes * 8 / self.rate + self.base_delay() <= deadline

    def base_delay(self) -> float:
        return min((d for _, d in self._delays), default=0.0)

    def rate_bps(self) -> float | None:
        return self.rate if self._delays else None

    def delivered_bps(self) -> float | None:
        if len(self._acked) < 2:
            return None
        span = self._acked[-1][0] - self._acked[0][0]
        return sum(b for _, b in list(self._acked)[1:]) * 8 / span if span > 0 else None

    def on_report(self, now: float, sent_at: float, arrived: float, nbytes: int) -> None:
        delay = arrived - sent_at
        self._delays.append((arrived, delay))
        while self._delays[0][0] < arrived - 10.0:
            self._delays.popleft()
        self._acked.append((arrived, nbytes))
        while self._acked[0][0] < arrived - 1.0:
            self._acked.popleft()
        dt = 0.0 if self._last_update is None else min(1.0, max(0.0, now - self._last_update))
        self._last_update = now
        queued = delay - self.base_delay()
        delivered = self.delivered_bps()
        if queued > self.overuse_s:
            if delivered and now - self._last_cut > 0.2:  # once per response time
                self._before_cut = max(self._before_cut, self.rate)  # where the dip started
                self.rate = max(0.2e6, min(self.rate, 0.85 * delivered))
                self._last_cut = now
                self._busy = max(self._busy, now + queued - self.overuse_s)  # let it drain
        elif queued < self.calm_s:
            if self.rate < 0.85 * self._before_cut:  # back to where the dip started, fast
                self.rate = min(self.rate * self.recover ** dt, self._before_cut)
            else:  # probing beyond: slower, and not far past what gets through
                grown = self.rate * self.increase ** dt
                self.rate = min(grown, max(2.0 * delivered, self.rate)) if delivered else grown
        self._before_cut *= 0.5 ** (dt / 10.0)  # an old dip's level is less and less a promise


@dataclass
class SentLog:
    """What the hub sent one receiver: (sender id, seq) -> (left the hub, bytes)."""

    entries: OrderedDict = field(default_factory=OrderedDict)

    def add(self, src: int, seq: int, at: float, nbytes: int) -> None:
        self.entries[(src, seq)] = (at, nbytes)
        if len(self.entries) > SENT_LOG:
            self.entries.popitem(last=False)

    def check(self, src: int, seq: int, arrived: float, nbytes: int, now: float) -> tuple[float, int] | None:
        """(sent at, bytes) when the report agrees with what the hub sent, else None."""
        sent = self.entries.get((src, seq))
        if sent is None or sent[1] != nbytes:
            return None
        if not sent[0] - CLOCK_SLACK_S <= arrived <= now + CLOCK_SLACK_S:
            return None
        return sent


@dataclass
class LayerState:
    """One receiver's view of one sender's layered stream."""

    base: int = -1  # seq of the frame whose base went out to it
    sent: int = 0  # parts of that frame sent to it (base included)
    deadline: float = 0.0  # when that frame must be there (hub clock)


@dataclass
class ReceiverLayers:
    """Everything the hub keeps per receiver for layered streams."""

    selector: DownlinkEstimate = field(default_factory=DownlinkEstimate)
    log: SentLog = field(default_factory=SentLog)
    streams: dict = field(default_factory=dict)  # (sender id, stream) -> LayerState
    parts_sent: int = 0  # enhancement parts sent
    parts_dropped: int = 0  # enhancement parts not sent: late, or their base never went
    frames: int = 0  # layered frames whose base went out
    layers_total: int = 0  # parts of those frames sent, for the mean
    reports_dropped: int = 0  # reports the hub's stamps contradicted

    def on_base(self, key: tuple[int, int], seq: int, deadline: float, at: float, nbytes: int) -> None:
        self._close(key)
        self.streams[key] = LayerState(seq, 1, deadline)
        self.selector.on_sent(key[0], seq, 0, nbytes, at)

    def offer(self, key: tuple[int, int], base: int, layer: int, nbytes: int, now: float) -> bool:
        """Whether enhancement part ``layer`` of frame ``base`` goes to this receiver now:
        only right after its predecessors, and only if it arrives in time."""
        state = self.streams.get(key)
        if state is None or state.base != base or state.sent != layer:
            self.parts_dropped += 1
            return False
        if not self.selector.fits(now, nbytes, state.deadline - RENDER_S):
            self.parts_dropped += 1
            return False
        return True

    def sent(self, key: tuple[int, int], seq: int, nbytes: int, at: float) -> None:
        state = self.streams[key]
        state.sent += 1
        self.parts_sent += 1
        self.selector.on_sent(key[0], seq, state.sent - 1, nbytes, at)

    def report(self, src: int, seq: int, arrived: float, nbytes: int, now: float) -> bool:
        """Take one arrival report; False (counted) when the hub's stamps contradict it."""
        sent = self.log.check(src, seq, arrived, nbytes, now)
        if sent is None:
            self.reports_dropped += 1
            return False
        self.selector.on_report(now, sent[0], arrived, nbytes)
        return True

    def forget(self, sender: int) -> None:
        for key in [k for k in self.streams if k[0] == sender]:
            self._close(key)
            del self.streams[key]

    def _close(self, key: tuple[int, int]) -> None:
        old = self.streams.get(key)
        if old is not None:
            self.frames += 1
            self.layers_total += old.sent

    def as_dict(self) -> dict:
        return {"layers_mean": self.layers_total / self.frames if self.frames else None,
                "layer_parts_sent": self.parts_sent, "layer_parts_dropped": self.parts_dropped,
                "reports_dropped": self.reports_dropped,
                "downlink_mbps": round(self.selector.rate_bps() / 1e6, 3) if self.selector.rate_bps() else None}
