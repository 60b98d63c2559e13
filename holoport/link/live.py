"""Rate adaptation for a live sender: the simulated meeting's policies on a real node.

With the octree codec, ``--rate adaptive`` sends a layered stream (``LayeredRate``): the
sender fits the number of parts to its own uplink and the hub gives each receiver what its
downlink carries (``holoport.layers``). ``--rate rungs`` is the older way, one rung for
all receivers:

A participant that joins with ``--rate rungs`` measures a ladder on its own first frame
(the octree codec at levels of detail 0-3 and several colour steps: real sizes of *this*
person on *this* camera), then for every captured frame asks :class:`LiveRate` for a rung
or a skip. Receivers report each frame's arrival (``Node.on_feedback``, through the hub);
each receiver gets its own :class:`~holoport.link.adapt.AdaptivePolicy`, since each sees
its own path, and the stream takes the lowest rung any of them can take in time (the hub's
newest-frame slots spare the others a backlog when one receiver falls behind).
"""

from __future__ import annotations

import logging
import time

import numpy as np

import codec
from codec import OctreeCodec, OctreeEncoder
from holoport.link.adapt import AdaptivePolicy, FixedPolicy, Policy
from holoport.link.ladder import Ladder, Rung
from holoport.link.sim import LAYERED_HOP_S, layered_sender, measured_times
from holoport.sender import UPLINK

log = logging.getLogger(__name__)

LIVE_LODS = (0, 1, 2, 3)
LIVE_STEPS = (8, 16, 32, 64)
SILENT_S = 3.0  # a receiver that has not reported for this long no longer steers us


def live_ladder(positions: np.ndarray, colors: np.ndarray, base: OctreeCodec,
                lods: tuple[int, ...] = LIVE_LODS, steps: tuple[int, ...] = LIVE_STEPS) -> Ladder:
    """The ladder of ``base`` (the participant's codec) measured on one frame in metres."""
    if base.depth - max(lods) < 2:
        raise ValueError(f"a depth-{base.depth} codec has no room for {max(lods)} levels of detail")
    grid = (np.asarray(positions, np.float64) - np.asarray(base.origin)) / base.cell
    inside = np.all((grid >= 0) & (grid < 2**base.depth), axis=1)
    if not inside.any():
        raise ValueError("the frame has no points inside the codec's capture volume")
    t0 = time.perf_counter()
    ladder = Ladder.build([("live", grid[inside].astype(np.float32), colors[inside], base.depth)],
                          lods=lods, steps=steps)
    log.info("measured a ladder of %d rungs on our first frame (%d points) in %.1f s: %s",
             len(ladder), int(inside.sum()), time.perf_counter() - t0,
             ", ".join(f"{r.name} {r.mean_bytes() / 1e3:.1f} kB" for r in ladder.rungs))
    return ladder


def ladder_codec(base: codec.Codec) -> OctreeCodec:
    """The codec itself when it has levels of detail to climb (the octree codec's), else a
    clear error: adaptive rate needs a ladder."""
    if not isinstance(base, OctreeCodec):
        raise ValueError(f"--rate adaptive needs a codec with levels of detail (octree), not {base.name!r}")
    return base


class RungEncoders:
    """One octree encoder per rung, keeping each rung's statistics; switching rung starts
    the new one with a keyframe (the receivers decode a new stream)."""

    def __init__(self, ladder: Ladder, base: OctreeCodec) -> None:
        self.ladder = ladder
        self.base = base
        self._encoders: dict[int, OctreeEncoder] = {}
        self.current: int | None = None

    def get(self, rung: int) -> OctreeEncoder:
        r = self.ladder.rungs[rung]
        enc = self._encoders.get(rung)
        if enc is None:
            enc = self._encoders[rung] = OctreeEncoder(OctreeCodec(
                depth=self.base.depth - r.lod, origin=self.base.origin, size=self.base.size,
                color_step=r.color_step, slices=self.base.slices))
        elif rung != self.current:
            enc.request_keyframe()
        self.current = rung
        return enc


def _recorded_render_ms() -> float:
    try:
        return measured_times().render_ms
    except ValueError as e:  # not a checkout: no records to read
        log.warning("%s; the rate budget leaves no time for rendering", e)
        return 0.0


def layered_codec(base: OctreeCodec):
    """The layered stream (``codec.layered``) of the participant's octree codec: same grid,
    same colour step (at least 2: lossless colour has no layers)."""
    from codec.layered import LayeredOctreeCodec

    return LayeredOctreeCodec(depth=base.depth, origin=base.origin, size=base.size,
                              color_step=max(2, base.color_step))


class LayeredRate:
    """A layered sender's one decision: how many parts of each frame to send, from its
    own uplink alone (the hub's arrival times of its parts, ``sender.UPLINK``); what each
    receiver gets of them is the hub's choice (``holoport.layers``).

    The controller is the simulated meeting's (``holoport.link.sim.layered_sender``:
    ``AdaptivePolicy`` over the frame's prefixes, 1 part, 2 parts, ... at their real
    sizes), told of each frame once it is whole at the hub, and it leaves
    ``LAYERED_HOP_S`` of the deadline for the hop to the receivers, as in the simulation."""

    def __init__(self, fps: float, deadline_ms: float = 150.0, render_ms: float | None = None) -> None:
        self.fps = fps
        self.deadline = deadline_ms / 1e3
        self.render = (_recorded_render_ms() if render_ms is None else render_ms) / 1e3
        self.policy: AdaptivePolicy | None = None
        self.skipped = 0
        self.sent_parts: dict[int, int] = {}  # parts sent -> frames
        self._frames: dict[int, tuple[int, float, int]] = {}  # last part's seq -> (base seq, sent, bytes)

    def choose(self, captured: float, now: float, sizes: list[int]) -> int:
        """Parts of this frame to send (0: skip it, it would arrive too late)."""
        ladder = prefix_ladder(sizes)
        if self.policy is None:
            self.policy = layered_sender(ladder, self.fps)
            self.policy.target_bps = sum(sizes) * 8 * self.fps
        else:  # the same controller, told of this frame's sizes
            self.policy.ladder = ladder
            self.policy.rates = [r.mbps(self.fps) * 1e6 for r in ladder.rungs]
        rung = self.policy.choose(now, captured + self.deadline - self.render - LAYERED_HOP_S, 0, True)
        if rung is None:
            self.skipped += 1
            return 0
        self.sent_parts[rung + 1] = self.sent_parts.get(rung + 1, 0) + 1
        return rung + 1

    def on_sent(self, node, heads: list[dict]) -> None:
        """A frame's parts went out through ``node`` (``Node.send_layers``'s headers): those
        its full queue dropped did not, and are not counted."""
        sent = [(h["seq"], s) for h in heads if (s := node.sent_frame(h["seq"])) is not None]
        if self.policy is None or not sent:
            return
        base, at, nbytes = sent[0][0], sent[0][1][0], sum(s[1] for _, s in sent)
        self.policy.on_sent(base, at, nbytes)
        self._frames[sent[-1][0]] = (base, at, nbytes)
        while len(self._frames) > 256:
            self._frames.pop(next(iter(self._frames)))

    def on_feedback(self, receiver: int, seq: int, sent: float, arrived: float, nbytes: int) -> None:
        frame = self._frames.pop(seq, None) if receiver == UPLINK else None  # receivers steer only the hub
        if frame is not None and self.policy is not None:  # the frame's last part reached the hub
            self.policy.on_feedback(time.time(), frame[0], frame[1], arrived, frame[2])

    def summary(self) -> dict:
        frames = sum(self.sent_parts.values())
        return {"parts_sent": dict(sorted(self.sent_parts.items())), "skipped": self.skipped,
                "parts_mean": sum(k * n for k, n in self.sent_parts.items()) / frames if frames else None,
                "uplink_target_mbps": round(self.policy.target_bps / 1e6, 3) if self.policy else None}


def prefix_ladder(sizes: list[int]) -> Ladder:
    """A ladder of one frame's prefixes (1..k parts) at their cumulative sizes."""
    total, rungs = 0, []
    for i, n in enumerate(sizes):
        total += n
        rungs.append(Rung(i, 0, (total,), (total,), 0.0, 0.0, float(i), float(i)))
    return Ladder(("live",), tuple(rungs))


class LiveRate:
    """Per-receiver policies over one ladder; times are the node's clock (seconds)."""

    def __init__(self, ladder: Ladder, fps: float, policy: str = "adaptive",
                 deadline_ms: float = 150.0, render_ms: float | None = None) -> None:
        if policy not in ("adaptive", "fixed"):
            raise ValueError(f"a live sender's rate policy is adaptive or fixed, not {policy!r}")
        self.ladder = ladder
        self.fps = fps
        self.policy = policy
        self.deadline = deadline_ms / 1e3
        # the receiver's render time, left out of the budget: by default the committed render
        # record's (holoport.link.sim.RENDER_RECORD in docs/bench/render.json, as the simulation)
        self.render = (_recorded_render_ms() if render_ms is None else render_ms) / 1e3
        self._policies: dict[int, Policy] = {}
        self._heard: dict[int, float] = {}  # receiver -> when it last reported
        self._first = self._new()  # while no receiver reports
        self.skipped = 0
        self.chosen: dict[int, int] = {}  # rung -> frames sent at it

    def _new(self) -> Policy:
        if self.policy == "fixed":
            return FixedPolicy(self.ladder, self.fps, len(self.ladder) - 1)
        return AdaptivePolicy(self.ladder, self.fps)

    def choose(self, captured: float, now: float, frame: int, key: bool) -> int | None:
        """The rung for a frame captured at ``captured``, deciding at ``now``."""
        for gone in [r for r, t in self._heard.items() if now - t > SILENT_S]:
            self.forget(gone)  # left, or the hub restarted and ids changed
        policies = list(self._policies.values()) or [self._first]
        deadline = captured + self.deadline - self.render  # decoded by then
        choices = [p.choose(now, deadline, frame, key) for p in policies]
        rungs = [c for c in choices if c is not None]
        if not rungs:
            self.skipped += 1
            return None
        rung = min(rungs)
        self.chosen[rung] = self.chosen.get(rung, 0) + 1
        return rung

    def on_sent(self, seq: int, at: float, nbytes: int) -> None:
        for p in self._policies.values() or [self._first]:
            p.on_sent(seq, at, nbytes)

    def on_feedback(self, receiver: int, seq: int, sent: float, arrived: float, nbytes: int) -> None:
        now = time.time()
        policy = self._policies.get(receiver)
        if policy is None:
            policy = self._policies[receiver] = self._new()
        self._heard[receiver] = now
        policy.on_feedback(now, seq, sent, arrived, nbytes)

    def forget(self, receiver: int) -> None:
        self._policies.pop(receiver, None)
        self._heard.pop(receiver, None)
        if not self._policies:
            self._first = self._new()  # start again from the first policy's caution

    def summary(self) -> dict:
        """What the sender chose: frames per rung name, skipped, and each receiver's target."""
        return {"rungs": {self.ladder.rungs[r].name: n for r, n in sorted(self.chosen.items())},
                "skipped": self.skipped,
                "target_mbps": {rid: round(getattr(p, "target_bps", 0.0) / 1e6, 3)
                                for rid, p in self._policies.items()}}
