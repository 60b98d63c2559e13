"""The simulated-time meeting: one participant's stream through its uplink, the hub and a
receiver's downlink, without waiting in real time (how long a run takes: docs/link.md).

What happens to frame i, captured at i / fps (all times in seconds of simulated time):
1. The sender's policy picks a rung or skips the frame (``adapt``). A frame is a keyframe
   when it is the first, when the rung changes (other codec parameters), every
   ``keyframe_interval`` frames, or after the receiver asked for one.
2. It leaves after capture and encode (the rung's measured encode time) into the uplink.
3. At the hub it goes out at once if the receiver has credit (window ``credit``), else it
   waits as that sender's newest frame and replaces an older one waiting there (as
   ``holoport.hub`` does).
4. Through the receiver's downlink; decoded (the rung's decode time) if its reference
   was decoded, else dropped and a keyframe requested; shown after ``render_ms``. Credit
   goes back to the hub and a report (sent and arrival times) back to the sender, each
   after the reverse path's median delay.

Capture and render take the times of committed benchmark records (``StageTimes``: the
capture path and the splat renderer as ``holoport bench capture`` / ``render`` measured
them), or of a ``--times`` file; encode and decode take the ladder's, per rung.

Every captured frame ends in one state: shown (glass to glass within the deadline),
late, skipped (by the sender's policy), dropped (encoded, but the node's send queue was
full), replaced (at the hub), lost (unreliable link) or undecodable (its reference never
arrived).
"""

from __future__ import annotations

import functools
import heapq
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from holoport.link.adapt import AdaptivePolicy, FixedPolicy, OraclePolicy, Policy
from holoport.link.ladder import Ladder
from holoport.link.model import Link

STATES = ("shown", "late", "skipped", "dropped", "replaced", "lost", "undecodable")

#: Where the committed benchmark records live (``holoport bench capture`` / ``render``).
RECORDS = Path(__file__).resolve().parents[2] / "docs" / "bench"
#: The capture record the meeting's capture time comes from: the whole capture path
#: (decode, register, back-project, person cut, voxels) of the synthetic person at the
#: Kinect's 640x576 depth, one frame on one core (``ms``).
CAPTURE_RECORD = {"source": "synthetic", "resolution": "640x576", "cores": 1, "stage": "total"}
#: The render record the receiver's render time comes from: the splat renderer drawing
#: 250,000 points (the size of one MVUB person at full detail) at 1280x720, splats sized
#: from the data, on both cores (``ms``).
RENDER_RECORD = {"renderer": "splat", "points": 250000, "resolution": "1280x720", "splat": "auto", "cores": 2}


@dataclass(frozen=True)
class StageTimes:
    """A frame's capture and render time (ms) around the links, and where they come from."""

    capture_ms: float
    render_ms: float
    source: str

    @classmethod
    def from_records(cls, capture: str | Path = RECORDS / "capture.json",
                     render: str | Path = RECORDS / "render.json") -> StageTimes:
        """``CAPTURE_RECORD``'s and ``RENDER_RECORD``'s ``ms`` in those record files."""
        found = []
        for path, match in ((Path(capture), CAPTURE_RECORD), (Path(render), RENDER_RECORD)):
            try:
                records = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot read the benchmark records {path} ({e}): pass the times "
                                 "as a JSON file (--times) instead") from e
            rows = [r for r in records if all(r.get(k) == v for k, v in match.items())]
            if not rows or rows[0].get("ms") is None:
                raise ValueError(f"{path} has no record with {match} and a time (ms)")
            found.append(float(rows[0]["ms"]))
        where = (f"{Path(capture).name} {'/'.join(str(v) for v in CAPTURE_RECORD.values())}, "
                 f"{Path(render).name} {'/'.join(str(v) for v in RENDER_RECORD.values())}")
        return cls(found[0], found[1], where)

    @classmethod
    def load(cls, times: str | Path | None = None) -> StageTimes:
        """From ``times``, a JSON file ``{"capture_ms": C, "render_ms": R}`` (either key may
        be left out: the records give it), or else from the committed records."""
        if times is None:
            return measured_times()
        try:
            given = json.loads(Path(times).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--times {times}: {e}") from e
        if not isinstance(given, dict) or not set(given) & {"capture_ms", "render_ms"}:
            raise ValueError(f"--times {times}: expected {{\"capture_ms\": ms, \"render_ms\": ms}}")
        base = None if {"capture_ms", "render_ms"} <= set(given) else measured_times()
        try:
            pick = {k: float(given[k]) if k in given else getattr(base, k) for k in ("capture_ms", "render_ms")}
        except (TypeError, ValueError) as e:
            raise ValueError(f"--times {times}: {e}") from e
        if any(not math.isfinite(v) or v < 0 for v in pick.values()):
            raise ValueError(f"--times {times}: times are finite and not negative, not {pick}")
        return cls(**pick, source=f"{Path(times).name}" + ("" if base is None else f" + {base.source}"))


@functools.cache
def measured_times() -> StageTimes:
    """The committed records' times (``StageTimes.from_records``), read once per process."""
    return StageTimes.from_records()


@dataclass(frozen=True)
class Pipeline:
    """The meeting's timing around the links. Capture and render times default to the
    committed benchmark records (``measured_times``: ``CAPTURE_RECORD``, ``RENDER_RECORD``)."""

    fps: float = 30.0
    deadline_ms: float = 150.0  # glass to glass
    capture_ms: float = field(default_factory=lambda: measured_times().capture_ms)  # depth images -> points
    render_ms: float = field(default_factory=lambda: measured_times().render_ms)  # the receiver draws it
    credit: int = 4  # the node's default credit window
    send_queue: int = 8  # the node's SNDHWM: frames beyond it are dropped, never queued
    keyframe_interval: int = 30  # OctreeEncoder's default
    stall_ms: float = 100.0  # a display gap longer than this is a stall


@dataclass
class FrameResult:
    """One captured frame's fate (times in simulated seconds)."""

    seq: int
    captured: float
    rung: int | None = None
    key: bool = False
    nbytes: int = 0
    left: float | None = None  # left the sender
    at_hub: float | None = None
    shown: float | None = None
    state: str = "skipped"


@dataclass
class Result:
    """Every frame of a run, and the links as they ended."""

    frames: list[FrameResult]
    seconds: float
    pipeline: Pipeline
    ladder: Ladder
    uplink: Link
    downlink: Link
    keyframe_requests: int = 0

    def latencies_ms(self) -> np.ndarray:
        return np.array([(f.shown - f.captured) * 1e3 for f in self.frames if f.shown is not None])

    def summary(self) -> dict:
        """The figures the link benchmark reports (see benchmarks/link_sweep.py)."""
        n = len(self.frames)
        states = {s: sum(f.state == s for f in self.frames) for s in STATES}
        lat = self.latencies_ms()
        on_time = [f for f in self.frames if f.state == "shown"]
        p = self.pipeline
        begin = self.frames[0].captured + p.deadline_ms / 1e3
        shown_at = sorted(min(max(f.shown, begin), self.seconds) for f in self.frames if f.shown is not None)
        marks = [begin, *shown_at, self.seconds]  # the display's updates within the session
        gaps = np.diff(marks)
        stall = float(gaps[gaps > p.stall_ms / 1e3].sum()) if len(gaps) else 0.0
        cap_bits = capacity_bits(self.uplink, 0.0, self.seconds)
        sent_bits = sum(f.nbytes for f in self.frames if f.at_hub is not None and f.at_hub <= self.seconds) * 8
        rungs = [self.ladder.rungs[f.rung] for f in on_time]
        switches = sum(1 for a, b in zip(self.frames, self.frames[1:], strict=False) if a.rung is not None
                       and b.rung is not None and a.rung != b.rung)
        pct = (np.percentile(lat, [50, 95, 99]) if len(lat) else [math.nan] * 3)
        return {
            "frames": n, **{f"{s}": states[s] for s in STATES},
            "fps": len(lat) / self.seconds,
            "late_or_skipped": 1.0 - len(on_time) / n if n else math.nan,
            "p50_ms": float(pct[0]), "p95_ms": float(pct[1]), "p99_ms": float(pct[2]),
            "stall_ratio": min(1.0, stall / max(self.seconds - begin, 1e-9)),
            "utilization": sent_bits / cap_bits if cap_bits else math.nan,  # through by the end
            "sent_mbps": sum(f.nbytes for f in self.frames if f.left is not None) * 8 / self.seconds / 1e6,
            "mean_y_psnr": float(np.mean([r.y_psnr for r in rungs])) if rungs else math.nan,
            "mean_d1_psnr": float(np.mean([r.d1_psnr for r in rungs])) if rungs else math.nan,
            "mean_lod": float(np.mean([r.lod for r in rungs])) if rungs else math.nan,
            "switches": switches, "keyframe_requests": self.keyframe_requests,
        }


def capacity_bits(link: Link, t0: float, t1: float, step: float = 0.01) -> float:
    """Bits the link could have carried over [t0, t1), outages included."""
    ts = np.arange(t0, t1, step)
    return float(sum(link.capacity_at(float(t)) for t in ts) * step)


def unreachable_share(ladder: Ladder, uplink: Link, downlink: Link, seconds: float,
                      pipeline: Pipeline | None = None) -> float:
    """The share of captured frames that no sender could show in time on these links: each
    frame alone on empty links, at the ladder's smallest size for that frame and its fastest
    codec times, with no random delay and no loss, still arrives after its deadline (it is
    captured in an outage, or in a second too slow even for that). A floor under ``late_or_skipped``
    for every policy; pass links built as the run's (same trace, ratio and seed), not the
    run's own, whose queues it would disturb."""
    p = pipeline or Pipeline()
    n = math.floor(seconds * p.fps + 1e-9)
    if n < 1:
        return math.nan
    encode = min(r.encode_ms for r in ladder.rungs) / 1e3
    decode = min(r.decode_ms for r in ladder.rungs) / 1e3
    missed = 0
    for i in range(n):
        captured = i / p.fps
        bits = min(ladder.frame_bytes(r, i, False) for r in range(len(ladder))) * 8.0  # rungs' order varies
        hub = uplink.finish(captured + p.capture_ms / 1e3 + encode, bits)
        there = downlink.finish(hub, bits)
        missed += there + decode + p.render_ms / 1e3 > captured + p.deadline_ms / 1e3 + 1e-9
    return missed / n


def make_policy(name: str, ladder: Ladder, fps: float, uplink: Link, downlink: Link,
                fixed_rung: int | None = None) -> Policy:
    """A policy by name; the oracle gets a predictor that asks these two links."""
    if name == "fixed":
        return FixedPolicy(ladder, fps, len(ladder) - 1 if fixed_rung is None else fixed_rung)
    if name == "adaptive":
        return AdaptivePolicy(ladder, fps)
    if name == "oracle":
        up_delay, down_delay = uplink.config.delay_quantile(0.9), downlink.config.delay_quantile(0.9)

        def predict(now: float, nbytes: int, rung: int) -> float:
            # the future capacity and outages exactly; the random delay at its 90th percentile
            bits = nbytes * 8.0
            leave = now + ladder.rungs[rung].encode_ms / 1e3
            hub = uplink.finish(max(leave, uplink.busy_until), bits) + up_delay
            there = downlink.finish(max(hub, downlink.busy_until), bits) + down_delay
            return there + ladder.rungs[rung].decode_ms / 1e3
        return OraclePolicy(ladder, fps, predict)
    raise ValueError(f"unknown policy {name!r}: fixed, adaptive or oracle")


def simulate(ladder: Ladder, policy: str | Callable[..., Policy], uplink: Link, downlink: Link,
             seconds: float, pipeline: Pipeline | None = None, fixed_rung: int | None = None) -> Result:
    """Run one stream for ``seconds`` of simulated time; see the module doc."""
    p = pipeline or Pipeline()
    pol = (make_policy(policy, ladder, p.fps, uplink, downlink, fixed_rung)
           if isinstance(policy, str) else policy(ladder, p.fps))
    back_up = downlink.config.delay_ms / 1e3  # receiver -> hub (its uplink: same profile)
    back_down = uplink.config.delay_ms / 1e3  # hub -> sender
    n = math.floor(seconds * p.fps + 1e-9)
    if n < 1:
        raise ValueError(f"{seconds} s at {p.fps} fps is not one frame")
    frames = [FrameResult(i, i / p.fps) for i in range(n)]
    events: list[tuple[float, int, str, object]] = []
    order = 0

    def push(t: float, kind: str, arg) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, arg))

    for i in range(n):
        push(frames[i].captured, "capture", i)
    credit = p.credit
    held: int | None = None  # the newest frame waiting at the hub for credit
    last_left = 0.0
    queued: deque = deque()  # when each frame still in the sender's queue is through the uplink
    last_rung: int | None = None
    since_key = 0
    want_key = True
    ref_of: dict[int, int | None] = {}  # frame -> the frame it continues (None: keyframe)
    prev_encoded: int | None = None
    decoded: set[int] = set()
    asked = -math.inf  # when the receiver last asked for a keyframe
    requests = 0

    def forward(now: float, seq: int) -> None:
        nonlocal credit
        credit -= 1
        d = downlink.send(now, frames[seq].nbytes)
        if d.arrival is None:  # the node hands credit back for what it takes off the socket;
            frames[seq].state = "lost"  # a lost frame never gets there: count it back when
            push(d.done + back_up, "credit", None)  # it would have (else the window shrinks)
        else:
            push(d.arrival, "recv", seq)

    while events:
        now, _, kind, arg = heapq.heappop(events)
        if kind == "capture":
            f = frames[arg]
            decide = f.captured + p.capture_ms / 1e3
            deadline = f.captured + (p.deadline_ms - p.render_ms) / 1e3  # decoded by then
            key = want_key or since_key + 1 >= p.keyframe_interval
            rung = pol.choose(decide, deadline, arg, key)
            if rung is None:
                continue  # skipped: the encoder's state does not move
            key = key or rung != last_rung
            f.rung, f.key = rung, key
            f.nbytes = ladder.frame_bytes(rung, arg, key)
            left = max(decide + ladder.rungs[rung].encode_ms / 1e3, last_left)
            ref_of[arg] = None if key else prev_encoded
            prev_encoded, last_rung = arg, rung  # encoded: the next frame continues this one
            since_key = 0 if key else since_key + 1
            want_key = False
            while queued and queued[0] <= left:
                queued.popleft()
            if len(queued) >= p.send_queue:
                f.state = "dropped"  # encoded, but the socket's queue is full: the node drops it
                continue
            f.left = last_left = left
            pol.on_sent(arg, f.left, f.nbytes)
            d = uplink.send(f.left, f.nbytes)
            queued.append(d.done)
            if d.arrival is None:
                f.state = "lost"
            else:
                push(d.arrival, "hub", arg)
        elif kind == "hub":
            frames[arg].at_hub = now
            if credit > 0:
                forward(now, arg)
            else:
                if held is not None:
                    frames[held].state = "replaced"
                held = arg
        elif kind == "recv":
            f = frames[arg]
            ref = ref_of[arg]
            push(now + back_up + back_down, "feedback", (arg, now))
            push(now + ladder.rungs[f.rung].decode_ms / 1e3 + back_up, "credit", None)
            if ref is not None and ref not in decoded:
                f.state = "undecodable"
                if now - asked >= 0.5:  # as the node: ask again if no keyframe came in 0.5 s
                    asked = now
                    requests += 1
                    push(now + back_up + back_down, "keyreq", None)
                continue
            decoded.add(arg)
            f.shown = now + (ladder.rungs[f.rung].decode_ms + p.render_ms) / 1e3
            f.state = "shown" if f.shown - f.captured <= p.deadline_ms / 1e3 + 1e-9 else "late"
        elif kind == "credit":
            credit += 1
            if held is not None and credit > 0:
                seq, held = held, None
                forward(now, seq)
        elif kind == "feedback":
            seq, arrived = arg
            pol.on_feedback(now, seq, frames[seq].left, arrived, frames[seq].nbytes)
        elif kind == "keyreq":
            want_key = True
    return Result(frames, n / p.fps, p, ladder, uplink, downlink, requests)
