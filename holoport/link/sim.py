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
import itertools
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from holoport.link.adapt import AdaptivePolicy, FixedPolicy, OraclePolicy, Policy
from holoport.link.ladder import Ladder, LayeredStream
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
    layers: int = 0  # a layered frame: the layers shown (or, while on its way, forwarded)


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
        return summarize_frames(self.frames, self.seconds, self.pipeline, rung_quality(self.ladder),
                                capacity_bits(self.uplink, 0.0, self.seconds), self.keyframe_requests)


Quality = Callable[[FrameResult], "tuple[float, float, float]"]


def rung_quality(ladder: Ladder) -> Quality:
    """(Y-PSNR, D1 PSNR, level of detail) of a frame sent at a single-rate rung."""
    def quality(f: FrameResult) -> tuple[float, float, float]:
        r = ladder.rungs[f.rung]
        return r.y_psnr, r.d1_psnr, r.lod
    return quality


def layer_quality(stream: LayeredStream) -> Quality:
    """(Y-PSNR, D1 PSNR, level of detail) of a layered frame shown at ``f.layers`` layers."""
    def quality(f: FrameResult) -> tuple[float, float, float]:
        k = f.layers - 1
        return stream.y_psnr[k], stream.d1_psnr[k], stream.lods[k]
    return quality


def summarize_frames(frames: list[FrameResult], seconds: float, p: Pipeline, quality: Quality,
                     cap_bits: float, keyframe_requests: int = 0) -> dict:
    """One stream's figures: the fates' counts, glass-to-glass percentiles, stalls, the
    uplink's use (``cap_bits``: what it could carry in the run) and the quality shown."""
    n = len(frames)
    states = {s: sum(f.state == s for f in frames) for s in STATES}
    lat = np.array([(f.shown - f.captured) * 1e3 for f in frames if f.shown is not None])
    on_time = [f for f in frames if f.state == "shown"]
    begin = frames[0].captured + p.deadline_ms / 1e3
    shown_at = sorted(min(max(f.shown, begin), seconds) for f in frames if f.shown is not None)
    gaps = np.diff([begin, *shown_at, seconds])  # the display's updates within the session
    stall = float(gaps[gaps > p.stall_ms / 1e3].sum()) if len(gaps) else 0.0
    sent_bits = sum(f.nbytes for f in frames if f.at_hub is not None and f.at_hub <= seconds) * 8
    q = np.array([quality(f) for f in on_time], float).reshape(-1, 3)
    levels = [f.rung if f.rung is not None else (f.layers or None) for f in frames]
    switches = sum(1 for a, b in itertools.pairwise(levels) if a is not None and b is not None and a != b)
    layered = [f.layers for f in on_time if f.layers]
    pct = (np.percentile(lat, [50, 95, 99]) if len(lat) else [math.nan] * 3)
    return {
        "frames": n, **{f"{s}": states[s] for s in STATES},
        "fps": len(lat) / seconds,
        "late_or_skipped": 1.0 - len(on_time) / n if n else math.nan,
        "p50_ms": float(pct[0]), "p95_ms": float(pct[1]), "p99_ms": float(pct[2]),
        "stall_ratio": min(1.0, stall / max(seconds - begin, 1e-9)),
        "utilization": sent_bits / cap_bits if cap_bits else math.nan,  # through by the end
        "sent_mbps": sum(f.nbytes for f in frames if f.left is not None) * 8 / seconds / 1e6,
        "mean_y_psnr": float(q[:, 0].mean()) if len(q) else math.nan,
        "mean_d1_psnr": float(q[:, 1].mean()) if len(q) else math.nan,
        "mean_lod": float(q[:, 2].mean()) if len(q) else math.nan,
        "layers_mean": float(np.mean(layered)) if layered else math.nan,
        "switches": switches, "keyframe_requests": keyframe_requests,
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


# -- the meeting: N participants through one hub ---------------------------------------------

MEETING_POLICIES = ("fixed", "adaptive", "layered", "oracle")
#: The layered sender's allowance for the hub-to-receiver hop when it picks its layers from
#: its uplink alone: the walking mmWave profile's median one-way delay (7 ms) and a little.
LAYERED_HOP_S = 0.010


class HeldDelayLink(Link):
    """A ``Link`` whose random one-way delay is drawn once per ``hold_s`` and held for the
    sends within it, instead of once per send.

    Why: the model draws each send's delay independently and a byte stream delivers in
    order, so many sends close together arrive at the latest of their draws (docs/link.md:
    every 10 ms, 113 ms late at p99 against 63.5 ms configured). A meeting's downlink
    carries every sender's frames (7 senders' parts: one send a millisecond), where that
    would make the jitter, not the capacity, decide every figure. Held for one frame
    interval (the default), a stream of one send a frame sees what ``Link`` gives it."""

    def __init__(self, trace, config=None, seed: int = 0, hold_s: float = 1 / 30) -> None:
        super().__init__(trace, config, seed)
        self.hold_s = hold_s
        self._now = 0.0
        self._held = 0.0
        self._until = -math.inf

    def delay(self) -> float:
        if self._now >= self._until:
            self._held = super().delay()
            self._until = self._now + self.hold_s
        return self._held

    def send(self, t: float, nbytes: int):
        self._now = t
        return super().send(t, nbytes)


def layered_sender(prefixes: Ladder, fps: float) -> Policy:
    """The layered sender's uplink controller: ``AdaptivePolicy`` over the stream's prefixes,
    waiting half the oldest unreported frame's age (``stall`` 0.5: chosen on meeting 0's
    traces, docs/link.md "Layered meetings")."""
    return AdaptivePolicy(prefixes, fps, stall=0.5)


@dataclass
class Participant:
    """One participant's access link, both directions, and a name for the records."""

    uplink: Link
    downlink: Link
    name: str = ""


@dataclass
class MeetingResult:
    """Every (sender, receiver) pair's frames (one per captured frame of the sender)."""

    policy: str
    frames: dict[tuple[int, int], list[FrameResult]]
    seconds: float
    pipeline: Pipeline
    ladder: Ladder
    stream: LayeredStream | None
    participants: list[Participant]
    keyframe_requests: dict[int, int]

    def quality(self) -> Quality:
        return layer_quality(self.stream) if self.stream is not None else rung_quality(self.ladder)

    def latencies_ms(self, pairs: list[tuple[int, int]] | None = None) -> np.ndarray:
        pairs = list(self.frames) if pairs is None else pairs
        return np.array([(f.shown - f.captured) * 1e3 for pair in pairs for f in self.frames[pair]
                         if f.shown is not None])

    def records(self) -> list[dict]:
        """One record per (sender, receiver) pair, one per receiver (``sender`` "all"), one
        per sender (``receiver`` "all"), and the whole meeting (both "all")."""
        caps = {s: capacity_bits(self.participants[s].uplink, 0.0, self.seconds)
                for s in {s for s, _ in self.frames}}
        quality = self.quality()
        out = []
        for (s, r), frames in self.frames.items():
            summary = summarize_frames(frames, self.seconds, self.pipeline, quality, caps[s],
                                       self.keyframe_requests.get(s, 0))
            out.append({"sender": s, "receiver": r, **summary})
        receivers = sorted({r for _, r in self.frames})
        senders = sorted({s for s, _ in self.frames})
        groups = ([("all", r) for r in receivers] + [(s, "all") for s in senders] + [("all", "all")])
        for s, r in groups:
            rows = [x for x in out[: len(self.frames)] if s in ("all", x["sender"]) and r in ("all", x["receiver"])]
            if len(rows) > 1 or (s, r) == ("all", "all"):
                pairs = [(x["sender"], x["receiver"]) for x in rows]
                out.append({"sender": s, "receiver": r, **pool(rows, self.latencies_ms(pairs))})
        return out


def pool(rows: list[dict], latencies: np.ndarray) -> dict:
    """Several streams' summaries as one: counts summed, percentiles of the pooled latencies,
    quality weighted by frames shown in time, stalls and utilization averaged."""
    frames = sum(r["frames"] for r in rows)
    on_time = np.array([r["shown"] for r in rows], float)

    def weighted(key: str) -> float:
        vals = np.array([r[key] for r in rows], float)
        ok = ~np.isnan(vals) & (on_time > 0)
        return float(np.average(vals[ok], weights=on_time[ok])) if ok.any() else math.nan

    pct = np.percentile(latencies, [50, 95, 99]) if len(latencies) else [math.nan] * 3
    return {"frames": frames, **{s: sum(r[s] for r in rows) for s in STATES},
            "fps": float(np.mean([r["fps"] for r in rows])),
            "late_or_skipped": 1.0 - on_time.sum() / frames if frames else math.nan,
            "p50_ms": float(pct[0]), "p95_ms": float(pct[1]), "p99_ms": float(pct[2]),
            "stall_ratio": float(np.mean([r["stall_ratio"] for r in rows])),
            "utilization": float(np.nanmean([r["utilization"] for r in rows])),
            "sent_mbps": float(np.mean([r["sent_mbps"] for r in rows])),
            **{k: weighted(k) for k in ("mean_y_psnr", "mean_d1_psnr", "mean_lod", "layers_mean")},
            "switches": sum(r["switches"] for r in rows),
            "keyframe_requests": sum(r["keyframe_requests"] for r in rows)}


def layered_fate(f: FrameResult, arrivals: list[float | None], stream: LayeredStream, p: Pipeline) -> None:
    """How a layered frame ends at its receiver, from its forwarded parts' arrival times
    (``None``: lost). The receiver waits for a layer only while it could still decode it in
    time, then shows the prefix it has; a frame whose base came too late is late."""
    have: list[float] = []
    for a in arrivals:
        if a is None:
            break
        have.append(a)
    if not have:
        if arrivals:
            f.state = "lost"
        return
    limit = f.captured + (p.deadline_ms - p.render_ms) / 1e3  # decoded by then
    dec = [ms / 1e3 for ms in stream.decode_ms]
    best = max((k for k in range(1, len(have) + 1) if have[k - 1] + dec[k - 1] <= limit + 1e-9), default=0)
    if best == 0:
        f.layers, f.state = 1, "late"
        f.shown = have[0] + dec[0] + p.render_ms / 1e3
        return
    start = have[best - 1]
    if best < len(have):  # it waited for the next layer as long as that could be in time
        start = max(start, min(have[best], limit - dec[best]))
    f.layers, f.state = best, "shown"
    f.shown = start + dec[best - 1] + p.render_ms / 1e3


def simulate_meeting(ladder: Ladder, policy: str, participants: list[Participant], seconds: float,
                     pipeline: Pipeline | None = None, stream: LayeredStream | None = None,
                     senders: list[int] | None = None, selector: Callable[[], object] | None = None,
                     sender_policy: Callable[[Ladder, float], Policy] | None = None) -> MeetingResult:
    """Every sender's stream to every other participant through one hub, for ``seconds``.

    Each participant has its own uplink and downlink; the hub forwards every sender's frames
    to each receiver over that receiver's one downlink, which all the streams to it share.
    ``senders`` (default: everyone) send; the others only receive. Senders' capture clocks
    are spread over one frame interval. Policies (``MEETING_POLICIES``):

    - ``fixed``: the ladder's top rung, every frame, to everyone.
    - ``adaptive``: as ``holoport.link.live.LiveRate``: one ``AdaptivePolicy`` per receiver
      at the sender (fed by that receiver's reports through the hub), each frame at the
      lowest rung any of them picks; keyframes on rung changes, every ``keyframe_interval``
      and when a receiver asks. The hub forwards on credit (window ``credit`` per receiver)
      and otherwise keeps the newest frame per (receiver, sender), as ``holoport.hub``.
    - ``layered``: the sender encodes ``stream`` (default ``ladder.layers()``) and picks the
      number of layers with an ``AdaptivePolicy`` over its prefixes, fed by the hub's arrival
      times (its uplink only, ``LAYERED_HOP_S`` left for the way down; ``sender_policy``
      replaces it); each part goes as its own message. Per receiver a ``LayerSelector`` (or ``selector()``) fed by that
      receiver's reports says how many layers to forward (on the base part's arrival, and
      again as each enhancement arrives: one that would be late is dropped with those above
      it). The receiver shows the prefix it has by the deadline (``layered_fate``).
    - ``oracle``: as ``layered``, but the sender's choice and every selector ask the link
      models (``OraclePolicy``, ``OracleSelector``): the per-receiver ceiling.
    """
    from holoport.link.select import LayerSelector, OracleSelector

    if policy not in MEETING_POLICIES:
        raise ValueError(f"unknown meeting policy {policy!r}: {', '.join(MEETING_POLICIES)}")
    p = pipeline or Pipeline()
    n = math.floor(seconds * p.fps + 1e-9)
    if n < 1 or len(participants) < 2:
        raise ValueError("a meeting needs two participants and one frame")
    everyone = range(len(participants))
    senders = list(everyone) if senders is None else list(senders)
    layered = policy in ("layered", "oracle")
    stream = (stream or ladder.layers()) if layered else None
    prefixes = stream.prefix_ladder(ladder.frames) if stream else None
    phase = {s: s / (len(participants) * p.fps) for s in senders}
    frames = {(s, r): [FrameResult(i, i / p.fps + phase[s]) for i in range(n)]
              for s in senders for r in everyone if r != s}
    up = {k: participants[k].uplink for k in everyone}
    down = {k: participants[k].downlink for k in everyone}
    back_up = {k: down[k].config.delay_ms / 1e3 for k in everyone}  # receiver -> hub
    back_down = {k: up[k].config.delay_ms / 1e3 for k in everyone}  # hub -> sender
    receivers = {s: [r for r in everyone if r != s] for s in senders}
    end = n / p.fps + max(phase.values())
    events: list = []
    counter = itertools.count()

    def push(t: float, kind: str, *arg) -> None:
        heapq.heappush(events, (t, next(counter), kind, arg))

    for s in senders:
        for i in range(n):
            push(i / p.fps + phase[s], "capture", s, i)
    last_left = dict.fromkeys(senders, 0.0)
    queued = {s: deque() for s in senders}  # when each frame in the sender's queue is through
    requests = dict.fromkeys(senders, 0)

    def enqueue(s: int, left: float) -> bool:
        """The node's send queue: False (drop) when ``send_queue`` frames still wait in it."""
        while queued[s] and queued[s][0] <= left:
            queued[s].popleft()
        return len(queued[s]) < p.send_queue

    if not layered:  # -- single-rate streams: one rung per frame for every receiver ---------
        if policy == "fixed":
            pols = {s: {r: FixedPolicy(ladder, p.fps, len(ladder) - 1) for r in receivers[s]} for s in senders}
        else:
            pols = {s: {r: AdaptivePolicy(ladder, p.fps) for r in receivers[s]} for s in senders}
        last_rung: dict[int, int | None] = dict.fromkeys(senders)
        since_key = dict.fromkeys(senders, 0)
        want_key = dict.fromkeys(senders, True)
        prev = dict.fromkeys(senders)
        ref_of: dict[tuple[int, int], int | None] = {}
        sizes: dict[tuple[int, int], int] = {}
        credit = dict.fromkeys(everyone, p.credit)
        slots: dict[int, dict[int, int]] = {r: {} for r in everyone}  # receiver -> sender -> seq
        decoded: set = set()
        asked: dict = {}

        def forward(now: float, s: int, r: int, i: int) -> None:
            credit[r] -= 1
            d = down[r].send(now, sizes[(s, i)])
            if d.arrival is None:
                frames[(s, r)][i].state = "lost"
                push(d.done + back_up[r], "credit", r)
            else:
                push(d.arrival, "recv", s, r, i)

        while events:
            now, _, kind, arg = heapq.heappop(events)
            if kind == "capture":
                s, i = arg
                captured = i / p.fps + phase[s]
                decide = captured + p.capture_ms / 1e3
                deadline = captured + (p.deadline_ms - p.render_ms) / 1e3
                key = want_key[s] or since_key[s] + 1 >= p.keyframe_interval
                picks = [c for c in (pol.choose(decide, deadline, i, key) for pol in pols[s].values())
                         if c is not None]
                if not picks:
                    continue  # skipped for everyone
                rung = min(picks)
                key = key or rung != last_rung[s]
                nbytes = ladder.frame_bytes(rung, i, key)
                left = max(decide + ladder.rungs[rung].encode_ms / 1e3, last_left[s])
                ref_of[(s, i)] = None if key else prev[s]
                prev[s], last_rung[s] = i, rung
                since_key[s] = 0 if key else since_key[s] + 1
                want_key[s] = False
                sizes[(s, i)] = nbytes
                ok = enqueue(s, left)
                for r in receivers[s]:
                    f = frames[(s, r)][i]
                    f.rung, f.key, f.nbytes = rung, key, nbytes
                    f.state = "skipped" if ok else "dropped"
                if not ok:
                    continue
                last_left[s] = left
                for r in receivers[s]:
                    frames[(s, r)][i].left = left
                    pols[s][r].on_sent(i, left, nbytes)
                d = up[s].send(left, nbytes)
                queued[s].append(d.done)
                if d.arrival is None:
                    for r in receivers[s]:
                        frames[(s, r)][i].state = "lost"
                else:
                    push(d.arrival, "hub", s, i)
            elif kind == "hub":
                s, i = arg
                for r in receivers[s]:
                    frames[(s, r)][i].at_hub = now
                    if credit[r] > 0 and not slots[r]:
                        forward(now, s, r, i)
                    else:
                        old = slots[r].pop(s, None)
                        if old is not None:
                            frames[(s, r)][old].state = "replaced"
                        slots[r][s] = i  # re-inserted last: slots go oldest first
            elif kind == "recv":
                s, r, i = arg
                f = frames[(s, r)][i]
                push(now + back_up[r] + back_down[s], "feedback", s, r, i, now)
                push(now + ladder.rungs[f.rung].decode_ms / 1e3 + back_up[r], "credit", r)
                ref = ref_of[(s, i)]
                if ref is not None and (s, r, ref) not in decoded:
                    f.state = "undecodable"
                    if now - asked.get((s, r), -math.inf) >= 0.5:  # as the node
                        asked[(s, r)] = now
                        requests[s] += 1
                        push(now + back_up[r] + back_down[s], "keyreq", s)
                    continue
                decoded.add((s, r, i))
                f.shown = now + (ladder.rungs[f.rung].decode_ms + p.render_ms) / 1e3
                f.state = "shown" if f.shown - f.captured <= p.deadline_ms / 1e3 + 1e-9 else "late"
            elif kind == "credit":
                (r,) = arg
                credit[r] += 1
                while credit[r] > 0 and slots[r]:
                    s = next(iter(slots[r]))
                    forward(now, s, r, slots[r].pop(s))
            elif kind == "feedback":
                s, r, i, arrived = arg
                f = frames[(s, r)][i]
                pols[s][r].on_feedback(now, i, f.left, arrived, f.nbytes)
            elif kind == "keyreq":
                want_key[arg[0]] = True
        return MeetingResult(policy, frames, end, p, ladder, None, participants, requests)

    # -- layered streams: the sender picks how many layers leave, the hub per receiver -----------
    assert stream is not None and prefixes is not None
    dec_s = [ms / 1e3 for ms in stream.decode_ms]
    if policy == "oracle":
        q90 = {k: (up[k].config.delay_quantile(0.9), down[k].config.delay_quantile(0.9)) for k in everyone}
        sels = {r: OracleSelector(p.fps, down[r]) for r in everyone}

        def oracle_for(s: int) -> Policy:
            def predict(now: float, nbytes: int, rung: int) -> float:
                bits = nbytes * 8.0
                leave = now + stream.encode_ms / 1e3
                hub = up[s].finish(max(leave, up[s].busy_until), bits) + q90[s][0]
                there = min(down[r].finish(max(hub, down[r].busy_until), bits) + q90[r][1] for r in receivers[s])
                return there + dec_s[rung]
            return OraclePolicy(prefixes, p.fps, predict)
        senders_pol = {s: oracle_for(s) for s in senders}
        hop = 0.0
    else:
        sels = {r: (selector or (lambda: LayerSelector(p.fps)))() for r in everyone}
        senders_pol = {s: (sender_policy or layered_sender)(prefixes, p.fps) for s in senders}
        hop = LAYERED_HOP_S
    parts: dict[tuple[int, int], tuple[int, ...]] = {}  # (sender, seq) -> the parts sent
    plan: dict[tuple[int, int, int], int] = {}  # (sender, receiver, seq) -> layers to forward
    arrivals: dict[tuple[int, int, int], list] = {}
    left_at: dict[tuple[int, int], float] = {}

    def deadlines(s: int, i: int, k: int) -> list[float]:
        limit = i / p.fps + phase[s] + (p.deadline_ms - p.render_ms) / 1e3
        return [limit - dec_s[j] for j in range(k)]

    def send_part(now: float, s: int, r: int, i: int, layer: int) -> None:
        nbytes = parts[(s, i)][layer]
        d = down[r].send(now, nbytes)
        sels[r].on_sent(s, i, layer, nbytes, now)
        arrivals[(s, r, i)].append(d.arrival)
        if d.arrival is not None:
            push(d.arrival + back_up[r], "report", s, r, i, layer, d.arrival, nbytes)

    while events:
        now, _, kind, arg = heapq.heappop(events)
        if kind == "capture":
            s, i = arg
            captured = i / p.fps + phase[s]
            decide = captured + p.capture_ms / 1e3
            deadline = captured + (p.deadline_ms - p.render_ms) / 1e3 - hop
            rung = senders_pol[s].choose(decide, deadline, i, False)
            if rung is None:
                continue
            sizes = stream.sizes(i)[: rung + 1]
            left = max(decide + stream.encode_ms / 1e3, last_left[s])
            ok = enqueue(s, left)
            for r in receivers[s]:
                f = frames[(s, r)][i]
                f.nbytes, f.state = sum(sizes), ("skipped" if ok else "dropped")
            if not ok:
                continue
            last_left[s] = left
            parts[(s, i)] = sizes
            left_at[(s, i)] = left
            senders_pol[s].on_sent(i, left, sum(sizes))
            for r in receivers[s]:
                frames[(s, r)][i].left = left
            for layer, nbytes in enumerate(sizes):
                d = up[s].send(left, nbytes)
                if layer == len(sizes) - 1:
                    queued[s].append(d.done)
                if d.arrival is None:
                    break  # the hub cannot forward a layer above a lost one
                push(d.arrival, "part", s, i, layer)
        elif kind == "part":
            s, i, layer = arg
            sizes = parts[(s, i)]
            if layer == len(sizes) - 1:  # the whole frame is at the hub: tell the sender
                push(now + back_down[s], "upfb", s, i, now)
            for r in receivers[s]:
                key = (s, r, i)
                if layer == 0:
                    frames[(s, r)][i].at_hub = now
                    k = sels[r].layers_for(now, sizes, deadlines(s, i, len(sizes)), sender=s)
                    plan[key] = k
                    arrivals[key] = []
                    if k:
                        send_part(now, s, r, i, 0)
                elif plan.get(key, 0) > layer and len(arrivals[key]) == layer:
                    if sels[r].layers_for(now, sizes, deadlines(s, i, len(sizes)), have=layer, sender=s) > layer:
                        send_part(now, s, r, i, layer)
                    else:
                        plan[key] = layer  # late: dropped, with the layers above it
            if layer == len(sizes) - 1:
                for r in receivers[s]:
                    frames[(s, r)][i].at_hub = now
        elif kind == "report":
            s, r, i, layer, arrived, nbytes = arg
            sels[r].on_report(now, s, i, layer, arrived, nbytes)
        elif kind == "upfb":
            s, i, arrived = arg
            senders_pol[s].on_feedback(now, i, left_at[(s, i)], arrived, sum(parts[(s, i)]))
    for (s, r, i), times in arrivals.items():
        layered_fate(frames[(s, r)][i], times, stream, p)
    return MeetingResult(policy, frames, end, p, ladder, stream, participants, requests)
