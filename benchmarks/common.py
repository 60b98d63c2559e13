"""What every benchmark shares: data location, PLY loading, timing, and the three outputs."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

#: Where the shared test data lives unless $HOLOPORT_DATA says otherwise.
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def data_root() -> Path:
    return Path(os.environ.get("HOLOPORT_DATA", DEFAULT_DATA))


def reset_peak_rss() -> None:
    """Start counting this process's peak resident memory from now (Linux: writing 5 to
    /proc/self/clear_refs resets VmHWM), so that a benchmark run inside a longer-lived
    process (the tests) measures its own peak, not the process's. Elsewhere a no-op."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident memory since ``reset_peak_rss`` (or since the process began), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def add_output_arguments(parser) -> None:
    parser.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot")


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A coloured PLY as float32 positions and uint8 colours (Open3D reads it)."""
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path))
    if not cloud.has_points():
        raise ValueError(f"{path} holds no points")
    positions = np.asarray(cloud.points, dtype=np.float32)
    colors = np.clip(np.rint(np.asarray(cloud.colors) * 255), 0, 255).astype(np.uint8)
    return positions, colors


def median_ms(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> tuple[float, object]:
    """Median wall time of ``fn`` in ms after warm-up, and its last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), result


def wide_console() -> Console:
    """A console that keeps tables readable when output goes to a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _cell(value) -> str:
    if value is None:
        return "inf"  # a PSNR of a lossless result (JSON null)
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def emit(records: Sequence[dict], columns: Sequence[str], title: str, args,
         console: Console | None = None, plot: Callable[[Sequence[dict], str], None] | None = None) -> None:
    """Print the table; write JSON, Markdown and (with ``plot``) the PNG when asked."""
    console = console or wide_console()
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c in ("frame", "codec", "params") else "right")
    for r in records:
        table.add_row(*(_cell(r.get(c, "")) for c in columns))
    console.print(table)
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(list(records), indent=2))
        console.print(f"wrote {args.json}")
    if getattr(args, "markdown", None):
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in records]
        Path(args.markdown).write_text("\n".join(lines) + "\n")
        console.print(f"wrote {args.markdown}")
    if plot is not None and getattr(args, "plot", None):
        plot(records, args.plot)
        console.print(f"wrote {args.plot}")


def script_main(doc: str, add_arguments: Callable, run: Callable, argv: list[str] | None) -> int:
    """``python -m benchmarks.NAME``: the same arguments as ``holoport bench NAME``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
