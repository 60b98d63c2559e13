"""The codec benchmark beside MPEG G-PCC's own encoder (benchmarks.gpcc_cli, --gpcc).

tmc3 is not part of Holoport: `make tmc3` builds it from TMC13's public source outside the
repository; HOLOPORT_TMC3=PATH points these tests at it (skipped without)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from benchmarks import codec_rd, gpcc_cli, gpcc_reference


def _tmc3() -> Path:
    path = os.environ.get("HOLOPORT_TMC3")
    if not path or not Path(path).is_file():
        pytest.skip("no tmc3: build it with `make tmc3` and set HOLOPORT_TMC3 to the binary")
    return Path(path)


def test_gpcc_refuses_what_is_not_tmc3(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        gpcc_cli.find(tmp_path / "tmc3")
    fake = tmp_path / "tmc3"
    fake.write_text("#!/bin/sh\necho usage: something else\n")
    fake.chmod(0o755)
    with pytest.raises(ValueError, match="not TMC13's tmc3"):
        gpcc_cli.find(fake)
    assert codec_rd.main(["--data", str(tmp_path), "--gpcc", str(fake)]) == 1  # no frames there
    (tmp_path / "f.ply").write_text("not read")
    assert codec_rd.main(["--data", str(tmp_path), "--gpcc", str(fake)]) == 2


def test_the_codec_benchmark_runs_tmc3_on_the_same_frames(mvub_frames, data_dir, tmp_path):
    tmc3 = _tmc3()
    frames = tmp_path / "frames"
    frames.mkdir()
    ricardo = next(f for f in mvub_frames if "ricardo" in f.name)
    (frames / ricardo.name).symlink_to(ricardo)
    out = tmp_path / "codec.json"
    assert codec_rd.main(["--data", str(frames), "--repeats", "1", "--warmup", "0", "--no-draco",
                          "--steps", "8", "16", "32", "64", "--gpcc", str(tmc3), "--json", str(out),
                          "--markdown", str(tmp_path / "codec.md")]) == 0
    records = json.loads(out.read_text())
    theirs = [r for r in records if r["codec"] == codec_rd.TMC3_CODEC]
    assert [r["params"] for r in theirs] == [f"QP {qp}" for qp in gpcc_reference.QPS]
    published = gpcc_reference.published(data_dir / "README.md")["ricardo_8bit"]
    for r, psnr in zip(theirs, published.y_psnr, strict=True):
        assert r["d1_psnr"] is None  # lossless geometry, decoded by tmc3 and read back
        assert r["y_psnr"] == pytest.approx(psnr, abs=0.05)  # the published flags, reproduced
        assert 0 < r["encode_internal_ms"] <= r["encode_ms"] and 0 < r["decode_internal_ms"] <= r["decode_ms"]
        assert r["geom_bpp"] == pytest.approx(published.geometry_bpp, rel=0.02)
    assert theirs[0]["total_bpp"] > theirs[-1]["total_bpp"]  # QP 22 spends the most
    row = json.loads((tmp_path / "codec-gpcc.json").read_text())[0]
    mine = next(r for r in records if r["params"] == "lossless slices=1")
    assert row["geom_vs_tmc3"] == pytest.approx(mine["geom_bpp"] / theirs[0]["geom_bpp"])
    assert row["bd_rate_vs_tmc3_pct"] is not None and math.isfinite(row["bd_rate_vs_tmc3_pct"])
    assert row["encode_speedup"] == pytest.approx(row["tmc3_encode_ms"] / row["encode_ms"])
    assert row["decode_speedup"] > 1  # the slowest octree setting still decodes faster than tmc3
    assert "tmc3" in (tmp_path / "codec.md").read_text()
