"""The hub's side of layered streams: per receiver, which parts of each sender's frames go
out, and what that receiver's arrival reports are worth.

A layered sender (``codec.layered``) sends every frame as a base part and enhancement
parts, each its own message (``wire``: ``layer``, ``base``; the base also lists every
part's size, ``sizes``). Per receiver, the hub asks that receiver's
:class:`~holoport.link.select.LayerSelector` (the one the simulated meeting runs,
``holoport.link.sim.simulate_meeting``) how many parts of the frame arrive in time: when
the base comes, and again as each part comes. The base goes out under credit as any
frame (the simulated hub also drops a base it expects late: the live one leaves that to
credit); a part goes out only right after the parts before it, and is dropped, never
held, when it would be late. The
selector learns the receiver's downlink from the arrival reports that receiver sends
anyway (``feedback``).

Reports are untrusted. The hub keeps what it sent each receiver (``SentLog``: when, how
many bytes, which part) and drops a report its own stamps contradict: a part it never
sent that receiver, another size, or an arrival before it left the hub or after the
report itself came in (beyond the clocks' ``CLOCK_SLACK_S``). So a receiver's reports
steer only what that receiver gets, and a forged "2.5 s late" cannot be told before
2.5 s have passed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from holoport.link.select import LayerSelector

SENT_LOG = 2048  # messages per receiver whose send time, size and part the hub remembers
CLOCK_SLACK_S = 0.25  # how far a receiver's hub-clock stamps may stray (its clock sync's error, up
#                       to half a round trip on a slow link)
DEADLINE_S = 0.15  # glass to glass, as holoport.link.sim.Pipeline's deadline
RECEIVER_S = 0.03  # of that, what the receiver needs after a part arrives: decode (a 250k-point
#                    frame's ~22 ms, docs/bench/codec-layers.json) and draw (~7 ms, render.json)
FPS = 30.0  # the selector's frame rate until a sender's own is known
FPS_RANGE = (10.0, 30.0)  # the frame rates a sender's may set it to: one sender's rate is every
#                           sender's frame interval at that receiver, so none may push it far


@dataclass
class SentLog:
    """What the hub sent one receiver: (sender id, seq) -> (left the hub, bytes, part)."""

    entries: OrderedDict = field(default_factory=OrderedDict)

    def add(self, src: int, seq: int, at: float, nbytes: int, layer: int = 0) -> None:
        self.entries[(src, seq)] = (at, nbytes, layer)
        if len(self.entries) > SENT_LOG:
            self.entries.popitem(last=False)

    def check(self, src: int, seq: int, arrived: float, nbytes: int, now: float) -> tuple | None:
        """(sent at, bytes, part) when the report agrees with what the hub sent, else None."""
        sent = self.entries.get((src, seq))
        if sent is None or sent[1] != nbytes:
            return None
        if not sent[0] - CLOCK_SLACK_S <= arrived <= now + CLOCK_SLACK_S:
            return None
        return sent


@dataclass
class LayerState:
    """One receiver's view of one sender's current layered frame."""

    base: int  # seq of the frame's base part
    sizes: list  # every part's bytes, as the base announced
    deadline: float  # when its parts must have arrived (hub clock)
    planned: int  # parts the selector expects to forward
    sent: int = 0  # parts sent so far (base included)


@dataclass
class ReceiverLayers:
    """Everything the hub keeps per receiver for layered streams."""

    selector: LayerSelector = field(default_factory=lambda: LayerSelector(FPS))
    log: SentLog = field(default_factory=SentLog)
    streams: dict = field(default_factory=dict)  # (sender id, stream) -> LayerState
    parts_sent: int = 0  # enhancement parts sent
    parts_dropped: int = 0  # enhancement parts not sent: late, or their base never went
    bases_late: int = 0  # bases sent though the selector expected them late
    frames: int = 0  # layered frames whose base went out
    layers_total: int = 0  # parts of those frames sent, for the mean
    reports_dropped: int = 0  # reports the hub's stamps contradicted
    whole: bool = False  # another hub of a cluster (holoport.cascade): every part, in order; that
    #                      hub chooses for each of its own receivers

    def plan(self, key: tuple[int, int], seq: int, sizes: list, deadline: float, now: float, fps: float) -> None:
        """A layered frame's base reached the hub: how many of its parts this receiver should
        get. Its base goes whatever the answer, under credit as any frame: credit is what
        holds bases back from a receiver that cannot take them, and a frame that may come
        a little late still shows the person moving, where a skipped one shows nothing."""
        self._close(key)
        if self.whole:
            self.streams[key] = LayerState(seq, sizes, deadline - RECEIVER_S, len(sizes))
            return
        self._set_fps(fps)
        planned = self.selector.layers_for(now, sizes, deadline - RECEIVER_S, sender=key[0])
        self.streams[key] = LayerState(seq, sizes, deadline - RECEIVER_S, max(planned, 1))
        if planned == 0:
            self.bases_late += 1

    def on_base(self, key: tuple[int, int], seq: int, at: float, nbytes: int) -> None:
        """The base went out (at once, or later when credit came back)."""
        state = self.streams.get(key)
        if state is None or state.base != seq:  # held, and a newer frame was planned meanwhile
            self.streams[key] = state = LayerState(seq, [nbytes], at, 1)
        state.sent = 1
        self.selector.on_sent(key[0], seq, 0, nbytes, at)

    def offer(self, key: tuple[int, int], base: int, layer: int, nbytes: int, now: float) -> bool:
        """Whether enhancement part ``layer`` of frame ``base`` goes to this receiver now:
        only right after its predecessors, only the size its base announced, and only if it
        still arrives in time."""
        state = self.streams.get(key)
        if (state is None or state.base != base or state.sent != layer or layer >= len(state.sizes)
                or state.sizes[layer] != nbytes or state.planned <= layer):
            self.parts_dropped += 1
            return False
        if not self.whole and self.selector.layers_for(now, state.sizes, state.deadline, have=layer,
                                                       sender=key[0]) <= layer:
            state.planned = layer  # late: dropped, with the parts above it
            self.parts_dropped += 1
            return False
        return True

    def sent(self, key: tuple[int, int], seq: int, nbytes: int, at: float) -> None:
        state = self.streams[key]
        self.selector.on_sent(key[0], seq, state.sent, nbytes, at)
        state.sent += 1
        self.parts_sent += 1

    def report(self, src: int, seq: int, arrived: float, nbytes: int, now: float) -> bool:
        """Take one arrival report; False (counted) when the hub's stamps contradict it."""
        sent = self.log.check(src, seq, arrived, nbytes, now)
        if sent is None:
            self.reports_dropped += 1
            return False
        self.selector.on_report(now, src, seq, sent[2], arrived, nbytes)
        return True

    def forget(self, sender: int) -> None:
        for key in [k for k in self.streams if k[0] == sender]:
            self._close(key)
            del self.streams[key]
        self.selector.forget(sender)

    def _close(self, key: tuple[int, int]) -> None:
        old = self.streams.get(key)
        if old is not None and old.sent:
            self.frames += 1
            self.layers_total += old.sent

    def _set_fps(self, fps: float) -> None:
        """The selector's frame interval follows the fastest sender this receiver takes."""
        sel = self.selector
        fps = min(max(fps, FPS_RANGE[0]), FPS_RANGE[1])
        if abs(fps - sel.fps) > 0.5:
            sel.backlog_s *= sel.fps / fps
            sel.fps = fps

    def as_dict(self) -> dict:
        rate = self.selector.rate() if self.frames else None
        return {"layers_mean": self.layers_total / self.frames if self.frames else None,
                "layer_parts_sent": self.parts_sent, "layer_parts_dropped": self.parts_dropped,
                "layer_bases_late": self.bases_late, "reports_dropped": self.reports_dropped,
                "downlink_mbps": round(rate / 1e6, 3) if rate else None}
