"""MPEG G-PCC's reference software (TMC13's ``tmc3``), run the way MPEG's test conditions run it.

Nothing of TMC13 is shipped with Holoport: build it from its public source in a scratch
folder (``docs/codec.md``, "Measuring against tmc3") and pass the binary with
``holoport bench codec --gpcc PATH``.

Flags are those of TMC13's ``cfg/octree-raht-ctc-lossless-geom-lossy-attrs.yaml`` for dense
(MVUB-like) people: octree with planar mode and inferred direct coding, lossless geometry,
RAHT colour at one QP with chroma offset -1, converting RGB to YCbCr (``ENCODE_FLAGS``); the
decoder converts back. These are the flags that reproduce the data README's published
Y-PSNR to 0.01 dB.

Times: ``wall_ms`` is the process from spawn to exit (reading the PLY, writing the bitstream
or the decoded PLY, process start); ``internal_ms`` is the sum of what tmc3 prints about its
own geometry and colour coding ("positions/colors processing time (user)", ms resolution),
the window comparable with Holoport's in-memory times.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.tool_process import Run, run

ENCODE_FLAGS = (
    "--mode=0", "--trisoupNodeSizeLog2=0", "--mergeDuplicatedPoints=0", "--neighbourAvailBoundaryLog2=8",
    "--intra_pred_max_node_size_log2=6", "--positionQuantizationScale=1", "--inferredDirectCodingMode=1",
    "--rahtPredictionSearchRange=50000", "--maxNumQtBtBeforeOt=4", "--minQtbtSizeLog2=0", "--planarEnabled=1",
    "--planarModeIdcmUse=0", "--convertPlyColourspace=1", "--transformType=0",
)
DECODE_FLAGS = ("--mode=1", "--convertPlyColourspace=1", "--outputBinaryPly=1")
#: tmc3's own time for each coded part (geometry, colour), in seconds
_PROCESSING = re.compile(r"^(?:positions|colors) processing time \(user\): ([0-9.]+) s", re.M)
_POSITIONS = re.compile(r"^positions bitstream size (\d+) B", re.M)
_TOTAL = re.compile(r"^Total bitstream size (\d+) B", re.M)


@dataclass(frozen=True)
class Tmc3:
    binary: Path
    version: str

    @property
    def label(self) -> str:
        return f"TMC13 tmc3 {self.version}"


def find(binary: Path | str) -> Tmc3:
    """The tmc3 at ``binary``, or ValueError saying why it cannot be used."""
    path = Path(binary)
    if not path.is_file():
        raise ValueError(f"--gpcc {binary}: no such file (build TMC13's tmc3 first: docs/codec.md)")
    try:
        out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30).stdout
    except OSError as exc:
        raise ValueError(f"--gpcc {binary}: cannot run it ({exc})") from None
    m = re.search(r"tmc3 version[ \t]*(\S*)", out)
    if m is None:
        raise ValueError(f"--gpcc {binary}: not TMC13's tmc3 (its --help does not say 'tmc3 version')")
    return Tmc3(path.resolve(), m.group(1) or "(version not stamped: built outside a git checkout)")


def encode(tool: Tmc3, ply: Path, bitstream: Path, qp: int) -> Run:
    """Lossless geometry, RAHT colour at ``qp``."""
    return run([str(tool.binary), *ENCODE_FLAGS, f"--qp={qp}", "--qpChromaOffset=-1", "--bitdepth=8",
                "--attrOffset=0", "--attrScale=1", "--attribute=color", f"--uncompressedDataPath={ply}",
                f"--compressedStreamPath={bitstream}"], _PROCESSING, scale=1e3)


def decode(tool: Tmc3, bitstream: Path, ply: Path) -> Run:
    return run([str(tool.binary), *DECODE_FLAGS, f"--compressedStreamPath={bitstream}",
                f"--reconstructedDataPath={ply}"], _PROCESSING, scale=1e3)


def sizes(encoded: Run) -> tuple[int, int]:
    """(geometry bytes, total bytes) as the encoder printed them."""
    geometry, total = _POSITIONS.search(encoded.output), _TOTAL.search(encoded.output)
    if geometry is None or total is None:
        raise RuntimeError("tmc3 did not print its bitstream sizes")
    return int(geometry.group(1)), int(total.group(1))
