"""Link capacity over time: replayed from a throughput trace, or constant.

A trace is a step function: sample k holds from ``times[k]`` to ``times[k + 1]`` (the last
sample for one median sample period). Lumos5G logs one line per second, ``seconds<TAB>Mbit/s``,
each the mean throughput of that second, so a step function is the faithful reading: a
second logged at 0 Mbit/s carried nothing. Past its end a trace starts again (a relay may
run longer than its trace), so every time has a capacity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Trace:
    """Capacity in bit/s as a step function of seconds since the trace's start."""

    name: str
    starts: np.ndarray  # float64 (K,), starts[0] == 0, increasing
    bps: np.ndarray  # float64 (K,), >= 0
    period: float  # the whole trace's length in seconds (it repeats after that)

    def __post_init__(self) -> None:
        if self.starts.ndim != 1 or self.starts.shape != self.bps.shape or len(self.starts) == 0:
            raise ValueError("a trace needs matching, non-empty start and rate arrays")
        if self.starts[0] != 0 or np.any(np.diff(self.starts) <= 0) or self.period <= self.starts[-1]:
            raise ValueError("trace samples must start at 0 and increase, within the period")
        if np.any(self.bps < 0) or not np.all(np.isfinite(self.bps)):
            raise ValueError("trace rates must be finite and non-negative")
        if not np.any(self.bps > 0):
            raise ValueError(f"trace {self.name} never carries anything (all rates are 0)")

    @classmethod
    def constant(cls, mbps: float, name: str | None = None) -> Trace:
        if not mbps > 0:
            raise ValueError(f"a constant link needs a positive rate, got {mbps} Mbit/s")
        return cls(name or f"constant-{mbps:g}", np.zeros(1), np.array([mbps * 1e6]), 1.0)

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """A Lumos5G-format file: ``seconds<TAB>Mbit/s`` per line (any whitespace)."""
        path = Path(path)
        try:
            rows = np.loadtxt(path, ndmin=2, dtype=np.float64)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a trace of 'seconds<TAB>Mbit/s' lines ({exc})") from exc
        if rows.shape[1] < 2 or len(rows) == 0:
            raise ValueError(f"{path}: expected two columns, seconds and Mbit/s")
        t, mbps = rows[:, 0], rows[:, 1]
        if np.any(np.diff(t) <= 0):
            raise ValueError(f"{path}: times must increase")
        step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        starts = t - t[0]
        return cls(path.name, starts, mbps * 1e6, float(starts[-1] + step))

    def scaled(self, factor: float, name: str | None = None) -> Trace:
        """The same trace times ``factor`` (an uplink from a downlink trace, for example)."""
        if not factor > 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        return Trace(name or self.name, self.starts, self.bps * factor, self.period)

    def rolled(self, seconds: float, name: str | None = None) -> Trace:
        """The same trace started at the sample that holds ``seconds`` into it (another
        moment of the same walk: a second participant's link drawn from one trace)."""
        k = int(np.searchsorted(self.starts, seconds % self.period, "right")) - 1
        starts = np.concatenate([self.starts[k:] - self.starts[k],
                                 self.starts[:k] + (self.period - self.starts[k])])
        return Trace(name or f"{self.name}+{seconds:g}s", starts,
                     np.concatenate([self.bps[k:], self.bps[:k]]), self.period)

    def rate_at(self, t: float) -> float:
        """Capacity in bit/s at time ``t`` (seconds)."""
        k = int(np.searchsorted(self.starts, t % self.period, "right")) - 1
        return float(self.bps[k])

    def segments(self, t: float) -> Iterator[tuple[float, float, float]]:
        """(start, end, bit/s) of the constant pieces from ``t`` on, forever."""
        lap = math.floor(t / self.period)
        k = int(np.searchsorted(self.starts, t - lap * self.period, "right")) - 1
        begin = t
        while True:
            base = lap * self.period
            end = base + (self.starts[k + 1] if k + 1 < len(self.starts) else self.period)
            yield begin, end, float(self.bps[k])
            begin = end
            k += 1
            if k == len(self.starts):
                k, lap = 0, lap + 1
