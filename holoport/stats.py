"""Per-stage latency samples and rates, summarised as percentiles.

A participant's latency is counted per frame it shows: each remote frame, from its
capture to the first rendered image that shows it, gives exactly one sample of every
stage (``LatencyLog.frame_received`` then ``LatencyLog.frames_rendered``). A frame drawn
again, because another sender's frame arrived, adds nothing (it is only counted, in
``redrawn``). All of a frame's stamps are on the receiver's clock (the node converts
them), and consecutive stages meet at a stamp, so per frame

    end_to_end = capture + encode + send + network + decode + wait + render

up to float rounding (the sender's offset cancels: it shifts all its stamps alike).
"""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np

#: The stages of one frame's journey, in order, as the demo reports them.
STAGES = ("capture", "encode", "send", "network", "decode", "wait", "render", "end_to_end")

#: What each stage measures, for the reports (the stamps that bound it).
WHAT = {
    "capture": "the sender reads its camera: depth to points and the cut (capture -> captured)",
    "encode": "the sender encodes the cloud (captured -> encoded)",
    "send": "the sender hands the frame to its socket (encoded -> sent)",
    "network": "through the hub to us, queues included (sent -> received, on our clock)",
    "decode": "we decode it, after any frames of the same batch (received -> decoded)",
    "wait": "it waits for our next render to start (decoded -> render start)",
    "render": "the render that first shows it (render start -> image done)",
    "end_to_end": "the remote camera's capture to our first image that shows the frame",
}

#: Stamp pairs that bound the stages a frame's stamps alone give (the rest: at render).
_STAMPED = (("capture", "capture", "captured"), ("encode", "captured", "encoded"), ("send", "encoded", "sent"),
            ("network", "sent", "received"), ("decode", "received", "decoded"))


class LatencyLog:
    """Milliseconds per stage; bounded so that a long meeting does not grow memory.

    Percentiles are over the latest ``keep`` samples of a stage (the oldest half is let go
    when it fills); ``n`` in the summary counts every sample added. Per-frame breakdowns
    (``frames``) keep the latest ``keep_frames`` frames shown."""

    def __init__(self, keep: int = 10_000, keep_frames: int = 2000) -> None:
        self.keep = keep
        self._samples: dict[str, list[float]] = defaultdict(list)
        self._added: dict[str, int] = defaultdict(int)
        self.frames: deque[dict] = deque(maxlen=keep_frames)  # per frame shown: its stages in ms
        self.shown = 0  # frames shown (each gave one end_to_end sample at most)
        self.redrawn = 0  # draws of a frame already shown: no samples (they would be the old double count)
        self.unshown = 0  # frames received but replaced, or their sender gone, before any render
        self._pending: dict[int, tuple[dict, float, float | None]] = {}  # sender -> (stages, decoded, capture)

    def add(self, stage: str, ms: float) -> None:
        samples = self._samples[stage]
        if len(samples) >= self.keep:
            del samples[: self.keep // 2]
        samples.append(float(ms))
        self._added[stage] += 1

    def percentiles(self, stage: str, qs=(50, 95)) -> list[float | None]:
        samples = self._samples.get(stage)
        if not samples:
            return [None for _ in qs]
        return [float(v) for v in np.percentile(samples, qs)]

    # -- frames shown ------------------------------------------------------------------------
    def frame_received(self, sender: int, name: str, seq: int, ts: dict) -> None:
        """A decoded frame from ``sender`` (its stamps on our clock, ``decoded`` among them)
        now waits for a render; one from the same sender still waiting is never shown."""
        if sender in self._pending:
            self.unshown += 1
        stages: dict = {"sender": name, "seq": seq}
        for stage, start, end in _STAMPED:  # a sender may leave any of its own stamps out
            if start in ts and end in ts:
                stages[stage] = (ts[end] - ts[start]) * 1e3
        self._pending[sender] = (stages, ts["decoded"], ts.get("capture"))

    def frames_rendered(self, senders: list[int], start: float, end: float) -> None:
        """A render from ``start`` to ``end`` (our clock, s) drew the latest frame of each of
        ``senders``: one sample per stage for each frame it is the first to show. Frames
        waiting from senders it did not draw (gone) will never be shown."""
        for s in senders:
            if s not in self._pending:  # shown before: drawn again, not seen again
                self.redrawn += 1
                continue
            stages, decoded, capture = self._pending.pop(s)
            stages["wait"] = (start - decoded) * 1e3
            stages["render"] = (end - start) * 1e3
            if capture is not None:
                stages["end_to_end"] = (end - capture) * 1e3
            for stage in STAGES:
                if stage in stages:
                    self.add(stage, stages[stage])
            self.frames.append(stages)
            self.shown += 1
        self.unshown += len(self._pending)
        self._pending.clear()

    def summary(self) -> dict:
        out = {}
        for stage in STAGES:
            p50, p95, p99 = self.percentiles(stage, (50, 95, 99))
            out[stage] = {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "n": self._added.get(stage, 0),
                          "what": WHAT[stage]}
        return out
