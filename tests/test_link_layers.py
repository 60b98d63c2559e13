"""The ladder's layered streams (holoport.link.ladder.LayeredStream): measured from the
layered codec, kept in the ladder's JSON beside the rungs, readable by older readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from holoport.link.ladder import Ladder, LayeredStream, Rung, estimated_layers, measure_layers

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "bench" / "ladder.json"


def _rungs() -> tuple[Rung, ...]:
    return tuple(Rung(lod=lod, color_step=step, key_bytes=(1000 * (4 - lod) * (9 - step // 8),) * 2,
                      delta_bytes=(900 * (4 - lod) * (9 - step // 8),) * 2, encode_ms=5.0, decode_ms=1.0 + lod,
                      d1_psnr=60.0 - 5 * lod, y_psnr=40.0 - 3 * lod - step / 16)
                 for step in (8, 16) for lod in (3, 2, 1, 0))


def test_a_ladder_without_layers_reads_and_writes_as_before():
    ladder = Ladder(("a", "b"), _rungs())
    data = json.loads(ladder.to_json())
    assert set(data) == {"frames", "rungs"}  # the old format, unchanged
    assert Ladder.from_json(ladder.to_json()) == ladder


def test_layered_streams_round_trip_and_old_readers_ignore_them():
    stream = LayeredStream(8, (3, 2, 0), ((100, 200, 700), (120, 180, 800)), 9.0, (1.0, 2.0, 4.0),
                           (45.0, 50.0, 100.0), (25.0, 30.0, 40.0))
    ladder = Ladder(("a", "b"), _rungs(), (stream,))
    again = Ladder.from_json(ladder.to_json())
    assert again == ladder and again.layers() == stream and again.layers(8) == stream
    data = json.loads(ladder.to_json())
    old = Ladder.from_json(json.dumps({k: data[k] for k in ("frames", "rungs")}))
    assert old.rungs == ladder.rungs
    prefixes = stream.prefix_ladder()
    assert [r.key_bytes for r in prefixes.rungs] == [(100, 120), (300, 300), (1000, 1100)]
    assert [r.y_psnr for r in prefixes.rungs] == [25.0, 30.0, 40.0]
    with pytest.raises(ValueError):
        ladder.layers(64)


def test_layers_are_estimated_from_the_rungs_when_none_were_measured():
    ladder = Ladder(("a", "b"), _rungs())
    stream = ladder.layers()
    assert stream.color_step == 8 and stream.lods == (3, 2, 1, 0)
    assert "estimated" in stream.source
    top = next(r for r in ladder.rungs if (r.lod, r.color_step) == (0, 8))
    assert sum(stream.sizes(0)) == top.key_bytes[0]  # the whole frame is the top rung's keyframe
    assert estimated_layers(ladder, 16).y_psnr[-1] == next(
        r.y_psnr for r in ladder.rungs if (r.lod, r.color_step) == (0, 16))


def test_the_committed_ladder_carries_measured_layers():
    ladder = Ladder.load(COMMITTED)
    assert ladder.rungs and ladder.layered
    for stream in ladder.layered:
        assert stream.source == "measured" and stream.layers >= 3
        assert list(stream.lods) == sorted(stream.lods, reverse=True) and stream.lods[-1] == 0
        assert stream.y_psnr[-1] > stream.y_psnr[0]  # more layers, better picture
        assert len(stream.part_bytes) == len(ladder.frames)


def test_measuring_the_layered_codec_gives_sizes_and_qualities_per_prefix():
    pytest.importorskip("codec.layered")
    rng = np.random.default_rng(0)
    # a sphere's shell, 5000 points: big enough for two parts (a part needs ~384 bytes)
    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1).reshape(-1, 3)
    shell = grid[np.abs(np.linalg.norm(grid - 15.5, axis=1) - 14) < 1.0]
    positions = (shell + 4).astype(np.float32)
    colors = np.clip(positions * 6 + rng.integers(0, 20, positions.shape), 0, 255).astype(np.uint8)
    (stream,) = measure_layers([("ball", positions, colors, 6)], steps=(8,))
    assert stream.layers >= 2 and stream.lods[-1] == 0
    assert all(b > 0 for b in stream.sizes(0))
    assert stream.d1_psnr[-1] >= stream.d1_psnr[0] and stream.y_psnr[-1] > stream.y_psnr[0]
