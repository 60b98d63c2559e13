"""Per-stage latency samples and rates, summarised as percentiles."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

#: The stages of one frame's journey, in order, as the demo reports them.
STAGES = ("capture", "encode", "network", "decode", "render", "end_to_end")


class LatencyLog:
    """Milliseconds per stage; bounded so that a long meeting does not grow memory."""

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, ms: float) -> None:
        samples = self._samples[stage]
        if len(samples) >= self.keep:
            del samples[: self.keep // 2]
        samples.append(float(ms))

    def percentiles(self, stage: str, qs=(50, 95)) -> list[float | None]:
        samples = self._samples.get(stage)
        if not samples:
            return [None for _ in qs]
        return [float(v) for v in np.percentile(samples, qs)]

    def summary(self) -> dict:
        out = {}
        for stage in STAGES:
            p50, p95 = self.percentiles(stage)
            out[stage] = {"p50_ms": p50, "p95_ms": p95, "n": len(self._samples.get(stage, []))}
        return out
