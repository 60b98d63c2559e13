"""The hub's choice, per receiver, of how many layers of each sender's frame to forward.

With a layered stream (``holoport.link.ladder.LayeredStream``: a base part and enhancement
parts, any prefix decodable, every frame standing alone) one sender's frame can reach each
receiver at its own level of detail: a receiver behind a thin downlink gets fewer layers
without lowering anyone else's. All the streams a receiver takes share its one downlink, so
the hub keeps one selector per receiver and asks it, for every frame of every sender, how
many layers to forward.

``LayerSelector`` knows the downlink only from the receiver's reports (arrival time on the
hub's clock and bytes of each part it forwarded: the feedback messages the hub relays
anyway), as a real hub would:

- its rate is ``AdaptivePolicy``'s delay-gradient controller run over the downlink's
  messages (in the hub's send order: one FIFO; parts written within ``burst_s`` are one
  message to it, as GCC groups packets: back-to-back parts spread by their transmission
  alone, which is no delay trend): the target rate, cut to 0.85x the delivered rate on
  overuse (a rising delay trend or a standing queue), grown otherwise;
- a fluid model of the downlink's queue: what the hub forwarded drains at that rate, so a
  part forwarded now is through when the queue ahead of it and the part itself are; every
  report re-anchors it (what was written after a reported burst still waited behind it);
- the controller's predicted delay on top (the smallest recent one-way delay, or, when the
  oldest unreported burst has been travelling for longer, ``stall`` times that age: the
  link is stalling), or a quantile of what recent bursts took beyond the model
  (``delay_quantile``; 0 by default: docs/link.md "Layered meetings" says why).

A layer is forwarded when its prefix is predicted to arrive by its deadline. An enhancement
layer must also fit the sender's fair share of the target rate (the target over the active
senders, a token bucket ``bucket_frames`` frames deep per sender), and must not leave more
than ``backlog_frames`` frame intervals queued, so that the next frames' base parts are never
held behind enhancements: enhancements are refused before any base is. The selector never
forwards an enhancement without everything below it. With nothing in flight and
``probe_after`` base parts refused in a row, a base part goes anyway: estimates only change
with reports. ``refusals`` counts the layers refused, by rule.

``OracleSelector`` answers the same questions from the downlink model itself (its future
capacity and outages exactly, its delay at the 90th percentile): the per-receiver ceiling
in the simulated meeting (``holoport.link.sim.simulate_meeting``).

Use (the live hub, per receiver)::

    sel = LayerSelector(fps=30)
    n = sel.layers_for(now, part_sizes, deadlines, sender=sid)  # base part arrived: how many in all
    sel.on_sent(sid, seq, 0, part_sizes[0], now)                # for every part written to it
    n = sel.layers_for(now, part_sizes, deadlines, have=k, sender=sid)  # part k arrived: still in time?
    sel.on_report(now, sid, seq, layer, arrived, nbytes)        # the receiver's feedback

``deadlines``: when each prefix's last byte must be at the receiver (capture + the glass-to-
glass budget - render - that prefix's decode time), or one time for all.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from holoport.link.adapt import AdaptivePolicy
from holoport.link.ladder import Ladder, Rung
from holoport.link.model import Link

# AdaptivePolicy wants a ladder; the selector uses only its rate estimate, not its rungs
_NO_RUNGS = Ladder(("none",), (Rung(0, 0, (1,), (1,), 0.0, 0.0, 0.0, 0.0),))


@dataclass
class _Burst:
    """Parts the hub wrote to one receiver together: one message to the controller."""

    index: int
    sent: float
    nbytes: int = 0
    out: int = 0  # parts not reported yet
    arrived: float = 0.0  # the last reported part's arrival
    reported: bool = False
    through: float = 0.0  # when the fluid model had it through the downlink
    total: int = 0  # bytes the hub had written to this receiver by the burst's end


class LayerSelector:
    """Per receiver: how many layers of each frame to forward (see the module doc).

    Times are seconds on the hub's clock; ``deadline`` is when the last byte of a prefix
    must have reached the receiver (capture + glass-to-glass budget - render - decode):
    one time for every prefix, or one per prefix."""

    def __init__(self, fps: float, start_mbps: float = 8.0, backlog_frames: float = 1.0,
                 active_s: float = 1.0, probe_after: int = 3, burst_s: float = 0.005,
                 bucket_frames: float = 3.0, base_slack_s: float = 0.0, delay_quantile: float = 0.0,
                 delay_window: int = 60, stall: float = 0.5, **controller) -> None:
        self.fps = fps
        self.backlog_s = backlog_frames / fps
        self.active_s = active_s  # a sender forwarded to within this long shares the downlink
        self.probe_after = probe_after
        self.controller = AdaptivePolicy(_NO_RUNGS, fps, start_mbps=start_mbps, stall=stall, **controller)
        self.controller.rates = []  # set to what a refused layer would have needed (layers_for)
        self._index = 0  # the hub's send order on this downlink
        self.burst_s = burst_s
        self._burst: _Burst | None = None  # the burst being written
        self._sent: dict[tuple, _Burst] = {}  # (sender, seq, layer) -> its burst
        self._order: deque = deque()  # (at, key) in send order, to forget unreported parts
        self._queue_until = 0.0  # when the forwarded bytes are through, at the rate
        self._total = 0  # bytes written to this receiver
        self._last_from: dict = {}  # sender -> when a part of it was last forwarded
        self.bucket_frames = bucket_frames
        self.base_slack_s = base_slack_s  # a base part predicted this late still goes
        self.delay_quantile = delay_quantile
        self._excess: deque = deque(maxlen=delay_window)  # recent bursts' delay beyond the model
        self._tokens: dict = {}  # sender -> bytes of its share not used yet
        self._filled: dict = {}  # sender -> when its tokens were last topped up
        self._refused = 0
        self.refusals = {"late": 0, "backlog": 0, "share": 0}  # layers refused, by the rule

    # what the hub did and what the receiver said --------------------------------------------
    def on_sent(self, sender, seq: int, layer: int, nbytes: int, at: float) -> None:
        """The hub wrote part ``layer`` of ``sender``'s frame ``seq`` to the receiver at ``at``.

        Parts written within ``burst_s`` of a burst's first go into that burst, and the
        controller sees each burst as one message (as GCC groups packets sent together):
        back-to-back parts arrive spread by their transmission alone, which is no delay trend."""
        self._queue_until = max(self._queue_until, at) + nbytes * 8 / self.rate()
        burst = self._burst
        if burst is None or at - burst.sent > self.burst_s:
            if burst is not None:
                self._report(burst, at, over=True)
            burst = self._burst = _Burst(self._index, at)
            self.controller.on_sent(self._index, at, nbytes)
            self._index += 1
        burst.nbytes += nbytes
        burst.out += 1
        burst.through = self._queue_until
        self._total += nbytes
        burst.total = self._total
        key = (sender, seq, layer)
        self._sent[key] = burst
        self._order.append((at, key))
        while self._order and self._order[0][0] < at - self.controller.forget_after:
            self._sent.pop(self._order.popleft()[1], None)  # lost, or reported already
        self._last_from[sender] = at
        self._tokens[sender] = self._bucket(sender, at) - nbytes

    def forget(self, sender) -> None:
        """A sender left: its share no longer counts."""
        for kept in (self._last_from, self._tokens, self._filled):
            kept.pop(sender, None)

    def on_report(self, now: float, sender, seq: int, layer: int, arrived: float, nbytes: int | None = None) -> None:
        """The receiver got that part at ``arrived`` (hub clock); the hub learnt it at ``now``."""
        burst = self._sent.pop((sender, seq, layer), None)
        if burst is None:
            return  # forgotten, or not ours
        burst.out -= 1
        burst.arrived = max(burst.arrived, arrived)
        self._report(burst, now, over=burst is not self._burst or now - burst.sent > self.burst_s)

    def _report(self, burst: _Burst, now: float, over: bool) -> None:
        """Tell the controller of a burst once it is over and every part of it is in."""
        if over and burst.out == 0 and not burst.reported:
            burst.reported = True
            self._excess.append(max(0.0, burst.arrived - burst.through))
            self.controller.on_feedback(now, burst.index, burst.sent, burst.arrived, burst.nbytes)
            # the report anchors the fluid model: when that burst was through, what was
            # written after it still waited, and drains at the (now corrected) rate
            behind = (self._total - burst.total) * 8 / self.rate()
            self._queue_until = max(self._queue_until, burst.arrived + behind)

    # the estimate ------------------------------------------------------------------------------
    def rate(self) -> float:
        """bit/s the selector lets itself fill the downlink with."""
        return max(self.controller.target_bps, 1e4)

    def _through(self, now: float, nbytes: int) -> float:
        """When ``nbytes`` forwarded now are through the downlink, behind the queue."""
        return max(self._queue_until, now) + nbytes * 8 / self.rate()

    def _wait(self, now: float) -> float:
        """The delay after that: the ``delay_quantile`` of what recent bursts took beyond
        the fluid model's time (propagation and jitter), or the stall the reports show."""
        jitter = float(np.quantile(self._excess, self.delay_quantile)) if self._excess else 0.0
        return max(jitter, self.controller.predicted_delay(now, 0))

    def _frame_budget(self, now: float) -> float:
        """Bytes one frame interval carries to this receiver, for all its senders."""
        return self.rate() / 8 / self.fps

    def _idle(self) -> bool:
        return self.controller.in_flight == 0

    def _wanted(self, bps: float) -> None:
        """A layer was refused for want of ``bps``: let the target grow that far."""
        self.controller.rates = [bps]

    # the decision ---------------------------------------------------------------------------------
    def _active(self, now: float) -> int:
        return sum(1 for t in self._last_from.values() if t >= now - self.active_s) or 1

    def _bucket(self, sender, now: float) -> float:
        """``sender``'s share of the rate not used yet (bytes): it fills at the frame budget
        over the active senders, up to ``bucket_frames`` frames of it (frames vary in size:
        the share is one of the mean rate, not of every frame)."""
        per_frame = self._frame_budget(now) / self._active(now)
        last = self._filled.get(sender)
        tokens = self._tokens.get(sender, math.inf) + (0.0 if last is None else (now - last) * per_frame * self.fps)
        self._filled[sender] = now
        tokens = min(tokens, self.bucket_frames * per_frame)
        self._tokens[sender] = tokens
        return tokens

    def layers_for(self, now: float, sizes: Sequence[int], deadline: float | Sequence[float], have: int = 0,
                   sender=None) -> int:
        """How many of the frame's layers (``sizes``: each part's bytes, base first) to
        forward in all, ``have`` of them forwarded already (0..len(sizes)); never fewer
        than ``have``, and 0 only when the base part is refused. ``sender`` (any key) lets
        enhancements draw on that sender's share of the rate; without it each frame gets
        an equal share of one frame interval's bytes."""
        deadlines = [deadline] * len(sizes) if isinstance(deadline, int | float) else list(deadline)
        if self._burst is not None:  # a burst reported in full is over once its time is: the
            self._report(self._burst, now, over=now - self._burst.sent > self.burst_s)  # controller hears now
        active = self._active(now)
        share = self._bucket(sender, now) if sender is not None else self._frame_budget(now) / active
        wait = self._wait(now)
        count, ahead = have, 0
        for i in range(have, len(sizes)):
            ahead += sizes[i]
            through = self._through(now, ahead)
            if through + wait > deadlines[i] + (self.base_slack_s if i == 0 else 0.0):
                self.refusals["late"] += 1
                break  # late: this prefix would not be decoded in time
            if i > 0:
                if through - now > self.backlog_s:
                    self._wanted(self.rate() * (through - now) / self.backlog_s)
                    self.refusals["backlog"] += 1
                    break  # would hold the next frames' base parts back
                if ahead > share:
                    self._wanted(self.rate() * ahead / max(share, 1.0))
                    self.refusals["share"] += 1
                    break  # over this sender's share of the rate
            count = i + 1
        if have == 0 and count == 0:
            self._refused += 1
            if self._idle() and self._refused >= self.probe_after:
                self._refused = 0
                return 1  # probe: nothing of ours on the link, our picture of it is stale
        elif have == 0:
            self._refused = 0
        return count


class OracleSelector(LayerSelector):
    """The same rules, but it asks the downlink model: its future capacity and outages
    exactly, its random delay at the 90th percentile (not its losses). Forwarding still
    goes through ``on_sent`` (the caller sends on ``link`` itself)."""

    def __init__(self, fps: float, link: Link, backlog_frames: float = 1.0, active_s: float = 1.0) -> None:
        super().__init__(fps, backlog_frames=backlog_frames, active_s=active_s, probe_after=1 << 30)
        self.link = link
        self._delay = link.config.delay_quantile(0.9)

    def _through(self, now: float, nbytes: int) -> float:
        return self.link.finish(max(now, self.link.busy_until), nbytes * 8.0)

    def _wait(self, now: float) -> float:
        return self._delay

    def _frame_budget(self, now: float) -> float:
        return self.link.capacity_at(now) / 8 / self.fps

    def _wanted(self, bps: float) -> None:
        pass

    def on_report(self, now: float, sender, seq: int, layer: int, arrived: float, nbytes: int | None = None) -> None:
        pass  # it knows already
