"""The fuzz campaign of issue 14: every fuzz target, over a million inputs in all.

    codec      700,000  benchmarks.fuzz_codec: random, truncated and flipped codec streams,
                        half of the flips with the container checksum recomputed
    hub        400,000  benchmarks.fuzz_wire --target hub: hostile messages against a real hub
    receiver   300,000  benchmarks.fuzz_wire --target receiver: hostile forwarded messages
                        against a real receiver
    recording  150,000  benchmarks.fuzz_recording: damaged recordings played end to end
    total    1,550,000

Each target runs in a process of its own, showing its own progress (and its own table):
its peak memory is its own, and a target that dies takes nothing else with it. Then one
table of every target and kind, --json (every target's records, with target, kind, inputs,
crashed, hangs, memory, peak_rss_mb and each target's own counts) and --markdown. The exit
status is 1 when any target found a crash, a hang or memory over its bound (or ended badly).

Throughput measured here (2 cores shared with other work), and so the expected duration:
codec about 3,300 inputs/s (3.5 min), hub about 7,000/s (1 min), receiver about 400/s
(12.5 min), recordings about 1,500/s (1.7 min): about 20 minutes, up to 30 on a busier
machine (the receiver's pace is most of it: each input is decoded and rendered in turn).

Run: holoport bench fuzz --json fuzz.json --markdown fuzz.md      (--scale 0.01: a quick pass)
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_output_arguments, emit, script_main

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {  # name: (module, its own arguments, default inputs, measured inputs per second)
    "codec": ("benchmarks.fuzz_codec", [], 700_000, 3300),
    "hub": ("benchmarks.fuzz_wire", ["--target", "hub"], 400_000, 7000),
    "receiver": ("benchmarks.fuzz_wire", ["--target", "receiver"], 300_000, 400),
    "recording": ("benchmarks.fuzz_recording", [], 150_000, 1500),
}
COLUMNS = ["target", "kind", "inputs", "crashed", "hangs", "memory", "peak_rss_mb", "outcome"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--targets", nargs="*", choices=list(TARGETS), default=list(TARGETS))
    for name, (_, _, inputs, _) in TARGETS.items():
        parser.add_argument(f"--{name}", type=int, default=inputs, metavar="N",
                            help=f"{name} inputs (default {inputs:,})")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every target's inputs (0.01: a quick pass)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of PLY frames every target seeds its streams from "
                             "(default <data>/pointclouds/mvub)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rss-mb", type=float, default=1536.0, help="peak memory allowed each process under test")
    parser.add_argument("--strict", action="store_true", help="recordings: intact frames lost fail too")
    add_output_arguments(parser)


def plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    return [(name, max(1, round(getattr(args, name) * args.scale))) for name in args.targets]


def run_target(name: str, inputs: int, args: argparse.Namespace, out: Path) -> tuple[list[dict], str | None]:
    """One target in its own process; its records, and why it failed to finish (if it did)."""
    module, extra, _, rate = TARGETS[name]
    argv = [sys.executable, "-m", module, *extra, "--inputs", str(inputs), "--seed", str(args.seed),
            "--max-rss-mb", str(args.max_rss_mb), "--json", str(out)]
    if args.data is not None:
        argv += ["--data", str(args.data)]
    if args.strict and name == "recording":
        argv.append("--strict")
    limit = 600 + 5 * inputs / rate  # five times the measured pace: a target that takes longer hangs
    proc = subprocess.Popen(argv, cwd=ROOT)
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        _end(proc)
    rows = json.loads(out.read_text()) if out.exists() else []
    problem = None
    if rc is None:
        problem = f"{name} did not finish within {limit:.0f} s"
    elif rc not in (0, 1) or not rows:  # 1: it found failures, and wrote them down
        problem = f"{name} ended with status {rc}" + ("" if rows else " and no records")
    return [normalise(name, r, args.max_rss_mb) for r in rows], problem


def _end(proc: subprocess.Popen) -> None:
    """A target still running is asked to end (it ends the processes it tests), then killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def normalise(name: str, r: dict, max_rss_mb: float) -> dict:
    """A target's record with the campaign's fields: target, kind, inputs, crashed, hangs,
    memory, peak_rss_mb, and a line of what the target counted (outcome)."""
    row = {**r, "target": name, "kind": r["kind"]}
    if name == "codec":  # fuzz_codec counts slow decodes and checks memory over the whole run
        row.update(hangs=r["too_slow"], memory=int(r["peak_rss_mb"] > max_rss_mb),
                   outcome=f"decoded {r['decoded']:,}, rejected {r['rejected']:,}")
    elif name == "hub" and r["kind"] == "all":
        row["outcome"] = (f"dropped {r['dropped_malformed']:,}, refused {r['refused']:,}, joins {r['joins']:,}, "
                          f"forwarded {r['forwarded']:,}; checks {r['checks']:,}, stalled {r['stalled']}, "
                          f"handler errors {r['handler_errors']}, restarts {r['restarts']}")
    elif name == "receiver" and r["kind"] == "all":
        row["outcome"] = (f"frames decoded {r['received']:,}, malformed {r['malformed']:,}, undecodable "
                          f"{r['decode_errors']:,}, missing references {r['missing_reference']:,}, "
                          f"restarts {r['restarts']}")
    elif name == "recording":
        row["outcome"] = (f"played {r['played']:,} of {r['intact']:,} intact frames (lost {r['lost_intact']:,}), "
                          f"refused {r['refused']:,}")
    row.setdefault("outcome", "")
    return row


def summary(rows: list[dict], problems: list[str]) -> list[dict]:
    """The campaign's rows: each target's, an "all" row for a target without one (codec),
    and the total."""
    out: list[dict] = []
    for target in dict.fromkeys(r["target"] for r in rows):
        mine = [r for r in rows if r["target"] == target]
        out += mine
        if not any(r["kind"] == "all" for r in mine):
            out.append({"target": target, "kind": "all", "outcome": "",
                        **{k: sum(r[k] for r in mine) for k in ("inputs", "crashed", "hangs", "memory")},
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in mine)})
    totals = [r for r in out if r["kind"] == "all"]
    out.append({"target": "campaign", "kind": "all",
                **{k: sum(r[k] for r in totals) for k in ("inputs", "crashed", "hangs", "memory")},
                "peak_rss_mb": max((r["peak_rss_mb"] for r in totals), default=0.0),
                "outcome": "; ".join(problems) or "every target finished"})
    return out


def run(args: argparse.Namespace) -> int:
    todo = plan(args)
    expected = sum(n / TARGETS[name][3] for name, n in todo)
    print(f"fuzz campaign: {sum(n for _, n in todo):,} inputs ({', '.join(f'{name} {n:,}' for name, n in todo)}); "
          f"expected about {expected / 60:.0f} min", flush=True)
    rows, problems, started = [], [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="holoport-fuzz-") as tmp:
        for name, n in todo:
            print(f"\n== {name}: {n:,} inputs ==", flush=True)
            got, problem = run_target(name, n, args, Path(tmp) / f"{name}.json")
            rows += got
            problems += [problem] if problem else []
    records = summary(rows, problems)
    total = records[-1]
    emit(records, COLUMNS, f"Fuzz campaign: {total['inputs']:,} inputs in {(time.monotonic() - started) / 60:.1f} min",
         args)
    for r in records:
        for failure in r.get("failures", []):
            print(f"FAILED {r['target']}: {failure}")
    bad = total["crashed"] + total["hangs"] + total["memory"] + len(problems)
    bad += sum(r.get("stalled", 0) + r.get("handler_errors", 0) for r in records if r["kind"] == "all")
    bad += sum(r.get("lost_intact", 0) + r.get("wrong_played", 0) for r in records
               if args.strict and r["target"] == "recording" and r["kind"] == "all")
    print(f"{bad} failure(s)")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
