"""Codec rate, distortion and speed on real PLY frames: Holoport's codecs beside Draco.

For every PLY in --data (default: the MVUB frames in ../shared/data) each codec encodes the
frame on its own integer grid and decodes it; geometry is lossless for all of them (the
octree codec and the baseline voxelize on the frame's grid; Draco uses quantization bits =
grid bits, range 2^bits - 1, origin 0). The octree codec runs losslessly and at several
colour steps (RAHT) in one slice, and losslessly and at step 16 in two slices (faster,
slightly larger); Draco at compression levels 1 and 7. Records give bits per input point
for geometry, colour and in total, D1 PSNR and Y-PSNR (codec.metrics, as pc_error), and
median encode and decode times after warm-up runs (the steady state of a stream); ratios
are to Draco level 7 in this run.

Run: holoport bench codec --json codec.json --markdown codec.md --plot codec.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import add_output_arguments, data_root, emit, median_ms, read_ply, script_main
from codec import BaselineCodec, OctreeCodec, container
from codec.metrics import estimate_normals, quality

COLUMNS = ["frame", "codec", "params", "points", "geom_bpp", "color_bpp", "total_bpp", "d1_psnr",
           "y_psnr", "encode_ms", "decode_ms", "bpp_vs_draco", "encode_vs_draco", "decode_vs_draco"]
DEFAULT_STEPS = (8, 16, 24, 32, 48)
#: G-PCC (TMC13 v23) as ../shared/data/README.md publishes it for the MVUB frames:
#: (lossless geometry bpp, total bpp at QP 28, Y-PSNR dB at QP 28). Plotted for reference.
GPCC_PUBLISHED = {
    "andrew_8bit": (1.186, 2.740, 34.95), "david_8bit": (1.233, 1.742, 36.90),
    "phil_8bit": (1.169, 2.770, 34.90), "ricardo_8bit": (1.029, 1.378, 39.61),
    "sarah_8bit": (1.087, 1.560, 39.23), "sarah_9bit": (1.044, 1.298, 40.64),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of PLY frames (default: <data>/pointclouds/mvub)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed runs before them, for every codec (steady state, as in a stream)")
    parser.add_argument("--steps", type=int, nargs="*", default=list(DEFAULT_STEPS),
                        help="octree colour steps to run besides lossless (default 8 16 24 32 48)")
    parser.add_argument("--no-draco", action="store_true", help="skip Draco")
    add_output_arguments(parser)


def grid_bits(positions: np.ndarray) -> int:
    return max(1, math.ceil(math.log2(float(positions.max()) + 1)))


def _finite(v: float) -> float | None:
    return None if math.isinf(v) else round(v, 3)  # JSON has no infinity: null = lossless


class Frame:
    """One PLY frame and what every codec is measured against."""

    def __init__(self, path: Path) -> None:
        self.name = path.stem
        self.positions, self.colors = read_ply(path)
        self.points = len(self.positions)
        self.bits = grid_bits(self.positions)
        self._normals = None

    def record(self, codec: str, params: str, geom_bytes: int, total_bytes: int, decoded,
               encode_ms: float, decode_ms: float) -> dict:
        if self._normals is None:
            self._normals = estimate_normals(self.positions)
        q = quality(self.positions, self.colors, decoded[0], decoded[1], self.bits, self._normals)
        n = self.points
        return {"frame": self.name, "codec": codec, "params": params, "points": n,
                "geom_bpp": geom_bytes * 8 / n, "color_bpp": (total_bytes - geom_bytes) * 8 / n,
                "total_bpp": total_bytes * 8 / n, "d1_psnr": _finite(q.d1_psnr),
                "y_psnr": _finite(q.y_psnr), "encode_ms": encode_ms, "decode_ms": decode_ms}


def bench_octree(frame: Frame, step: int, repeats: int, warmup: int, slices: int = 1) -> dict:
    codec = OctreeCodec(depth=frame.bits, origin=(-0.5, -0.5, -0.5), size=float(2**frame.bits),
                        color_step=step, slices=slices)
    enc_ms, data = median_ms(lambda: codec.encode(frame.positions, frame.colors), repeats, warmup)
    dec_ms, decoded = median_ms(lambda: OctreeCodec.decode(data), repeats, warmup)
    k = (len(container.unpack(data).sections) - 2) // 2
    color = sum(len(s) for s in container.unpack(data).sections[2 + k:])
    label = "lossless" if step == 1 else f"step={step}"
    return frame.record("octree", f"{label} slices={slices}", len(data) - color, len(data), decoded,
                        enc_ms, dec_ms)


def bench_baseline(frame: Frame, repeats: int, warmup: int) -> dict:
    codec = BaselineCodec(voxel_size=1.0, origin=(0.0, 0.0, 0.0), bits=frame.bits)
    enc_ms, data = median_ms(lambda: codec.encode(frame.positions, frame.colors), repeats, warmup)
    dec_ms, decoded = median_ms(lambda: BaselineCodec.decode(data), repeats, warmup)
    color = len(container.unpack(data).sections[1])
    return frame.record("baseline", f"bits={frame.bits} zstd={codec.level}", len(data) - color,
                        len(data), decoded, enc_ms, dec_ms)


def bench_draco(frame: Frame, level: int, repeats: int, warmup: int) -> dict:
    import DracoPy

    opts = {"quantization_bits": frame.bits, "quantization_range": float(2**frame.bits - 1),
            "quantization_origin": [0.0, 0.0, 0.0], "compression_level": level}
    geometry = DracoPy.encode(frame.positions, **opts)
    enc_ms, data = median_ms(lambda: DracoPy.encode(frame.positions, colors=frame.colors, **opts),
                             repeats, warmup)
    dec_ms, mesh = median_ms(lambda: DracoPy.decode(data), repeats, warmup)
    decoded = (np.asarray(mesh.points, np.float32), np.asarray(mesh.colors, np.uint8)[:, :3])
    return frame.record("draco", f"level={level}", len(geometry), len(data), decoded, enc_ms, dec_ms)


def run(args: argparse.Namespace) -> int:
    folder = args.data or data_root() / "pointclouds" / "mvub"
    paths = sorted(Path(folder).glob("*.ply"))
    if not paths:
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
    for path in track(paths, description="benchmarking frames"):
        frame = Frame(path)
        for step in [1, *args.steps]:
            records.append(bench_octree(frame, step, args.repeats, args.warmup))
        for step in (1, 16):  # two slices: geometry on both cores too (a little larger)
            records.append(bench_octree(frame, step, args.repeats, args.warmup, slices=2))
        records.append(bench_baseline(frame, args.repeats, args.warmup))
        if draco:
            records += [bench_draco(frame, level, args.repeats, args.warmup) for level in (1, 7)]
    if draco:  # ratios to Draco level 7, measured in this same run
        ref = {r["frame"]: r for r in records if r["codec"] == "draco" and r["params"] == "level=7"}
        for r in records:
            d = ref[r["frame"]]
            r["bpp_vs_draco"] = r["total_bpp"] / d["total_bpp"]
            r["encode_vs_draco"] = r["encode_ms"] / d["encode_ms"]
            r["decode_vs_draco"] = r["decode_ms"] / d["decode_ms"]
    emit(records, COLUMNS if draco else COLUMNS[:-3], "Codec rate, distortion and speed", args, plot=plot)
    return 0


def _curve(record: dict) -> tuple[str, str]:
    """Which RD curve a record belongs to: one per Draco level and per octree slice count."""
    if record["codec"] == "draco":
        return record["codec"], record["params"]
    if record["codec"] == "octree":
        return record["codec"], record["params"].split()[-1]
    return record["codec"], ""


def plot(records: list[dict], path: str) -> None:
    """Rate-distortion: total bpp against Y-PSNR, one curve per codec, one panel per frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    frames = sorted({r["frame"] for r in records})
    cols = min(3, len(frames))
    rows = math.ceil(len(frames) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, frame in zip(axes.flat, frames, strict=False):
        mine = [r for r in records if r["frame"] == frame]
        top = max([r["y_psnr"] for r in mine if r["y_psnr"] is not None] + [40]) + 4
        for label in sorted({_curve(r) for r in mine}):
            rows_ = [r for r in mine if _curve(r) == label]
            rows_.sort(key=lambda r: r["total_bpp"])
            y = [top if r["y_psnr"] is None else r["y_psnr"] for r in rows_]
            ax.plot([r["total_bpp"] for r in rows_], y, "o-", label=" ".join(p for p in label if p))
        if frame in GPCC_PUBLISHED:
            _, bpp, psnr = GPCC_PUBLISHED[frame]
            ax.plot([bpp], [psnr], "k*", ms=10, label="G-PCC QP28 (published)")
        ax.axhline(top, color="grey", lw=0.5, ls=":")
        ax.set_title(f"{frame} (top line = lossless)", fontsize=9)
        ax.set_xlabel("total bits per input point")
        ax.set_ylabel("Y-PSNR dB")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(frames):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
