"""What every benchmark shares: timing, peak memory, and the three outputs (table, JSON, plot)."""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from holoport.console import wide_console


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


#: Columns whose null means "lossless" rather than "missing": a codec record's PSNR of a
#: result identical to its input is infinite, which JSON cannot hold, so it is null there and
#: prints ``inf`` (the table's note says so). Everywhere else null prints ``-``.
LOSSLESS_COLUMNS = frozenset({"d1_psnr", "y_psnr"})


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _cell(value, column: str = "") -> str:
    if _missing(value):
        # a lossless PSNR (codec records) is infinite; any other missing value is "-"
        return "inf" if column in LOSSLESS_COLUMNS else "-"
    if isinstance(value, float):
        if 0 < abs(value) < 0.001:
            return f"{value:.2e}"  # a tiny figure keeps its digits
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def finite(value):
    """``value`` with every NaN or infinite float (nested in dicts and lists) made None, so
    that a record's missing value is ``null`` in JSON (json.dumps would write ``NaN`` or
    ``Infinity``, which is not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # a numpy scalar
        return finite(value.item())
    return value


def write_json(path: str | Path, records: Sequence[dict], indent: int = 2) -> None:
    """The records as a JSON list; missing values (NaN, inf) are ``null``."""
    Path(path).write_text(json.dumps(finite(list(records)), indent=indent, allow_nan=False))


def markdown_table(records: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c, ""), c) for c in columns) + " |" for r in records]
    return "\n".join(lines) + "\n"


def emit(records: Sequence[dict], columns: Sequence[str], title: str, args,
         console: Console | None = None, plot: Callable[[Sequence[dict], str], None] | None = None,
         json_records: Sequence[dict] | None = None) -> None:
    """Print the table; write JSON, Markdown and (with ``plot``) the PNG when asked. A
    missing value prints ``-`` and is ``null`` in JSON (``inf`` only for a lossless PSNR,
    ``LOSSLESS_COLUMNS``). ``json_records``: what the JSON holds when it is more than the
    table shows (every run beside the pooled rows)."""
    console = console or wide_console()
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c in ("frame", "codec", "params") else "right")
    for r in records:
        table.add_row(*(_cell(r.get(c, ""), c) for c in columns))
    console.print(table)
    if getattr(args, "json", None):
        write_json(args.json, records if json_records is None else json_records, indent=1)
        console.print(f"wrote {args.json}")
    if getattr(args, "markdown", None):
        Path(args.markdown).write_text(markdown_table(records, columns))
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
