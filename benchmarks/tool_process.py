"""Running a peer's command-line tool (Draco's, TMC13's) and timing it from spawn to exit."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    wall_ms: float  # the process, spawn to exit, as seen by the caller
    internal_ms: float | None  # what the tool printed about its own coding, None if nothing
    output: str = ""  # what it printed (stdout)


def run(args: list[str], internal: re.Pattern | None = None, scale: float = 1.0, timeout: float = 300) -> Run:
    """Run ``args``; ``internal`` finds the tool's own time(s) in its output: every match's
    first group, summed, times ``scale`` (to ms). A failed run raises with what it printed."""
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    wall = (time.perf_counter() - t0) * 1e3
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout.strip()[-2000:]} "
                           f"{done.stderr.strip()[-2000:]}")
    found = internal.findall(done.stdout) if internal else []
    return Run(wall, sum(float(v) for v in found) * scale if found else None, done.stdout)


def spawn_ms(repeats: int = 5) -> float:
    """Median time to spawn and reap a process that does nothing (``true``) from this process:
    the part of a command-line tool's wall time that is not the tool's own work."""
    true = shutil.which("true") or "/bin/true"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([true], check=True)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
