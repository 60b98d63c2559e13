"""Draco's own command-line tools, run the way their users run them.

``draco_encoder -point_cloud -i frame.ply -o frame.drc -qp BITS -cl LEVEL`` reads a PLY file
and writes a .drc file; ``draco_decoder -i frame.drc -o out.ply`` reads it back and writes a
PLY file. Both print their own timer: the encoder's covers ``EncodePointCloudToBuffer`` only
(not reading the PLY, not writing the .drc, not process start), the decoder's covers
``DecodePointCloudFromBuffer`` only (not reading the .drc, not writing the PLY); both are
whole milliseconds, truncated. This module finds the tools (on PATH or in a given folder),
names their version, runs them and times each process from spawn to exit.

The command line has no quantization origin or range: ``-qp BITS`` spreads 2^BITS - 1 steps
over the frame's bounding box, so a frame on an integer grid whose box is narrower than
2^BITS - 1 comes back off the grid by up to half a step (a finite D1 PSNR, not lossless);
rounding to the grid restores it. Colours (uchar red green blue) are kept exactly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.tool_process import Run, run
from capture.ply import write_ply

__all__ = ["DracoTools", "Run", "decode", "encode", "find_tools", "write_positions_ply"]

TOOLS = ("draco_encoder", "draco_decoder")
_ENCODED = re.compile(r"\((\d+) ms to encode\)")
_DECODED = re.compile(r"\((\d+) ms to decode\)")


@dataclass(frozen=True)
class DracoTools:
    encoder: Path
    decoder: Path
    version: str  # e.g. "1.5.5+dfsg-2 (Debian package draco)", or "unknown version"

    @property
    def label(self) -> str:
        return f"Draco {self.version}, draco_encoder/draco_decoder command line"


def find_tools(folder: Path | str | None = None) -> tuple[DracoTools | None, str]:
    """The two tools in ``folder`` (or on PATH when None), and a sentence saying what was found."""
    where = f"in {folder}" if folder is not None else "on PATH"
    hits = {name: shutil.which(name, path=None if folder is None else str(folder)) for name in TOOLS}
    missing = [name for name, hit in hits.items() if hit is None]
    if missing:
        return None, (f"Draco's command-line tools ({', '.join(missing)}) are not {where}: install "
                      "them (Debian/Ubuntu: apt-get install draco) or point --draco-bin DIR at them")
    found = {name: Path(hit) for name, hit in hits.items()}
    tools = DracoTools(found["draco_encoder"], found["draco_decoder"], tool_version(found["draco_encoder"]))
    return tools, f"Draco's command-line tools found {where}: {tools.label} ({tools.encoder.parent})"


def tool_version(binary: Path) -> str:
    """The version of the package that installed ``binary`` (dpkg), or what ``-v`` prints
    (Draco 1.5.6 and later), or "unknown version"."""
    real = str(Path(binary).resolve())
    try:
        owner = subprocess.run(["dpkg-query", "-S", real], capture_output=True, text=True, timeout=10)
        if owner.returncode == 0:
            package = owner.stdout.split(":", 1)[0].strip()
            version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                                     text=True, timeout=10).stdout.strip()
            if version:
                return f"{version} (Debian package {package})"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        out = subprocess.run([real, "-v"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"version:\s*(\S+)", out)
        if m:
            return m.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown version"


def encode(tools: DracoTools, ply: Path, drc: Path, bits: int, level: int) -> Run:
    return run([str(tools.encoder), "-point_cloud", "-i", str(ply), "-o", str(drc), "-qp", str(bits),
                "-cl", str(level)], _ENCODED, timeout=120)


def decode(tools: DracoTools, drc: Path, ply: Path) -> Run:
    return run([str(tools.decoder), "-i", str(drc), "-o", str(ply)], _DECODED, timeout=120)


def write_positions_ply(positions: np.ndarray, path: Path) -> None:
    """A binary PLY of float32 x y z only: what Draco's geometry alone costs."""
    write_ply(path, positions)
