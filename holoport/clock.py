"""Clock sync with the hub: each node's offset to the hub's clock, NTP-style.

A node asks the hub for the time every couple of seconds; each answer gives a round trip and
an offset, and the sample with the shortest round trip of the last few is the best estimate.
Frames carry their sender's offset, so a receiver puts every stamp on its own clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from holoport import wire
from holoport.wire import MessageType


class ClockSync:
    def __init__(self, clock: Callable[[], float] = time.time, samples: int = 8) -> None:
        self.clock = clock  # our wall clock, seconds
        self.offset: float | None = None  # hub clock - our clock, from the best recent sample
        self.rtt: float | None = None  # round trip of that sample
        self._samples: deque[tuple[float, float]] = deque(maxlen=samples)
        self._next = 0.0

    def request(self, every: float = 2.0) -> dict | None:
        """A time request to send, at most every ``every`` seconds (else None)."""
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + every
        return wire.header(MessageType.TIME, t0=self.clock())

    def on_reply(self, h: dict, t3: float) -> bool:
        """Take the hub's answer received at ``t3``; False when it cannot be true."""
        if not wire.need(h, "t0", "t1", "t2") or not h["t0"] <= t3:
            return False
        t0, t1, t2 = h["t0"], h["t1"], h["t2"]
        if abs(t1 - t0) > 1e7 or t2 < t1 or (t3 - t0) < (t2 - t1):  # a broken clock or a lie
            return False
        self._samples.append(((t3 - t0) - (t2 - t1), ((t1 - t0) + (t2 - t3)) / 2))
        rtt, offset = min(self._samples)
        # the true offset lies within rtt/2 of the estimate: where that includes zero (the
        # same machine, or synchronized clocks) applying it would only add noise
        self.rtt, self.offset = rtt, (0.0 if abs(offset) <= rtt / 2 else offset)
        return True

    def to_local(self, head: dict) -> None:
        """Put a frame's stamps on our clock: the sender's via its offset, the hub's via ours."""
        ts, off = head["ts"], head.get("off")
        if self.offset is None:
            return
        for stage, t in ts.items():
            if stage.startswith(("hub_", "up_")):  # our hub's clock (it moved another hub's "up_" onto it)
                ts[stage] = t - self.offset
            elif off is not None:
                ts[stage] = t + off - self.offset

    def to_hub(self, t: float) -> float:
        """One of our times on the hub's clock (as arrival reports travel)."""
        return t + (self.offset or 0.0)

    def from_hub(self, t: float) -> float:
        return t - (self.offset or 0.0)
