"""One direction of a link: a FIFO bottleneck whose capacity follows a trace, with delay,
jitter, loss and outages. Deterministic for a seed; the simulated meeting and the live
relay both ask it one question: "these bytes leave now, when do they arrive?".

How each effect is modelled (and why):

- **Capacity and queueing.** Bytes wait behind earlier bytes (``busy_until``) and are
  served at the trace's rate, which is zero during an outage, so a queue builds while
  capacity is short, as in a cellular base station's buffer.
- **Outages** (handovers): start at exponential intervals (mean ``handover_every_s``),
  last a log-normal time with the median and p99 of FIELD-NOTES (42 and 92 ms), capped.
- **Delay**: a log-normal one-way propagation delay per send with the profile's median and
  p99 (FIELD-NOTES: mmWave RTT 14 ms median, 127 ms p99 when static).
- **Loss**: per packet (``mtu`` bytes), a two-state Gilbert-Elliott chain: the mean loss
  rate ``loss`` arrives in bursts of mean length ``burst`` packets. On a reliable (TCP-like)
  link such as ZeroMQ's, a lost packet is sent again (it takes link time once more) and
  holds back everything behind it: each loss burst costs one round trip (fast retransmit),
  or the 200 ms minimum retransmission timeout when the burst is longer than 3 packets
  (too few duplicate acknowledgements to trigger a fast retransmit). Delivery stays in
  order. On an unreliable link a message that lost a packet is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from holoport.link.trace import Trace

MIN_RTO_S = 0.2  # Linux's minimum retransmission timeout
_Z99 = 2.3263  # the standard normal's 99th percentile


def _sigma(median: float, p99: float | None) -> float:
    """The log-normal spread whose median and 99th percentile these are (0: none)."""
    return math.log(p99 / median) / _Z99 if p99 and median > 0 else 0.0


@dataclass(frozen=True)
class LinkConfig:
    """Everything but the capacity, for one direction."""

    delay_ms: float = 1.0  # median one-way propagation delay
    delay_p99_ms: float | None = None  # None: no jitter
    loss: float = 0.0  # mean packet loss rate
    burst: float = 1.0  # mean loss burst length in packets (1: independent losses)
    handover_every_s: float = 0.0  # mean time between outages (0: none)
    handover_ms: float = 42.0  # median outage
    handover_p99_ms: float = 92.0
    handover_max_ms: float = 1600.0
    reliable: bool = True  # TCP-like (retransmit, in order) or datagram (drop)
    mtu: int = 1448  # payload bytes per packet

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or (self.delay_p99_ms is not None and self.delay_p99_ms < self.delay_ms):
            raise ValueError("delay must be >= 0 and its p99 at least its median")
        if not 0 <= self.loss < 1 or self.burst < 1:
            raise ValueError("loss must be in [0, 1) and the mean burst at least 1 packet")
        if (self.handover_every_s < 0 or not 0 < self.handover_ms <= self.handover_p99_ms
                or self.handover_max_ms < self.handover_ms):
            raise ValueError("handovers need an interval >= 0 and 0 < median <= p99, max >= median")
        if self.mtu < 64:
            raise ValueError("mtu must be at least 64 bytes")

    def delay_quantile(self, q: float) -> float:
        """The one-way propagation delay's ``q`` quantile, in seconds."""
        from statistics import NormalDist

        sigma = _sigma(self.delay_ms, self.delay_p99_ms)
        return self.delay_ms * math.exp(sigma * NormalDist().inv_cdf(q)) / 1e3


class Delivery(NamedTuple):
    """What became of one ``send``: the times it passed the link's stages."""

    sent: float  # when the bytes were handed to the link
    start: float  # when their first bit went out (after the queue ahead of them)
    done: float  # when their last bit went out
    arrival: float | None  # when the last byte reached the far end; None: dropped
    lost_packets: int


class Link:
    """One direction. Call :meth:`send` with non-decreasing times (seconds)."""

    def __init__(self, trace: Trace, config: LinkConfig | None = None, seed: int = 0) -> None:
        self.trace = trace
        self.config = config or LinkConfig()
        loss_seed, delay_seed, outage_seed = np.random.SeedSequence(seed).spawn(3)
        self._loss_rng = np.random.default_rng(loss_seed)
        self._delay_rng = np.random.default_rng(delay_seed)
        self._outage_rng = np.random.default_rng(outage_seed)
        self.busy_until = 0.0
        self.last_arrival = 0.0
        self.sent_bytes = 0
        self.lost_packets = 0
        self.dropped = 0
        c = self.config
        self._bad = False
        self._left = self._sojourn()  # packets left in the current loss state
        self._delay_sigma = _sigma(c.delay_ms, c.delay_p99_ms)
        self._outage_sigma = _sigma(c.handover_ms, c.handover_p99_ms)
        self.outages: list[tuple[float, float]] = []  # generated so far, in order
        self._next_outage = self._draw_gap(0.0)

    # -- the model's pieces ---------------------------------------------------------------
    def _sojourn(self) -> int:
        c = self.config
        if c.loss == 0:
            return 1 << 62
        if self._bad:
            return int(self._loss_rng.geometric(1.0 / c.burst))
        p_enter = c.loss / (c.burst * (1.0 - c.loss))  # stationary bad share = loss
        return int(self._loss_rng.geometric(min(1.0, p_enter)))

    def _lose(self, packets: int) -> tuple[int, int, int]:
        """Lost packets among the next ``packets``, the number of loss bursts among them
        and the longest burst."""
        lost = bursts = longest = 0
        while packets > 0:
            k = min(packets, self._left)
            if self._bad:
                lost += k
                bursts += 1
                longest = max(longest, k)
            packets -= k
            self._left -= k
            if self._left == 0:
                self._bad = not self._bad
                self._left = self._sojourn()
        return lost, bursts, longest

    def _draw_gap(self, t: float) -> float:
        every = self.config.handover_every_s
        return math.inf if every <= 0 else t + float(self._outage_rng.exponential(every))

    def _outages_until(self, t: float) -> None:
        c = self.config
        while self._next_outage <= t:
            ms = c.handover_ms * math.exp(self._outage_sigma * float(self._outage_rng.standard_normal()))
            start = self._next_outage
            end = start + min(ms, c.handover_max_ms) / 1e3
            self.outages.append((start, end))
            self._next_outage = self._draw_gap(end)

    def capacity_at(self, t: float) -> float:
        """bit/s at time t, outages included."""
        self._outages_until(t)
        for a, b in reversed(self.outages):
            if a <= t < b:
                return 0.0
            if b <= t:
                break
        return self.trace.rate_at(t)

    def finish(self, start: float, bits: float) -> float:
        """When ``bits`` sent from ``start`` on are through (capacity and outages)."""
        if bits <= 0:
            return start
        for a, b, rate in self.trace.segments(start):
            self._outages_until(b)
            t = a
            for oa, ob in self._outages_overlapping(a, b):
                if oa > t and rate > 0:  # serve until the outage begins
                    if bits <= (oa - t) * rate:
                        return t + bits / rate
                    bits -= (oa - t) * rate
                t = max(t, ob)
            if t < b and rate > 0:
                if bits <= (b - t) * rate:
                    return t + bits / rate
                bits -= (b - t) * rate
        raise AssertionError("unreachable: segments() never ends")

    def _outages_overlapping(self, a: float, b: float) -> list[tuple[float, float]]:
        out = []
        for oa, ob in reversed(self.outages):
            if ob <= a:
                break
            if oa < b:
                out.append((oa, ob))
        return out[::-1]

    def delay(self) -> float:
        c = self.config
        if self._delay_sigma == 0.0:
            return c.delay_ms / 1e3
        return c.delay_ms * math.exp(self._delay_sigma * float(self._delay_rng.standard_normal())) / 1e3

    # -- the one question ------------------------------------------------------------------
    def send(self, t: float, nbytes: int) -> Delivery:
        """Hand ``nbytes`` to the link at time ``t``; when do they arrive?"""
        c = self.config
        packets = max(1, math.ceil(nbytes / c.mtu))
        lost, bursts, longest = self._lose(packets)
        start = max(t, self.busy_until)
        resent = lost * c.mtu if c.reliable else 0
        done = self.finish(start, (nbytes + resent) * 8.0)
        self.busy_until = done
        self.sent_bytes += nbytes
        self.lost_packets += lost
        if lost and not c.reliable:
            self.dropped += 1
            return Delivery(t, start, done, None, lost)
        arrival = done + self.delay()
        if lost:  # each burst holds the stream back one round trip, or a timeout
            rtt = 2 * c.delay_ms / 1e3
            arrival += bursts * rtt if longest <= 3 else max(MIN_RTO_S, 2 * rtt) + (bursts - 1) * rtt
        if c.reliable:
            arrival = max(arrival, self.last_arrival)  # a byte stream delivers in order
        self.last_arrival = max(self.last_arrival, arrival)
        return Delivery(t, start, done, arrival, lost)
