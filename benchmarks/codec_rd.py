"""Codec rate and speed on real PLY frames: the project's codecs beside Draco, same run.

For every PLY in --data (default: the MVUB frames in ../shared/data), each codec encodes the
frame on its own integer grid (voxel = 1 grid unit, so geometry is lossless) and decodes it;
the records give bits per input point for geometry and colour, and median encode and decode
times after a warm-up. Draco (DracoPy) uses quantization bits = grid bits, range 2^bits - 1,
origin 0, so its geometry is lossless too.

Run: holoport bench codec --json codec.json --markdown codec.md --plot codec.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, data_root, emit, median_ms, read_ply
from codec import BaselineCodec, container

COLUMNS = ["frame", "codec", "params", "points", "geom_bpp", "color_bpp", "total_bpp",
           "lossless", "encode_ms", "decode_ms"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of PLY frames (default: <data>/pointclouds/mvub)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--no-draco", action="store_true", help="skip Draco")
    add_output_arguments(parser)


def grid_bits(positions: np.ndarray) -> int:
    return max(1, math.ceil(math.log2(float(positions.max()) + 1)))


def _same_cloud(a_pos, a_col, b_pos, b_col) -> bool:
    """Equal as sets of (position, colour) rows, whatever the order."""
    if len(a_pos) != len(b_pos):
        return False
    a = np.unique(np.hstack([np.rint(a_pos), a_col]).astype(np.int64), axis=0)
    b = np.unique(np.hstack([np.rint(b_pos), b_col]).astype(np.int64), axis=0)
    return a.shape == b.shape and bool(np.array_equal(a, b))


def bench_baseline(name, positions, colors, bits, repeats) -> dict:
    codec = BaselineCodec(voxel_size=1.0, origin=(0.0, 0.0, 0.0), bits=bits)
    enc_ms, data = median_ms(lambda: codec.encode(positions, colors), repeats)
    dec_ms, (pos2, col2) = median_ms(lambda: BaselineCodec.decode(data), repeats)
    sections = container.unpack(data).sections
    n = len(positions)
    return {"frame": name, "codec": "baseline", "params": f"bits={bits} zstd={codec.level}",
            "points": n, "geom_bpp": (len(data) - len(sections[1])) * 8 / n,
            "color_bpp": len(sections[1]) * 8 / n, "total_bpp": len(data) * 8 / n,
            "lossless": _same_cloud(positions, colors, pos2, col2),
            "encode_ms": enc_ms, "decode_ms": dec_ms}


def bench_draco(name, positions, colors, bits, repeats, level=7) -> dict:
    import DracoPy

    opts = {"quantization_bits": bits, "quantization_range": float(2**bits - 1),
            "quantization_origin": [0.0, 0.0, 0.0], "compression_level": level}
    geom_only = DracoPy.encode(positions, **opts)
    enc_ms, data = median_ms(lambda: DracoPy.encode(positions, colors=colors, **opts), repeats)
    dec_ms, mesh = median_ms(lambda: DracoPy.decode(data), repeats)
    n = len(positions)
    return {"frame": name, "codec": "draco", "params": f"bits={bits} level={level}", "points": n,
            "geom_bpp": len(geom_only) * 8 / n, "color_bpp": (len(data) - len(geom_only)) * 8 / n,
            "total_bpp": len(data) * 8 / n,
            "lossless": _same_cloud(positions, colors, np.asarray(mesh.points),
                                    np.asarray(mesh.colors)[:, :3]),
            "encode_ms": enc_ms, "decode_ms": dec_ms}


def run(args: argparse.Namespace) -> int:
    folder = args.data or data_root() / "pointclouds" / "mvub"
    frames = sorted(Path(folder).glob("*.ply"))
    if not frames:
        print(f"no PLY frames in {folder}; pass --data DIR or set HOLOPORT_DATA", file=sys.stderr)
        return 1
    draco = not args.no_draco
    if draco:
        try:
            import DracoPy  # noqa: F401
        except ImportError:
            print("DracoPy is not installed: comparing without Draco (pip install DracoPy)")
            draco = False
    from rich.progress import track

    records = []
    for path in track(frames, description="encoding frames"):
        positions, colors = read_ply(path)
        bits = grid_bits(positions)
        records.append(bench_baseline(path.stem, positions, colors, bits, args.repeats))
        if draco:
            records.append(bench_draco(path.stem, positions, colors, bits, args.repeats))
    if draco:  # ratios to Draco, measured in this same run
        by_frame = {r["frame"]: r for r in records if r["codec"] == "draco"}
        for r in records:
            d = by_frame[r["frame"]]
            r["bpp_vs_draco"] = r["total_bpp"] / d["total_bpp"]
            r["encode_vs_draco"] = r["encode_ms"] / d["encode_ms"]
    emit(records, COLUMNS + (["bpp_vs_draco", "encode_vs_draco"] if draco else []),
         "Codec rate and speed (lossless geometry)", args)
    if args.plot:
        plot(records, args.plot)
        print(f"wrote {args.plot}")
    return 0


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = sorted({r["frame"] for r in records})
    codecs = sorted({r["codec"] for r in records})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(codecs)
    for i, c in enumerate(codecs):
        rows = {r["frame"]: r for r in records if r["codec"] == c}
        x = np.arange(len(frames)) + i * width
        axes[0].bar(x, [rows[f]["total_bpp"] for f in frames], width, label=c)
        axes[1].bar(x, [rows[f]["encode_ms"] for f in frames], width, label=c)
    for ax, label in zip(axes, ["total bits per point", "encode ms (median)"], strict=True):
        ax.set_xticks(np.arange(len(frames)) + 0.4 - width / 2, frames, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("Lossless geometry + colour on MVUB frames")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
