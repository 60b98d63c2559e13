"""Codec rate, distortion and speed on real PLY frames: Holoport's codecs beside Draco.

For every PLY in --data (default: the MVUB frames in ../shared/data) each codec encodes the
frame on its own integer grid and decodes it. The octree codec runs losslessly and at
several colour steps (RAHT), in one slice and in two (geometry on both cores: faster,
slightly larger); the baseline voxelizes on the frame's grid; Draco runs at
compression levels 1 and 7 in two ways:

- codec "draco": Draco's own command-line tools, as their users run them (found on PATH or
  in --draco-bin DIR; Debian/Ubuntu: apt-get install draco). encode_ms is the wall time of
  `draco_encoder -point_cloud -i FRAME.ply -o F.drc -qp BITS -cl LEVEL` from spawn to exit,
  so it includes process start, reading the PLY and writing the .drc; decode_ms is the wall
  time of `draco_decoder -i F.drc -o OUT.ply`, including writing the PLY. encode_internal_ms
  and decode_internal_ms are the times the tools print about themselves (coding only, whole
  milliseconds). -qp spreads its steps over the frame's bounding box, so positions come
  back up to half a step off the grid: a finite D1 PSNR, not lossless.
- codec "DracoPy": the same library through its Python wrapper (pip DracoPy), in memory,
  with quantization bits = grid bits, range 2^bits - 1, origin 0 (lossless geometry).

Holoport's codecs are timed in memory on arrays already loaded: no file I/O, no process
start. Records give bits per input point for geometry, colour and in total, D1 PSNR and
Y-PSNR (codec.metrics, as pc_error; null in JSON and inf in tables = lossless), and median
times after warm-up rounds (the steady state of a stream); the codecs take turns, one encode
and decode each per round, so that other work on a shared machine slows them alike. Ratios
are to Draco level 7 on the same frame in this run: the command-line tools when present
(*_vs_draco: to its wall time, *_vs_draco_internal: to its own printed time), else DracoPy
(draco_ref names which). A value that was not measured is null in JSON and "-" in tables.

Run: holoport bench codec --json codec.json --markdown codec.md --plot codec.png

With --layers it compares the layered stream (codec.layered, issue 17) with the single-layer
octree stream instead: same depth (the frame's bits), same colour step, one slice; bytes of
all parts together over the single stream's, Y-PSNR of both at full detail, each prefix's
bytes and Y-PSNR, and times measured in turns as above. STEP_EXPONENT was tuned on
TUNING_FRAMES; the other frames are validation (column "role").

Run: holoport bench codec --layers --json codec-layers.json --markdown codec-layers.md
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import draco_cli, gpcc_cli, gpcc_reference, tool_process
from benchmarks.common import add_output_arguments, emit, markdown_table, script_main
from capture.ply import read_ply
from codec import BaselineCodec, LayeredOctreeCodec, OctreeCodec, container
from codec.metrics import estimate_normals, quality
from holoport.data import data_root

#: Every record has every field; a value not measured is None (JSON null, "-" in tables).
FIELDS = ["frame", "codec", "params", "points", "geom_bpp", "color_bpp", "total_bpp", "d1_psnr",
          "y_psnr", "encode_ms", "decode_ms", "encode_internal_ms", "decode_internal_ms",
          "bpp_vs_draco", "encode_vs_draco", "decode_vs_draco", "encode_vs_draco_internal",
          "decode_vs_draco_internal", "draco_ref"]
COLUMNS = FIELDS[:-1]
INTERNAL = ["encode_internal_ms", "decode_internal_ms", "encode_vs_draco_internal", "decode_vs_draco_internal"]
RATIOS = ["bpp_vs_draco", "encode_vs_draco", "decode_vs_draco", "encode_vs_draco_internal",
          "decode_vs_draco_internal"]
#: Colour steps of the one-slice octree runs: from 4 (above G-PCC's QP 22 quality) to 96
#: (below its QP 40), so that the BD-rate against G-PCC covers its whole QP range.
DEFAULT_STEPS = (4, 8, 16, 24, 32, 48, 64, 96)
GPCC_CODEC = "G-PCC (published)"
TMC3_CODEC = "G-PCC (tmc3)"
#: The comparison with G-PCC, one record per frame (``<json stem>-gpcc.json``): against the
#: published figures, and (--gpcc) against tmc3 run on the same frames in the same run.
GPCC_FIELDS = ["frame", "role", "points", "geom_bpp", "gpcc_geom_bpp", "geom_vs_gpcc",
               "bd_rate_total_pct", "psnr_lo", "psnr_hi", "tmc3_geom_bpp", "geom_vs_tmc3",
               "bd_rate_vs_tmc3_pct", "encode_ms", "tmc3_encode_ms", "encode_speedup", "decode_ms",
               "tmc3_decode_ms", "decode_speedup"]
TMC3_FIELDS = GPCC_FIELDS[9:]


#: The layered stream's records (--layers).
LAYER_FIELDS = ["frame", "role", "color_step", "points", "single_bytes", "layered_bytes", "ratio",
                "y_psnr_single", "y_psnr_layered", "y_psnr_delta", "layers", "layer_bytes", "levels",
                "prefix_y_psnr", "single_encode_ms", "encode_ms", "single_decode_ms", "decode_ms"]
LAYER_STEPS = (4, 8, 16, 32)
#: Frames that codec.layered.STEP_EXPONENT was tuned on; the others validate it.
TUNING_FRAMES = ("andrew_8bit", "ricardo_8bit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of PLY frames (default: <data>/pointclouds/mvub)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds (median); each round runs every codec once, in turn")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed rounds before them (steady state, as in a stream)")
    parser.add_argument("--steps", type=int, nargs="*", default=list(DEFAULT_STEPS),
                        help="octree colour steps to run besides lossless, in one slice and in two "
                             f"(default {' '.join(map(str, DEFAULT_STEPS))})")
    parser.add_argument("--no-draco", action="store_true", help="skip Draco (both ways)")
    parser.add_argument("--layers", action="store_true",
                        help="compare the layered stream with the single-layer octree stream instead")
    parser.add_argument("--layer-steps", type=int, nargs="*", default=list(LAYER_STEPS),
                        help="colour steps of the --layers comparison (default 4 8 16 32)")
    parser.add_argument("--gpcc-table", type=Path, default=None, metavar="README",
                        help="markdown holding G-PCC's per-QP figures in the layout of "
                             "../shared/data/README.md (default: that README)")
    parser.add_argument("--gpcc", type=Path, default=None, metavar="PATH",
                        help="TMC13's tmc3 binary: run G-PCC (QP 22 28 34 40) on the same frames in "
                             "the same run, side by side (build it from source: docs/codec.md)")
    parser.add_argument("--draco-bin", type=Path, default=None, metavar="DIR",
                        help="folder holding draco_encoder and draco_decoder (default: PATH)")
    add_output_arguments(parser)


def grid_bits(positions: np.ndarray) -> int:
    return max(1, math.ceil(math.log2(float(positions.max()) + 1)))


def _finite(v: float) -> float | None:
    return None if math.isinf(v) else round(v, 3)  # JSON has no infinity: null = lossless


class Frame:
    """One PLY frame and what every codec is measured against."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
        record = dict.fromkeys(FIELDS)
        record.update({"frame": self.name, "codec": codec, "params": params, "points": n,
                       "geom_bpp": geom_bytes * 8 / n, "color_bpp": (total_bytes - geom_bytes) * 8 / n,
                       "total_bpp": total_bytes * 8 / n, "d1_psnr": _finite(q.d1_psnr),
                       "y_psnr": _finite(q.y_psnr), "encode_ms": encode_ms, "decode_ms": decode_ms})
        return record


@dataclass
class Case:
    """One codec configuration on one frame. ``encode()`` gives what ``decode`` takes; ``sizes``
    turns that into (geometry bytes, total bytes) and ``decoded`` turns what ``decode`` gives
    into (positions, colours). A command-line tool's calls return a ``tool_process.Run``, whose
    self-reported time is kept beside the wall time."""

    codec: str
    params: str
    encode: Callable[[], object]
    decode: Callable[[object], object]
    sizes: Callable[[object], tuple[int, int]]
    decoded: Callable[[object], tuple[np.ndarray, np.ndarray]]


def octree_case(frame: Frame, step: int, slices: int = 1) -> Case:
    codec = OctreeCodec(depth=frame.bits, origin=(-0.5, -0.5, -0.5), size=float(2**frame.bits),
                        color_step=step, slices=slices)

    def sizes(data: bytes) -> tuple[int, int]:
        sections = container.unpack(data).sections
        k = (len(sections) - 2) // 2
        return len(data) - sum(len(s) for s in sections[2 + k:]), len(data)

    label = "lossless" if step == 1 else f"step={step}"
    return Case("octree", f"{label} slices={slices}", lambda: codec.encode(frame.positions, frame.colors),
                OctreeCodec.decode, sizes, lambda out: out)


def baseline_case(frame: Frame) -> Case:
    codec = BaselineCodec(voxel_size=1.0, origin=(0.0, 0.0, 0.0), bits=frame.bits)

    def sizes(data: bytes) -> tuple[int, int]:
        return len(data) - len(container.unpack(data).sections[1]), len(data)

    return Case("baseline", f"bits={frame.bits} zstd={codec.level}",
                lambda: codec.encode(frame.positions, frame.colors), BaselineCodec.decode, sizes, lambda out: out)


def dracopy_case(frame: Frame, level: int) -> Case:
    """Draco through its Python wrapper, in memory (what the wrapper costs shows beside "draco")."""
    import DracoPy

    opts = {"quantization_bits": frame.bits, "quantization_range": float(2**frame.bits - 1),
            "quantization_origin": [0.0, 0.0, 0.0], "compression_level": level}
    geometry = len(DracoPy.encode(frame.positions, **opts))
    return Case("DracoPy", f"level={level} bits={frame.bits}",
                lambda: DracoPy.encode(frame.positions, colors=frame.colors, **opts), DracoPy.decode,
                lambda data: (geometry, len(data)),
                lambda mesh: (np.asarray(mesh.points, np.float32), np.asarray(mesh.colors, np.uint8)[:, :3]))


def draco_cli_case(frame: Frame, tools: draco_cli.DracoTools, level: int, work: Path) -> Case:
    """Draco's own command-line tools on the PLY file, as their users run them."""
    xyz = work / f"{frame.name}-xyz.ply"
    if not xyz.exists():
        draco_cli.write_positions_ply(frame.positions, xyz)
    geometry = work / f"{frame.name}-xyz-{level}.drc"
    draco_cli.encode(tools, xyz, geometry, frame.bits, level)  # geometry alone: its size only
    drc = work / f"{frame.name}-{level}.drc"
    out = work / f"{frame.name}-{level}-decoded.ply"
    return Case("draco", f"level={level} qp={frame.bits}",
                lambda: draco_cli.encode(tools, frame.path, drc, frame.bits, level),
                lambda _: draco_cli.decode(tools, drc, out),
                lambda _: (geometry.stat().st_size, drc.stat().st_size), lambda _: read_ply(out))


def tmc3_case(frame: Frame, tool: gpcc_cli.Tmc3, qp: int, work: Path) -> Case:
    """G-PCC's reference software on the frame's PLY file (lossless geometry, RAHT at ``qp``)."""
    bitstream, out = work / f"{frame.name}-qp{qp}.bin", work / f"{frame.name}-qp{qp}-decoded.ply"
    return Case(TMC3_CODEC, f"QP {qp}", lambda: gpcc_cli.encode(tool, frame.path, bitstream, qp),
                lambda _: gpcc_cli.decode(tool, bitstream, out), gpcc_cli.sizes, lambda _: read_ply(out))


def _timed(fn: Callable, *args) -> tuple[float, float | None, object]:
    """Wall ms of one call, the ms a tool reported about itself (None for in-memory calls), the result."""
    t0 = time.perf_counter()
    result = fn(*args)
    wall = (time.perf_counter() - t0) * 1e3
    return wall, result.internal_ms if isinstance(result, tool_process.Run) else None, result


def _median(values: list[float | None]) -> float | None:
    return None if not values or None in values else statistics.median(values)


def measure(frame: Frame, cases: list[Case], repeats: int, warmup: int) -> list[dict]:
    """Every case's record, its times the medians of ``repeats`` rounds after ``warmup`` rounds.
    Each round encodes and decodes the frame once with every case in turn, so that a burst of
    other work on a shared machine falls on all of them alike (ratios stay fair)."""
    for _ in range(warmup):
        for case in cases:
            case.decode(case.encode())
    times = {id(case): ([], [], [], []) for case in cases}  # encode, encode self-reported, decode, ...
    last = {}
    for _ in range(repeats):
        for case in cases:
            enc_ms, enc_self, data = _timed(case.encode)
            dec_ms, dec_self, out = _timed(case.decode, data)
            for series, value in zip(times[id(case)], (enc_ms, enc_self, dec_ms, dec_self), strict=True):
                series.append(value)
            last[id(case)] = data, out
    records = []
    for case in cases:
        enc, enc_self, dec, dec_self = times[id(case)]
        data, out = last[id(case)]
        record = frame.record(case.codec, case.params, *case.sizes(data), case.decoded(out),
                              statistics.median(enc), statistics.median(dec))
        record.update(encode_internal_ms=_median(enc_self), decode_internal_ms=_median(dec_self))
        records.append(record)
    return records


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def run(args: argparse.Namespace) -> int:
    folder = args.data or data_root() / "pointclouds" / "mvub"
    paths = sorted(Path(folder).glob("*.ply"))
    if not paths:
        print(f"no PLY frames in {folder}; pass --data DIR or set HOLOPORT_DATA", file=sys.stderr)
        return 1
    if args.layers:
        return run_layers(args, paths)
    tools, dracopy, tmc3 = None, None, None
    if args.gpcc is not None:
        try:
            tmc3 = gpcc_cli.find(args.gpcc)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"G-PCC: {tmc3.label} ({tmc3.binary})")
    if not args.no_draco:
        tools, found = draco_cli.find_tools(args.draco_bin)
        try:
            from importlib.metadata import version

            import DracoPy  # noqa: F401

            dracopy = f"DracoPy {version('DracoPy')}"
        except ImportError:
            print("DracoPy is not installed: no DracoPy rows (pip install DracoPy)", file=sys.stderr)
        if tools is None:
            print(f"{found}. Comparing with {dracopy} instead: Draco's Python wrapper, whose encode is "
                  "several times slower than Draco's own (its rows say DracoPy)" if dracopy
                  else f"{found}. Comparing without Draco.", file=sys.stderr)
        else:
            print(found)
    from rich.progress import track

    records = []
    with tempfile.TemporaryDirectory(prefix="holoport-draco-") as work:
        for path in track(paths, description="benchmarking frames"):
            frame = Frame(path)
            # one slice and two (geometry on both cores too, a little larger), every step
            cases = [octree_case(frame, step, slices) for slices in (1, 2) for step in [1, *args.steps]]
            cases.append(baseline_case(frame))
            cases += [draco_cli_case(frame, tools, level, Path(work)) for level in ((1, 7) if tools else ())]
            cases += [dracopy_case(frame, level) for level in ((1, 7) if dracopy else ())]
            cases += [tmc3_case(frame, tmc3, qp, Path(work)) for qp in (gpcc_reference.QPS if tmc3 else ())]
            records += measure(frame, cases, args.repeats, args.warmup)
    # ratios to Draco level 7 on the same frame, measured in this same run
    ref_codec, ref_label = ("draco", f"{tools.label}, level 7") if tools else ("DracoPy", f"{dracopy}, level 7")
    ref = {r["frame"]: r for r in records if r["codec"] == ref_codec and r["params"].startswith("level=7 ")}
    for r in records:
        d = ref.get(r["frame"])
        if d is None:
            continue
        r["draco_ref"] = ref_label
        r["bpp_vs_draco"] = _ratio(r["total_bpp"], d["total_bpp"])
        r["encode_vs_draco"] = _ratio(r["encode_ms"], d["encode_ms"])
        r["decode_vs_draco"] = _ratio(r["decode_ms"], d["decode_ms"])
        r["encode_vs_draco_internal"] = _ratio(r["encode_ms"], d["encode_internal_ms"])
        r["decode_vs_draco_internal"] = _ratio(r["decode_ms"], d["decode_internal_ms"])
    gpcc = gpcc_reference.published(args.gpcc_table or data_root() / "README.md")
    records += gpcc_records(gpcc, {r["frame"] for r in records})
    columns = [c for c in COLUMNS if (tools or tmc3 or c not in INTERNAL) and (ref or c not in RATIOS)]
    emit(records, columns, "Codec rate, distortion and speed", args, plot=plot)
    note = _note(args, tools, dracopy, ref_label if ref else None, tmc3)
    print("\n".join(note))
    if args.markdown:  # what each time includes, above the table
        table = Path(args.markdown).read_text()
        Path(args.markdown).write_text("\n\n".join(note) + "\n\n" + table)
    compare_with_gpcc(records, gpcc, args)
    return 0


def gpcc_records(gpcc: dict, frames: set[str]) -> list[dict]:
    """G-PCC's published points of the frames benchmarked, as records of the main table."""
    out = []
    for frame in sorted(frames & set(gpcc)):
        g = gpcc[frame]
        for qp, total, psnr in zip(gpcc_reference.QPS, g.total_bpp, g.y_psnr, strict=True):
            out.append({**dict.fromkeys(FIELDS), "frame": frame, "codec": GPCC_CODEC, "params": f"QP {qp}",
                        "points": g.points, "geom_bpp": g.geometry_bpp, "total_bpp": total,
                        "color_bpp": total - g.geometry_bpp, "y_psnr": psnr, "d1_psnr": math.inf})
    return out


def compare_with_gpcc(records: list[dict], gpcc: dict, args: argparse.Namespace) -> list[dict]:
    """Per frame: lossless geometry against G-PCC's, and the BD-rate of the octree codec's
    total bits (one slice, RAHT at every step) against G-PCC's RAHT over QP 22-40 on
    Y-PSNR, both against the published figures and (--gpcc) against tmc3 in this run, with
    the times side by side; then the mean over the tuning and the validation frames.
    Printed, and written beside --json and under --markdown."""
    rows = []
    tmc3_frames = {r["frame"] for r in records if r["codec"] == TMC3_CODEC}
    for frame in sorted({r["frame"] for r in records} & (set(gpcc) | tmc3_frames)):
        mine = [r for r in records if r["frame"] == frame and r["codec"] == "octree"
                and r["params"].endswith("slices=1")]
        if not mine:
            continue
        lossless = next((r for r in mine if r["params"].startswith("lossless")), None)
        rd = [r for r in mine if r["y_psnr"] is not None]
        geom = lossless["geom_bpp"] if lossless else None
        row = {**dict.fromkeys(GPCC_FIELDS), "frame": frame, "role": gpcc_reference.role(frame),
               "points": mine[0]["points"], "geom_bpp": geom}
        g = gpcc.get(frame)
        if g is not None:
            bd, lo, hi = gpcc_reference.bd_rate([r["total_bpp"] for r in rd], [r["y_psnr"] for r in rd],
                                                list(g.total_bpp), list(g.y_psnr))
            row.update(gpcc_geom_bpp=g.geometry_bpp, geom_vs_gpcc=_ratio(geom, g.geometry_bpp),
                       bd_rate_total_pct=bd, psnr_lo=lo, psnr_hi=hi)
        theirs = [r for r in records if r["frame"] == frame and r["codec"] == TMC3_CODEC]
        if theirs:
            bd, _, _ = gpcc_reference.bd_rate([r["total_bpp"] for r in rd], [r["y_psnr"] for r in rd],
                                              [r["total_bpp"] for r in theirs], [r["y_psnr"] for r in theirs])
            # the octree codec's slowest one-slice setting against tmc3's own coding time (median
            # over its QPs): both exclude file I/O and process start
            enc, dec = max(r["encode_ms"] for r in mine), max(r["decode_ms"] for r in mine)
            tenc = statistics.median(r["encode_internal_ms"] for r in theirs)
            tdec = statistics.median(r["decode_internal_ms"] for r in theirs)
            row.update(tmc3_geom_bpp=theirs[0]["geom_bpp"], geom_vs_tmc3=_ratio(geom, theirs[0]["geom_bpp"]),
                       bd_rate_vs_tmc3_pct=bd, encode_ms=enc, tmc3_encode_ms=tenc,
                       encode_speedup=_ratio(tenc, enc), decode_ms=dec, tmc3_decode_ms=tdec,
                       decode_speedup=_ratio(tdec, dec))
        rows.append(row)
    averaged = ["geom_bpp", "gpcc_geom_bpp", "geom_vs_gpcc", "bd_rate_total_pct", "tmc3_geom_bpp",
                "geom_vs_tmc3", "bd_rate_vs_tmc3_pct", "encode_speedup", "decode_speedup"]
    for role in ("tuning", "validation"):
        group = [r for r in rows if r["role"] == role]
        if group:
            def mean(key, group=group):
                values = [r[key] for r in group if r[key] is not None]
                return statistics.fmean(values) if values else None
            rows.append({**dict.fromkeys(GPCC_FIELDS), "frame": f"mean ({len(group)} frames)", "role": role,
                         **{k: mean(k) for k in averaged}})
    if not rows:
        print("no G-PCC figures for these frames (data README or --gpcc): no comparison", file=sys.stderr)
        return rows
    fields = GPCC_FIELDS if tmc3_frames else GPCC_FIELDS[:-len(TMC3_FIELDS)]
    title = "Octree codec against G-PCC (TMC13 v23: published figures of the data README" + (
        "; tmc3 in this run)" if tmc3_frames else ")")
    out = argparse.Namespace(json=str(Path(args.json).with_name(Path(args.json).stem + "-gpcc.json"))
                             if args.json else None, markdown=None)
    emit(rows, fields, title, out)
    if args.markdown:
        lines = ["", f"## {title}", "",
                 "geom_vs_gpcc: lossless geometry bits over G-PCC's published. bd_rate_total_pct: BD-rate of "
                 "total bits at equal Y-PSNR (PCHIP of log rate, over psnr_lo..psnr_hi, the range both cover), "
                 "octree one slice at every colour step against G-PCC RAHT QP 22-40; negative = fewer bits "
                 f"than G-PCC. Roles: geometry tuned on {', '.join(gpcc_reference.GEOMETRY_TUNING_FRAMES)}."]
        if tmc3_frames:
            lines.append("\n*_tmc3: the same against tmc3 run on the same frames in this run (flags: "
                         "benchmarks/gpcc_cli.py). encode_ms / decode_ms: the octree codec's slowest one-slice "
                         "setting (median of the rounds, in memory); tmc3_*_ms: tmc3's own printed geometry + "
                         "colour coding time, median over QP 22-40 (no file I/O, no process start); "
                         "*_speedup = tmc3 over octree.")
        lines += ["", markdown_table(rows, fields)]
        with open(args.markdown, "a") as f:
            f.write("\n".join(lines))
    return rows


def layer_cases(frame: Frame, step: int) -> tuple[Case, Case]:
    """The single-layer octree stream and the layered one, same depth and colour step."""
    grid = {"depth": frame.bits, "origin": (-0.5, -0.5, -0.5), "size": float(2**frame.bits),
            "color_step": step}
    single, layered = OctreeCodec(**grid, slices=1), LayeredOctreeCodec(**grid)
    return (Case("octree", f"step={step} slices=1", lambda: single.encode(frame.positions, frame.colors),
                 OctreeCodec.decode, lambda d: (0, len(d)), lambda out: out),
            Case("octree-layered", f"step={step}", lambda: layered.encode_layers(frame.positions, frame.colors),
                 lambda f: LayeredOctreeCodec.decode_layers(f.parts),
                 lambda f: (0, sum(len(p) for p in f.parts)), lambda out: out))


def layer_record(frame: Frame, step: int, single: dict, layered: dict, parts: list[bytes],
                 levels: list[int]) -> dict:
    """One --layers row: the two streams' records side by side, and each prefix's Y-PSNR."""
    prefix = []
    for k in range(1, len(parts) + 1):
        pos, col = LayeredOctreeCodec.decode_layers(parts[:k])
        prefix.append(_finite(quality(frame.positions, frame.colors, pos, col, frame.bits,
                                      frame._normals).y_psnr))
    single_bytes = round(single["total_bpp"] * frame.points / 8)
    layered_bytes = sum(len(p) for p in parts)
    delta = (None if single["y_psnr"] is None or layered["y_psnr"] is None
             else round(layered["y_psnr"] - single["y_psnr"], 3))
    return {"frame": frame.name, "role": "tuning" if frame.name in TUNING_FRAMES else "validation",
            "color_step": step, "points": frame.points, "single_bytes": single_bytes,
            "layered_bytes": layered_bytes, "ratio": round(layered_bytes / single_bytes, 4),
            "y_psnr_single": single["y_psnr"], "y_psnr_layered": layered["y_psnr"], "y_psnr_delta": delta,
            "layers": len(parts), "layer_bytes": [len(p) for p in parts], "levels": levels,
            "prefix_y_psnr": prefix, "single_encode_ms": single["encode_ms"], "encode_ms": layered["encode_ms"],
            "single_decode_ms": single["decode_ms"], "decode_ms": layered["decode_ms"]}


def run_layers(args: argparse.Namespace, paths: list[Path]) -> int:
    """--layers: the layered stream against the single-layer stream on every frame and step."""
    from rich.progress import track

    records = []
    for path in track(paths, description="layered vs single-layer"):
        frame = Frame(path)
        for step in args.layer_steps:
            cases = list(layer_cases(frame, step))
            single, layered = measure(frame, cases, args.repeats, args.warmup)
            f = cases[1].encode()
            records.append(layer_record(frame, step, single, layered, f.parts, f.levels))
    records.sort(key=lambda r: (r["role"] != "tuning", r["frame"], r["color_step"]))
    shown = [{**r, **{k: "/".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in r[k])
                      for k in ("layer_bytes", "levels", "prefix_y_psnr")}} for r in records]
    emit(shown, LAYER_FIELDS, "Layered stream against the single-layer octree stream", args,
         plot=lambda _, path: plot_layers(records, path), json_records=records)
    note = [f"Times: median of {args.repeats} rounds after {args.warmup} warm-up rounds, the two streams "
            "in turns, in memory. ratio = layered_bytes (every part, each a whole container) / "
            "single_bytes (OctreeCodec, one slice, same depth and step); y_psnr_delta = layered - single, "
            "full detail. prefix_y_psnr: Y-PSNR of the base, base + 1, ... against the original frame "
            f"(levels: the octree level each prefix reaches). STEP_EXPONENT tuned on {', '.join(TUNING_FRAMES)}."]
    print("\n".join(note))
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(note) + "\n\n" + Path(args.markdown).read_text())
    return 0


def _frame_panels(plt, records: list[dict]) -> tuple:
    """A figure with one panel per frame of ``records`` (three to a row): (figure, [(axes, frame)])."""
    frames = sorted({r["frame"] for r in records})
    cols = min(3, len(frames))
    rows = math.ceil(len(frames) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in list(axes.flat)[len(frames):]:  # a last row not full
        ax.axis("off")
    return fig, list(zip(axes.flat, frames, strict=False))


def plot_layers(records: list[dict], path: str) -> None:
    """Each prefix's Y-PSNR against its cumulative bytes, a curve per colour step and frame;
    the single-layer stream as a cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, panels = _frame_panels(plt, records)
    for ax, frame in panels:
        for r in (r for r in records if r["frame"] == frame):
            cum = np.cumsum(r["layer_bytes"]) * 8 / r["points"]
            line = ax.plot(cum, [np.nan if v is None else v for v in r["prefix_y_psnr"]], "o-",
                           label=f"layered, step {r['color_step']}")
            ax.plot([r["single_bytes"] * 8 / r["points"]], [r["y_psnr_single"]], "x",
                    color=line[0].get_color(), ms=9)
        ax.set_title(f"{frame} (x = single layer)", fontsize=9)
        ax.set_xlabel("bits per input point (prefix)")
        ax.set_ylabel("Y-PSNR dB")
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _note(args: argparse.Namespace, tools: draco_cli.DracoTools | None, dracopy: str | None,
          ref_label: str | None, tmc3: gpcc_cli.Tmc3 | None = None) -> list[str]:
    """What each time includes, which Draco ran, and what the ratios are to."""
    lines = [f"Times: median of {args.repeats} rounds after {args.warmup} warm-up rounds; each round encodes "
             "and decodes the frame once with every codec in turn, so that bursts of other work on the "
             "machine fall on all of them alike. octree and baseline: encode and decode in memory, on "
             "arrays already loaded (no file I/O, no process start)."]
    if tools:
        lines.append(
            f"draco: {tools.label} ({tools.encoder.parent}). encode_ms = wall time of the "
            "`draco_encoder -point_cloud -qp BITS -cl LEVEL` process on the frame's PLY file, spawn to "
            "exit, including reading the PLY and writing the .drc; decode_ms = wall time of "
            "`draco_decoder`, including reading the .drc and writing a PLY. encode_internal_ms / "
            "decode_internal_ms = the times the tools print about their own coding (whole ms). Spawning "
            f"a process that does nothing (`true`) from this benchmark took {tool_process.spawn_ms():.1f} ms. "
            "-qp spreads its steps over the bounding box, so decoded positions are up to half a step off "
            "the integer grid (finite D1 PSNR).")
    elif not args.no_draco:
        lines.append("Draco's command-line tools were not found (apt-get install draco, or --draco-bin "
                     "DIR): no native Draco rows.")
    if tmc3:
        lines.append(f"G-PCC (tmc3): {tmc3.label} ({tmc3.binary}), MPEG's flags for lossless geometry and RAHT "
                     "colour (benchmarks/gpcc_cli.py) at QP 22, 28, 34, 40. encode_ms / decode_ms = wall time of "
                     "the process, spawn to exit, reading and writing files; encode_internal_ms / "
                     "decode_internal_ms = tmc3's own printed geometry + colour coding time.")
    if dracopy:
        lines.append(f"DracoPy: {dracopy}, the Python wrapper of Draco, in memory; quantization bits = "
                     "grid bits, range 2^bits - 1, origin 0 (lossless geometry).")
    if ref_label:
        lines.append(f"Ratios: *_vs_draco = this row over {ref_label}, same frame, same run"
                     + ("; *_vs_draco_internal = this row over that tool's own printed time." if tools else "."))
    lines.append("PSNR inf (null in JSON) = lossless; - (null in JSON) = not measured.")
    return lines


def _curve(record: dict) -> tuple[str, str]:
    """Which RD curve a record belongs to: one per Draco level and per octree slice count."""
    if record["codec"] == "draco":
        return "Draco's own tools", record["params"].split()[0]
    if record["codec"] == "DracoPy":
        return record["codec"], record["params"].split()[0]
    if record["codec"] == "octree":
        return record["codec"], record["params"].split()[-1]
    if record["codec"] == GPCC_CODEC:
        return "G-PCC RAHT QP 22-40", "(published)"
    if record["codec"] == TMC3_CODEC:
        return "G-PCC RAHT QP 22-40", "(tmc3, this run)"
    return record["codec"], ""


def plot(records: list[dict], path: str) -> None:
    """Rate-distortion: total bpp against Y-PSNR, one curve per codec, one panel per frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, panels = _frame_panels(plt, records)
    for ax, frame in panels:
        mine = [r for r in records if r["frame"] == frame]
        top = max([r["y_psnr"] for r in mine if r["y_psnr"] is not None] + [40]) + 4
        for label in sorted({_curve(r) for r in mine}):
            rows_ = [r for r in mine if _curve(r) == label]
            rows_.sort(key=lambda r: r["total_bpp"])
            y = [top if r["y_psnr"] is None else r["y_psnr"] for r in rows_]
            ax.plot([r["total_bpp"] for r in rows_], y, "o-", label=" ".join(p for p in label if p))
        ax.axhline(top, color="grey", lw=0.5, ls=":")
        ax.set_title(f"{frame} (top line = lossless)", fontsize=9)
        ax.set_xlabel("total bits per input point")
        ax.set_ylabel("Y-PSNR dB")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
