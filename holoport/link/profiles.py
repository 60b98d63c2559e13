"""Named link profiles from ../shared/FIELD-NOTES.md's 5G figures.

A profile gives both directions of a participant's access link: where the capacity comes
from (Lumos5G traces of its kind, or a synthetic log-normal process around a measured
median), how the uplink relates to the downlink, delay, loss and handovers. Each figure
says where it comes from; where FIELD-NOTES has none, the profile says so and what it
assumed instead.

The Lumos5G traces are downlink measurements. Where one stands for an uplink it is scaled
by ``uplink_ratio``: FIELD-NOTES' mmWave uplink medians over the matching downlink medians.

The MN-Wild traces (``<data>/network/mn-wild-uplink``, ``direction="up"``) are measured
uplinks: the ``uplink-*`` profiles replay them as they are, no ratio. A meeting participant
takes its uplink from one profile and its downlink from another (``Profile.uplink``,
``Profile.downlink``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from holoport.link.model import Link, LinkConfig
from holoport.link.trace import Trace


@dataclass(frozen=True)
class Profile:
    """Both directions of one kind of access link, and where its figures come from."""

    name: str
    summary: str
    down: LinkConfig
    up: LinkConfig
    uplink_ratio: float
    ratio_source: str
    traces: str | None = None  # glob under the trace folder; None: synthetic capacity
    direction: str = "down"  # what the traces measured: "down" (Lumos5G) or "up" (MN-Wild)
    median_mbps: float = 0.0  # synthetic capacity: median downlink
    sigma: float = 0.0  # synthetic capacity: log-normal spread per second

    def synthetic_trace(self, seed: int, seconds: int = 300) -> Trace:
        """Per-second log-normal AR(1) capacity around ``median_mbps`` (correlation 0.9
        from one second to the next), deterministic for ``seed``."""
        if self.median_mbps <= 0:
            raise ValueError(f"profile {self.name} replays traces; give one")
        rng = np.random.default_rng(seed)
        phi = 0.9
        x = np.empty(seconds)
        x[0] = rng.standard_normal() * self.sigma
        for k in range(1, seconds):
            x[k] = phi * x[k - 1] + math.sqrt(1 - phi * phi) * self.sigma * rng.standard_normal()
        return Trace(f"{self.name}-synthetic-{seed}", np.arange(seconds, dtype=np.float64),
                     self.median_mbps * 1e6 * np.exp(x), float(seconds))

    def trace_files(self, folder: Path) -> list[Path]:
        return sorted(folder.glob(self.traces)) if self.traces else []

    def links(self, downlink: Trace | None = None, seed: int = 0) -> tuple[Link, Link]:
        """(uplink, downlink) for one participant. Handovers are drawn per direction,
        independently (a real one cuts both at once: the model is kinder there). ``downlink`` is the capacity trace (a
        Lumos5G file for trace-driven profiles); the uplink is it times ``uplink_ratio``.
        The two directions draw their delay, loss and outages independently. A measured
        uplink profile (``direction`` "up") takes the trace as the uplink, as it is, and,
        having no downlink figure, the same trace as the downlink."""
        trace = downlink if downlink is not None else self.synthetic_trace(seed)
        return self.uplink(trace, seed), self.downlink(trace, seed)

    def uplink(self, trace: Trace, seed: int = 0, make: Callable[..., Link] = Link) -> Link:
        """The uplink on ``trace``: as measured (``direction`` "up"), else the downlink
        trace times ``uplink_ratio``. ``make`` builds it (``Link``, or a subclass such as
        ``holoport.link.sim.HeldDelayLink``)."""
        if self.direction != "up":
            trace = trace.scaled(self.uplink_ratio, f"{trace.name} x{self.uplink_ratio:g} (uplink)")
        return make(trace, self.up, seed=2 * seed + 1)

    def downlink(self, trace: Trace, seed: int = 0, make: Callable[..., Link] = Link) -> Link:
        """The downlink on ``trace``, as it is."""
        return make(trace, self.down, seed=2 * seed + 2)

    def describe(self) -> str:
        if self.direction == "up":
            return f"{self.name}: {self.summary}; measured uplink, as it is ({self.ratio_source})"
        return f"{self.name}: {self.summary}; uplink = downlink x {self.uplink_ratio:g} ({self.ratio_source})"


def _mmwave(delay: float, p99: float, handover_every: float) -> LinkConfig:
    return LinkConfig(delay_ms=delay, delay_p99_ms=p99, handover_every_s=handover_every)


PROFILES: dict[str, Profile] = {p.name: p for p in [
    Profile(
        "mmwave-walking", "Lumos5G mmWave walking traces; RTT 14 ms median, 127 ms p99; a handover "
        "(42 ms median, 92 ms p99) every ~19 s",
        down=_mmwave(7.0, 63.5, 19.0), up=_mmwave(7.0, 63.5, 19.0),
        uplink_ratio=0.30, ratio_source="FIELD-NOTES: mmWave uplink median 142-157 Mbit/s facing "
        "the mast over ~500 Mbit/s walking downlink",
        traces="5g/*_walking"),
    Profile(
        "mmwave-driving", "Lumos5G mmWave driving traces; RTT 32 ms median (p99 assumed 9x the "
        "median, as when static); handovers as walking (no driving figure)",
        down=_mmwave(16.0, 145.0, 19.0), up=_mmwave(16.0, 145.0, 19.0),
        uplink_ratio=0.045, ratio_source="FIELD-NOTES: mmWave uplink median 5.6 Mbit/s driving over "
        "~124 Mbit/s driving downlink",
        traces="5g/*_driving"),
    Profile(
        "sub6-static", "sub-6 GHz, static: synthetic capacity around the 30 Mbit/s downlink median; "
        "ping loss 1.7% (bursts of 2 assumed); RTT assumed 20 ms median, 80 ms p99",
        down=LinkConfig(10.0, 40.0, loss=0.017, burst=2.0),
        up=LinkConfig(10.0, 40.0, loss=0.017, burst=2.0),
        uplink_ratio=0.30, ratio_source="assumed: FIELD-NOTES has no sub-6 uplink figure, the "
        "mmWave ratio is used", median_mbps=30.0, sigma=0.5),
    Profile(
        "sub6-driving", "sub-6 GHz, driving: synthetic capacity around the 8.5 Mbit/s downlink "
        "median; ping loss 3.9% (bursts of 2 assumed); handovers every ~19 s; RTT assumed 40 ms",
        down=LinkConfig(20.0, 80.0, loss=0.039, burst=2.0, handover_every_s=19.0),
        up=LinkConfig(20.0, 80.0, loss=0.039, burst=2.0, handover_every_s=19.0),
        uplink_ratio=0.30, ratio_source="assumed: FIELD-NOTES has no sub-6 uplink figure, the "
        "mmWave ratio is used", median_mbps=8.5, sigma=0.8),
    Profile(
        "lte", "Lumos5G LTE driving traces; RTT assumed 40 ms median, 120 ms p99",
        down=LinkConfig(20.0, 60.0), up=LinkConfig(20.0, 60.0),
        uplink_ratio=0.30, ratio_source="assumed: FIELD-NOTES has no LTE uplink figure, the "
        "mmWave ratio is used", traces="4g/*"),
    Profile(
        "uplink-verizon-mmwave", "MN-Wild measured uplinks, Verizon mmWave, walking (median 37-73 "
        "Mbit/s); delay and handovers as mmwave-walking",
        down=_mmwave(7.0, 63.5, 19.0), up=_mmwave(7.0, 63.5, 19.0), uplink_ratio=1.0,
        ratio_source="FIELD-NOTES: MN-Wild iPerf uploads", traces="uplink-verizon-mmwave-run*", direction="up"),
    Profile(
        "uplink-tmobile-sa", "MN-Wild measured uplinks, T-Mobile stand-alone low-band 5G, walking "
        "(median 24-27 Mbit/s, long runs at 0); RTT assumed as lte (40 ms median, 120 ms p99)",
        down=LinkConfig(20.0, 60.0), up=LinkConfig(20.0, 60.0), uplink_ratio=1.0,
        ratio_source="FIELD-NOTES: MN-Wild iPerf uploads; no delay figure", traces="uplink-tmobile-sa-run*",
        direction="up"),
    Profile(
        "uplink-tmobile-nsa", "MN-Wild measured uplinks, T-Mobile 5G NSA + LTE, walking (median 59-72 "
        "Mbit/s); RTT assumed as lte (40 ms median, 120 ms p99)",
        down=LinkConfig(20.0, 60.0), up=LinkConfig(20.0, 60.0), uplink_ratio=1.0,
        ratio_source="FIELD-NOTES: MN-Wild iPerf uploads; no delay figure", traces="uplink-tmobile-nsa-run*",
        direction="up"),
    Profile(
        "wired", "1 Gbit/s Ethernet to the hub: 0.5 ms, no loss",
        down=LinkConfig(0.5), up=LinkConfig(0.5), uplink_ratio=1.0, ratio_source="symmetric",
        median_mbps=1000.0, sigma=0.0),
]}


def trace_folder(profile: Profile, lumos5g: Path, uplinks: Path) -> Path:
    """Where ``profile``'s traces are: the measured uplinks' folder or the Lumos5G one."""
    return uplinks if profile.direction == "up" else lumos5g


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown link profile {name!r}; choose one of {', '.join(PROFILES)}") from None
