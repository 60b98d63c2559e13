"""Shared fixtures: real data from ../shared/data (skipped when absent), real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from holoport.data import data_root

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared test data not found at {root} (set HOLOPORT_DATA)")
    return root


@pytest.fixture(scope="session")
def mvub_frames(data_dir) -> list[Path]:
    frames = sorted((data_dir / "pointclouds" / "mvub").glob("*.ply"))
    if not frames:
        pytest.skip("no MVUB PLY frames in the shared data")
    return frames


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Compile numba kernels once, here, before any subprocess would race to."""
    import codec
    from holoport.warmup import meeting_codecs, warm_up

    # every codec as a meeting uses it, and the octree's lossless colour (tests join with it)
    warm_up([*meeting_codecs(), codec.OctreeCodec(depth=6, color_step=1)])


def holoport_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "holoport", *args]


def spawn(*args: str, **kwargs) -> subprocess.Popen:
    """Start ``holoport ARGS`` as a real process with captured output. Several run at once on
    this machine's cores, so each keeps numba to one thread (as ``holoport demo`` does)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.Popen(holoport_cmd(*args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """Ten frames of the synthetic person, recorded by a real `holoport record` at 15 fps."""
    path = tmp_path_factory.mktemp("rec") / "ana.hprec"
    made = subprocess.run(holoport_cmd("record", str(path), "--frames", "10"), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    return path
